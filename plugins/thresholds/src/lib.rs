//! Threshold baselines: fitted stages that learn one threshold (or one per pixel) from the
//! score maps of their fit split and binarize every later map with `score > threshold`.
//!
//! - `threshold-mean-std`: global mean + k * std over every validation pixel (THR, k = 3);
//! - `threshold-pixelwise`: per-pixel mean + k * std map (all maps the same size);
//! - `threshold-percentile`: a percentile of all validation pixels, times a factor (the VAND
//!   4.0 challenge winner's rule is the 95th percentile x 1.421);
//! - `threshold-max`: the validation maximum;
//! - `threshold-oracle`: the F1-optimal global threshold chosen WITH the ground truth of the
//!   split it is fitted on (normally test). It is an upper bound for global thresholds, not a
//!   deployable method, and says ORACLE in its summary, its ports and its `note` output.
//!
//! - `mebin` (fitted, [`mebin`]): MEBin's per-image stable-component threshold, its sweep
//!   floored at the smallest peak of the nominal fit maps.
//!
//! Statistics are exact: per-map two-pass mean and squared deviations in f64, merged across
//! maps with Chan's formula (order-independent up to rounding); the percentile is taken over
//! every pooled fit-split pixel (no histogram).

pub mod mebin;

pub use anoflow_imaging::stats::percentile;
use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateReader, StateWriter};
use serde::{Deserialize, Serialize};

pub use mebin::Mebin;

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

fn finite_scores<'a>(sample: &Sample<'a>, node: &str) -> StageResult<&'a ScoreMap> {
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

fn binarize(score: &ScoreMap, threshold: impl Fn(usize) -> f64) -> StageResult<Outputs> {
    let data = score.data().iter().enumerate().map(|(i, &v)| u8::from(f64::from(v) > threshold(i))).collect();
    Ok(Outputs::new().with("mask", Mask::new(score.height() as u32, score.width() as u32, data)?))
}

fn not_fitted(node: &str) -> StageError {
    StageError::internal(format!("node `{node}`: used before it was fitted (no fit split observed?)"))
}

fn bad_state(node: &str, e: impl std::fmt::Display) -> StageError {
    StageError::invalid_input(format!("node `{node}`: saved threshold state is unreadable: {e}"))
}

/// The layout of every threshold stage's saved state (SDK state format).
const STATE_VERSION: u32 = 1;

/// A saved state holding one finite `threshold`, written by `stage`.
fn save_threshold(node: &str, stage: &str, t: f64) -> StageResult<Vec<u8>> {
    StateWriter::new(stage, STATE_VERSION).f64("threshold", &[], &[t]).finish().map_err(|e| bad_state(node, e))
}

fn load_threshold(node: &str, stage: &str, state: &[u8]) -> StageResult<f64> {
    let r = StateReader::parse(state, stage, STATE_VERSION).map_err(|e| bad_state(node, e))?;
    let t = r.scalar::<f64>("threshold").map_err(|e| bad_state(node, e))?;
    if !t.is_finite() {
        return Err(bad_state(node, format!("threshold {t}")));
    }
    Ok(t)
}

/// A stage with one global threshold computed from what it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobalRule {
    MeanStd,
    Percentile,
    Max,
}

