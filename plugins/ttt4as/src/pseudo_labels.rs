//! Pseudo-labels from one score map (TTT4AS, FACTS.md): anomalous = local maxima of the map
//! at or above its p-th percentile plus a square neighbourhood around each (or another
//! [`Labeler`]); nominal = a seeded random sample of low-score pixels, optionally kept at a
//! margin from the anomalous ones. Self-training relabels from a previous decision map
//! instead ([`labels_from_prior`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use crate::labelers::Labeler;
use crate::labelers::{find, paint};

/// Where nominal pixels are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NominalRegion {
    /// Pixels whose score is at or below this percentile of the map.
    BelowPercentile(f64),
    /// Every pixel that is not anomalous (the public reimplementation's rule).
    AllRest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PseudoLabelConfig {
    /// How anomalous pixels are found.
    pub labeler: Labeler,
    /// Percentile (0-100) a local maximum must reach to be anomalous.
    pub percentile: f64,
    /// Chebyshev radius of the square added around each kept maximum (1 = 3x3).
    pub radius: usize,
    pub nominal_samples: usize,
    pub nominal_region: NominalRegion,
    /// Chebyshev distance (pixels) nominal pixels keep from every anomalous one.
    pub margin: usize,
    /// At most this many anomalous pixels train the classifier (a seeded sample that always
    /// keeps the seeds): region labelers can mark thousands.
    pub max_anomalous: usize,
}

impl Default for PseudoLabelConfig {
    fn default() -> Self {
        Self {
            labeler: Labeler::Maxima,
            percentile: 99.0,
            radius: 1,
            nominal_samples: 500,
            nominal_region: NominalRegion::BelowPercentile(50.0),
            margin: 0,
            max_anomalous: 1000,
        }
    }
}

/// Pixel indices (row-major into the score map), ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PseudoLabels {
    pub anomalous: Vec<usize>,
    pub nominal: Vec<usize>,
    /// The local maxima the anomalous labels grew from.
    pub maxima: Vec<usize>,
}

impl PseudoLabels {
    /// A map with +1 (anomalous), -1 (nominal), 0 (unlabelled).
    pub fn to_map(&self, len: usize) -> Vec<f32> {
        let mut map = vec![0.0f32; len];
        for &i in &self.anomalous {
            map[i] = 1.0;
        }
        for &i in &self.nominal {
            map[i] = -1.0;
        }
        map
    }
}

/// The p-th percentile (0-100) with linear interpolation between order statistics, as
/// numpy's default. `values` must be non-empty and free of NaN.
pub fn percentile(values: &[f32], p: f64) -> f32 {
    // The library computes in f64; rounding once to f32 is what this module always returned.
    anoflow_imaging::stats::percentile(&mut values.to_vec(), p) as f32
}

/// Pseudo-labels of a finite `h x w` score map, deterministic in `seed`.
///
/// With the paper's labeler a local maximum is a pixel not smaller than any of its (up to 8)
/// neighbours, at or above the percentile, and strictly above the map's minimum: a flat map
/// (or a map whose top percentile is its floor) has no maxima to trust and gets no
/// anomalous label.
pub fn pseudo_labels(score: &[f32], h: usize, w: usize, cfg: &PseudoLabelConfig, seed: u64) -> PseudoLabels {
    let found = find(score, h, w, cfg.labeler, cfg.percentile, cfg.radius);
    let nominal_thr = match cfg.nominal_region {
        NominalRegion::BelowPercentile(p) => percentile(score, p),
        NominalRegion::AllRest => f32::INFINITY,
    };
    let is_candidate = |i: usize| score[i] <= nominal_thr;
    finish(found.region, found.seeds, h, w, cfg, is_candidate, seed)
}

/// Self-training: labels from a previous decision map `prior` (TTT4AS's `decision`). The
/// anomalous pixels are the positive ones at or above the `confidence` quantile of the
/// positive values; nominal candidates are the negative ones at or below the
/// `1 - confidence` quantile of the negative values (the most confident of each side).
pub fn labels_from_prior(
    prior: &[f32],
    h: usize,
    w: usize,
    cfg: &PseudoLabelConfig,
    confidence: f64,
    seed: u64,
) -> PseudoLabels {
    let pos: Vec<f32> = prior.iter().copied().filter(|&v| v > 0.0).collect();
    let neg: Vec<f32> = prior.iter().copied().filter(|&v| v <= 0.0).collect();
    if pos.is_empty() || neg.is_empty() {
        return PseudoLabels::default();
    }
    let q = confidence.clamp(0.0, 1.0) * 100.0;
    let (pos_thr, neg_thr) = (percentile(&pos, q), percentile(&neg, 100.0 - q));
    let region: Vec<u8> = prior.iter().map(|&v| u8::from(v > 0.0 && v >= pos_thr)).collect();
    let best = (0..h * w).filter(|&i| region[i] == 1).max_by(|&a, &b| prior[a].total_cmp(&prior[b]));
    finish(region, best.into_iter().collect(), h, w, cfg, |i| prior[i] <= neg_thr, seed)
}

