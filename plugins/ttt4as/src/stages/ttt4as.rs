//! `ttt4as`: the stage type, its config, the stage (a thin adapter over [`crate::ttt`]) and its tests.

use anoflow_sdk::prelude::*;

use crate::{
    classifier::ClassifierConfig,
    labelers::Labeler,
    memo::FitMemo,
    pseudo_labels::{sample_seed, NominalRegion, PseudoLabelConfig},
    ttt::{self, Balance, NamedFeatures, TttConfig},
};

/// The `ttt4as` stage type.
pub struct Ttt4as;

/// Params of `ttt4as`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ttt4asConfig {
    /// anomalous pseudo-labels, `{ kind: ..., settings }`: maxima (the paper: local maxima >= `percentile`,
    /// plus `radius`) | hysteresis (those maxima grown through pixels >= `low_percentile`) | components
    /// (connected components of the pixels >= `percentile`, weighted by size x contrast, kept within `keep` of
    /// the heaviest) | persistence (peaks of the super-level sets whose persistence >= `min_persistence` x (max -
    /// median), with their half-height region) | adaptive (local maxima above median + `adaptive_k` x robust
    /// std) | level (local maxima >= `level`, an absolute score: use on maps normalized on nominal validation
    /// data)
    #[serde(default)]
    pub labeler: LabelerConfig,
    /// at most this many anomalous pixels train the classifier (a seeded sample that keeps the seeds)
    #[serde(default = "default_max_anomalous")]
    #[schemars(range(min = 1))]
    pub max_anomalous: usize,
    /// self-training: anomalous = positive prior pixels at or above this quantile of the positive values;
    /// nominal candidates = negative ones at or below the (1 - this) quantile of the negative values
    #[serde(default = "default_prior_confidence")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub prior_confidence: f64,
    /// nominal pixels drawn at random (seeded by sample id)
    #[serde(default = "default_nominal_samples")]
    #[schemars(range(min = 1))]
    pub nominal_samples: usize,
    /// where nominal pixels are drawn from: `{ kind: all-rest }`, every non-anomalous pixel (the rest of the
    /// map, as the method is reimplemented), or `{ kind: below-percentile, nominal_percentile: 50 }`, only
    /// scores at or below that percentile (on objects that half is mostly background and teaches
    /// object-vs-background: docs/results/binarizers.md)
    #[serde(default)]
    pub nominal_region: NominalRegionConfig,
    /// nominal pixels keep this Chebyshev distance (px) from anomalous ones
    #[serde(default)]
    pub margin: usize,
    /// against the class imbalance: C per class scaled by n/(2 n_class), repeat the minority class, or nothing
    /// (raw + none reproduces the all-empty-mask trap)
    #[serde(default)]
    pub balance: BalanceChoice,
    /// standardize each dimension on this image's training pixels (weighted like the classes)
    #[serde(default = "yes")]
    pub standardize: bool,
    /// kind: linear-svm (c, loss l1|l2, bias, tol, max_iter, shrinking) | logistic (c, bias, tol, max_iter) |
    /// kernel-svm (c, kernel { kind: gaussian, gamma } | { kind: linear }, tol, exact: decide per pixel instead
    /// of on the feature grid then upsample); the bias is liblinear's constant feature
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// mixed with each sample id to seed nominal sampling and the solver
    #[serde(default)]
    pub seed: u64,
}

