//! TTT4AS (arXiv 2404.03743): per test image, pseudo-label the anomaly score map, train a
//! classifier on that image's own features at the pseudo-labelled pixels, and let it decide
//! every pixel. The maths lives in plain modules (usable from benches); the stage is a thin
//! adapter.
//!
//! Degenerate cases, all tested:
//! - no anomalous pseudo-label (a flat map, or a map whose top percentile is its floor): empty
//!   mask, decision -1 everywhere, pseudo-labels all 0;
//! - anomalous labels but no nominal candidate (a single class): empty mask, decision -1;
//! - NaN or infinity in the score map or a feature map: an error naming node, sample, map
//!   and pixel or cell;
//! - a feature map that does not cover the score map (height or width times stride off by more
//!   than one stride, e.g. a map too small or from another resolution): an error naming it.

pub mod classifier;
pub mod error;
pub mod labelers;
pub mod pseudo_labels;
pub mod standardize;
pub mod synthetic;
pub mod ttt;

use anoflow_sdk::prelude::*;
use serde_json::json;

use crate::{
    classifier::ClassifierSpec,
    labelers::Labeler,
    pseudo_labels::{sample_seed, NominalRegion, PseudoLabelConfig},
    ttt::{Balance, NamedFeatures, TttConfig},
};

/// The `ttt4as` stage type.
pub struct Ttt4as;

