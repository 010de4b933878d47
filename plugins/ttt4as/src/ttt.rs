//! One image's TTT4AS: pseudo-labels from the score map, training features sampled at those
//! pixels, standardization, a classifier fitted on that image alone, and its decision at
//! every pixel of the score map.
//!
//! Speed and memory (FACTS.md): bilinear upsampling is linear, so for a linear classifier
//! `w . up(F)(p) + b == up(w . F)(p) + b`. The decision is taken at feature resolution per
//! feature map (standardization folded into `w` and `b`) and only the 1-channel decision map
//! is upsampled; the `c x H x W` upsampled features never exist. Training reads features at
//! the ~500 labelled pixels only, interpolated on the fly.

use anoflow_sdk::prelude::FeatureMap;

use anoflow_imaging::resample::{sample_into, upsample_into, Grid};

use crate::{
    classifier::{ClassifierSpec, FitInfo, LinearModel, Model, TrainingSet},
    error::TttError,
    memo::{FitKey, FitMemo, Trained},
    pseudo_labels::{labels_from_prior, pseudo_labels, PseudoLabelConfig, PseudoLabels},
    standardize::Standardizer,
};

/// How the class imbalance (a few dozen anomalous against hundreds of nominal pixels) is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// C per class scaled by `n / (2 n_class)` (scikit-learn's `balanced`).
    ClassWeights,
    /// The smaller class is repeated (cyclically) up to the larger one's size.
    Oversample,
    /// Neither: reproduces the empty-mask trap of FACTS.md with raw features.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TttConfig {
    pub labels: PseudoLabelConfig,
    pub balance: Balance,
    pub standardize: bool,
    pub classifier: ClassifierSpec,
    /// Self-training: the quantile of a prior decision map's positive (and negative) values
    /// above (below) which pixels become labels.
    pub prior_confidence: f64,
}

impl Default for TttConfig {
    fn default() -> Self {
        Self {
            labels: PseudoLabelConfig::default(),
            balance: Balance::ClassWeights,
            standardize: true,
            classifier: ClassifierSpec::default(),
            prior_confidence: 0.5,
        }
    }
}

/// Why no classifier was trained (the mask is then empty and the decision -1 everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Trained(FitInfo),
    /// No local maximum qualified (e.g. a flat map).
    NoAnomalousLabel,
    /// Anomalous labels but no nominal candidate left.
    NoNominalLabel,
}

#[derive(Debug, Clone)]
pub struct TttOutput {
    /// 0/1 per score-map pixel: decision > 0.
    pub mask: Vec<u8>,
    pub decision: Vec<f32>,
    pub labels: PseudoLabels,
    pub outcome: Outcome,
    /// For linear classifiers: the hyperplane on raw (unstandardized, concatenated) features.
    pub hyperplane: Option<LinearModel>,
}

/// A feature map and the name errors use for it (the edge it came from).
#[derive(Debug, Clone, Copy)]
pub struct NamedFeatures<'a> {
    pub name: &'a str,
    pub map: &'a FeatureMap,
}

