//! The parameters both stages share (model, input size, normalization, threads, provider),
//! resolved against the manifest once, when the stage is created.

use anoflow_ort_session::params::{resolve_model, RuntimeParams};
use anoflow_sdk::prelude::*;

use crate::{
    error::OnnxError,
    manifest::{ResolvedModel, Size, IMAGENET_MEAN, IMAGENET_STD},
    preprocess::Preprocess,
    session::OnnxModel,
};

/// The settings both stages share, taken from each stage's config by the `settings()` that
/// `image_model_config!` writes (the fields are the config's own: a shared struct cannot be
/// flattened into a config that refuses unknown fields).
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub model: Model,
    pub input_size: Option<Size>,
    pub mean: Option<Vec<f64>>,
    pub std: Option<Vec<f64>>,
    pub runtime: RuntimeParams,
}

/// Declares the config of a stage of this crate: `model`, the stage's own fields, the image
/// fields both stages share (`input_size`, `mean`, `std`, docs written once here), then
/// `threads` and `execution_provider` (from [`anoflow_ort_session::onnx_stage_config!`]), and a
/// `settings()` method that gathers them into [`ModelSettings`].
macro_rules! image_model_config {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            model $(= $default:literal)?;
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        anoflow_ort_session::onnx_stage_config! {
            $(#[$meta])*
            $vis struct $name {
                model $(= $default)?;
                $( $(#[$field_meta])* $field_vis $field: $ty, )*
                /// model input size, one number (square) or [height, width]; images of another size are resized (default: the
                /// manifest's, else the model's fixed size)
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub input_size: Option<$crate::manifest::Size>,
                /// per-channel (RGB) mean after dividing pixels by 255 (default: the manifest's, else ImageNet's)
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub mean: Option<Vec<f64>>,
                /// per-channel (RGB) standard deviation (default: the manifest's, else ImageNet's)
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub std: Option<Vec<f64>>,
            }
        }

        impl $name {
            fn settings(&self) -> $crate::config::ModelSettings {
                $crate::config::ModelSettings {
                    model: self.model.clone(),
                    input_size: self.input_size,
                    mean: self.mean.clone(),
                    std: self.std.clone(),
                    runtime: self.runtime(),
                }
            }
        }
    };
}
pub(crate) use image_model_config;

/// A model opened with its preprocessing.
pub struct LoadedModel {
    pub model: OnnxModel,
    /// The outputs the model was cut down to (empty: the whole model).
    pub outputs: Vec<String>,
    pub resolved: ResolvedModel,
    pub preprocess: Preprocess,
}

fn bad(model: &ResolvedModel, reason: impl Into<String>) -> OnnxError {
    OnnxError::BadParam { model: model.label(), reason: reason.into() }
}

fn triple(model: &ResolvedModel, given: Option<&[f64]>, name: &str) -> Result<Option<[f32; 3]>, StageError> {
    let Some(v) = given else { return Ok(None) };
    match v {
        [a, b, c] => Ok(Some([*a as f32, *b as f32, *c as f32])),
        _ => Err(bad(model, format!("param `{name}`: expected 3 numbers (R, G, B), found {}", v.len())).into()),
    }
}

/// Resolves and opens the model the settings name, cut down to the outputs `keep` names for
/// it (the whole model when it names none).
pub fn load(
    settings: &ModelSettings,
    ctx: &CreateContext,
    keep: impl FnOnce(&ResolvedModel) -> Vec<String>,
) -> Result<LoadedModel, StageError> {
    let resolved = resolve_model(&settings.model, ctx)?;
    let entry = resolved.entry.as_ref().map(|(e, _)| e);

    let runtime = settings.runtime;
    let input_name = entry.and_then(|e| e.input.name.as_deref());
    let kept = keep(&resolved);
    let spinning = anoflow_ort_session::Spinning::for_host_threads(ctx.threads);
    let model = OnnxModel::open(
        &resolved.path,
        &resolved.label(),
        input_name,
        runtime.threads,
        runtime.provider,
        &kept,
        spinning,
    )?;

    let size = if let Some(s) = settings.input_size {
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
    let mean =
        triple(&resolved, settings.mean.as_deref(), "mean")?.or(norm.as_ref().map(|n| n.mean)).unwrap_or(IMAGENET_MEAN);
    let std =
        triple(&resolved, settings.std.as_deref(), "std")?.or(norm.as_ref().map(|n| n.std)).unwrap_or(IMAGENET_STD);
    if std.iter().any(|&s| s.is_nan() || s <= 0.0) {
        return Err(bad(&resolved, format!("param `std`: every value must be positive, found {std:?}")).into());
    }
    let scale = norm.map_or(255.0, |n| n.scale);
    Ok(LoadedModel { model, outputs: kept, resolved, preprocess: Preprocess { height, width, scale, mean, std } })
}