impl StagePlugin for Ttt4as {
    fn descriptor() -> StageDescriptor {
        StageDescriptor::map(
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
        .param(ParamSpec::choice(
            "labeler",
            &["maxima", "hysteresis", "components", "persistence", "adaptive", "level"],
            "anomalous pseudo-labels: maxima (the paper: local maxima >= percentile, plus radius) | hysteresis \
             (those maxima grown through pixels >= low_percentile) | components (connected components of the \
             pixels >= percentile, weighted by size x contrast, kept within `keep` of the heaviest) | persistence \
             (peaks of the super-level sets whose persistence >= min_persistence x (max - median), with their \
             half-height region) | adaptive (local maxima above median + adaptive_k x robust std) | level (local \
             maxima >= `level`, an absolute score: use on maps normalized on nominal validation data)",
        ))
        .param(
            ParamSpec::float("percentile", 99.0, "local maxima at or above this percentile of the map are anomalous")
                .range(0.0, 100.0),
        )
        .param(
            ParamSpec::float("low_percentile", 95.0, "hysteresis: grow through pixels at or above this percentile")
                .range(0.0, 100.0),
        )
        .param(
            ParamSpec::float("keep", 0.5, "components: keep those weighing at least this fraction of the heaviest")
                .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "min_persistence",
                0.5,
                "persistence: keep peaks whose persistence is at least this fraction of (max - median)",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float("adaptive_k", 8.0, "adaptive: level = median + k x 1.4826 x MAD of the map")
                .range(0.0, 1000.0),
        )
        .param(ParamSpec::float(
            "level",
            1.0,
            "level: the absolute score a local maximum must reach (1 = the validation maximum after \
             normalize-scores min-max)",
        ))
        .param(
            ParamSpec::int(
                "max_anomalous",
                1000,
                "at most this many anomalous pixels train the classifier (a seeded sample that keeps the seeds)",
            )
            .min(1.0),
        )
        .param(
            ParamSpec::float(
                "prior_confidence",
                0.5,
                "self-training: anomalous = positive prior pixels at or above this quantile of the positive values; \
             nominal candidates = negative ones at or below the (1 - this) quantile of the negative values",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::int("radius", 1, "Chebyshev radius of the square of pixels labelled around each maximum")
                .min(0.0),
        )
        .param(ParamSpec::int("nominal_samples", 500, "nominal pixels drawn at random (seeded by sample id)").min(1.0))
        .param(ParamSpec::choice(
            "nominal_region",
            &["all-rest", "below-percentile"],
            "draw nominal pixels from every non-anomalous pixel (the rest of the map, as the method is \
             reimplemented), or only from scores at or below `nominal_percentile` (on objects that half is \
             mostly background and teaches object-vs-background: docs/results/binarizers.md)",
        ))
        .param(ParamSpec::float("nominal_percentile", 50.0, "upper percentile of the nominal region").range(0.0, 100.0))
        .param(
            ParamSpec::int("margin", 0, "nominal pixels keep this Chebyshev distance (px) from anomalous ones")
                .min(0.0),
        )
        .param(ParamSpec::choice(
            "balance",
            &["class-weights", "oversample", "none"],
            "against the class imbalance: C per class scaled by n/(2 n_class), repeat the minority class, or \
             nothing (raw + none reproduces the all-empty-mask trap)",
        ))
        .param(ParamSpec::bool(
            "standardize",
            true,
            "standardize each dimension on this image's training pixels (weighted like the classes)",
        ))
        .param(ParamSpec::with_default(
            "classifier",
            ParamType::Object,
            json!({"kind": "linear-svm", "c": 0.001}),
            "kind: linear-svm (c, loss l1|l2, bias, tol, max_iter, shrinking) | logistic (c, bias, tol, max_iter) | \
             kernel-svm (c, kernel gaussian|linear, gamma, tol, exact: decide per pixel instead of on the feature \
             grid then upsample); the bias is liblinear's constant feature",
        ))
        .param(ParamSpec::int("seed", 0, "mixed with each sample id to seed nominal sampling and the solver").min(0.0))
    }

    fn create(params: &Params, _ctx: &CreateContext) -> StageResult<StageImpl> {
        let percentile = params.f64_in("percentile", 0.0, 100.0)?;
        let nominal_region = match params.string("nominal_region")?.as_str() {
            "all-rest" => NominalRegion::AllRest,
            _ => NominalRegion::BelowPercentile(params.f64_in("nominal_percentile", 0.0, 100.0)?),
        };
        let balance = match params.string("balance")?.as_str() {
            "oversample" => Balance::Oversample,
            "none" => Balance::None,
            _ => Balance::ClassWeights,
        };
        let classifier = ClassifierSpec::from_json(params.object("classifier")?.raw())
            .map_err(|e| StageError::invalid_param(format!("node `{}`: param `classifier`: {e}", params.node())))?;
        let labeler = match params.string("labeler")?.as_str() {
            "hysteresis" => Labeler::Hysteresis { low_percentile: params.f64_in("low_percentile", 0.0, 100.0)? },
            "components" => Labeler::Components { keep: params.f64_in("keep", 0.0, 1.0)? },
            "persistence" => Labeler::Persistence { min_persistence: params.f64_in("min_persistence", 0.0, 1.0)? },
            "adaptive" => Labeler::Adaptive { k: params.f64_in("adaptive_k", 0.0, 1000.0)? },
            "level" => Labeler::Level { level: params.f64("level")? },
            _ => Labeler::Maxima,
        };
        let cfg = TttConfig {
            labels: PseudoLabelConfig {
                labeler,
                max_anomalous: params.positive("max_anomalous")?,
                percentile,
                radius: params.usize("radius")?,
                nominal_samples: params.positive("nominal_samples")?,
                nominal_region,
                margin: params.usize("margin")?,
            },
            balance,
            standardize: params.bool("standardize")?,
            classifier,
            prior_confidence: params.f64_in("prior_confidence", 0.0, 1.0)?,
        };
        let seed: u64 = params.get("seed")?;
        Ok(StageImpl::Map(Box::new(Ttt4asStage { node: params.node().to_string(), cfg, seed })))
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
        let out = ttt::run_with_prior(score.data(), prior, h, w, &features, &self.cfg, sample_seed(id, self.seed))
            .map_err(|e| e.into_stage_error(&self.node, id))?;
        let labels = out.labels.to_map(h * w);
        Ok(Outputs::new()
            .with("mask", Mask::new(h as u32, w as u32, out.mask)?)
            .with("decision", ScoreMap::new(h as u32, w as u32, out.decision)?)
            .with("pseudo_labels", ScoreMap::new(h as u32, w as u32, labels)?))
    }
}

anoflow_sdk::export_plugin! { stages: [Ttt4as] }

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use anoflow_sdk::value::PortValue;

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
            "nominal_region": "below-percentile"
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
    fn bad_params_and_inputs_are_reported_with_node_and_sample() {
        let err =
            StageHarness::new::<Ttt4as>(json!({"classifier": {"kind": "logistic", "shrinking": true}})).err().unwrap();
        assert!(err.message.contains("param `classifier`: invalid classifier setting: `shrinking`"), "{err}");
        let err = StageHarness::new::<Ttt4as>(json!({"percentile": 120})).err().unwrap();
        assert!(err.message.contains("percentile"), "{err}");

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
