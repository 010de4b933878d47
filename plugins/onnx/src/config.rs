//! The parameters both stages share (model, input size, normalization, threads, provider),
//! resolved against the manifest once, when the stage is created.

use anoflow_ort_session::params::{resolve_model, runtime_params, RuntimeParams};
use anoflow_sdk::prelude::*;
use serde_json::json;

use crate::{
    error::OnnxError,
    manifest::{ResolvedModel, Size, IMAGENET_MEAN, IMAGENET_STD},
    preprocess::Preprocess,
    session::OnnxModel,
};

/// The shared parameter specs, appended to each stage's descriptor.
pub fn common_params(desc: StageDescriptor, model_default: Option<&str>) -> StageDescriptor {
    let model_doc = "model: a name in models/manifest.yaml (searched from the pipeline's directory upward, then from \
                     the working directory upward) or a path to an .onnx file";
    let model = match model_default {
        Some(d) => ParamSpec::string("model", d, model_doc),
        None => ParamSpec::required("model", ParamType::String, model_doc),
    };
    runtime_params(
        desc.param(model)
            .param(
                ParamSpec::with_default(
                    "input_size",
                    ParamType::Any,
                    json!(null),
                    "model input size, one number (square) or [height, width]; images of another size are resized \
             (default: the manifest's, else the model's fixed size)",
                )
                .min(1.0),
            )
            .param(ParamSpec::with_default(
                "mean",
                ParamType::FloatList,
                json!(null),
                "per-channel (RGB) mean after dividing pixels by 255 (default: the manifest's, else ImageNet's)",
            ))
            .param(
                ParamSpec::with_default(
                    "std",
                    ParamType::FloatList,
                    json!(null),
                    "per-channel (RGB) standard deviation (default: the manifest's, else ImageNet's)",
                )
                .above(0.0),
            ),
    )
}

/// A model opened with its preprocessing.
pub struct LoadedModel {
    pub model: OnnxModel,
    pub resolved: ResolvedModel,
    pub preprocess: Preprocess,
}

fn bad(model: &ResolvedModel, reason: impl Into<String>) -> OnnxError {
    OnnxError::BadParam { model: model.label(), reason: reason.into() }
}

fn triple(model: &ResolvedModel, params: &Params, name: &str) -> Result<Option<[f32; 3]>, StageError> {
    if !params.has(name) {
        return Ok(None);
    }
    let v: Vec<f64> = params.get(name)?;
    match v.as_slice() {
        [a, b, c] => Ok(Some([*a as f32, *b as f32, *c as f32])),
        _ => Err(bad(model, format!("param `{name}`: expected 3 numbers (R, G, B), found {}", v.len())).into()),
    }
}

/// Resolves and opens the model named by the params.
pub fn load(params: &Params, ctx: &CreateContext) -> Result<LoadedModel, StageError> {
    let resolved = resolve_model(params, ctx)?;
    let entry = resolved.entry.as_ref().map(|(e, _)| e);

    let runtime = RuntimeParams::from_params(params)?;
    let input_name = entry.and_then(|e| e.input.name.as_deref());
    let model = OnnxModel::open(&resolved.path, &resolved.label(), input_name, runtime.threads, runtime.provider)?;

    let size = if params.has("input_size") {
        let s: Size = params.get("input_size")?;
        Some(s.hw())
    } else {
        match (entry.and_then(|e| e.input.size), model.static_hw()) {
            (Some(s), _) => Some(s.hw()),
            (None, (Some(h), Some(w))) => Some((h, w)),
            _ => None,
        }
    };
    let (height, width) = size.ok_or_else(|| {
        bad(
            &resolved,
            "param `input_size` is needed: the model's input size is dynamic and no manifest entry gives one",
        )
    })?;
    if height == 0 || width == 0 {
        return Err(bad(&resolved, format!("param `input_size`: must be positive, found {height}x{width}")).into());
    }
    model.check_input_size(height, width)?;
    let norm = entry.and_then(|e| e.normalization.clone());
    let mean = triple(&resolved, params, "mean")?.or(norm.as_ref().map(|n| n.mean)).unwrap_or(IMAGENET_MEAN);
    let std = triple(&resolved, params, "std")?.or(norm.as_ref().map(|n| n.std)).unwrap_or(IMAGENET_STD);
    if std.iter().any(|&s| s.is_nan() || s <= 0.0) {
        return Err(bad(&resolved, format!("param `std`: every value must be positive, found {std:?}")).into());
    }
    let scale = norm.map_or(255.0, |n| n.scale);
    Ok(LoadedModel { model, resolved, preprocess: Preprocess { height, width, scale, mean, std } })
}
