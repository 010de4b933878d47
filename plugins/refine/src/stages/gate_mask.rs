//! `gate-mask` (fitted, on nominal validation data): an empty mask when the image score lies
//! within the nominal range learned on validation, the mask unchanged otherwise.

use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

/// The `gate-mask` stage type.
pub struct GateMask;

/// Params of `gate-mask`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateMaskConfig {
    /// The nominal range: up to `factor` x the largest fit-split image score (`{ kind: max,
    /// factor }`), or up to mean + `k` std (`{ kind: mean-std, k }`).
    #[serde(default)]
    pub rule: GateRule,
}

/// How `gate-mask` learns the nominal range of image scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum GateRule {
    /// Up to `factor` x the largest fit-split image score.
    Max {
        /// Multiplier of the largest fit-split image score.
        #[serde(default = "one")]
        factor: f64,
    },
    /// Up to mean + `k` std of the fit-split image scores.
    MeanStd {
        /// Number of standard deviations.
        #[serde(default = "three")]
        #[schemars(range(min = 0.0))]
        k: f64,
    },
}

impl Default for GateRule {
    fn default() -> Self {
        GateRule::Max { factor: one() }
    }
}

fn one() -> f64 {
    1.0
}

fn three() -> f64 {
    3.0
}

/// The saved state of `gate-mask` (SDK state format) and the layout of its sections.
const GATE_STATE: &str = "gate-mask";
const GATE_STATE_VERSION: u32 = 1;

struct GateMaskStage {
    node: String,
    rule: GateRule,
    seen: Vec<f64>,
    threshold: Option<f64>,
}

impl GateMaskStage {
    fn rule_name(&self) -> &'static str {
        match self.rule {
            GateRule::Max { .. } => "max",
            GateRule::MeanStd { .. } => "mean-std",
        }
    }
}

impl StagePlugin for GateMask {
    type Config = GateMaskConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "gate-mask",
            "image-level gate: an empty mask when the image score is within the nominal range learned on the fit \
             split (nominal validation images), the mask unchanged otherwise",
        )
        .input("mask", ValueKind::Mask, "binary mask from any binarizer")
        .input("image_score", ValueKind::Scalar, "the scorer's image-level score")
        .output("mask", ValueKind::Mask, "the mask, or an empty one when the image looks nominal")
    }

    fn create(config: GateMaskConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(GateMaskStage {
            node: ctx.node_id.to_string(),
            rule: config.rule,
            seen: Vec::new(),
            threshold: None,
        }))
    }
}

fn finite_scalar(sample: &Sample<'_>, node: &str) -> StageResult<f64> {
    let v = sample.scalar("image_score")?;
    if !v.is_finite() {
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: image_score is {v}, expected a finite number",
            sample.meta.id
        )));
    }
    Ok(v)
}

impl Fitted for GateMaskStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        self.seen.push(finite_scalar(sample, &self.node)?);
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        if self.seen.is_empty() {
            return Err(StageError::invalid_input(format!(
                "node `{}`: the fit split held no image score to learn the nominal range from",
                self.node
            )));
        }
        let n = self.seen.len() as f64;
        self.threshold = Some(match self.rule {
            GateRule::Max { factor } => factor * self.seen.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            GateRule::MeanStd { k } => {
                let mean = self.seen.iter().sum::<f64>() / n;
                let var = self.seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                mean + k * var.sqrt()
            }
        });
        self.seen = Vec::new();
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let t = self.threshold.ok_or_else(|| {
            StageError::internal(format!("node `{}`: used before it was fitted (no fit split observed?)", self.node))
        })?;
        let mask = sample.mask("mask")?;
        let out = if finite_scalar(sample, &self.node)? > t {
            mask.clone()
        } else {
            Mask::zeros(mask.height() as u32, mask.width() as u32)?
        };
        Ok(Outputs::new().with("mask", out))
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let threshold =
            self.threshold.ok_or_else(|| StageError::internal(format!("node `{}`: not fitted", self.node)))?;
        StateWriter::new(GATE_STATE, GATE_STATE_VERSION)
            .text("rule", self.rule_name())
            .f64("threshold", &[], &[threshold])
            .finish()
            .map_err(|e| StageError::from(e).context(format!("node `{}`", self.node)))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let unreadable = |e: StateError| StageError::from(e).context(format!("node `{}`", self.node));
        let r = StateReader::parse(state, GATE_STATE, GATE_STATE_VERSION).map_err(unreadable)?;
        let rule = r.text("rule").map_err(unreadable)?;
        let threshold = r.scalar::<f64>("threshold").map_err(unreadable)?;
        if rule != self.rule_name() || !threshold.is_finite() {
            return Err(StageError::invalid_input(format!(
                "node `{}`: saved gate state is for rule `{rule}` (threshold {threshold}), expected rule `{}`",
                self.node,
                self.rule_name()
            )));
        }
        self.threshold = Some(threshold);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::blob_mask;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    #[test]
    fn gate_empties_masks_of_images_in_the_nominal_range() {
        let mut h = StageHarness::new::<GateMask>(json!({"rule": {"kind": "max", "factor": 1.1}})).unwrap();
        let fit: Vec<_> = [1.0, 2.0, 1.5]
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                (meta(&format!("v{i}")), inputs(vec![("mask", blob_mask().into()), ("image_score", Value::Scalar(s))]))
            })
            .collect();
        h.fit(fit).unwrap();
        let run = |h: &StageHarness, s: f64| {
            h.process(&meta("t"), inputs(vec![("mask", blob_mask().into()), ("image_score", Value::Scalar(s))]))
                .unwrap()
                .mask("mask")
                .count_ones()
        };
        assert_eq!(run(&h, 2.1), 0, "within 1.1 x the validation maximum");
        assert_eq!(run(&h, 2.3), blob_mask().count_ones());
        let mut fresh = StageHarness::new::<GateMask>(json!({"rule": {"kind": "max", "factor": 1.1}})).unwrap();
        fresh.load_state(h.save_state().unwrap()).unwrap();
        assert_eq!(run(&fresh, 2.3), blob_mask().count_ones());
        let mut other = StageHarness::new::<GateMask>(json!({"rule": {"kind": "mean-std"}})).unwrap();
        assert!(other.load_state(h.save_state().unwrap()).is_err());
        let bad = h
            .process(&meta("t9"), inputs(vec![("mask", blob_mask().into()), ("image_score", Value::Scalar(f64::NAN))]));
        assert!(bad.unwrap_err().message.contains("sample `t9`"));
    }

    #[test]
    fn gate_bad_params_are_refused_naming_them() {
        for (params, want) in [
            (json!({"rule": {"kind": "max", "k": 2}}), "unknown param `rule.k`"),
            (json!({"rule": {"kind": "mean-std", "k": -1}}), "param `rule.k`: -1 is out of range"),
            (json!({"rule": {"kind": "median"}}), "param `rule.kind`: `median` is not one of max, mean-std"),
        ] {
            let err = StageHarness::new::<GateMask>(params).err().expect("refused");
            assert!(err.message.contains(want), "{err}");
        }
    }

    #[test]
    fn gate_rule_defaults_to_max_factor_1() {
        let g: GateMaskConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(g.rule, GateRule::Max { factor: 1.0 });
    }
}
