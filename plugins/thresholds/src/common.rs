//! What every threshold stage shares: exact moments, the F1-optimal cut, input checks,
//! binarization and the one-threshold saved state.

use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateReader, StateWriter};
use serde::{Deserialize, Serialize};

/// Count, mean and sum of squared deviations of a set of values (f64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// Two-pass moments of one map.
    pub fn of(values: &[f32]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let m2 = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum();
        Self { n, mean, m2 }
    }

    /// Chan et al.'s pairwise merge.
    pub fn merge(self, o: Self) -> Self {
        if self.n == 0.0 {
            return o;
        }
        if o.n == 0.0 {
            return self;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        Self { n, mean: self.mean + delta * o.n / n, m2: self.m2 + o.m2 + delta * delta * self.n * o.n / n }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.n > 0.0 {
            (self.m2 / self.n).sqrt()
        } else {
            0.0
        }
    }
}

/// The threshold of `score > t` that maximizes pixel F1 over `(score, gt)` pairs, and that F1.
/// Ties in score are kept together; `t` is midway between the last kept and the next value.
pub fn f1_optimal_threshold(mut pairs: Vec<(f32, bool)>) -> (f64, f64) {
    pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut best = (f64::from(pairs.first().map_or(0.0, |p| p.0)) + 1.0, 0.0);
    let mut i = 0;
    while i < pairs.len() {
        let v = pairs[i].0;
        while i < pairs.len() && pairs[i].0 == v {
            if pairs[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let f1 = if tp > 0.0 { 2.0 * tp / (2.0 * tp + fp + (positives - tp)) } else { 0.0 };
        if f1 > best.1 {
            let next = pairs.get(i).map_or(f64::from(v) - 1.0, |p| f64::from(p.0));
            best = ((f64::from(v) + next) / 2.0, f1);
        }
    }
    best
}

pub(crate) fn finite_scores<'a>(sample: &Sample<'a>, node: &str) -> StageResult<&'a ScoreMap> {
    let score = sample.score_map("score")?;
    if let Some(i) = score.data().iter().position(|v| !v.is_finite()) {
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: score map holds {} at pixel (y {}, x {})",
            sample.meta.id,
            score.data()[i],
            i / score.width(),
            i % score.width()
        )));
    }
    Ok(score)
}

pub(crate) fn binarize(score: &ScoreMap, threshold: impl Fn(usize) -> f64) -> StageResult<Outputs> {
    let data = score.data().iter().enumerate().map(|(i, &v)| u8::from(f64::from(v) > threshold(i))).collect();
    Ok(Outputs::new().with("mask", Mask::new(score.height() as u32, score.width() as u32, data)?))
}

pub(crate) fn not_fitted(node: &str) -> StageError {
    StageError::internal(format!("node `{node}`: used before it was fitted (no fit split observed?)"))
}

pub(crate) fn bad_state(node: &str, e: impl std::fmt::Display) -> StageError {
    StageError::invalid_input(format!("node `{node}`: saved threshold state is unreadable: {e}"))
}

/// The layout of every threshold stage's saved state (SDK state format).
pub(crate) const STATE_VERSION: u32 = 1;

/// A saved state holding one finite `threshold`, written by `stage`.
pub(crate) fn save_threshold(node: &str, stage: &str, t: f64) -> StageResult<Vec<u8>> {
    StateWriter::new(stage, STATE_VERSION).f64("threshold", &[], &[t]).finish().map_err(|e| bad_state(node, e))
}

pub(crate) fn load_threshold(node: &str, stage: &str, state: &[u8]) -> StageResult<f64> {
    let r = StateReader::parse(state, stage, STATE_VERSION).map_err(|e| bad_state(node, e))?;
    let t = r.scalar::<f64>("threshold").map_err(|e| bad_state(node, e))?;
    if !t.is_finite() {
        return Err(bad_state(node, format!("threshold {t}")));
    }
    Ok(t)
}
