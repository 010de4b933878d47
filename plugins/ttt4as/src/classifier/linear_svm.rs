//! L2-regularized L1-loss / L2-loss linear SVC by dual coordinate descent, as liblinear's
//! `solve_l2r_l1l2_svc` (Hsieh et al., ICML 2008), with per-class C and shrinking.
//!
//! The intercept is handled the liblinear way: every sample gets an extra constant feature
//! `B` (`bias`, liblinear's `-B`, scikit-learn's `intercept_scaling`), whose weight is the
//! intercept divided by `B`. That weight is regularized like the others, so with a small C
//! the intercept is pulled towards 0; a larger `B` weakens that pull. `bias: 0` fits no
//! intercept at all.

use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{axpy, dot, FitInfo, LinearModel, TrainingSet};

// Written `l1` / `l2` in the `classifier` param. (Plain comments on the variants: doc
// comments would turn the schema's choice list into one alternative per variant.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    // Hinge loss, box constraint `0 <= alpha <= C`.
    L1,
    // Squared hinge loss (scikit-learn's LinearSVC default), `D_ii = 1 / (2C)`.
    L2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvmConfig {
    pub c: f64,
    pub loss: Loss,
    pub bias: f64,
    /// Stop when the projected-gradient spread falls below this (liblinear's `eps`).
    pub tol: f64,
    pub max_iter: usize,
    pub shrinking: bool,
}

impl Default for LinearSvmConfig {
    fn default() -> Self {
        Self { c: 0.001, loss: Loss::L2, bias: 1.0, tol: 0.01, max_iter: 1000, shrinking: true }
    }
}

/// Fits on a training set whose per-class C multipliers are `set.class_weight`.
pub fn fit(set: &TrainingSet<'_>, cfg: &LinearSvmConfig, seed: u64) -> (LinearModel, FitInfo) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { fit_avx(set, cfg, seed) };
    }
    fit_portable(set, cfg, seed)
}

/// [`fit_portable`] compiled for AVX: `dot`'s eight accumulators become one 256-bit register
/// instead of two 128-bit ones, and `axpy` runs 8 lanes at a time. Every lane does the same
/// multiplications and additions in the same order (AVX alone allows no fused multiply-add),
/// so the model is the same to the bit; the tests compare both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn fit_avx(set: &TrainingSet<'_>, cfg: &LinearSvmConfig, seed: u64) -> (LinearModel, FitInfo) {
    fit_portable(set, cfg, seed)
}

#[inline(always)]
fn fit_portable(set: &TrainingSet<'_>, cfg: &LinearSvmConfig, seed: u64) -> (LinearModel, FitInfo) {
    let (n, d) = (set.len(), set.d);
    let bias = cfg.bias as f32;
    let class_c = |y: f32| if y > 0.0 { cfg.c * set.class_weight.0 } else { cfg.c * set.class_weight.1 };
    let (diag, upper): (Vec<f64>, Vec<f64>) = set
        .y
        .iter()
        .map(|&y| match cfg.loss {
            Loss::L1 => (0.0, class_c(y)),
            Loss::L2 => (0.5 / class_c(y), f64::INFINITY),
        })
        .unzip();
    let qd: Vec<f64> =
        (0..n).map(|i| diag[i] + f64::from(dot(set.row(i), set.row(i))) + f64::from(bias * bias)).collect();

    let mut alpha = vec![0.0f64; n];
    let mut w = vec![0.0f32; d];
    let mut wb = 0.0f32;
    let mut index: Vec<usize> = (0..n).collect();
    let mut active = n;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut pg_max_old, mut pg_min_old) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut iterations = 0;
    let mut converged = false;

    while iterations < cfg.max_iter {
        iterations += 1;
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        index[..active].shuffle(&mut rng);
        let mut s = 0;
        while s < active {
            let i = index[s];
            let yi = f64::from(set.y[i]);
            let xi = set.row(i);
            let g = yi * f64::from(dot(&w, xi) + wb * bias) - 1.0 + diag[i] * alpha[i];
            let mut pg = 0.0;
            if alpha[i] == 0.0 {
                if cfg.shrinking && g > pg_max_old {
                    active -= 1;
                    index.swap(s, active);
                    continue;
                } else if g < 0.0 {
                    pg = g;
                }
            } else if alpha[i] == upper[i] {
                if cfg.shrinking && g < pg_min_old {
                    active -= 1;
                    index.swap(s, active);
                    continue;
                } else if g > 0.0 {
                    pg = g;
                }
            } else {
                pg = g;
            }
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (alpha[i] - g / qd[i]).clamp(0.0, upper[i]);
                let step = ((alpha[i] - old) * yi) as f32;
                axpy(step, xi, &mut w);
                wb += step * bias;
            }
            s += 1;
        }
        if pg_max - pg_min <= cfg.tol {
            if active == n {
                converged = true;
                break;
            }
            // Converged on the shrunk problem: check once more on all samples.
            active = n;
            pg_max_old = f64::INFINITY;
            pg_min_old = f64::NEG_INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
        pg_min_old = if pg_min >= 0.0 { f64::NEG_INFINITY } else { pg_min };
    }
    let support_vectors = alpha.iter().filter(|&&a| a > 0.0).count();
    (LinearModel { w, b: wb * bias }, FitInfo { iterations, converged, support_vectors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The AVX build of the solver returns the portable build's model bit for bit, on a
    /// TTT4AS-sized problem (unaligned length, both losses, shrinking on and off).
    #[test]
    fn the_avx_build_gives_the_same_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx") {
                return;
            }
            let (n, d) = (509, 1029);
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let y: Vec<f32> = (0..n).map(|i| if i < 60 { 1.0 } else { -1.0 }).collect();
            let x: Vec<f32> =
                (0..n * d).map(|k| rng.gen::<f32>() - 0.5 + if k / d < 60 && k % d < 40 { 0.4 } else { 0.0 }).collect();
            let set = TrainingSet { x: &x, y: &y, d, class_weight: (n as f64 / 120.0, n as f64 / 898.0) };
            for (loss, shrinking) in [(Loss::L2, true), (Loss::L1, true), (Loss::L2, false)] {
                let cfg = LinearSvmConfig { loss, shrinking, ..Default::default() };
                let (portable, a) = fit_portable(&set, &cfg, 3);
                // SAFETY: AVX is present (checked above).
                let (avx, b) = unsafe { fit_avx(&set, &cfg, 3) };
                assert_eq!((a.iterations, a.support_vectors), (b.iterations, b.support_vectors));
                assert!(a.iterations > 1, "a real solve: {a:?}");
                let bits = |m: &LinearModel| m.w.iter().chain([&m.b]).map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&portable), bits(&avx), "{loss:?} shrinking {shrinking}");
            }
        }
    }
}
