//! The nearest-neighbour rule every search path applies, so that the winner and its distance do
//! not depend on the kernel, the summation order or the CPU.
//!
//! A search path ranks bank rows by an approximate squared distance d~ = |q|^2 + |b|^2 - 2 q.b in
//! f32, each path with its own rounding (FMA chains in another order per microkernel, GEMM tiles).
//! Ranking by d~ alone would let rows that are tied within that rounding win on one path and lose
//! on another. So a path only shortlists: it keeps, per group of bank rows, the few smallest d~, and
//! [`ExactRule::resolve`] takes as candidates every row whose d~ lies within a rigorous rounding
//! bound ([`RoundingBound`]) of the smallest, then picks the candidate with the smallest
//! [`exact_sq_dist`] (one fixed f64 computation), ties to the lowest row index. The bound is an
//! upper bound of the error of every summation order, so the candidates always hold the row that
//! minimises `exact_sq_dist` over the whole bank: the result is that minimum, whichever path ran.

/// Squared Euclidean distance in f64, computed one fixed way: the squared differences of columns
/// `k` go into accumulator `k % 8` in column order, and the eight accumulators are added as
/// ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)). Rust never contracts to FMA or reorders float
/// arithmetic, so every CPU and every vector width gives the same bits; where the CPU has AVX
/// the eight accumulators are two 256-bit registers ([`exact_sq_dist_avx`], the same operations
/// lane by lane).
#[inline(always)]
pub fn exact_sq_dist(a: &[f32], b: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { exact_sq_dist_avx(a, b) };
    }
    exact_sq_dist_portable(a, b)
}

/// [`exact_sq_dist`] without SIMD intrinsics (what every CPU can run).
#[inline(always)]
pub fn exact_sq_dist_portable(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = f64::from(x[l]) - f64::from(y[l]);
            acc[l] += d * d;
        }
    }
    finish(acc, ra, rb)
}

/// The remainder's columns into accumulators `0..`, then the fixed reduction.
#[inline(always)]
fn finish(mut acc: [f64; 8], ra: &[f32], rb: &[f32]) -> f64 {
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        let d = f64::from(x) - f64::from(y);
        acc[l] += d * d;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// [`exact_sq_dist`] with AVX: accumulators 0-3 and 4-7 in two registers; each lane converts,
/// subtracts, multiplies and adds (no fused multiply-add) exactly as the portable loop does for
/// its column, so the bits are the same.
///
/// # Safety
/// The CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub unsafe fn exact_sq_dist_avx(a: &[f32], b: &[f32]) -> f64 {
    use std::arch::x86_64::*;
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let whole = n - n % 8;
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 <= whole <= n, the length of both slices.
        let (xa, xb) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        let dl =
            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xa)), _mm256_cvtps_pd(_mm256_castps256_ps128(xb)));
        let dh =
            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xa, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(xb, 1)));
        lo = _mm256_add_pd(lo, _mm256_mul_pd(dl, dl));
        hi = _mm256_add_pd(hi, _mm256_mul_pd(dh, dh));
        i += 8;
    }
    let mut acc = [0.0f64; 8];
    // SAFETY: `acc` holds 8 f64, two unaligned stores of 4.
    unsafe {
        _mm256_storeu_pd(acc.as_mut_ptr(), lo);
        _mm256_storeu_pd(acc.as_mut_ptr().add(4), hi);
    }
    finish(acc, &a[whole..n], &b[whole..n])
}

/// The reported distance: the square root of [`exact_sq_dist`], rounded once to f32.
pub(crate) fn reported(sq: f64) -> f32 {
    sq.sqrt() as f32
}