/// Runs TTT4AS on one `h x w` score map. Errors on non-finite values and on feature maps
/// that do not describe the same image as the score map.
pub fn run(
    score: &[f32],
    h: usize,
    w: usize,
    features: &[NamedFeatures<'_>],
    cfg: &TttConfig,
    seed: u64,
) -> Result<TttOutput, TttError> {
    run_with_prior(score, None, h, w, features, cfg, seed, None)
}

/// [`run`], with labels taken from a previous decision map `prior` (self-training: TTT4AS
/// chained after itself) instead of the score map when one is given, and linear fits shared
/// through `memo` (the same output, bit for bit, as a fresh fit).
#[allow(clippy::too_many_arguments)]
pub fn run_with_prior(
    score: &[f32],
    prior: Option<&[f32]>,
    h: usize,
    w: usize,
    features: &[NamedFeatures<'_>],
    cfg: &TttConfig,
    seed: u64,
    memo: Option<&FitMemo>,
) -> Result<TttOutput, TttError> {
    check_inputs(score, h, w, features)?;
    let labels = match prior {
        Some(prior) => {
            if prior.len() != h * w {
                return Err(TttError::PriorSize { len: prior.len(), h, w });
            }
            if let Some(i) = prior.iter().position(|v| !v.is_finite()) {
                return Err(TttError::NonFinite {
                    what: "prior decision map".into(),
                    value: prior[i],
                    place: format!("pixel (y {}, x {})", i / w, i % w),
                });
            }
            labels_from_prior(prior, h, w, &cfg.labels, cfg.prior_confidence, seed)
        }
        None => pseudo_labels(score, h, w, &cfg.labels, seed),
    };
    let degenerate = if labels.anomalous.is_empty() {
        Some(Outcome::NoAnomalousLabel)
    } else if labels.nominal.is_empty() {
        Some(Outcome::NoNominalLabel)
    } else {
        None
    };
    if let Some(outcome) = degenerate {
        return Ok(TttOutput { mask: vec![0; h * w], decision: vec![-1.0; h * w], labels, outcome, hyperplane: None });
    }

    let grids: Vec<Grid> = features.iter().map(|f| Grid::new(f.map.height(), f.map.width(), h, w)).collect();
    // Kernel models are never shared: only a hyperplane is stored.
    let shared = memo
        .filter(|_| !matches!(cfg.classifier, ClassifierSpec::KernelSvm(_)))
        .map(|m| (m, FitKey::new(&labels, features, (h, w), cfg, seed)));
    let (decision, hyperplane, info) = match shared.and_then(|(m, key)| m.get(key)) {
        Some(hit) => {
            let plane = hit.hyperplane.clone();
            (linear_decision(&plane.w, plane.b, features, &grids, h, w), Some(plane), hit.info)
        }
        None => {
            let (decision, hyperplane, info) = train_and_decide(&labels, features, &grids, (h, w), cfg, seed)?;
            if let (Some((m, key)), Some(plane)) = (shared, &hyperplane) {
                m.insert(key, Trained { hyperplane: plane.clone(), info });
            }
            (decision, hyperplane, info)
        }
    };
    let mask = decision.iter().map(|&v| u8::from(v > 0.0)).collect();
    Ok(TttOutput { mask, decision, labels, outcome: Outcome::Trained(info), hyperplane })
}

/// Fits the classifier on `labels` and decides every pixel: the decision map, the hyperplane on
/// raw features for linear models, and how the fit went.
fn train_and_decide(
    labels: &PseudoLabels,
    features: &[NamedFeatures<'_>],
    grids: &[Grid],
    (h, w): (usize, usize),
    cfg: &TttConfig,
    seed: u64,
) -> Result<(Vec<f32>, Option<LinearModel>, FitInfo), TttError> {
    let Training { x, y, d, class_weight, standardizer } = prepare_training(labels, w, features, grids, cfg);
    let set = TrainingSet { x: &x, y: &y, d, class_weight };
    let (model, info) = cfg.classifier.fit(&set, seed)?;
    drop(x);

    let mut hyperplane = None;
    let decision = match (&model, &cfg.classifier) {
        (Model::Linear(m), _) => {
            let (w_raw, b_raw) = standardizer.fold(&m.w, m.b);
            let decision = linear_decision(&w_raw, b_raw, features, grids, h, w);
            hyperplane = Some(LinearModel { w: w_raw, b: b_raw });
            decision
        }
        (Model::Kernel(m), ClassifierSpec::KernelSvm(k)) if k.exact => {
            let mut f = vec![0.0f32; d];
            let mut out = vec![0.0f32; h * w];
            for (p, o) in out.iter_mut().enumerate() {
                gather(features, grids, (p / w, p % w), &mut f);
                standardizer.apply(&mut f);
                *o = m.decision(&f);
            }
            out
        }
        (Model::Kernel(m), _) => kernel_decision_on_grid(m, &standardizer, features, h, w, d),
    };
    Ok((decision, hyperplane, info))
}

/// Every value finite; every feature map covers the score map to within one stride.
fn check_inputs(score: &[f32], h: usize, w: usize, features: &[NamedFeatures<'_>]) -> Result<(), TttError> {
    if features.is_empty() {
        return Err(TttError::NoFeatures);
    }
    if let Some(i) = score.iter().position(|v| !v.is_finite()) {
        return Err(TttError::NonFinite {
            what: "score map".into(),
            value: score[i],
            place: format!("pixel (y {}, x {})", i / w, i % w),
        });
    }
    for f in features {
        let m = f.map;
        let (cov_h, cov_w) = (m.height() as f32 * m.stride(), m.width() as f32 * m.stride());
        if (cov_h - h as f32).abs() > m.stride() || (cov_w - w as f32).abs() > m.stride() {
            return Err(TttError::SizeMismatch {
                name: f.name.to_string(),
                h: m.height(),
                w: m.width(),
                stride: m.stride(),
                cov_h,
                cov_w,
                score_h: h,
                score_w: w,
            });
        }
        if let Some(i) = m.data().iter().position(|v| !v.is_finite()) {
            let cell = i / m.channels();
            return Err(TttError::NonFinite {
                what: format!("feature map `{}`", f.name),
                value: m.data()[i],
                place: format!("cell (y {}, x {}), channel {}", cell / m.width(), cell % m.width(), i % m.channels()),
            });
        }
    }
    Ok(())
}

/// The concatenated, bilinearly interpolated features of score-map pixel `(y, x)`.
fn gather(features: &[NamedFeatures<'_>], grids: &[Grid], at: (usize, usize), out: &mut [f32]) {
    let mut off = 0;
    for (f, g) in features.iter().zip(grids) {
        let c = f.map.channels();
        sample_into(f.map.data(), f.map.width(), c, g, at, &mut out[off..off + c]);
        off += c;
    }
}

type Rows = (Vec<f32>, Vec<f32>, Vec<f64>, (f64, f64));

/// Training rows (anomalous first), labels, per-row weights for standardization and the
/// per-class C multipliers, after balancing.
fn training_rows(
    labels: &PseudoLabels,
    w: usize,
    features: &[NamedFeatures<'_>],
    grids: &[Grid],
    d: usize,
    balance: Balance,
) -> Rows {
    let (n_pos, n_neg) = (labels.anomalous.len(), labels.nominal.len());
    let mut pixels: Vec<(usize, f32)> =
        labels.anomalous.iter().map(|&p| (p, 1.0)).chain(labels.nominal.iter().map(|&p| (p, -1.0))).collect();
    if balance == Balance::Oversample {
        let (minority, count, target) =
            if n_pos < n_neg { (&labels.anomalous, n_pos, n_neg) } else { (&labels.nominal, n_neg, n_pos) };
        let label = if n_pos < n_neg { 1.0 } else { -1.0 };
        pixels.extend((count..target).map(|k| (minority[k % count], label)));
    }
    let mut x = vec![0.0f32; pixels.len() * d];
    for ((p, _), row) in pixels.iter().zip(x.chunks_exact_mut(d)) {
        gather(features, grids, (p / w, p % w), row);
    }
    let y: Vec<f32> = pixels.iter().map(|&(_, l)| l).collect();
    let n = (n_pos + n_neg) as f64;
    let class_weight = match balance {
        Balance::ClassWeights => (n / (2.0 * n_pos as f64), n / (2.0 * n_neg as f64)),
        Balance::Oversample | Balance::None => (1.0, 1.0),
    };
    let weights = y.iter().map(|&l| if l > 0.0 { class_weight.0 } else { class_weight.1 }).collect();
    (x, y, weights, class_weight)
}

/// Standardized training rows of one image, ready for a classifier.
#[derive(Debug, Clone)]
pub struct Training {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub d: usize,
    pub class_weight: (f64, f64),
    pub standardizer: Standardizer,
}

/// Samples, balances and standardizes the training rows of `labels` (score map width `w`).
pub fn prepare_training(
    labels: &PseudoLabels,
    w: usize,
    features: &[NamedFeatures<'_>],
    grids: &[Grid],
    cfg: &TttConfig,
) -> Training {
    let d: usize = features.iter().map(|f| f.map.channels()).sum();
    let (mut x, y, weights, class_weight) = training_rows(labels, w, features, grids, d, cfg.balance);
    let standardizer = if cfg.standardize { Standardizer::fit(&x, d, &weights) } else { Standardizer::identity(d) };
    if cfg.standardize {
        standardizer.apply(&mut x);
    }
    Training { x, y, d, class_weight, standardizer }
}

/// `b + sum_m up(F_m . w_m)`: per feature map, one dot product per cell, then the
/// 1-channel map is upsampled and accumulated.
pub fn linear_decision(
    w_raw: &[f32],
    b: f32,
    features: &[NamedFeatures<'_>],
    grids: &[Grid],
    h: usize,
    w: usize,
) -> Vec<f32> {
    let mut out = vec![b; h * w];
    let mut off = 0;
    for (f, g) in features.iter().zip(grids) {
        let c = f.map.channels();
        let wm = &w_raw[off..off + c];
        let cells: Vec<f32> = f.map.data().chunks_exact(c).map(|cell| crate::classifier::dot(wm, cell)).collect();
        upsample_into(&cells, f.map.width(), &g.ys, &g.xs, &mut out, true);
        off += c;
    }
    out
}

/// Kernel decision on the grid of the finest feature map (other maps interpolated at its
/// cell centres), upsampled to the score map. Exact only for linear kernels: a non-linear
/// decision of interpolated features is not the interpolation of decisions.
fn kernel_decision_on_grid(
    model: &crate::classifier::KernelModel,
    standardizer: &Standardizer,
    features: &[NamedFeatures<'_>],
    h: usize,
    w: usize,
    d: usize,
) -> Vec<f32> {
    let finest = features.iter().max_by_key(|f| f.map.height() * f.map.width()).map(|f| f.map);
    let (gh, gw) = finest.map_or((1, 1), |m| (m.height(), m.width()));
    let to_grid: Vec<Grid> = features.iter().map(|f| Grid::new(f.map.height(), f.map.width(), gh, gw)).collect();
    let mut f = vec![0.0f32; d];
    let mut cells = vec![0.0f32; gh * gw];
    for (p, o) in cells.iter_mut().enumerate() {
        gather(features, &to_grid, (p / gw, p % gw), &mut f);
        standardizer.apply(&mut f);
        *o = model.decision(&f);
    }
    let up = Grid::new(gh, gw, h, w);
    let mut out = vec![0.0f32; h * w];
    upsample_into(&cells, gw, &up.ys, &up.xs, &mut out, false);
    out
}

/// The slow reference: interpolate the full feature vector at every pixel, then decide.
/// Used by tests to prove [`linear_decision`] exact; never by the stage.
pub fn linear_decision_per_pixel(
    w_raw: &[f32],
    b: f32,
    features: &[NamedFeatures<'_>],
    h: usize,
    w: usize,
) -> Vec<f32> {
    let grids: Vec<Grid> = features.iter().map(|f| Grid::new(f.map.height(), f.map.width(), h, w)).collect();
    let d = w_raw.len();
    let mut f = vec![0.0f32; d];
    (0..h * w)
        .map(|p| {
            gather(features, &grids, (p / w, p % w), &mut f);
            crate::classifier::dot(w_raw, &f) + b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{f1, make_case, CaseSpec};

    fn named(maps: &[FeatureMap]) -> Vec<NamedFeatures<'_>> {
        maps.iter()
            .enumerate()
            .map(|(i, map)| NamedFeatures { name: if i == 0 { "f.rgb" } else { "f.3d" }, map })
            .collect()
    }

    #[test]
    fn feature_resolution_decision_equals_deciding_on_upsampled_features() {
        // 224x224 image, WideResNet-like layer2 (512 ch, 28x28) and layer3 (1024 ch, 14x14).
        let spec = CaseSpec { maps: vec![(512, 8), (1024, 16)], ..Default::default() };
        let case = make_case(&spec).unwrap();
        let feats = named(&case.features);
        let out = run(&case.score, 224, 224, &feats, &TttConfig::default(), 3).unwrap();
        let plane = out.hyperplane.as_ref().expect("linear classifier");
        assert_eq!(plane.w.len(), 1536);
        let slow = linear_decision_per_pixel(&plane.w, plane.b, &feats, 224, 224);
        let scale = slow.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut differing = 0;
        for (p, (&fast, &slow)) in out.decision.iter().zip(&slow).enumerate() {
            assert!((fast - slow).abs() <= 1e-4 * scale, "pixel {p}: fast {fast} vs slow {slow} (scale {scale})");
            if (fast > 0.0) != (slow > 0.0) {
                differing += 1;
                assert!(slow.abs() <= 1e-4 * scale, "pixel {p}: mask differs away from the boundary");
            }
        }
        assert!(differing <= 2, "{differing} mask pixels differ");
        assert!(out.mask.contains(&1), "the case must produce a non-empty mask");
    }

    #[test]
    fn shared_fits_give_a_fresh_fits_bits_and_only_for_the_same_labels() {
        use crate::labelers::Labeler;
        let case = make_case(&CaseSpec::default()).unwrap();
        let feats = named(&case.features);
        let peak = case.score.iter().copied().fold(f32::MIN, f32::max);
        let at_level = |level: f32| {
            let mut cfg = TttConfig::default();
            cfg.labels.labeler = Labeler::Level { level: f64::from(level) };
            cfg
        };
        let memo = FitMemo::new(1 << 20);
        let run_memo =
            |cfg: &TttConfig, seed| run_with_prior(&case.score, None, 224, 224, &feats, cfg, seed, Some(&memo));
        let fresh = run(&case.score, 224, 224, &feats, &at_level(0.9 * peak), 3).unwrap();
        assert!(matches!(fresh.outcome, Outcome::Trained(_)) && fresh.mask.contains(&1));
        let first = run_memo(&at_level(0.9 * peak), 3).unwrap();
        assert_eq!(memo.len(), 1);
        // Another level with the same single maximum above it: same labels, one fit shared.
        let shared = run_memo(&at_level(0.8 * peak), 3).unwrap();
        assert_eq!(shared.labels.anomalous, fresh.labels.anomalous);
        assert_eq!(memo.len(), 1, "the second level reused the first fit");
        for out in [&first, &shared] {
            assert_eq!(out.mask, fresh.mask);
            assert_eq!(out.decision, fresh.decision);
            assert_eq!(out.hyperplane, fresh.hyperplane);
            assert_eq!(out.outcome, fresh.outcome);
        }
        // Another seed samples other nominal pixels: a fit of its own.
        let other = run_memo(&at_level(0.9 * peak), 4).unwrap();
        assert_eq!(memo.len(), 2);
        assert_eq!(other.decision, run(&case.score, 224, 224, &feats, &at_level(0.9 * peak), 4).unwrap().decision);
    }

    #[test]
    fn defaults_find_the_defect_and_raw_unbalanced_features_reproduce_the_trap() {
        let case = make_case(&CaseSpec::default()).unwrap();
        let feats = named(&case.features);
        let out = run(&case.score, 224, 224, &feats, &TttConfig::default(), 11).unwrap();
        assert!(matches!(out.outcome, Outcome::Trained(_)), "{:?}", out.outcome);
        let n_pos = out.labels.anomalous.len();
        assert!((9..=60).contains(&n_pos), "{n_pos} anomalous labels: the case should be as sparse as FACTS.md");
        let inside = out.labels.anomalous.iter().filter(|&&p| case.gt[p] == 1).count();
        assert_eq!(inside, n_pos, "every anomalous pseudo-label falls in the defect");
        let score = f1(&out.mask, &case.gt);
        assert!(score > 0.5, "defaults: F1 {score}, {} mask pixels", out.mask.iter().filter(|&&m| m == 1).count());

        let trap = TttConfig { balance: Balance::None, standardize: false, ..Default::default() };
        let out = run(&case.score, 224, 224, &feats, &trap, 11).unwrap();
        assert!(out.mask.iter().all(|&m| m == 0), "raw + unbalanced should give an empty mask (the FACTS.md trap)");
        assert!(out.decision.iter().all(|&v| v < 0.0));
    }

    #[test]
    fn every_balance_and_classifier_kind_finds_the_defect() {
        let case = make_case(&CaseSpec { maps: vec![(256, 8)], ..Default::default() }).unwrap();
        let feats = named(&case.features);
        let obj = |j: serde_json::Value| ClassifierSpec::from_json(j.as_object().unwrap()).unwrap();
        for (balance, classifier) in [
            (Balance::Oversample, ClassifierSpec::default()),
            (Balance::ClassWeights, obj(serde_json::json!({"kind": "linear-svm", "loss": "l1"}))),
            (Balance::ClassWeights, obj(serde_json::json!({"kind": "logistic"}))),
            (Balance::ClassWeights, obj(serde_json::json!({"kind": "kernel-svm", "c": 1.0}))),
        ] {
            let cfg = TttConfig { balance, classifier: classifier.clone(), ..Default::default() };
            let out = run(&case.score, 224, 224, &feats, &cfg, 5).unwrap();
            let score = f1(&out.mask, &case.gt);
            assert!(score > 0.5, "{balance:?} {classifier:?}: F1 {score}");
        }
    }

    #[test]
    fn degenerate_inputs_have_defined_results() {
        let fm = FeatureMap::new(16, 28, 28, 8.0, vec![0.5; 28 * 28 * 16]).unwrap();
        let feats = [NamedFeatures { name: "f.layer2", map: &fm }];
        let cfg = TttConfig::default();

        // Flat map: no anomalous label, empty mask.
        let out = run(&[0.3; 224 * 224], 224, 224, &feats, &cfg, 0).unwrap();
        assert_eq!(out.outcome, Outcome::NoAnomalousLabel);
        assert!(out.mask.iter().all(|&m| m == 0) && out.decision.iter().all(|&v| v == -1.0));

        // A single class: the nominal region is empty when every pixel is excluded by the margin.
        let mut score: Vec<f32> = (0..224 * 224).map(|p| ((p % 224) as f32 * 0.01).sin() * 0.01).collect();
        score[100 * 224 + 100] = 5.0;
        let single =
            TttConfig { labels: PseudoLabelConfig { margin: 300, ..Default::default() }, ..Default::default() };
        let out = run(&score, 224, 224, &feats, &single, 0).unwrap();
        assert_eq!(out.outcome, Outcome::NoNominalLabel);
        assert!(out.mask.iter().all(|&m| m == 0));

        // Identical features everywhere: a classifier is trained but cannot separate anything.
        let out = run(&score, 224, 224, &feats, &cfg, 0).unwrap();
        assert!(matches!(out.outcome, Outcome::Trained(_)));
        assert!(out.decision.iter().all(|v| v.is_finite()));

        // NaN in the score map or the features: errors naming where.
        let mut bad = score.clone();
        bad[3 * 224 + 7] = f32::NAN;
        let err = run(&bad, 224, 224, &feats, &cfg, 0).unwrap_err().to_string();
        assert!(err.contains("score map") && err.contains("pixel (y 3, x 7)"), "{err}");
        let mut data = vec![0.5; 28 * 28 * 16];
        data[(2 * 28 + 5) * 16 + 9] = f32::INFINITY;
        let nan_fm = FeatureMap::new(16, 28, 28, 8.0, data).unwrap();
        let err = run(&score, 224, 224, &[NamedFeatures { name: "f.layer3", map: &nan_fm }], &cfg, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("feature map `f.layer3`") && err.contains("cell (y 2, x 5), channel 9"), "{err}");

        // Features of another size: too small (14x14 at stride 8 covers 112 px) or too large.
        for (hw, stride) in [(14, 8.0), (32, 8.0), (28, 16.0)] {
            let fm = FeatureMap::new(4, hw, hw, stride, vec![0.0; (hw * hw * 4) as usize]).unwrap();
            let err =
                run(&score, 224, 224, &[NamedFeatures { name: "f.x", map: &fm }], &cfg, 0).unwrap_err().to_string();
            assert!(err.contains("feature map `f.x`") && err.contains("score map is 224x224"), "{err}");
        }
        // Within a stride is fine (e.g. 225 px images at stride 8 give 28 cells).
        let ok = run(&score[..224 * 224], 224, 224, &feats, &cfg, 0);
        assert!(ok.is_ok());
        assert!(matches!(run(&score, 224, 224, &[], &cfg, 0), Err(TttError::NoFeatures)));
    }
}
