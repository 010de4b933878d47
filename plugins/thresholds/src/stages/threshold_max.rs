//! `threshold-max`: the largest fit-split pixel score.

use anoflow_sdk::prelude::*;

use crate::global::{GlobalRule, GlobalStage};

/// `threshold-max`.
pub struct ThresholdMax;
impl StagePlugin for ThresholdMax {
    type Config = NoParams;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("threshold-max", "one threshold = the largest pixel score of the fit split")
            .input("score", ValueKind::ScoreMap, "anomaly score map")
            .output_same_size("mask", ValueKind::Mask, "score", "score > threshold")
    }
    fn create(_config: NoParams, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(GlobalStage::boxed(&ctx.node_id, GlobalRule::Max, 0.0, 0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use anoflow_sdk::harness::StageHarness;
    use serde_json::json;

    #[test]
    fn max_is_the_largest_fit_pixel() {
        let maps: Vec<ScoreMap> = (0..3).map(map).collect();
        let mut all: Vec<f32> = maps.iter().flat_map(|m| m.data().to_vec()).collect();
        all.sort_by(f32::total_cmp);
        let h = fit::<ThresholdMax>(json!({}), &maps);
        assert!(maps.iter().all(|m| !mask_of(&h, m).contains(&1)), "nothing on the fit split exceeds its maximum");
        let mut hot = map(0).data().to_vec();
        hot[7] = *all.last().unwrap() + 0.5;
        let hot = ScoreMap::new(224, 224, hot).unwrap();
        assert_eq!(mask_of(&h, &hot).iter().filter(|&&v| v == 1).count(), 1);
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        let err = StageHarness::new::<ThresholdMax>(json!({"k": 3})).err().expect("refused");
        assert!(err.message.contains("unknown param `k`"), "{err}");
    }
}
