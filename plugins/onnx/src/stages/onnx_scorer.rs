//! `onnx-scorer`: any ONNX model that maps an image to an anomaly map.

use anoflow_imaging::upsample_bilinear;
use anoflow_sdk::prelude::*;

use crate::{
    config::{self, image_model_config},
    error::OnnxError,
    preprocess::Preprocess,
    session::OnnxModel,
};

/// Stage type `onnx-scorer`.
pub struct OnnxScorer;

image_model_config! {
    /// Params of `onnx-scorer`.
    pub struct OnnxScorerConfig {
        model;
        /// the model output holding the anomaly map, shaped [N, 1, h, w] or [N, h, w] (default: the first output)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub output: Option<String>,
    }
}

impl StagePlugin for OnnxScorer {
    type Config = OnnxScorerConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "onnx-scorer",
            "an ONNX model that outputs an anomaly map from an image; the map is resized to the image",
        )
        .input("image", ValueKind::Image, "image (u8 or f32 in [0, 255], 1 or 3 channels)")
        .output("score", ValueKind::ScoreMap, "the model's anomaly map, resized bilinearly to the image size")
        .output("image_score", ValueKind::Scalar, "maximum of the score map")
    }

    fn create(config: OnnxScorerConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        // The named output alone; the model's first output otherwise (known once it is open).
        let loaded = config::load(&config.settings(), ctx, |_| config.output.iter().cloned().collect())?;
        let output = match config.output {
            Some(output) => output,
            None => loaded.model.output_names().first().cloned().unwrap_or_default(),
        };
        loaded.model.check_outputs(std::slice::from_ref(&output))?;
        Ok(Box::new(OnnxScorerStage { model: loaded.model, preprocess: loaded.preprocess, output }))
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

#[cfg(test)]
mod tests {
    //! On the real runtime; helpers in `crate::tests`.

    use anoflow_sdk::harness::{inputs, meta};
    use serde_json::json;

    use super::*;
    use crate::tests::{error_of, onnx_ready, stage, test_data};

    #[test]
    fn onnx_scorer_returns_the_models_map_at_image_size() {
        if !onnx_ready("onnx_scorer_returns_the_models_map_at_image_size") {
            return;
        }
        // block_energy: channel mean of the squared input, 4x4 block averages, from a 32x32 input.
        // With mean 0 and std 1, a white pixel has energy 1 and a black one 0.
        let model = test_data("block_energy.onnx").to_string_lossy().to_string();
        let h = stage::<OnnxScorer>(json!({"model": model, "mean": [0, 0, 0], "std": [1, 1, 1]})).unwrap();
        let (ih, iw) = (96, 128);
        let pixels: Vec<u8> = (0..ih * iw).flat_map(|i| if i % iw < iw / 2 { [255u8; 3] } else { [0u8; 3] }).collect();
        let image = Image::from_u8(ih as u32, iw as u32, 3, pixels).unwrap();
        let out = h.process(&meta("half"), inputs(vec![("image", image.into())])).unwrap();
        let score = out.score_map("score");
        assert_eq!((score.height(), score.width()), (ih, iw));
        for y in [0, ih / 2, ih - 1] {
            assert!((score.get(y, 5) - 1.0).abs() < 1e-4, "left: {}", score.get(y, 5));
            assert!(score.get(y, iw - 5).abs() < 1e-4, "right: {}", score.get(y, iw - 5));
        }
        let mid = score.get(ih / 2, iw / 2);
        assert!(mid > 0.05 && mid < 0.95, "the edge is interpolated: {mid}");
        assert!((out.scalar("image_score") - 1.0).abs() < 1e-4);

        let err = error_of::<OnnxScorer>(json!({"model": model, "output": "score"}));
        assert!(err.contains("has no output `score`; its outputs are: energy"), "{err}");
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        // Checked against the config's schema before any model is opened.
        let err = error_of::<OnnxScorer>(json!({}));
        assert!(err.contains("missing required param `model`"), "{err}");
    }
}
