//! `gaussian-blur`: Gaussian blur of a score map.

use crate::max_of;
use anoflow_sdk::prelude::*;

pub struct GaussianBlur;

/// Params of `gaussian-blur`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GaussianBlurConfig {
    /// standard deviation in pixels (0: unchanged)
    #[serde(default = "default_sigma")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub sigma: f64,
}

fn default_sigma() -> f64 {
    4.0
}

impl StagePlugin for GaussianBlur {
    type Config = GaussianBlurConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "gaussian-blur",
            "Gaussian blur of a score map (scipy.ndimage.gaussian_filter, truncate 4)",
        )
        .input("score", ValueKind::ScoreMap, "score map")
        .output_same_size("score", ValueKind::ScoreMap, "score", "blurred score map, same size")
        .output("image_score", ValueKind::Scalar, "maximum of the blurred map")
    }

    fn create(config: GaussianBlurConfig, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        Ok(Box::new(BlurStage { sigma: config.sigma as f32 }))
    }
}

struct BlurStage {
    sigma: f32,
}

impl Map for BlurStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let s = sample.score_map("score")?;
        let out = anoflow_imaging::gaussian_blur(s.data(), s.height(), s.width(), self.sigma)?;
        let image_score = max_of(&out);
        Ok(Outputs::new()
            .with("score", ScoreMap::new(s.height() as u32, s.width() as u32, out)?)
            .with("image_score", image_score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    fn map(h: usize, w: usize, f: impl Fn(usize) -> f32) -> ScoreMap {
        ScoreMap::new(h as u32, w as u32, (0..h * w).map(f).collect()).unwrap()
    }

    #[test]
    fn blur_spreads_an_impulse_and_keeps_mass() {
        let h = StageHarness::new::<GaussianBlur>(json!({"sigma": 4})).unwrap();
        let m = map(224, 224, |i| if i == 100 * 224 + 100 { 1.0 } else { 0.0 });
        let out = h.process(&meta("t"), inputs(vec![("score", m.into())])).unwrap();
        let s = out.score_map("score");
        assert!((s.data().iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!((s.get(100, 100) - 1.0 / (2.0 * std::f32::consts::PI * 16.0)).abs() < 1e-4, "{}", s.get(100, 100));
        assert!(s.get(100, 104) < s.get(100, 100) && s.get(100, 104) > 0.0);
        assert_eq!(out.scalar("image_score"), f64::from(s.get(100, 100)));
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        let err = StageHarness::new::<GaussianBlur>(json!({"sigma": -1})).err().unwrap();
        assert!(err.message.contains("param `sigma`: -1 is out of range"), "{err}");
        let err = StageHarness::new::<GaussianBlur>(json!({"sigm": 1})).err().unwrap();
        assert!(err.message.contains("unknown param `sigm` (did you mean `sigma`?)"), "{err}");
    }
}
