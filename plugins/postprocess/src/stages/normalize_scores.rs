//! `normalize-scores`: an affine map of scores fitted on nominal validation maps.

use crate::max_of;
use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

pub struct NormalizeScores;

/// How `normalize-scores` picks its offset and scale (also recorded in the saved state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    #[default]
    MinMax,
    MeanStd,
    MinMedianMax,
}

/// Params of `normalize-scores`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizeScoresConfig {
    /// min-max: a = min, b = max - min over all fit pixels; mean-std: a = mean, b = standard deviation;
    /// min-median-max: a = min, b = median of the fit images' maxima - min (1 = a typical nominal image's
    /// peak, which unlike the overall maximum does not grow with the number of fit images)
    #[serde(default)]
    pub method: Method,
}

impl StagePlugin for NormalizeScores {
    type Config = NormalizeScoresConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "normalize-scores",
            "maps scores to (s - a) / b with a, b fitted on the fit split's maps (min-max, mean/std or min to median image maximum)",
        )
        .input("score", ValueKind::ScoreMap, "score map")
        .output_same_size("score", ValueKind::ScoreMap, "score", "normalized score map")
        .output("image_score", ValueKind::Scalar, "maximum of the normalized map")
    }

    fn create(config: NormalizeScoresConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(NormalizeStage {
            node: ctx.node_id.to_string(),
            method: config.method,
            stats: Stats::default(),
            fitted: None,
        }))
    }
}

/// Running statistics over every pixel of the fit maps.
#[derive(Debug)]
struct Stats {
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    /// Each fit map's maximum.
    image_max: Vec<f64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self { count: 0, sum: 0.0, sum_sq: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, image_max: Vec::new() }
    }
}

/// Median of `v` (mean of the two middle values for an even count); `v` is non-empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The fitted affine map, `(s - offset) / scale`; also the saved state (JSON).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Affine {
    version: u32,
    method: Method,
    offset: f64,
    scale: f64,
}

const STATE_VERSION: u32 = 1;

struct NormalizeStage {
    node: String,
    method: Method,
    stats: Stats,
    fitted: Option<Affine>,
}

