//! The params every ONNX stage shares, declared and read in one place: where the model comes
//! from (`model`, resolved through the manifest) and how it runs (`threads`,
//! `execution_provider`).

use std::path::PathBuf;

use anoflow_sdk::prelude::*;

use crate::{
    manifest::{self, ResolvedModel},
    Provider,
};

/// Appends `threads` and `execution_provider` to a stage's params.
pub fn runtime_params(desc: StageDescriptor) -> StageDescriptor {
    desc.param(
        ParamSpec::int(
            "threads",
            0,
            "ONNX Runtime intra-op threads per inference (0: its default, one per physical core)",
        )
        .min(0.0),
    )
    .param(ParamSpec::choice(
        "execution_provider",
        &["cpu", "cuda"],
        "where ONNX Runtime runs the model; cuda needs the library of the onnxruntime-gpu wheel",
    ))
}

/// How a node's model runs, read from the params of [`runtime_params`].
#[derive(Debug, Clone, Copy)]
pub struct RuntimeParams {
    /// Intra-op threads (0: ONNX Runtime's default).
    pub threads: usize,
    pub provider: Provider,
}

impl RuntimeParams {
    pub fn from_params(params: &Params) -> StageResult<Self> {
        let name = params.string("execution_provider")?;
        let provider = Provider::parse(&name).ok_or_else(|| {
            StageError::invalid_param(format!(
                "node `{}`: param `execution_provider`: expected cpu or cuda, found `{name}`",
                params.node()
            ))
        })?;
        Ok(Self { threads: params.usize("threads")?, provider })
    }
}

/// The node's `model` param resolved: a manifest name, looked up by the manifest rule
/// ([`manifest::search_starts`]: the pipeline's directory, the working directory, the
/// executable's, each upward), or a path to an .onnx file.
pub fn resolve_model(params: &Params, ctx: &CreateContext) -> StageResult<ResolvedModel> {
    let spec = params.string("model")?;
    let base_dir = PathBuf::from(ctx.base_dir.as_str());
    let others = manifest::search_starts(None);
    manifest::resolve(&spec, &base_dir, &others).map_err(|e| StageError::from(e).context(params.node()))
}