/// Caps the anomalous region, applies the margin and draws the nominal sample.
fn finish(
    region: Vec<u8>,
    seeds: Vec<usize>,
    h: usize,
    w: usize,
    cfg: &PseudoLabelConfig,
    is_candidate: impl Fn(usize) -> bool,
    seed: u64,
) -> PseudoLabels {
    let n = h * w;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut anomalous: Vec<usize> = (0..n).filter(|&i| region[i] == 1).collect();
    // 1 = anomalous, 2 = excluded from nominal sampling (margin).
    let mut state = region;
    if cfg.margin > 0 {
        let mut near = vec![0u8; n];
        paint(&mut near, h, w, &anomalous, cfg.margin);
        for (s, &m) in state.iter_mut().zip(&near) {
            if *s == 0 && m == 1 {
                *s = 2;
            }
        }
    }
    if anomalous.len() > cfg.max_anomalous.max(seeds.len()) {
        let mut rest: Vec<usize> = anomalous.iter().copied().filter(|p| seeds.binary_search(p).is_err()).collect();
        let k = cfg.max_anomalous.saturating_sub(seeds.len());
        sample_in_place(&mut rest, k, &mut rng);
        anomalous = seeds.iter().copied().chain(rest).collect();
        anomalous.sort_unstable();
    }
    let nominal = if anomalous.is_empty() {
        Vec::new()
    } else {
        let mut candidates: Vec<usize> = (0..n).filter(|&i| state[i] == 0 && is_candidate(i)).collect();
        sample_in_place(&mut candidates, cfg.nominal_samples, &mut rng);
        candidates
    };
    PseudoLabels { anomalous, nominal, maxima: seeds }
}

/// Keeps a uniform sample of `k` entries (all if fewer), sorted ascending.
fn sample_in_place(v: &mut Vec<usize>, k: usize, rng: &mut ChaCha8Rng) {
    let k = k.min(v.len());
    // Partial Fisher-Yates: the first k entries become a uniform sample without replacement.
    for i in 0..k {
        let j = rng.gen_range(i..v.len());
        v.swap(i, j);
    }
    v.truncate(k);
    v.sort_unstable();
}