impl Fitted for NormalizeStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let s = sample.score_map("score")?;
        // Sums per map in f64, then folded in: keeps precision over many 224x224 maps.
        let (mut sum, mut sum_sq, mut peak) = (0.0f64, 0.0f64, f64::NEG_INFINITY);
        for &v in s.data() {
            if !v.is_finite() {
                return Err(StageError::invalid_input(format!(
                    "node `{}`, sample `{}`: score map holds {v}",
                    self.node, sample.meta.id
                )));
            }
            let v = f64::from(v);
            sum += v;
            sum_sq += v * v;
            peak = peak.max(v);
            self.stats.min = self.stats.min.min(v);
            self.stats.max = self.stats.max.max(v);
        }
        self.stats.sum += sum;
        self.stats.sum_sq += sum_sq;
        self.stats.count += s.data().len() as u64;
        self.stats.image_max.push(peak);
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        let st = &mut self.stats;
        if st.count == 0 {
            return Err(StageError::invalid_input(format!(
                "node `{}`: the fit split delivered no score maps; nothing to normalize by",
                self.node
            )));
        }
        let n = st.count as f64;
        let (offset, scale) = match self.method {
            Method::MinMax => (st.min, st.max - st.min),
            Method::MinMedianMax => (st.min, median(&mut st.image_max) - st.min),
            Method::MeanStd => {
                let mean = st.sum / n;
                (mean, (st.sum_sq / n - mean * mean).max(0.0).sqrt())
            }
        };
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(StageError::invalid_input(format!(
                "node `{}`: every fit score equals {offset}: the {} spread is zero, so scores cannot be normalized",
                self.node,
                match self.method {
                    Method::MinMax => "min-max",
                    Method::MeanStd => "standard-deviation",
                    Method::MinMedianMax => "min to median image maximum",
                }
            )));
        }
        self.fitted = Some(Affine { version: STATE_VERSION, method: self.method, offset, scale });
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let a = self
            .fitted
            .ok_or_else(|| StageError::internal(format!("node `{}`: process called before fitting", self.node)))?;
        let s = sample.score_map("score")?;
        let out: Vec<f32> = s.data().iter().map(|&v| ((f64::from(v) - a.offset) / a.scale) as f32).collect();
        let image_score = max_of(&out);
        Ok(Outputs::new()
            .with("score", ScoreMap::new(s.height() as u32, s.width() as u32, out)?)
            .with("image_score", image_score))
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let a =
            self.fitted.ok_or_else(|| StageError::internal(format!("node `{}`: nothing fitted to save", self.node)))?;
        StateWriter::new("normalize-scores", a.version)
            .json("method", &a.method)
            .f64("offset", &[], &[a.offset])
            .f64("scale", &[], &[a.scale])
            .finish()
            .map_err(|e| StageError::from(e).context(format!("node `{}`", self.node)))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let unreadable = |e: StateError| StageError::from(e).context(format!("node `{}`", self.node));
        let r = StateReader::parse(state, "normalize-scores", STATE_VERSION).map_err(unreadable)?;
        let a = Affine {
            version: r.version(),
            method: r.json("method").map_err(unreadable)?,
            offset: r.scalar("offset").map_err(unreadable)?,
            scale: r.scalar("scale").map_err(unreadable)?,
        };
        if a.version != STATE_VERSION || a.method != self.method || !a.scale.is_finite() || a.scale <= 0.0 {
            return Err(StageError::invalid_input(format!(
                "node `{}`: fitted state (version {}, method {:?}, scale {}) does not fit this node (version \
                 {STATE_VERSION}, method {:?})",
                self.node, a.version, a.method, a.scale, self.method
            )));
        }
        self.fitted = Some(a);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use anoflow_sdk::value::PortValue;
    use serde_json::json;

    fn map(h: usize, w: usize, f: impl Fn(usize) -> f32) -> ScoreMap {
        ScoreMap::new(h as u32, w as u32, (0..h * w).map(f).collect()).unwrap()
    }

    fn fit_set() -> Vec<(SampleMeta, Vec<PortValue>)> {
        // Two 224x224 validation maps: ramps over [0, 1] and [1, 3], ends included.
        let n = (224 * 224 - 1) as f32;
        vec![
            (meta("val/0"), inputs(vec![("score", map(224, 224, |i| i as f32 / n).into())])),
            (meta("val/1"), inputs(vec![("score", map(224, 224, |i| 1.0 + 2.0 * i as f32 / n).into())])),
        ]
    }

    #[test]
    fn min_max_and_mean_std_follow_the_validation_maps() {
        let mut h = StageHarness::new::<NormalizeScores>(json!({"method": "min-max"})).unwrap();
        h.fit(fit_set()).unwrap();
        let test = map(2, 2, |i| [0.0, 3.0, 1.5, 6.0][i]);
        let out = h.process(&meta("t"), inputs(vec![("score", test.clone().into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[0.0, 1.0, 0.5, 2.0]);
        assert_eq!(out.scalar("image_score"), 2.0);

        let mut h = StageHarness::new::<NormalizeScores>(json!({"method": "mean-std"})).unwrap();
        h.fit(fit_set()).unwrap();
        // Direct statistics over every fit pixel, in f64.
        let all: Vec<f64> = fit_set()
            .iter()
            .flat_map(|(_, ins)| match &ins[0].value {
                Value::ScoreMap(m) => m.data().iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                _ => unreachable!(),
            })
            .collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let std = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        let out = h.process(&meta("t"), inputs(vec![("score", test.into())])).unwrap();
        for (got, raw) in out.score_map("score").data().iter().zip([0.0, 3.0, 1.5, 6.0]) {
            assert!((f64::from(*got) - (raw - mean) / std).abs() < 1e-5);
        }

        let mut again = StageHarness::new::<NormalizeScores>(json!({"method": "mean-std"})).unwrap();
        again.load_state(h.save_state().unwrap()).unwrap();
        let probe = map(3, 3, |i| i as f32);
        let a = h.process(&meta("p"), inputs(vec![("score", probe.clone().into())])).unwrap();
        let b = again.process(&meta("p"), inputs(vec![("score", probe.into())])).unwrap();
        assert_eq!(a.score_map("score").data(), b.score_map("score").data());
        let mut other = StageHarness::new::<NormalizeScores>(json!({"method": "min-max"})).unwrap();
        assert!(other.load_state(h.save_state().unwrap()).is_err(), "method mismatch is refused");
    }

    #[test]
    fn min_median_max_scales_by_the_typical_image_peak() {
        // Peaks 1, 2, 4 and 100 (one outlier image); minimum 0 -> scale = median(1, 2, 4, 100) = 3.
        let fit = |peaks: &[f32]| -> Vec<(SampleMeta, Vec<PortValue>)> {
            peaks
                .iter()
                .enumerate()
                .map(|(k, &p)| {
                    (meta(&format!("v{k}")), inputs(vec![("score", map(2, 2, |i| [0.0, p / 2.0, p, 0.5][i]).into())]))
                })
                .collect()
        };
        let mut h = StageHarness::new::<NormalizeScores>(json!({"method": "min-median-max"})).unwrap();
        h.fit(fit(&[1.0, 100.0, 2.0, 4.0])).unwrap();
        let out = h.process(&meta("t"), inputs(vec![("score", map(1, 2, |i| [3.0, 6.0][i]).into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[1.0, 2.0]);
        // More fit images with the same spread of peaks leave the scale where it was; min-max's grows.
        let many: Vec<f32> = (0..40).map(|k| [1.0, 2.0, 4.0, 100.0, 3.0][k % 5]).collect();
        let mut h = StageHarness::new::<NormalizeScores>(json!({"method": "min-median-max"})).unwrap();
        h.fit(fit(&many)).unwrap();
        let out = h.process(&meta("t"), inputs(vec![("score", map(1, 1, |_| 3.0).into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[1.0]);
        let mut again = StageHarness::new::<NormalizeScores>(json!({"method": "min-median-max"})).unwrap();
        again.load_state(h.save_state().unwrap()).unwrap();
        let out = again.process(&meta("t"), inputs(vec![("score", map(1, 1, |_| 3.0).into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[1.0]);
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        let err = StageHarness::new::<NormalizeScores>(json!({"method": "max"})).err().unwrap();
        assert!(err.message.contains("param `method`: `max` is not one of min-max, mean-std, min-median-max"), "{err}");
    }

    #[test]
    fn degenerate_fits_are_refused() {
        let mut h = StageHarness::new::<NormalizeScores>(json!({})).unwrap();
        assert!(h.fit(Vec::new()).unwrap_err().message.contains("no score maps"));
        let mut h = StageHarness::new::<NormalizeScores>(json!({})).unwrap();
        let flat = vec![(meta("v"), inputs(vec![("score", map(8, 8, |_| 0.5).into())]))];
        assert!(h.fit(flat).unwrap_err().message.contains("spread is zero"));
        let mut h = StageHarness::new::<NormalizeScores>(json!({})).unwrap();
        let nan =
            vec![(meta("val/3"), inputs(vec![("score", map(8, 8, |i| if i == 5 { f32::NAN } else { 0.0 }).into())]))];
        assert!(h.fit(nan).unwrap_err().message.contains("sample `val/3`: score map holds NaN"));
    }
}
