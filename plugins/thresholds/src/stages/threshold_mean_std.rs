//! `threshold-mean-std`: one global threshold, mean + k * std over every fit-split pixel (THR, k = 3).

use anoflow_sdk::prelude::*;

use crate::global::{GlobalRule, GlobalStage};

/// `threshold-mean-std`.
pub struct ThresholdMeanStd;

/// Params of `threshold-mean-std`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeanStdConfig {
    /// Number of standard deviations above the mean.
    #[serde(default = "three")]
    #[schemars(range(min = 0.0))]
    pub k: f64,
}

impl StagePlugin for ThresholdMeanStd {
    type Config = MeanStdConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "threshold-mean-std",
            "THR baseline: one threshold = mean + k * std of every pixel of the fit split's score maps",
        )
        .input("score", ValueKind::ScoreMap, "anomaly score map")
        .output_same_size("mask", ValueKind::Mask, "score", "score > threshold")
    }
    fn create(config: MeanStdConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(GlobalStage::boxed(&ctx.node_id, GlobalRule::MeanStd, config.k, 0.0, 1.0))
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
    fn mean_std_matches_a_direct_f64_computation_and_round_trips() {
        let maps: Vec<ScoreMap> = (0..6).map(map).collect();
        let all: Vec<f64> = maps.iter().flat_map(|m| m.data().iter().map(|&v| f64::from(v))).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let std = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        let h = fit::<ThresholdMeanStd>(json!({"k": 1.5}), &maps);
        let saved = crate::common::load_threshold("t", "threshold-mean-std", &h.save_state().unwrap()).unwrap();
        assert!((saved - (mean + 1.5 * std)).abs() < 1e-9);
        let probe = map(99);
        let mask = mask_of(&h, &probe);
        let (below, above) = bracket(&probe, &mask);
        assert!(f64::from(below) <= mean + 1.5 * std && f64::from(above) > mean + 1.5 * std);

        let mut fresh = StageHarness::new::<ThresholdMeanStd>(json!({"k": 1.5})).unwrap();
        fresh.load_state(h.save_state().unwrap()).unwrap();
        assert_eq!(mask_of(&fresh, &probe), mask);
        let mut wrong = StageHarness::new::<crate::ThresholdMax>(json!({})).unwrap();
        assert!(wrong.load_state(h.save_state().unwrap()).is_err());
    }

    #[test]
    fn unfitted_or_nan_inputs_are_errors() {
        let h = StageHarness::new::<ThresholdMeanStd>(json!({})).unwrap();
        assert!(h.process(&meta("x"), inputs(vec![("score", map(1).into())])).is_err());
        let mut h = StageHarness::new::<ThresholdMeanStd>(json!({})).unwrap();
        let mut d = vec![0.0f32; 224 * 224];
        d[224 + 3] = f32::NAN;
        let err =
            h.fit(vec![(meta("v9"), inputs(vec![("score", ScoreMap::new(224, 224, d).unwrap().into())]))]).unwrap_err();
        assert!(err.message.contains("sample `v9`") && err.message.contains("pixel (y 1, x 3)"), "{err}");
        let mut h = StageHarness::new::<ThresholdMeanStd>(json!({})).unwrap();
        assert!(h.fit(vec![]).is_err());
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        refused::<ThresholdMeanStd>(json!({"k": -1}), "param `k`: -1 is out of range");
        refused::<ThresholdMeanStd>(json!({"kk": 1}), "unknown param `kk` (did you mean `k`?)");
    }
}