/// The `labeler` param: how anomalous pseudo-labels are found, with the settings that
/// labeler uses (and no other).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LabelerConfig {
    /// The paper's: local maxima at or above `percentile`, plus a square of `radius`.
    Maxima {
        /// local maxima at or above this percentile of the map are anomalous
        #[serde(default = "default_percentile")]
        #[schemars(range(min = 0.0, max = 100.0))]
        percentile: f64,
        /// Chebyshev radius of the square of pixels labelled around each maximum
        #[serde(default = "default_radius")]
        radius: usize,
    },
    /// The paper's maxima, grown through pixels at or above `low_percentile`.
    Hysteresis {
        /// local maxima at or above this percentile of the map are anomalous
        #[serde(default = "default_percentile")]
        #[schemars(range(min = 0.0, max = 100.0))]
        percentile: f64,
        /// grow through pixels at or above this percentile
        #[serde(default = "default_low_percentile")]
        #[schemars(range(min = 0.0, max = 100.0))]
        low_percentile: f64,
        /// Chebyshev radius of the square of pixels labelled around each maximum
        #[serde(default = "default_radius")]
        radius: usize,
    },
    /// Connected components of the pixels at or above `percentile`, weighted by size x contrast.
    Components {
        /// components of the pixels at or above this percentile of the map
        #[serde(default = "default_percentile")]
        #[schemars(range(min = 0.0, max = 100.0))]
        percentile: f64,
        /// keep those weighing at least this fraction of the heaviest
        #[serde(default = "default_keep")]
        #[schemars(range(min = 0.0, max = 1.0))]
        keep: f64,
    },
    /// Persistent peaks of the super-level sets, with their half-height region.
    Persistence {
        /// keep peaks whose persistence is at least this fraction of (max - median)
        #[serde(default = "default_min_persistence")]
        #[schemars(range(min = 0.0, max = 1.0))]
        min_persistence: f64,
    },
    /// Local maxima above median + `adaptive_k` x robust std.
    Adaptive {
        /// level = median + k x 1.4826 x MAD of the map
        #[serde(default = "default_adaptive_k")]
        #[schemars(range(min = 0.0, max = 1000.0))]
        adaptive_k: f64,
        /// Chebyshev radius of the square of pixels labelled around each maximum
        #[serde(default = "default_radius")]
        radius: usize,
    },
    /// Local maxima at or above an absolute score `level`.
    Level {
        /// the absolute score a local maximum must reach (1 = the validation maximum after normalize-scores
        /// min-max)
        #[serde(default = "default_level")]
        level: f64,
        /// Chebyshev radius of the square of pixels labelled around each maximum
        #[serde(default = "default_radius")]
        radius: usize,
    },
}

impl Default for LabelerConfig {
    fn default() -> Self {
        LabelerConfig::Maxima { percentile: default_percentile(), radius: default_radius() }
    }
}

impl LabelerConfig {
    /// The labeler with the percentile and radius the pseudo-labelling takes; a labeler that
    /// uses neither gets their defaults, which it never reads.
    fn split(self) -> (Labeler, f64, usize) {
        let (p, r) = (default_percentile(), default_radius());
        match self {
            LabelerConfig::Maxima { percentile, radius } => (Labeler::Maxima, percentile, radius),
            LabelerConfig::Hysteresis { percentile, low_percentile, radius } => {
                (Labeler::Hysteresis { low_percentile }, percentile, radius)
            }
            LabelerConfig::Components { percentile, keep } => (Labeler::Components { keep }, percentile, r),
            LabelerConfig::Persistence { min_persistence } => (Labeler::Persistence { min_persistence }, p, r),
            LabelerConfig::Adaptive { adaptive_k, radius } => (Labeler::Adaptive { k: adaptive_k }, p, radius),
            LabelerConfig::Level { level, radius } => (Labeler::Level { level }, p, radius),
        }
    }
}

/// The `nominal_region` param.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NominalRegionConfig {
    /// Every pixel that is not anomalous.
    #[default]
    AllRest,
    /// Pixels whose score is at or below `nominal_percentile` of the map.
    BelowPercentile {
        /// upper percentile of the nominal region
        #[serde(default = "default_nominal_percentile")]
        #[schemars(range(min = 0.0, max = 100.0))]
        nominal_percentile: f64,
    },
}

/// The `balance` param.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceChoice {
    #[default]
    ClassWeights,
    Oversample,
    None,
}

