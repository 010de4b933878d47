//! # anoflow-plugin-onnx
//!
//! Stages on ONNX Runtime (through `ort`, loading the runtime library at run time):
//! - `onnx-features`: a frozen backbone's named intermediate outputs as channels-last feature
//!   maps (one per layer, labelled with the layer name), for PatchCore, PaDiM and TTT4AS;
//! - `onnx-scorer`: any model that maps an image to an anomaly map.
//!
//! Models are named in `models/manifest.yaml` (written by `tools/prepare_default_model.py` and
//! `tools/export_torch_models.py`) or given as paths; a file whose sha256 differs from its
//! manifest entry is refused. The runtime library is found by `anoflow-ort-locate`
//! (ORT_DYLIB_PATH, the project's `.cache/onnxruntime/`, an installed onnxruntime package) and
//! loaded once per process; runtime, manifest and errors live in `anoflow-ort-session`.

pub mod config;
pub mod features;
pub mod preprocess;
pub mod session;
mod stages;

// The runtime, the manifest and the errors are shared with the other ONNX plugins.
pub use anoflow_ort_session::{error, manifest, params, runtime};

#[cfg(test)]
mod tests;

pub use error::OnnxError;
pub use features::FeatureExtractor;
pub use session::{OnnxModel, Provider};
pub use stages::onnx_features::{OnnxFeatures, OnnxFeaturesConfig};
pub use stages::onnx_scorer::{OnnxScorer, OnnxScorerConfig};

anoflow_sdk::export_plugin! { stages: [OnnxFeatures, OnnxScorer] }