/// An upper bound of |d~ - D| + |D64 - D| for one query and bank row, where D = |q - b|^2 exactly,
/// D64 is [`exact_sq_dist`] and d~ is any search path's f32 value fl(fl(qn + bn) - 2 dot), with
/// qn, bn and dot f32 sums of `dim` products in any order, with or without FMA, and the final
/// subtraction rounded once (fused `fnmadd`) or after the exact doubling (2 dot is exact).
///
/// With u = 2^-24 and g_n = n u / (1 - n u) (Higham, Accuracy and Stability, 3.1): an f32 sum of
/// `n` products in any evaluation order, FMA or not, errs by at most g_n times the sum of the
/// products' magnitudes. Let A = |q|^2 + |b|^2 exactly and A~ = qn + bn as computed (f32 values
/// added exactly), so |A~ - A| <= g_d A and A <= A~ / (1 - g_d). Then:
/// - s = fl(qn + bn): |s - A| <= g_d A + u A~;
/// - |2 dot - 2 q.b| <= 2 g_d sum |q_k b_k| <= g_d A, as sum |q_k b_k| <= |q| |b| <= A / 2;
/// - t = s - 2 dot exactly: |t - D| <= 2 g_d A + u A~, and |t| <= D + |t - D|, D <= 2 A;
/// - d~ = fl(t): |d~ - D| <= |t - D| + u |t| <= A (2 g_d (1 + u) + 2 u) + A~ (u + u^2).
///
/// D64 rounds each difference and square once (relative 2^-53) and sums at most `dim` terms:
/// |D64 - D| <= g64_(d+3) D <= 2 g64_(d+3) A. Subnormal products add an absolute error of at most
/// 2^-150 each, 4 dim of them counting the doubled dot product. The bound is
/// c A~ + a with c = ((2 g_d (1 + u) + 2 u) + 2 g64_(d+3)) / (1 - g_d) + u + u^2, enlarged by
/// 2^-20 relative, which covers the f64 roundings of the comparisons in [`ExactRule::resolve`]
/// (2^-52 of values at most about 2 A~), and a = (4 dim + 4) 2^-149.
#[derive(Clone, Copy, Debug)]
pub struct RoundingBound {
    c: f64,
    a: f64,
}

impl RoundingBound {
    pub fn for_dim(dim: usize) -> Self {
        let gamma = |n: f64, u: f64| if n * u < 0.5 { n * u / (1.0 - n * u) } else { f64::INFINITY };
        let (d, u, u64) = (dim as f64, f64::from(f32::EPSILON) / 2.0, f64::EPSILON / 2.0);
        let g = gamma(d, u);
        let c = ((2.0 * g * (1.0 + u) + 2.0 * u) + 2.0 * gamma(d + 3.0, u64)) / (1.0 - g) + u + u * u;
        let c = if c.is_finite() && c >= 0.0 { c * (1.0 + 2f64.powi(-20)) } else { f64::INFINITY };
        Self { c, a: (4.0 * d + 4.0) * 2f64.powi(-149) }
    }

    /// The bound for a query and a bank row of squared norms `qn` and `bn` (as computed in f32).
    pub fn of(&self, qn: f32, bn: f32) -> f64 {
        self.c * (f64::from(qn) + f64::from(bn)) + self.a
    }
}

/// A bank and what [`ExactRule::resolve`] needs to know of it.
pub struct ExactRule<'a> {
    bank: &'a [f32],
    norms: &'a [f32],
    dim: usize,
    bound: RoundingBound,
    /// The largest bank norm, or `None` if a norm is not finite (then every query is scanned).
    max_norm: Option<f32>,
}

impl<'a> ExactRule<'a> {
    /// `bank` is row-major with `dim` columns; `norms` its rows' squared norms summed in f32 (in
    /// any order: the bound covers every one).
    pub fn new(bank: &'a [f32], norms: &'a [f32], dim: usize) -> Self {
        assert!(dim > 0 && bank.len() == norms.len() * dim, "bank and norms disagree");
        Self { bank, norms, dim, bound: RoundingBound::for_dim(dim), max_norm: max_finite(norms) }
    }

    fn row(&self, j: usize) -> &[f32] {
        &self.bank[j * self.dim..(j + 1) * self.dim]
    }

