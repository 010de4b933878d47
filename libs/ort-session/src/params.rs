//! The params every ONNX stage shares, read in one place: where the model comes from (`model`,
//! resolved through the manifest) and how it runs (`threads`, `execution_provider`). A
//! stage's typed config declares the fields (`model: Model`, `threads: usize`,
//! `execution_provider: Provider`); these helpers turn them into what the runtime needs.

use std::path::PathBuf;

use anoflow_sdk::prelude::*;

use crate::{
    manifest::{self, ResolvedModel},
    Provider,
};

/// Doc of a stage's `threads` param.
pub const THREADS_DOC: &str = "ONNX Runtime intra-op threads per inference (0: its default, one per physical core)";
/// Doc of a stage's `execution_provider` param.
pub const PROVIDER_DOC: &str = "where ONNX Runtime runs the model; cuda needs the library of the onnxruntime-gpu wheel";

/// How a node's model runs.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeParams {
    /// Intra-op threads (0: ONNX Runtime's default).
    pub threads: usize,
    pub provider: Provider,
}

/// The node's `model` param resolved: a manifest name, looked up by the manifest rule
/// ([`manifest::search_starts`]: the pipeline's directory, the working directory, the
/// executable's, each upward), or a path to an .onnx file.
pub fn resolve_model(model: &Model, ctx: &CreateContext) -> StageResult<ResolvedModel> {
    let base_dir = PathBuf::from(ctx.base_dir.as_str());
    let others = manifest::search_starts(None);
    manifest::resolve(model.as_str(), &base_dir, &others).map_err(|e| StageError::from(e).context(ctx.node_id.as_str()))
}
