//! The fitted stage behind `threshold-mean-std`, `threshold-percentile` and `threshold-max`:
//! one global threshold computed from every fit-split pixel.

use anoflow_sdk::prelude::*;

use crate::common::{binarize, finite_scores, load_threshold, not_fitted, save_threshold, Moments};
use crate::percentile;

/// A stage with one global threshold computed from what it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobalRule {
    MeanStd,
    Percentile,
    Max,
}

pub(crate) struct GlobalStage {
    node: String,
    rule: GlobalRule,
    k: f64,
    p: f64,
    factor: f64,
    moments: Moments,
    values: Vec<f32>,
    max: f32,
    threshold: Option<f64>,
}

impl GlobalStage {
    /// `k` applies to mean-std, `p` and `factor` to percentile.
    pub(crate) fn boxed(node: &str, rule: GlobalRule, k: f64, p: f64, factor: f64) -> Box<dyn Fitted> {
        Box::new(Self {
            node: node.to_string(),
            rule,
            k,
            p,
            factor,
            moments: Moments::default(),
            values: Vec::new(),
            max: f32::NEG_INFINITY,
            threshold: None,
        })
    }

    fn rule_name(&self) -> &'static str {
        match self.rule {
            GlobalRule::MeanStd => "mean-std",
            GlobalRule::Percentile => "percentile",
            GlobalRule::Max => "max",
        }
    }
}

impl Fitted for GlobalStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let score = finite_scores(sample, &self.node)?;
        match self.rule {
            GlobalRule::MeanStd => self.moments = self.moments.merge(Moments::of(score.data())),
            GlobalRule::Percentile => self.values.extend_from_slice(score.data()),
            GlobalRule::Max => self.max = score.data().iter().copied().fold(self.max, f32::max),
        }
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        let empty = match self.rule {
            GlobalRule::MeanStd => self.moments.n == 0.0,
            GlobalRule::Percentile => self.values.is_empty(),
            GlobalRule::Max => self.max == f32::NEG_INFINITY,
        };
        if empty {
            return Err(StageError::invalid_input(format!(
                "node `{}`: the fit split held no score map to learn a threshold from",
                self.node
            )));
        }
        self.threshold = Some(match self.rule {
            GlobalRule::MeanStd => self.moments.mean + self.k * self.moments.std(),
            GlobalRule::Percentile => percentile(&mut self.values, self.p) * self.factor,
            GlobalRule::Max => f64::from(self.max),
        });
        self.values = Vec::new();
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let t = self.threshold.ok_or_else(|| not_fitted(&self.node))?;
        binarize(finite_scores(sample, &self.node)?, |_| t)
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let t = self.threshold.ok_or_else(|| not_fitted(&self.node))?;
        save_threshold(&self.node, &format!("threshold-{}", self.rule_name()), t)
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        self.threshold = Some(load_threshold(&self.node, &format!("threshold-{}", self.rule_name()), state)?);
        Ok(())
    }
}