/// A seed that depends only on the sample id and the user's seed (FNV-1a of the id).
pub fn sample_seed(sample_id: &str, seed: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sample_id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v: Vec<f32> = (1..=5).map(|x| x as f32).collect();
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert!((percentile(&v, 90.0) - 4.6).abs() < 1e-6);
    }

    fn bump_map(h: usize, w: usize, centres: &[(f32, f32)]) -> Vec<f32> {
        let mut m = vec![0.0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                // Smooth background that is never flat, plus Gaussian bumps.
                let mut v = 0.01 * ((x as f32 * 0.3).sin() + (y as f32 * 0.2).cos());
                for &(cy, cx) in centres {
                    let d2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                    v += (-d2 / (2.0 * 36.0)).exp();
                }
                m[y * w + x] = v;
            }
        }
        m
    }

    #[test]
    fn one_maximum_per_bump_with_its_neighbourhood() {
        let (h, w) = (224, 224);
        let m = bump_map(h, w, &[(60.0, 60.0), (150.0, 170.0)]);
        let cfg = PseudoLabelConfig { percentile: 99.0, ..Default::default() };
        let l = pseudo_labels(&m, h, w, &cfg, 7);
        assert_eq!(l.maxima, vec![60 * w + 60, 150 * w + 170]);
        assert_eq!(l.anomalous.len(), 18, "two 3x3 squares");
        assert!(l.anomalous.contains(&(59 * w + 61)));
        assert_eq!(l.nominal.len(), 500);
        let median = percentile(&m, 50.0);
        assert!(l.nominal.iter().all(|&i| m[i] <= median));
        // Deterministic in the seed, different across seeds.
        assert_eq!(l, pseudo_labels(&m, h, w, &cfg, 7));
        assert_ne!(l.nominal, pseudo_labels(&m, h, w, &cfg, 8).nominal);
        let map = l.to_map(h * w);
        assert_eq!(map.iter().filter(|&&v| v == 1.0).count(), 18);
        assert_eq!(map.iter().filter(|&&v| v == -1.0).count(), 500);
    }

    #[test]
    fn margin_and_all_rest_regions() {
        let (h, w) = (64, 64);
        let m = bump_map(h, w, &[(32.0, 32.0)]);
        let cfg = PseudoLabelConfig {
            percentile: 99.0,
            radius: 2,
            nominal_samples: 10_000,
            nominal_region: NominalRegion::AllRest,
            margin: 3,
            ..Default::default()
        };
        let l = pseudo_labels(&m, h, w, &cfg, 1);
        assert_eq!(l.anomalous.len(), 25);
        // Everything outside the 11x11 square (radius 2 + margin 3) around the maximum.
        assert_eq!(l.nominal.len(), h * w - 121);
        assert!(l.nominal.iter().all(|&i| (i / w).abs_diff(32) > 5 || (i % w).abs_diff(32) > 5));
    }

    #[test]
    fn flat_maps_and_flat_floors_give_no_anomalous_label() {
        let l = pseudo_labels(&[0.5; 224 * 224], 224, 224, &PseudoLabelConfig::default(), 0);
        assert!(l.anomalous.is_empty() && l.nominal.is_empty());
        // Zero everywhere but a 3x3 spot: the 99th percentile is the floor, yet only the spot's
        // maximum counts (plateaus at the minimum are not maxima).
        let mut m = vec![0.0f32; 100 * 100];
        for (y, x) in [(50, 50), (50, 51), (51, 50)] {
            m[y * 100 + x] = 1.0 + (x + y) as f32 * 0.01;
        }
        let l = pseudo_labels(&m, 100, 100, &PseudoLabelConfig::default(), 0);
        assert_eq!(l.maxima, vec![50 * 100 + 51, 51 * 100 + 50]);
    }

    #[test]
    fn region_labelers_are_capped_and_keep_their_seeds() {
        let (h, w) = (224, 224);
        let m = bump_map(h, w, &[(60.0, 60.0), (150.0, 170.0)]);
        let cfg = PseudoLabelConfig {
            labeler: Labeler::Hysteresis { low_percentile: 90.0 },
            max_anomalous: 300,
            margin: 4,
            ..Default::default()
        };
        let l = pseudo_labels(&m, h, w, &cfg, 3);
        assert_eq!(l.anomalous.len(), 300);
        assert!(l.maxima.iter().all(|p| l.anomalous.contains(p)));
        assert_eq!(l.nominal.len(), 500);
        // Nominal pixels keep the margin from the whole grown region, not only from the sample.
        let region = crate::labelers::find(&m, h, w, cfg.labeler, cfg.percentile, cfg.radius).region;
        for &p in &l.nominal {
            let (y, x) = (p / w, p % w);
            for ny in y.saturating_sub(4)..(y + 5).min(h) {
                for nx in x.saturating_sub(4)..(x + 5).min(w) {
                    assert_eq!(region[ny * w + nx], 0, "nominal pixel {p} is within 4 px of the region");
                }
            }
        }
    }

    #[test]
    fn labels_from_a_prior_decision_take_its_confident_pixels() {
        let (h, w) = (100, 100);
        // Decision: positive inside a disc of radius 10 at (50, 50), peaking at its centre.
        let prior: Vec<f32> = (0..h * w)
            .map(|i| {
                let d = (((i / w) as f32 - 50.0).powi(2) + ((i % w) as f32 - 50.0).powi(2)).sqrt();
                (10.0 - d) / 10.0
            })
            .collect();
        let cfg = PseudoLabelConfig { nominal_samples: 200, ..Default::default() };
        let l = labels_from_prior(&prior, h, w, &cfg, 0.5, 1);
        let positives = prior.iter().filter(|&&v| v > 0.0).count();
        assert!(l.anomalous.len() * 2 >= positives - 2 && l.anomalous.len() * 2 <= positives + 40);
        assert!(l.anomalous.iter().all(|&p| prior[p] > 0.2));
        assert_eq!(l.maxima, vec![50 * w + 50]);
        assert_eq!(l.nominal.len(), 200);
        assert!(l.nominal.iter().all(|&p| prior[p] < -1.0), "nominal from the confident negative half");
        // No positive pixel: nothing to train on.
        let none = labels_from_prior(&vec![-1.0; h * w], h, w, &cfg, 0.5, 1);
        assert!(none.anomalous.is_empty() && none.nominal.is_empty());
    }

    #[test]
    fn sample_seed_depends_on_id_and_seed() {
        assert_eq!(sample_seed("a/1", 0), sample_seed("a/1", 0));
        assert_ne!(sample_seed("a/1", 0), sample_seed("a/2", 0));
        assert_ne!(sample_seed("a/1", 0), sample_seed("a/1", 1));
    }
}