struct GlobalStage {
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
    fn boxed(node: &str, rule: GlobalRule, k: f64, p: f64, factor: f64) -> Box<dyn Fitted> {
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

fn three() -> f64 {
    3.0
}

fn one() -> f64 {
    1.0
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

anoflow_sdk::export_plugin! {
    stages: [ThresholdMeanStd, ThresholdPixelwise, ThresholdPercentile, ThresholdMax, ThresholdOracle, ThresholdFixed, Mebin]
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    /// Deterministic 224x224 validation-like maps with a per-pixel ramp.
    fn map(seed: u32) -> ScoreMap {
        let data = (0..224 * 224u32)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 8;
                (x % 1000) as f32 / 1000.0 + (i % 224) as f32 * 0.001
            })
            .collect();
        ScoreMap::new(224, 224, data).unwrap()
    }

    fn fit<T: StagePlugin>(params: serde_json::Value, maps: &[ScoreMap]) -> StageHarness {
        let mut h = StageHarness::new::<T>(params).unwrap();
        let samples =
            maps.iter().enumerate().map(|(i, m)| (meta(&format!("v{i}")), inputs(vec![("score", m.clone().into())])));
        h.fit(samples.collect()).unwrap();
        h
    }

    fn mask_of(h: &StageHarness, m: &ScoreMap) -> Vec<u8> {
        h.process(&meta("t"), inputs(vec![("score", m.clone().into())])).unwrap().mask("mask").data().to_vec()
    }

    /// The threshold implied by a mask: the largest value masked 0 and the smallest masked 1.
    fn bracket(m: &ScoreMap, mask: &[u8]) -> (f32, f32) {
        let below = m.data().iter().zip(mask).filter(|(_, &k)| k == 0).map(|(&v, _)| v).fold(f32::MIN, f32::max);
        let above = m.data().iter().zip(mask).filter(|(_, &k)| k == 1).map(|(&v, _)| v).fold(f32::MAX, f32::min);
        (below, above)
    }

    #[test]
    fn mean_std_matches_a_direct_f64_computation_and_round_trips() {
        let maps: Vec<ScoreMap> = (0..6).map(map).collect();
        let all: Vec<f64> = maps.iter().flat_map(|m| m.data().iter().map(|&v| f64::from(v))).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let std = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        let h = fit::<ThresholdMeanStd>(json!({"k": 1.5}), &maps);
        let state: serde_json::Value = serde_json::from_slice(&h.save_state().unwrap()).unwrap();
        assert!((state["threshold"].as_f64().unwrap() - (mean + 1.5 * std)).abs() < 1e-9);
        let probe = map(99);
        let mask = mask_of(&h, &probe);
        let (below, above) = bracket(&probe, &mask);
        assert!(f64::from(below) <= mean + 1.5 * std && f64::from(above) > mean + 1.5 * std);

        let mut fresh = StageHarness::new::<ThresholdMeanStd>(json!({"k": 1.5})).unwrap();
        fresh.load_state(h.save_state().unwrap()).unwrap();
        assert_eq!(mask_of(&fresh, &probe), mask);
        let mut wrong = StageHarness::new::<ThresholdMax>(json!({})).unwrap();
        assert!(wrong.load_state(h.save_state().unwrap()).is_err());
    }

    #[test]
    fn percentile_and_max() {
        let maps: Vec<ScoreMap> = (0..3).map(map).collect();
        let mut all: Vec<f32> = maps.iter().flat_map(|m| m.data().to_vec()).collect();
        all.sort_by(f32::total_cmp);
        let h = fit::<ThresholdPercentile>(json!({"percentile": 99}), &maps);
        let t: serde_json::Value = serde_json::from_slice(&h.save_state().unwrap()).unwrap();
        let rank = 0.99 * (all.len() - 1) as f64;
        let (lo, hi) = (f64::from(all[rank.floor() as usize]), f64::from(all[rank.ceil() as usize]));
        let expected = lo + (rank - rank.floor()) * (hi - lo);
        assert!((t["threshold"].as_f64().unwrap() - expected).abs() < 1e-9);
        // The fit maps themselves: about 1% of pixels above.
        let above: usize = maps.iter().map(|m| mask_of(&h, m).iter().filter(|&&v| v == 1).count()).sum();
        assert!((above as f64 / all.len() as f64 - 0.01).abs() < 0.001, "{above}");

        let h = fit::<ThresholdMax>(json!({}), &maps);
        assert!(maps.iter().all(|m| !mask_of(&h, m).contains(&1)), "nothing on the fit split exceeds its maximum");
        let mut hot = map(0).data().to_vec();
        hot[7] = *all.last().unwrap() + 0.5;
        let hot = ScoreMap::new(224, 224, hot).unwrap();
        assert_eq!(mask_of(&h, &hot).iter().filter(|&&v| v == 1).count(), 1);
    }

    #[test]
    fn percentile_times_factor() {
        let maps: Vec<ScoreMap> = (0..3).map(map).collect();
        let threshold = |h: &StageHarness| -> f64 {
            let state: serde_json::Value = serde_json::from_slice(&h.save_state().unwrap()).unwrap();
            state["threshold"].as_f64().unwrap()
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

    #[test]
    fn fixed_threshold_binarizes_pseudo_label_maps() {
        let labels: Vec<f32> = (0..224 * 224).map(|i| [1.0, -1.0, 0.0][i % 3]).collect();
        let h = StageHarness::new::<ThresholdFixed>(json!({"value": 0.5})).unwrap();
        let out = h.process(&meta("x"), inputs(vec![("score", ScoreMap::new(224, 224, labels).unwrap().into())]));
        let mask = out.unwrap().mask("mask").data().to_vec();
        assert!(mask.iter().enumerate().all(|(i, &m)| m == u8::from(i % 3 == 0)));
        assert!(StageHarness::new::<ThresholdFixed>(json!({"value": "high"})).is_err());
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
        let refused = |err: Option<StageError>, want: &str| {
            let err = err.expect("refused");
            assert!(err.message.contains(want), "{err}");
        };
        refused(StageHarness::new::<ThresholdMeanStd>(json!({"k": -1})).err(), "param `k`: -1 is out of range");
        refused(
            StageHarness::new::<ThresholdMeanStd>(json!({"kk": 1})).err(),
            "unknown param `kk` (did you mean `k`?)",
        );
        refused(
            StageHarness::new::<ThresholdPercentile>(json!({"percentile": 101})).err(),
            "param `percentile`: 101 is out of range",
        );
        refused(StageHarness::new::<ThresholdMax>(json!({"k": 3})).err(), "unknown param `k`");
        refused(
            StageHarness::new::<Mebin>(json!({"range": "batch"})).err(),
            "param `range`: `batch` is not one of nominal, own",
        );
        refused(
            StageHarness::new::<Mebin>(json!({"sample_rate": 256})).err(),
            "param `sample_rate`: 256 is out of range",
        );
    }
}