    /// The nearest bank row of query `q` (squared norm `qn`, as computed in f32): (distance, index)
    /// with the smallest [`exact_sq_dist`], ties to the lowest index.
    ///
    /// `kept` is what a search path shortlisted, in groups of `slots` entries: group `g` of the
    /// `kept.len() / slots` groups covers the bank rows `g, g + groups, g + 2 groups, ...` and holds
    /// the (d~, index) of `slots` of them with the smallest d~ (`f32::INFINITY` in unused slots), so
    /// a row of a group that was not kept has a d~ at least the group's largest kept one. A
    /// group that may hold a candidate it did not keep has all its rows checked exactly; so does
    /// every row when the norms are too large for the bound (overflow) or not finite.
    pub fn resolve(&self, q: &[f32], qn: f32, kept: &[(f32, u32)], slots: usize) -> (f32, u32) {
        assert!(slots > 0 && kept.len().is_multiple_of(slots) && q.len() == self.dim);
        let groups = kept.len() / slots;
        let nb = self.norms.len();
        let mut best = (f64::INFINITY, u32::MAX);
        let mut consider = |j: usize| {
            let d = exact_sq_dist(q, self.row(j));
            let j = j as u32;
            if d < best.0 || (d == best.0 && j < best.1) || best.1 == u32::MAX {
                best = (d, j);
            }
        };
        let smallest = kept.iter().filter(|k| k.0.is_finite()).min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let in_range = self.max_norm.is_some_and(|m| f64::from(qn) + f64::from(m) <= f64::from(f32::MAX) / 4.0);
        let (true, Some(&(m, i)), Some(max_norm)) = (in_range, smallest, self.max_norm) else {
            (0..nb).for_each(consider);
            return (reported(best.0), best.1);
        };
        let upper = f64::from(m) + self.bound.of(qn, self.norms[i as usize]);
        let widest = self.bound.of(qn, max_norm);
        for (g, group) in kept.chunks_exact(slots).enumerate() {
            // Rows of the group that no slot holds have a d~ at least the largest kept one.
            let members = if g < nb { (nb - g).div_ceil(groups) } else { 0 };
            let largest = group.iter().map(|k| k.0).fold(f32::NEG_INFINITY, f32::max);
            // (A slot left empty although the group has more rows cannot happen within the range
            // checked above; it is scanned all the same.)
            let may_hide = !largest.is_finite() || f64::from(largest) - widest <= upper;
            if members > slots && may_hide {
                (g..nb).step_by(groups).for_each(&mut consider);
                continue;
            }
            for &(d, j) in group {
                if d.is_finite() && f64::from(d) - self.bound.of(qn, self.norms[j as usize]) <= upper {
                    consider(j as usize);
                }
            }
        }
        (reported(best.0), best.1)
    }
}

