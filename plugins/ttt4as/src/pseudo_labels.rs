//! Pseudo-labels from one score map (TTT4AS, FACTS.md): anomalous = local maxima of the map
//! at or above its p-th percentile plus a square neighbourhood around each; nominal = a
//! seeded random sample of low-score pixels.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    /// Percentile (0-100) a local maximum must reach to be anomalous.
    pub percentile: f64,
    /// Chebyshev radius of the square added around each kept maximum (1 = 3x3).
    pub radius: usize,
    pub nominal_samples: usize,
    pub nominal_region: NominalRegion,
    /// Chebyshev distance (pixels) nominal pixels keep from every anomalous one.
    pub margin: usize,
}

impl Default for PseudoLabelConfig {
    fn default() -> Self {
        Self {
            percentile: 99.0,
            radius: 1,
            nominal_samples: 500,
            nominal_region: NominalRegion::BelowPercentile(50.0),
            margin: 0,
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
    let mut v = values.to_vec();
    let rank = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let k = rank.floor() as usize;
    let (_, &mut lo, upper) = v.select_nth_unstable_by(k, f32::total_cmp);
    let frac = rank - k as f64;
    if frac == 0.0 || upper.is_empty() {
        return lo;
    }
    let hi = upper.iter().copied().fold(f32::INFINITY, f32::min);
    (lo as f64 + frac * (hi as f64 - lo as f64)) as f32
}

/// Pseudo-labels of a finite `h x w` score map, deterministic in `seed`.
///
/// A local maximum is a pixel not smaller than any of its (up to 8) neighbours, at or above
/// the percentile, and strictly above the map's minimum: a flat map (or a map whose top
/// percentile is its floor) has no maxima to trust and gets no anomalous label.
pub fn pseudo_labels(score: &[f32], h: usize, w: usize, cfg: &PseudoLabelConfig, seed: u64) -> PseudoLabels {
    let n = h * w;
    let min = score.iter().copied().fold(f32::INFINITY, f32::min);
    let thr = percentile(score, cfg.percentile);
    let mut maxima = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = score[y * w + x];
            if v < thr || v <= min {
                continue;
            }
            let is_max = (y.saturating_sub(1)..(y + 2).min(h))
                .all(|ny| (x.saturating_sub(1)..(x + 2).min(w)).all(|nx| score[ny * w + nx] <= v));
            if is_max {
                maxima.push(y * w + x);
            }
        }
    }

    // 1 = anomalous, 2 = excluded from nominal sampling (margin).
    let mut state = vec![0u8; n];
    paint(&mut state, h, w, &maxima, cfg.radius, 1);
    let anomalous: Vec<usize> = (0..n).filter(|&i| state[i] == 1).collect();
    if cfg.margin > 0 {
        paint(&mut state, h, w, &anomalous, cfg.margin, 2);
    }

    let nominal_thr = match cfg.nominal_region {
        NominalRegion::BelowPercentile(p) => percentile(score, p),
        NominalRegion::AllRest => f32::INFINITY,
    };
    let mut candidates: Vec<usize> = (0..n).filter(|&i| state[i] == 0 && score[i] <= nominal_thr).collect();
    let nominal = if anomalous.is_empty() {
        Vec::new()
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = cfg.nominal_samples.min(candidates.len());
        // Partial Fisher-Yates: the first k entries become a uniform sample without replacement.
        for i in 0..k {
            let j = rng.gen_range(i..candidates.len());
            candidates.swap(i, j);
        }
        candidates.truncate(k);
        candidates.sort_unstable();
        candidates
    };
    PseudoLabels { anomalous, nominal, maxima }
}

/// Marks the square of Chebyshev radius `r` around each centre with `value`, never
/// overwriting a non-zero cell.
fn paint(state: &mut [u8], h: usize, w: usize, centres: &[usize], r: usize, value: u8) {
    for &c in centres {
        let (cy, cx) = (c / w, c % w);
        for y in cy.saturating_sub(r)..(cy + r + 1).min(h) {
            for x in cx.saturating_sub(r)..(cx + r + 1).min(w) {
                if state[y * w + x] == 0 {
                    state[y * w + x] = value;
                }
            }
        }
    }
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
    fn sample_seed_depends_on_id_and_seed() {
        assert_eq!(sample_seed("a/1", 0), sample_seed("a/1", 0));
        assert_ne!(sample_seed("a/1", 0), sample_seed("a/2", 0));
        assert_ne!(sample_seed("a/1", 0), sample_seed("a/1", 1));
    }
}
