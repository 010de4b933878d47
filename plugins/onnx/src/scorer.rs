//! `onnx-scorer`: any ONNX model that maps an image to an anomaly map.

use anoflow_imaging::upsample_bilinear;
use anoflow_sdk::prelude::*;
use serde_json::json;

use crate::{
    config::{self, common_params},
    error::OnnxError,
    preprocess::Preprocess,
    session::OnnxModel,
};

/// Stage type `onnx-scorer`.
pub struct OnnxScorer;

impl StagePlugin for OnnxScorer {
    fn descriptor() -> StageDescriptor {
        let desc = StageDescriptor::map(
            "onnx-scorer",
            "an ONNX model that outputs an anomaly map from an image; the map is resized to the image",
        )
        .input("image", ValueKind::Image, "image (u8 or f32 in [0, 255], 1 or 3 channels)")
        .output("score", ValueKind::ScoreMap, "the model's anomaly map, resized bilinearly to the image size")
        .output("image_score", ValueKind::Scalar, "maximum of the score map")
        .param(ParamSpec::with_default(
            "output",
            ParamType::String,
            json!(null),
            "the model output holding the anomaly map, shaped [N, 1, h, w] or [N, h, w] (default: the first output)",
        ));
        common_params(desc, None)
    }

    fn create(params: &Params, ctx: &CreateContext) -> StageResult<StageImpl> {
        let loaded = config::load(params, ctx)?;
        let output = if params.has("output") {
            params.string("output")?
        } else {
            loaded.model.output_names().first().cloned().unwrap_or_default()
        };
        loaded.model.check_outputs(std::slice::from_ref(&output))?;
        Ok(StageImpl::Map(Box::new(OnnxScorerStage { model: loaded.model, preprocess: loaded.preprocess, output })))
    }
}

struct OnnxScorerStage {
    model: OnnxModel,
    preprocess: Preprocess,
    output: String,
}

impl OnnxScorerStage {
    fn err(&self, id: &str, reason: impl Into<String>) -> OnnxError {
        OnnxError::Sample { model: self.model.label().into(), sample: id.into(), reason: reason.into() }
    }
}

impl Map for OnnxScorerStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let id = sample.meta.id.as_str();
        let image = sample.image("image")?;
        let (h, w) = (self.preprocess.height, self.preprocess.width);
        let mut input = Vec::with_capacity(3 * h * w);
        self.preprocess.append_chw(image, &mut input).map_err(|r| self.err(id, r))?;
        let mut tensors = self.model.run(1, h, w, input, std::slice::from_ref(&self.output))?;
        let t = tensors.pop().ok_or_else(|| self.err(id, "the model returned no output"))?;
        let (mh, mw) = match t.shape.as_slice() {
            [1, 1, mh, mw] | [1, mh, mw] => (*mh, *mw),
            other => {
                return Err(self
                    .err(
                        id,
                        format!("output `{}` has shape {other:?}; expected [N, 1, h, w] or [N, h, w]", self.output),
                    )
                    .into())
            }
        };
        if let Some(v) = t.data.iter().find(|v| !v.is_finite()) {
            return Err(self.err(id, format!("output `{}` holds a non-finite value ({v})", self.output)).into());
        }
        let (ih, iw) = (image.height(), image.width());
        let map = upsample_bilinear(&t.data, mh, mw, ih, iw).map_err(|e| self.err(id, e.to_string()))?;
        let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Ok(Outputs::new().with("score", ScoreMap::new(ih as u32, iw as u32, map)?).with("image_score", f64::from(max)))
    }
}
