//! # anoflow-ort-session
//!
//! What every ONNX plugin shares: ONNX Runtime loaded once per plugin library ([`runtime`]),
//! a session opened on CPU or CUDA ([`open_session`]), the model manifest (`models/manifest.yaml`,
//! [`manifest`]), the params every ONNX stage takes ([`params`], declared by
//! [`onnx_stage_config!`]) and the errors ([`OnnxError`]). A plain library, not a plugin, so several
//! plugin crates can use it (a plugin crate may not depend on another).
//!
//! Each plugin library links its own copy of this crate and of `ort`, so each initializes
//! `ort` once from the same runtime file; ONNX Runtime keeps one environment per process and
//! hands the existing one to a second `CreateEnv`.

pub mod error;
pub mod manifest;
pub mod params;
pub mod prune;
pub mod runtime;

use std::path::Path;

use ort::{ep::ExecutionProvider, session::Session};

pub use anoflow_ort_locate::{Health, Status};
pub use error::OnnxError;
pub use ort;

/// What [`onnx_stage_config!`] expands to needs; not part of the public API.
#[doc(hidden)]
pub use anoflow_sdk as __sdk;

/// Where ONNX Runtime runs the model (the `execution_provider` param: `cpu` or `cuda`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cpu" => Some(Provider::Cpu),
            "cuda" => Some(Provider::Cuda),
            _ => None,
        }
    }
}

/// Opens `path` in the process-wide runtime. `threads` = 0 keeps ONNX Runtime's default (one
/// per physical core). `label` names the model in errors.
pub fn open_session(path: &Path, label: &str, threads: usize, provider: Provider) -> Result<Session, OnnxError> {
    open_session_for(path, label, threads, provider, &[], Spinning::On)
}

/// Whether ONNX Runtime's intra-op threads spin while they wait for work. Spinning answers a
/// lone caller fastest; when the host runs several workers, the spinning thread takes a core
/// the other workers need (`mvtec-ad-patchcore.yaml` on photo set 1: 8 % less CPU and 7 %
/// less wall time without it, same results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spinning {
    On,
    Off,
}

impl Spinning {
    /// Off when the host runs more than one worker thread.
    pub fn for_host_threads(threads: u32) -> Self {
        if threads > 1 {
            Spinning::Off
        } else {
            Spinning::On
        }
    }
}

/// [`open_session`], with the graph cut down to what `outputs` need ([`prune::to_outputs`]:
/// the same values, without running the layers after them); every output when `outputs` is
/// empty or the model cannot be cut safely.
pub fn open_session_for(
    path: &Path,
    label: &str,
    threads: usize,
    provider: Provider,
    outputs: &[String],
    spinning: Spinning,
) -> Result<Session, OnnxError> {
    let (lib, env) = runtime::environment()?;
    let ort_err = |e: &dyn std::fmt::Display| OnnxError::Ort { model: label.into(), reason: e.to_string() };
    let mut builder = Session::builder(env).map_err(|e| ort_err(&e))?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| ort_err(&e))?;
    }
    if spinning == Spinning::Off {
        builder = builder.with_intra_op_spinning(false).map_err(|e| ort_err(&e))?;
    }
    if provider == Provider::Cuda {
        let available = <ort::ep::CUDA as ExecutionProvider>::is_available().unwrap_or(false);
        if !available {
            return Err(OnnxError::BadParam {
                model: label.into(),
                reason: format!(
                    "execution_provider `cuda`: the ONNX Runtime library {} has no CUDA execution provider; use the \
                     library of the onnxruntime-gpu wheel (ORT_DYLIB_PATH) or execution_provider: cpu",
                    lib.path.display()
                ),
            });
        }
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| ort_err(&e))?;
    }
    let keep: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let pruned = match keep.is_empty() {
        true => None,
        false => {
            let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.into(), source })?;
            prune::to_outputs(&bytes, &keep)
        }
    };
    match pruned {
        Some(bytes) => builder.commit_from_memory(&bytes),
        None => builder.commit_from_file(path),
    }
    .map_err(|e| OnnxError::Ort { model: label.into(), reason: format!("cannot load the model: {e}") })
}
