//! `threshold-oracle`: the F1-optimal global threshold chosen WITH the ground truth of the
//! split it is fitted on (an upper bound, not deployable).

use anoflow_sdk::prelude::*;

use anoflow_sdk::state::{StateReader, StateWriter};

use crate::common::{
    bad_state, binarize, f1_optimal_threshold, finite_scores, load_threshold, not_fitted, STATE_VERSION,
};

/// `threshold-oracle`.
pub struct ThresholdOracle;

const ORACLE_NOTE: &str =
    "ORACLE: F1-optimal threshold chosen with the ground truth of the data it is applied to; not deployable";

#[derive(Serialize, Deserialize)]
struct OracleState {
    oracle: bool,
    threshold: f64,
    fit_f1: f64,
}

struct OracleStage {
    node: String,
    pairs: Vec<(f32, bool)>,
    state: Option<OracleState>,
}

impl Fitted for OracleStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let score = finite_scores(sample, &self.node)?;
        let gt = sample.mask("gt").map_err(|e| e.context(format!("node `{}` (ORACLE needs `gt`)", self.node)))?;
        if (gt.height(), gt.width()) != (score.height(), score.width()) {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: gt is {}x{} but the score map is {}x{}",
                self.node,
                sample.meta.id,
                gt.height(),
                gt.width(),
                score.height(),
                score.width()
            )));
        }
        self.pairs.extend(score.data().iter().zip(gt.data()).map(|(&s, &g)| (s, g != 0)));
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        if self.pairs.is_empty() {
            return Err(StageError::invalid_input(format!("node `{}`: the fit split held no score map", self.node)));
        }
        let (threshold, fit_f1) = f1_optimal_threshold(std::mem::take(&mut self.pairs));
        self.state = Some(OracleState { oracle: true, threshold, fit_f1 });
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let t = self.state.as_ref().ok_or_else(|| not_fitted(&self.node))?.threshold;
        let mut out = binarize(finite_scores(sample, &self.node)?, |_| t)?;
        out.push("note", ORACLE_NOTE.to_string());
        Ok(out)
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let s = self.state.as_ref().ok_or_else(|| not_fitted(&self.node))?;
        StateWriter::new("threshold-oracle", STATE_VERSION)
            .f64("threshold", &[], &[s.threshold])
            .f64("fit_f1", &[], &[s.fit_f1])
            .finish()
            .map_err(|e| bad_state(&self.node, e))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let threshold = load_threshold(&self.node, "threshold-oracle", state)?;
        let r = StateReader::parse(state, "threshold-oracle", STATE_VERSION).map_err(|e| bad_state(&self.node, e))?;
        let fit_f1 = r.scalar::<f64>("fit_f1").map_err(|e| bad_state(&self.node, e))?;
        self.state = Some(OracleState { oracle: true, threshold, fit_f1 });
        Ok(())
    }
}

impl StagePlugin for ThresholdOracle {
    type Config = NoParams;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "threshold-oracle",
            "ORACLE (not deployable): the F1-optimal global threshold, chosen WITH ground truth (fit it on test)",
        )
        .input("score", ValueKind::ScoreMap, "anomaly score map")
        .optional_input("gt", ValueKind::Mask, "ground-truth mask; required while fitting (ORACLE)")
        .output_same_size("mask", ValueKind::Mask, "score", "ORACLE mask: score > the F1-optimal threshold")
        .output("note", ValueKind::Text, "says ORACLE: this mask used the ground truth")
    }
    fn create(_config: NoParams, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(OracleStage { node: ctx.node_id.to_string(), pairs: Vec::new(), state: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    #[test]
    fn oracle_picks_the_f1_optimal_threshold_and_says_oracle() {
        assert!(ThresholdOracle::descriptor().summary.contains("ORACLE"));
        // Scores 0..1 along x; ground truth is x >= 150 plus noise pixels: best cut near 150.
        let score = ScoreMap::new(224, 224, (0..224 * 224).map(|i| (i % 224) as f32 / 224.0).collect()).unwrap();
        let gt_data: Vec<u8> = (0..224 * 224).map(|i| u8::from(i % 224 >= 150 || i % 97 == 0)).collect();
        let gt = Mask::new(224, 224, gt_data.clone()).unwrap();
        let mut h = StageHarness::new::<ThresholdOracle>(json!({})).unwrap();
        h.fit(vec![(meta("t0"), inputs(vec![("score", score.clone().into()), ("gt", gt.into())]))]).unwrap();
        let out = h.process(&meta("t0"), inputs(vec![("score", score.clone().into())])).unwrap();
        let mask = out.mask("mask").data().to_vec();
        assert!(matches!(out.get("note"), Some(Value::Text(t)) if t.starts_with("ORACLE")));
        let f1 = |m: &[u8]| {
            let tp = m.iter().zip(&gt_data).filter(|(&a, &b)| a == 1 && b == 1).count() as f64;
            let fp = m.iter().zip(&gt_data).filter(|(&a, &b)| a == 1 && b == 0).count() as f64;
            let fneg = m.iter().zip(&gt_data).filter(|(&a, &b)| a == 0 && b == 1).count() as f64;
            2.0 * tp / (2.0 * tp + fp + fneg)
        };
        let best = f1(&mask);
        // No column cut does better (brute force over every cut).
        for cut in 0..224 {
            let m: Vec<u8> = (0..224 * 224).map(|i| u8::from(i % 224 >= cut)).collect();
            assert!(f1(&m) <= best + 1e-12, "cut {cut}: {} > {best}", f1(&m));
        }
        let err = StageHarness::new::<ThresholdOracle>(json!({}))
            .unwrap()
            .fit(vec![(meta("t1"), inputs(vec![("score", score.into())]))])
            .unwrap_err();
        assert!(err.message.contains("ORACLE needs `gt`"), "{err}");
    }
}
