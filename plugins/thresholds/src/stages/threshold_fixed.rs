//! `threshold-fixed`: a constant threshold, no fitting.

use anoflow_sdk::prelude::*;

use crate::common::{binarize, finite_scores};

/// `threshold-fixed`: a constant threshold, no fitting. Turns any score map (a TTT4AS
/// decision map, its pseudo-label map, a normalized map) into a mask, e.g. to measure how
/// many anomalous pseudo-labels fall inside the ground truth (`value: 0.5` on `pseudo_labels`).
pub struct ThresholdFixed;

struct FixedStage {
    node: String,
    value: f64,
}

impl Map for FixedStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        binarize(finite_scores(sample, &self.node)?, |_| self.value)
    }
}

/// Params of `threshold-fixed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedConfig {
    /// The threshold.
    #[serde(default)]
    pub value: f64,
}

impl StagePlugin for ThresholdFixed {
    type Config = FixedConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("threshold-fixed", "mask = score > a given constant (no fitting)")
            .input("score", ValueKind::ScoreMap, "any score map")
            .output_same_size("mask", ValueKind::Mask, "score", "score > value")
    }
    fn create(config: FixedConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let value = config.value;
        if !value.is_finite() {
            return Err(StageError::invalid_param(format!("node `{}`: param `value` must be finite", ctx.node_id)));
        }
        Ok(Box::new(FixedStage { node: ctx.node_id.to_string(), value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    #[test]
    fn fixed_threshold_binarizes_pseudo_label_maps() {
        let labels: Vec<f32> = (0..224 * 224).map(|i| [1.0, -1.0, 0.0][i % 3]).collect();
        let h = StageHarness::new::<ThresholdFixed>(json!({"value": 0.5})).unwrap();
        let out = h.process(&meta("x"), inputs(vec![("score", ScoreMap::new(224, 224, labels).unwrap().into())]));
        let mask = out.unwrap().mask("mask").data().to_vec();
        assert!(mask.iter().enumerate().all(|(i, &m)| m == u8::from(i % 3 == 0)));
        assert!(StageHarness::new::<ThresholdFixed>(json!({"value": "high"})).is_err());
    }
}
