//! `threshold-pixelwise`: a per-pixel mean + k * std threshold map (every map the same size).

use anoflow_sdk::prelude::*;

use anoflow_sdk::state::{StateReader, StateWriter};

use crate::common::{bad_state, binarize, finite_scores, not_fitted, Moments, STATE_VERSION};

/// `threshold-pixelwise`.
pub struct ThresholdPixelwise;

/// Params of `threshold-pixelwise`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PixelwiseConfig {
    /// Number of standard deviations above each pixel's mean.
    #[serde(default = "three")]
    #[schemars(range(min = 0.0))]
    pub k: f64,
}

#[derive(Serialize, Deserialize)]
struct PixelState {
    height: usize,
    width: usize,
    threshold: Vec<f64>,
}

struct PixelwiseStage {
    node: String,
    k: f64,
    size: Option<(usize, usize)>,
    moments: Vec<Moments>,
    threshold: Option<PixelState>,
}

impl PixelwiseStage {
    fn check_size(&self, sample: &Sample<'_>, score: &ScoreMap, expected: (usize, usize)) -> StageResult<()> {
        if (score.height(), score.width()) != expected {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: score map is {}x{}, but the per-pixel threshold map is {}x{}: \
                 every map must have the same size",
                self.node,
                sample.meta.id,
                score.height(),
                score.width(),
                expected.0,
                expected.1
            )));
        }
        Ok(())
    }
}

impl Fitted for PixelwiseStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let score = finite_scores(sample, &self.node)?;
        let size = *self.size.get_or_insert((score.height(), score.width()));
        self.check_size(sample, score, size)?;
        if self.moments.is_empty() {
            self.moments = vec![Moments::default(); size.0 * size.1];
        }
        for (m, &v) in self.moments.iter_mut().zip(score.data()) {
            *m = m.merge(Moments { n: 1.0, mean: f64::from(v), m2: 0.0 });
        }
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        let (height, width) = self.size.ok_or_else(|| {
            StageError::invalid_input(format!("node `{}`: the fit split held no score map", self.node))
        })?;
        let threshold = self.moments.iter().map(|m| m.mean + self.k * m.std()).collect();
        self.threshold = Some(PixelState { height, width, threshold });
        self.moments = Vec::new();
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let t = self.threshold.as_ref().ok_or_else(|| not_fitted(&self.node))?;
        let score = finite_scores(sample, &self.node)?;
        self.check_size(sample, score, (t.height, t.width))?;
        binarize(score, |i| t.threshold[i])
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let t = self.threshold.as_ref().ok_or_else(|| not_fitted(&self.node))?;
        StateWriter::new("threshold-pixelwise", STATE_VERSION)
            .f64("threshold", &[t.height, t.width], &t.threshold)
            .finish()
            .map_err(|e| bad_state(&self.node, e))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let r =
            StateReader::parse(state, "threshold-pixelwise", STATE_VERSION).map_err(|e| bad_state(&self.node, e))?;
        let (dims, threshold) = r.f64_rank("threshold", 2).map_err(|e| bad_state(&self.node, e))?;
        let s = PixelState { height: dims[0], width: dims[1], threshold };
        self.size = Some((s.height, s.width));
        self.threshold = Some(s);
        Ok(())
    }
}

impl StagePlugin for ThresholdPixelwise {
    type Config = PixelwiseConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "threshold-pixelwise",
            "per-pixel threshold map = mean + k * std of each pixel over the fit split's score maps",
        )
        .input("score", ValueKind::ScoreMap, "anomaly score map (every map the same size)")
        .output_same_size("mask", ValueKind::Mask, "score", "score > threshold of that pixel")
    }
    fn create(config: PixelwiseConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(PixelwiseStage {
            node: ctx.node_id.to_string(),
            k: config.k,
            size: None,
            moments: Vec::new(),
            threshold: None,
        }))
    }
}

fn three() -> f64 {
    3.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    #[test]
    fn pixelwise_thresholds_each_pixel_and_rejects_other_sizes() {
        // Pixel 0 varies a lot, pixel 1 not at all.
        let maps: Vec<ScoreMap> = [0.0, 1.0, 2.0, 3.0]
            .iter()
            .map(|&v| {
                let mut d = vec![0.5f32; 224 * 224];
                d[0] = v;
                ScoreMap::new(224, 224, d).unwrap()
            })
            .collect();
        let h = fit::<ThresholdPixelwise>(json!({"k": 1}), &maps);
        // Pixel 0: mean 1.5, std sqrt(1.25) -> threshold 2.618; pixel 1: threshold 0.5.
        let mut probe = vec![0.5f32; 224 * 224];
        probe[0] = 2.6;
        probe[1] = 0.51;
        let mask = mask_of(&h, &ScoreMap::new(224, 224, probe.clone()).unwrap());
        assert_eq!((mask[0], mask[1], mask[2]), (0, 1, 0));
        probe[0] = 2.62;
        assert_eq!(mask_of(&h, &ScoreMap::new(224, 224, probe).unwrap())[0], 1);

        let small = ScoreMap::new(112, 224, vec![0.0; 112 * 224]).unwrap();
        let err = h.process(&meta("odd"), inputs(vec![("score", small.clone().into())])).unwrap_err();
        assert!(err.message.contains("sample `odd`: score map is 112x224") && err.message.contains("224x224"));
        let mut h2 = StageHarness::new::<ThresholdPixelwise>(json!({})).unwrap();
        let err = h2
            .fit(vec![
                (meta("a"), inputs(vec![("score", maps[0].clone().into())])),
                (meta("b"), inputs(vec![("score", small.into())])),
            ])
            .unwrap_err();
        assert!(err.message.contains("sample `b`"), "{err}");
        let mut fresh = StageHarness::new::<ThresholdPixelwise>(json!({"k": 1})).unwrap();
        fresh.load_state(h.save_state().unwrap()).unwrap();
        assert_eq!(mask_of(&fresh, &maps[3]), mask_of(&h, &maps[3]));
    }
}