fn default_percentile() -> f64 {
    99.0
}
fn default_radius() -> usize {
    1
}
fn default_low_percentile() -> f64 {
    95.0
}
fn default_keep() -> f64 {
    0.5
}
fn default_min_persistence() -> f64 {
    0.5
}
fn default_adaptive_k() -> f64 {
    8.0
}
fn default_level() -> f64 {
    1.0
}
fn default_max_anomalous() -> usize {
    1000
}
fn default_prior_confidence() -> f64 {
    0.5
}
fn default_nominal_samples() -> usize {
    500
}
fn default_nominal_percentile() -> f64 {
    50.0
}
fn yes() -> bool {
    true
}

impl StagePlugin for Ttt4as {
    type Config = Ttt4asConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "ttt4as",
            "Test-time-trained per-image classifier (TTT4AS) that turns an anomaly score map into a binary mask",
        )
        .input("score", ValueKind::ScoreMap, "anomaly score map at image resolution")
        .multi_input(
            "features",
            ValueKind::FeatureMap,
            "one or more feature maps of the same image, any stride (e.g. RGB and 3D); interpolated bilinearly \
             to the score map's pixels and concatenated",
        )
        .optional_input(
            "prior",
            ValueKind::ScoreMap,
            "self-training: a previous TTT4AS `decision` map; when connected, labels come from its confident \
             pixels (see `prior_confidence`) instead of the score map",
        )
        .output_same_size("mask", ValueKind::Mask, "score", "decision > 0, at the score map's resolution")
        .output_same_size(
            "decision",
            ValueKind::ScoreMap,
            "score",
            "the classifier's decision value per pixel (-1 when none was trained)",
        )
        .output("pseudo_labels", ValueKind::ScoreMap, "+1 anomalous, -1 nominal, 0 unlabelled")
    }

    fn create(config: Ttt4asConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let (labeler, percentile, radius) = config.labeler.split();
        let nominal_region = match config.nominal_region {
            NominalRegionConfig::AllRest => NominalRegion::AllRest,
            NominalRegionConfig::BelowPercentile { nominal_percentile } => {
                NominalRegion::BelowPercentile(nominal_percentile)
            }
        };
        let balance = match config.balance {
            BalanceChoice::ClassWeights => Balance::ClassWeights,
            BalanceChoice::Oversample => Balance::Oversample,
            BalanceChoice::None => Balance::None,
        };
        let cfg = TttConfig {
            labels: PseudoLabelConfig {
                labeler,
                max_anomalous: config.max_anomalous,
                percentile,
                radius,
                nominal_samples: config.nominal_samples,
                nominal_region,
                margin: config.margin,
            },
            balance,
            standardize: config.standardize,
            classifier: config.classifier.into(),
            prior_confidence: config.prior_confidence,
        };
        Ok(Box::new(Ttt4asStage { node: ctx.node_id.to_string(), cfg, seed: config.seed }))
    }
}

struct Ttt4asStage {
    node: String,
    cfg: TttConfig,
    seed: u64,
}

