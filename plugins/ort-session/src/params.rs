//! The params every ONNX stage shares, read in one place: where the model comes from
//! (`model`, resolved through the manifest) and how it runs (`threads`,
//! `execution_provider`). A stage's `Config` holds these fields itself (serde's `flatten`
//! does not work with `deny_unknown_fields`), typed with what this module provides.

use std::path::PathBuf;

use anoflow_sdk::prelude::*;

use crate::{
    manifest::{self, ResolvedModel},
    Provider,
};

/// The `execution_provider` param: where ONNX Runtime runs the model; cuda needs the library
/// of the onnxruntime-gpu wheel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
}

impl From<ExecutionProvider> for Provider {
    fn from(p: ExecutionProvider) -> Self {
        match p {
            ExecutionProvider::Cpu => Provider::Cpu,
            ExecutionProvider::Cuda => Provider::Cuda,
        }
    }
}

/// How a node's model runs, from its `threads` and `execution_provider` params.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeParams {
    /// Intra-op threads (0: ONNX Runtime's default).
    pub threads: usize,
    pub provider: Provider,
}

impl RuntimeParams {
    pub fn new(threads: usize, execution_provider: ExecutionProvider) -> Self {
        Self { threads, provider: execution_provider.into() }
    }
}

/// A node's `model` param resolved: a manifest name, searched from the pipeline's directory
/// upward and then from the working directory upward, or a path to an .onnx file.
pub fn resolve_model(model: &Model, ctx: &CreateContext) -> StageResult<ResolvedModel> {
    let base_dir = PathBuf::from(ctx.base_dir.as_str());
    let cwd: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    manifest::resolve(model.as_str(), &base_dir, &cwd).map_err(|e| StageError::from(e).context(&ctx.node_id))
}
