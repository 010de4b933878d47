//! `threshold-percentile`: a percentile of every pooled fit-split pixel, times a factor.

use anoflow_sdk::prelude::*;

use crate::global::{GlobalRule, GlobalStage};

/// `threshold-percentile`.
pub struct ThresholdPercentile;

/// Params of `threshold-percentile`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PercentileConfig {
    /// Percentile (0-100), linear interpolation.
    #[serde(default = "p99")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percentile: f64,
    /// The threshold is percentile x factor (> 0); e.g. percentile 95, factor 1.421 (VAND 4.0
    /// winner).
    #[serde(default = "one")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub factor: f64,
}

fn p99() -> f64 {
    99.0
}

impl StagePlugin for ThresholdPercentile {
    type Config = PercentileConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "threshold-percentile",
            "one threshold = a percentile of every fit-split pixel score (exact, over all pooled pixels), times a \
             factor",
        )
        .input("score", ValueKind::ScoreMap, "anomaly score map")
        .output_same_size("mask", ValueKind::Mask, "score", "score > threshold")
    }
    fn create(config: PercentileConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(GlobalStage::boxed(&ctx.node_id, GlobalRule::Percentile, 0.0, config.percentile, config.factor))
    }
}

fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use anoflow_sdk::harness::StageHarness;
    use serde_json::json;

    #[test]
    fn percentile_is_exact_over_pooled_pixels() {
        let maps: Vec<ScoreMap> = (0..3).map(map).collect();
        let mut all: Vec<f32> = maps.iter().flat_map(|m| m.data().to_vec()).collect();
        all.sort_by(f32::total_cmp);
        let h = fit::<ThresholdPercentile>(json!({"percentile": 99}), &maps);
        let t = crate::common::load_threshold("t", "threshold-percentile", &h.save_state().unwrap()).unwrap();
        let rank = 0.99 * (all.len() - 1) as f64;
        let (lo, hi) = (f64::from(all[rank.floor() as usize]), f64::from(all[rank.ceil() as usize]));
        let expected = lo + (rank - rank.floor()) * (hi - lo);
        assert!((t - expected).abs() < 1e-9);
        // The fit maps themselves: about 1% of pixels above.
        let above: usize = maps.iter().map(|m| mask_of(&h, m).iter().filter(|&&v| v == 1).count()).sum();
        assert!((above as f64 / all.len() as f64 - 0.01).abs() < 0.001, "{above}");
    }

    #[test]
    fn percentile_times_factor() {
        let maps: Vec<ScoreMap> = (0..3).map(map).collect();
        let threshold = |h: &StageHarness| -> f64 {
            crate::common::load_threshold("t", "threshold-percentile", &h.save_state().unwrap()).unwrap()
        };
        let plain = fit::<ThresholdPercentile>(json!({"percentile": 95}), &maps);
        let scaled = fit::<ThresholdPercentile>(json!({"percentile": 95, "factor": 1.421}), &maps);
        assert!((threshold(&scaled) - 1.421 * threshold(&plain)).abs() < 1e-12);
        // Masks are `score > percentile x factor`, pixel by pixel.
        let tighter = fit::<ThresholdPercentile>(json!({"percentile": 95, "factor": 1.1}), &maps);
        let t = 1.1 * threshold(&plain);
        let probe = map(42);
        let mask = mask_of(&tighter, &probe);
        assert!(mask.iter().zip(probe.data()).all(|(&m, &v)| m == u8::from(f64::from(v) > t)));
        let marked = mask.iter().filter(|&&m| m == 1).count();
        assert!(marked > 0 && marked < mask.len() / 20, "{marked} pixels above 1.1 x p95");
        for bad in [json!({"factor": 0}), json!({"factor": -1.5})] {
            let err = StageHarness::new::<ThresholdPercentile>(bad).err().unwrap();
            assert!(err.message.contains("param `factor`") && err.message.contains("> 0"), "{err}");
        }
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        refused::<ThresholdPercentile>(json!({"percentile": 101}), "param `percentile`: 101 is out of range");
    }
}