impl Map for Ttt4asStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let id = sample.meta.id.as_str();
        let score = sample.score_map("score")?;
        let mut features = Vec::new();
        for (source, value) in sample.all("features") {
            match value {
                Value::FeatureMap(map) => features.push(NamedFeatures { name: source, map }),
                other => {
                    return Err(StageError::invalid_input(format!(
                        "node `{}`, sample `{id}`: input `features` from `{source}` is a {}, expected a feature map",
                        self.node,
                        other.kind()
                    )))
                }
            }
        }
        let (h, w) = (score.height(), score.width());
        let prior = match sample.maybe("prior") {
            None => None,
            Some(Value::ScoreMap(m)) if (m.height(), m.width()) == (h, w) => Some(m.data()),
            Some(other) => {
                return Err(StageError::invalid_input(format!(
                    "node `{}`, sample `{id}`: input `prior` must be a {h}x{w} score map like `score`, found {}",
                    self.node,
                    match other.spatial_size() {
                        Some((ph, pw)) => format!("a {} of {ph}x{pw}", other.kind()),
                        None => format!("a {}", other.kind()),
                    }
                )))
            }
        };
        // Calibration maps each image once per candidate: candidates that agree on the
        // pseudo-labels share one fit through the process-wide memo.
        let seed = sample_seed(id, self.seed);
        let memo = Some(FitMemo::process());
        let out = ttt::run_with_prior(score.data(), prior, h, w, &features, &self.cfg, seed, memo)
            .map_err(|e| e.into_stage_error(&self.node, id))?;
        let labels = out.labels.to_map(h * w);
        Ok(Outputs::new()
            .with("mask", Mask::new(h as u32, w as u32, out.mask)?)
            .with("decision", ScoreMap::new(h as u32, w as u32, out.decision)?)
            .with("pseudo_labels", ScoreMap::new(h as u32, w as u32, labels)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classifier, synthetic};
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use anoflow_sdk::value::PortValue;
    use serde_json::json;

    fn feature_inputs(case: &synthetic::Case) -> Vec<PortValue> {
        let mut ins = inputs(vec![("score", ScoreMap::new(224, 224, case.score.clone()).unwrap().into())]);
        for (i, fm) in case.features.iter().enumerate() {
            ins.push(PortValue {
                port: "features".into(),
                source: format!("backbone.features[layer{}]", i + 2).into(),
                value: fm.clone().into(),
            });
        }
        ins
    }

    #[test]
    fn stage_outputs_mask_decision_and_labels_deterministically() {
        let spec = synthetic::CaseSpec { maps: vec![(256, 8), (512, 16)], ..Default::default() };
        let case = synthetic::make_case(&spec).unwrap();
        // The case's defect covers 3% of the image: nominal pixels drawn from the whole map
        // would land in it, so this test draws them from the lower half of the map.
        let h = StageHarness::new::<Ttt4as>(json!({
            "classifier": {"kind": "linear-svm", "c": 0.001},
            "nominal_region": {"kind": "below-percentile"}
        }))
        .unwrap();
        let out = h.process(&meta("bottle/test/broken/000"), feature_inputs(&case)).unwrap();
        let mask = out.mask("mask");
        assert_eq!((mask.height(), mask.width()), (224, 224));
        assert!(synthetic::f1(mask.data(), &case.gt) > 0.5);
        let labels = out.score_map("pseudo_labels");
        assert_eq!(labels.data().iter().filter(|&&v| v == -1.0).count(), 500);
        assert!(labels.data().contains(&1.0));
        let decision = out.score_map("decision");
        for (&d, &m) in decision.data().iter().zip(mask.data()) {
            assert_eq!(m == 1, d > 0.0);
        }
        let again = h.process(&meta("bottle/test/broken/000"), feature_inputs(&case)).unwrap();
        assert_eq!(again.mask("mask").data(), mask.data());
        assert_eq!(again.score_map("pseudo_labels").data(), labels.data());
    }

    #[test]
    fn every_shipped_pipeline_configures_ttt4as_validly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
        let mut nodes = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let doc: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for (name, node) in doc["nodes"].as_object().into_iter().flatten() {
                if node["plugin"] == "ttt4as" {
                    let with = node.get("with").cloned().unwrap_or(json!({}));
                    if let Err(e) = StageHarness::new::<Ttt4as>(with) {
                        panic!("{}: node `{name}`: {e}", path.display());
                    }
                    nodes += 1;
                }
            }
        }
        assert!(nodes > 30, "{nodes} ttt4as nodes");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c: Ttt4asConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c.labeler, LabelerConfig::Maxima { percentile: 99.0, radius: 1 });
        assert_eq!(c.nominal_region, NominalRegionConfig::AllRest);
        assert_eq!((c.max_anomalous, c.nominal_samples, c.margin, c.seed), (1000, 500, 0, 0));
        assert_eq!((c.balance, c.standardize, c.prior_confidence), (BalanceChoice::ClassWeights, true, 0.5));
        assert_eq!(classifier::ClassifierSpec::from(c.classifier), classifier::ClassifierSpec::default());
        let c: Ttt4asConfig = serde_json::from_value(
            json!({"labeler": {"kind": "hysteresis"}, "nominal_region": {"kind": "below-percentile"}}),
        )
        .unwrap();
        assert_eq!(c.labeler.split(), (Labeler::Hysteresis { low_percentile: 95.0 }, 99.0, 1));
        assert_eq!(c.nominal_region, NominalRegionConfig::BelowPercentile { nominal_percentile: 50.0 });
        let c: Ttt4asConfig = serde_json::from_value(json!({"labeler": {"kind": "level", "level": 1.4}})).unwrap();
        assert_eq!(c.labeler.split(), (Labeler::Level { level: 1.4 }, 99.0, 1));
    }

    #[test]
    fn bad_params_and_inputs_are_reported_with_node_and_sample() {
        let err =
            StageHarness::new::<Ttt4as>(json!({"classifier": {"kind": "logistic", "shrinking": true}})).err().unwrap();
        assert!(err.message.contains("unknown param `classifier.shrinking`"), "{err}");
        let err = StageHarness::new::<Ttt4as>(json!({"labeler": {"kind": "maxima", "percentile": 120}})).err().unwrap();
        assert!(err.message.contains("param `labeler.percentile`: 120 is out of range"), "{err}");
        // A setting of another labeler is refused, not ignored.
        let err = StageHarness::new::<Ttt4as>(json!({"labeler": {"kind": "level", "percentile": 99}})).err().unwrap();
        assert!(err.message.contains("unknown param `labeler.percentile`"), "{err}");
        let err = StageHarness::new::<Ttt4as>(json!({"labeler": {"kind": "lvl"}})).err().unwrap();
        assert!(err.message.contains("param `labeler.kind`: `lvl` is not one of maxima, hysteresis"), "{err}");
        let err = StageHarness::new::<Ttt4as>(json!({"percentile": 99})).err().unwrap();
        assert!(err.message.contains("unknown param `percentile`"), "{err}");
        let err = StageHarness::new::<Ttt4as>(json!({"balance": "equal"})).err().unwrap();
        assert!(
            err.message.contains("param `balance`: `equal` is not one of class-weights, oversample, none"),
            "{err}"
        );
        let err = StageHarness::new::<Ttt4as>(
            json!({"classifier": {"kind": "kernel-svm", "kernel": {"kind": "linear", "gamma": 0.5}}}),
        )
        .err()
        .unwrap();
        assert!(err.message.contains("unknown param `classifier.kernel.gamma`"), "{err}");
        let err = StageHarness::new::<Ttt4as>(json!({"classifier": {"kind": "linear-svm", "c": 0}})).err().unwrap();
        assert!(err.message.contains("param `classifier.c`: 0 is out of range"), "{err}");
        let err =
            StageHarness::new::<Ttt4as>(json!({"nominal_region": {"kind": "all-rest", "nominal_percentile": 50}}))
                .err()
                .unwrap();
        assert!(err.message.contains("unknown param `nominal_region.nominal_percentile`"), "{err}");

        let h = StageHarness::new::<Ttt4as>(json!({})).unwrap();
        let mut score = vec![0.1f32; 224 * 224];
        score[5] = f32::NAN;
        let fm = FeatureMap::new(8, 28, 28, 8.0, vec![0.0; 28 * 28 * 8]).unwrap();
        let ins = inputs(vec![("score", ScoreMap::new(224, 224, score).unwrap().into()), ("features", fm.into())]);
        let err = h.process(&meta("cable/test/cut/007"), ins).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert!(err.message.contains("node `test-ttt4as`, sample `cable/test/cut/007`: score map"), "{err}");
    }
}