/// The largest value, or `None` if one is not finite (or there are none).
fn max_finite(values: &[f32]) -> Option<f32> {
    values.iter().try_fold(f32::NEG_INFINITY, |m, &v| v.is_finite().then(|| m.max(v))).filter(|m| m.is_finite())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::linalg::row_sq_norms;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The documented rule by brute force: the smallest [`exact_sq_dist`] over every row, ties
    /// to the lowest index.
    pub(crate) fn brute_force(bank: &[f32], q: &[f32]) -> (f32, u32) {
        let mut best = (f64::INFINITY, 0u32);
        for (j, row) in bank.chunks_exact(q.len()).enumerate() {
            let d = exact_sq_dist(q, row);
            if d < best.0 {
                best = (d, j as u32);
            }
        }
        (best.0.sqrt() as f32, best.1)
    }

    #[test]
    fn exact_sq_dist_agrees_with_an_index_order_sum() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for dim in [1, 7, 8, 9, 100, 1027] {
            let a: Vec<f32> = (0..dim).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            let b: Vec<f32> = (0..dim).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            let plain: f64 = a.iter().zip(&b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
            let got = exact_sq_dist(&a, &b);
            assert!((got - plain).abs() <= 1e-13 * plain, "dim {dim}: {got} vs {plain}");
        }
        assert_eq!(exact_sq_dist(&[1.0, 2.0, 3.0], &[1.0, 0.0, 0.0]), 13.0);
    }

    #[test]
    fn every_build_of_the_exact_distance_gives_the_same_bits() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for dim in [0, 1, 5, 8, 9, 15, 16, 17, 100, 1024, 1027] {
            for trial in 0..50 {
                let scale = [1e-30f32, 1e-3, 1.0, 1e4, 1e18][trial % 5];
                let a: Vec<f32> = (0..dim).map(|_| rng.gen_range(-scale..scale)).collect();
                let mut b: Vec<f32> = a.iter().map(|&v| v + rng.gen_range(-1.0f32..1.0) * scale * 1e-3).collect();
                if trial % 7 == 0 && dim > 0 {
                    b[dim / 2] = f32::from_bits(a[dim / 2].to_bits() ^ 1);
                }
                let want = exact_sq_dist_portable(&a, &b);
                assert_eq!(exact_sq_dist(&a, &b).to_bits(), want.to_bits(), "dim {dim} trial {trial}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX checked just above.
                    let avx = unsafe { exact_sq_dist_avx(&a, &b) };
                    assert_eq!(avx.to_bits(), want.to_bits(), "dim {dim} trial {trial}");
                }
            }
        }
        // Infinities and NaN go through the same operations too.
        let a = [1.0f32, f32::INFINITY, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, f32::NAN];
        let b = [0.0f32; 9];
        assert!(exact_sq_dist(&a, &b).is_nan() && exact_sq_dist_portable(&a, &b).is_nan());
        let a = [f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(exact_sq_dist(&a, &b), f64::INFINITY);
    }

    /// d~ as the GEMM path computes it, from a dot product summed in the given column order,
    /// with or without FMA.
    fn approx(q: &[f32], b: &[f32], order: &[usize], fma: bool) -> f32 {
        let (qn, bn) = (row_sq_norms(q, q.len())[0], row_sq_norms(b, b.len())[0]);
        let dot = order.iter().fold(0.0f32, |s, &k| if fma { q[k].mul_add(b[k], s) } else { s + q[k] * b[k] });
        qn + bn - 2.0 * dot
    }

    #[test]
    fn rounding_bound_covers_the_error_of_any_summation_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for dim in [1, 2, 3, 16, 100, 1024] {
            let bound = RoundingBound::for_dim(dim);
            let forward: Vec<usize> = (0..dim).collect();
            let backward: Vec<usize> = (0..dim).rev().collect();
            for trial in 0..200 {
                let scale = [1e-3f32, 1.0, 1e4][trial % 3];
                let q: Vec<f32> = (0..dim).map(|_| rng.gen_range(-scale..scale)).collect();
                // Nearly on the query (the cancellation-prone case) or anywhere.
                let b: Vec<f32> = if trial % 2 == 0 {
                    q.iter().map(|&v| v + rng.gen_range(-1e-4f32..1e-4) * scale).collect()
                } else {
                    (0..dim).map(|_| rng.gen_range(-scale..scale)).collect()
                };
                let exact = exact_sq_dist(&q, &b);
                let e = bound.of(row_sq_norms(&q, dim)[0], row_sq_norms(&b, dim)[0]);
                for (order, fma) in [(&forward, false), (&forward, true), (&backward, true)] {
                    let err = (f64::from(approx(&q, &b, order, fma)) - exact).abs();
                    assert!(err <= e, "dim {dim} trial {trial} fma {fma}: error {err} above bound {e}");
                }
            }
        }
    }

    #[test]
    fn resolve_takes_the_exact_winner_among_near_ties_and_scans_overfull_groups() {
        // Rows 0 and 2 are the query moved by two and by one low bit: d~ cannot tell them apart,
        // the exact distances can (2^-44 and 2^-46), so row 2 wins. Row 1 is far.
        let q = [1.0f32, 1.0];
        let up = |n: u32| f32::from_bits(1.0f32.to_bits() + n);
        let bank = [up(2), 1.0, 5.0, 5.0, 1.0, up(1)];
        let norms = row_sq_norms(&bank, 2);
        let rule = ExactRule::new(&bank, &norms, 2);
        let qn = row_sq_norms(&q, 2)[0];
        let want = (2f32.powi(-23), 2);
        assert_eq!(brute_force(&bank, &q), want);
        // One group of three slots that kept all rows: row 1 is beyond the bound, 0 and 2 are
        // candidates.
        assert_eq!(rule.resolve(&q, qn, &[(0.0, 0), (32.0, 1), (0.0, 2)], 3), want);
        // One group of two slots for three rows, its second entry within the bound: the third
        // row may be a candidate too, so the group is scanned.
        assert_eq!(rule.resolve(&q, qn, &[(0.0, 0), (0.0, 2)], 2), want);
        // One slot that kept only row 0 (the other candidate hides in the group): scanned.
        assert_eq!(rule.resolve(&q, qn, &[(0.0, 0)], 1), want);
        // Three groups of one slot (rows 0, 1, 2 each alone): nothing hides, no scan needed.
        assert_eq!(rule.resolve(&q, qn, &[(0.0, 0), (32.0, 1), (0.0, 2)], 1), want);
        // Norms that would overflow the search paths: every row is checked exactly.
        let huge = [3e19f32, 3e19, 1.0, 1.0];
        let hn = row_sq_norms(&huge, 2);
        let rule = ExactRule::new(&huge, &hn, 2);
        assert_eq!(rule.resolve(&[1.0, 1.0], 2.0, &[(f32::INFINITY, 0)], 1), (0.0, 1));
    }
}
