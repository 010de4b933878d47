//! Greedy k-center coreset selection (PatchCore, Algorithm 1): repeatedly take the point
//! farthest from everything taken so far, measured on a seeded random projection.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::linalg::{sgemm, sq_dist, View};

/// Dimension of the random projection the selection works on (as in the paper's code).
pub const PROJECTION_DIM: usize = 128;

/// `rows` (row-major, `dim` columns) projected by a seeded Gaussian matrix to
/// [`PROJECTION_DIM`] dimensions; rows already that small are returned as they are.
pub fn random_projection(rows: &[f32], dim: usize, seed: u64) -> (Vec<f32>, usize) {
    if dim <= PROJECTION_DIM {
        return (rows.to_vec(), dim);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = 1.0 / (PROJECTION_DIM as f32).sqrt();
    // Box-Muller Gaussian entries: a Johnson-Lindenstrauss map that keeps distances in expectation.
    let proj: Vec<f32> = (0..dim * PROJECTION_DIM)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
            scale * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    let n = rows.len() / dim;
    let mut out = vec![0.0f32; n * PROJECTION_DIM];
    // In row blocks so the GEMM threads and its buffers stay small.
    const BLOCK: usize = 8192;
    out.par_chunks_mut(BLOCK * PROJECTION_DIM).zip(rows.par_chunks(BLOCK * dim)).for_each(|(o, r)| {
        let m = r.len() / dim;
        sgemm(1.0, View::rows(r, m, dim), View::rows(&proj, dim, PROJECTION_DIM), 0.0, o);
    });
    (out, PROJECTION_DIM)
}

/// Indices of `count` points chosen by greedy k-center from `points` (row-major, `dim`
/// columns), starting at `first`, in selection order.
///
/// The same picks as [`greedy_k_center_scan`], which measures every point against every new
/// centre, with most of those measurements skipped: a point whose distance to its own centre
/// is small against that centre's distance to the new one cannot come nearer to the new one
/// (triangle inequality). The bound allows for the rounding of the computed distances
/// ([`PruneBound`]), so a skipped point is one whose computed distance could not have dropped,
/// and the picks are bit-identical. Points are still visited in order, so the rows that are
/// measured stream from memory as in the plain scan.
pub fn greedy_k_center(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
    k_center(points, dim, count, first, PruneBound::new(dim))
}

/// Greedy k-center measuring every point against every new centre: the plain algorithm, the
/// benchmark's reference.
pub fn greedy_k_center_scan(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
    k_center(points, dim, count, first, None)
}

fn k_center(points: &[f32], dim: usize, count: usize, first: usize, bound: Option<PruneBound>) -> Vec<usize> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    let count = count.min(n).min(u32::MAX as usize);
    if count == 0 {
        return Vec::new();
    }
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut chosen = Vec::with_capacity(count);
    // The chosen rows, side by side, so the per-pick centre distances stream.
    let mut centres: Vec<f32> = Vec::with_capacity(count * dim);
    let mut min_d = vec![f32::INFINITY; n];
    // The centre (position in `chosen`) each point's distance was measured against; any
    // value while the distance is infinite, which is always measured.
    let mut owner = vec![0u32; n];
    let mut skip_below = Vec::with_capacity(count);
    let mut next = first;
    const CHUNK: usize = 4096;
    while chosen.len() < count {
        let slot = chosen.len() as u32;
        chosen.push(next);
        let c = row(next);
        skip_below.clear();
        match &bound {
            Some(bound) if slot > 0 => centres
                .par_chunks(dim)
                .with_min_len(1024)
                .map(|a| bound.skip_below(sq_dist(a, c)))
                .collect_into_vec(&mut skip_below),
            _ => skip_below.resize(slot.max(1) as usize, f32::NEG_INFINITY),
        }
        centres.extend_from_slice(c);
        let update = Update { c, slot, skip_below: &skip_below };
        // Update every point's distance to the chosen set and find the farthest, per chunk.
        let (best_d, best_i) = min_d
            .par_chunks_mut(CHUNK)
            .zip(owner.par_chunks_mut(CHUNK))
            .zip(points.par_chunks(CHUNK * dim))
            .enumerate()
            .map(|(ci, ((md, own), pts))| update.chunk(md, own, pts, ci * CHUNK))
            .reduce(
                || (f32::NEG_INFINITY, usize::MAX),
                |a, b| if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) { b } else { a },
            );
        if best_i == usize::MAX || best_d <= 0.0 {
            break; // every remaining point duplicates a chosen one
        }
        next = best_i;
    }
    chosen
}

/// One pick's update: the new centre, its position among the chosen, and per earlier centre
/// the distance below which that centre's points are not measured.
struct Update<'a> {
    c: &'a [f32],
    slot: u32,
    skip_below: &'a [f32],
}

impl Update<'_> {
    /// Lowers each point's distance to the chosen set (`md`, one per row of `pts`) by its
    /// distance to the new centre; returns the farthest point, first on ties, its index
    /// offset by `base` (`usize::MAX` if none beats -inf).
    fn chunk(&self, md: &mut [f32], owner: &mut [u32], pts: &[f32], base: usize) -> (f32, usize) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU runs AVX2, checked just above.
            return unsafe { self.chunk_avx2(md, owner, pts, base) };
        }
        self.chunk_portable(md, owner, pts, base)
    }

    /// [`Self::chunk_portable`] compiled for 256-bit registers: lane for lane the same
    /// subtractions, multiplications and additions as `sq_dist` (no FMA, no reordering), so
    /// the distances, and hence the picks, are bit-identical to the portable build.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn chunk_avx2(&self, md: &mut [f32], owner: &mut [u32], pts: &[f32], base: usize) -> (f32, usize) {
        self.chunk_portable(md, owner, pts, base)
    }

    #[inline(always)]
    fn chunk_portable(&self, md: &mut [f32], owner: &mut [u32], pts: &[f32], base: usize) -> (f32, usize) {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for (j, ((m, own), p)) in md.iter_mut().zip(owner.iter_mut()).zip(pts.chunks_exact(self.c.len())).enumerate() {
            // Neither is NaN: distances to the set never take a NaN, nor does the bound.
            if *m >= self.skip_below[*own as usize] {
                let d = sq_dist(p, self.c);
                if d < *m {
                    *m = d;
                    *own = self.slot;
                }
            }
            if *m > best.0 {
                best = (*m, base + j);
            }
        }
        best
    }
}

/// When a new centre cannot lower a point's computed distance, allowing for rounding.
///
/// Let a be a point's centre, c the new one, and ŝ(·,·) the squared distance as `sq_dist`
/// computes it. For true squared distances s, |ŝ - s| <= γ s + η: every term is non-negative,
/// so the relative error of the sum is at most γ = γ_m = m u / (1 - m u) (u = 2^-24) with m
/// roundings per term (a subtraction, a product and at most `dim + 8` additions, whatever the
/// order); η, at most 2^-149 per rounding, covers results in the subnormal range. Then
///   A = sqrt((ŝ(a,c) - η) / (1 + γ)) <= |a - c| and B = sqrt((ŝ(x,a) + η) / (1 - γ)) >= |x - a|,
/// and by the triangle inequality |x - c| >= A - B. If A >= (1 + ρ) B + sqrt(2η / (1 - γ)),
/// ρ = sqrt((1 + γ) / (1 - γ)), then (1 - γ) |x - c|² >= (1 + γ) |x - a|² + 2η, hence
/// ŝ(x,c) >= ŝ(x,a): the point keeps its distance and its centre. Solved for ŝ(x,a), that is
/// ŝ(x,a) < T(ŝ(a,c)) = B_max² (1 - γ) - η with B_max = (A - sqrt(2η / (1 - γ))) / (1 + ρ);
/// T is shrunk by 1e-9 relative to cover its own f64 rounding (about 1e-15).
struct PruneBound {
    gamma: f64,
    rho: f64,
    eta: f64,
}

impl PruneBound {
    /// `None` where the bound is too loose to be worth it (a dimension of millions).
    fn new(dim: usize) -> Option<Self> {
        let m = (dim + 10) as f64;
        let mu = m * f64::powi(2.0, -24);
        if mu >= 0.01 {
            return None;
        }
        let gamma = mu / (1.0 - mu);
        Some(Self { gamma, rho: ((1.0 + gamma) / (1.0 - gamma)).sqrt(), eta: m * f64::powi(2.0, -149) })
    }

    /// The computed distance below which a point of a centre at computed distance
    /// `centre_d` from the new centre cannot come nearer to the new one: the largest f32 not
    /// above [`Self::keep_below`].
    fn skip_below(&self, centre_d: f32) -> f32 {
        let t = self.keep_below(centre_d);
        let t32 = t as f32;
        if f64::from(t32) > t {
            t32.next_down()
        } else {
            t32
        }
    }

    /// [`Self::skip_below`] in f64; -inf (measure everything) if `centre_d` is not finite.
    fn keep_below(&self, centre_d: f32) -> f64 {
        if !centre_d.is_finite() {
            return f64::NEG_INFINITY;
        }
        let Self { gamma, rho, eta } = *self;
        let a = ((f64::from(centre_d) - eta).max(0.0) / (1.0 + gamma)).sqrt();
        let b_max = (a - (2.0 * eta / (1.0 - gamma)).sqrt()) / (1.0 + rho);
        if b_max <= 0.0 {
            return f64::NEG_INFINITY;
        }
        (b_max * b_max * (1.0 - gamma) - eta) * (1.0 - 1e-9)
    }
}

/// The PatchCore coreset: `fraction` of the rows (at least one), picked by greedy k-center on
/// a seeded random projection. Returns the selected row indices.
pub fn select(rows: &[f32], dim: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let n = rows.len() / dim;
    if fraction >= 1.0 {
        return (0..n).collect();
    }
    let count = ((n as f64 * fraction) as usize).clamp(1, n.max(1));
    let (proj, pdim) = random_projection(rows, dim, seed);
    let first = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15).gen_range(0..n);
    greedy_k_center(&proj, pdim, count, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Greedy k-center in one plain scan per pick: strict `>`, so ties go to the lowest index.
    fn greedy_k_center_serial(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
        let n = points.len() / dim;
        let mut chosen = Vec::new();
        let mut min_d = vec![f32::INFINITY; n];
        let mut next = first;
        while chosen.len() < count.min(n) {
            chosen.push(next);
            let c = &points[next * dim..(next + 1) * dim];
            let mut best = (f32::NEG_INFINITY, usize::MAX);
            for (i, p) in points.chunks_exact(dim).enumerate() {
                min_d[i] = min_d[i].min(sq_dist(p, c));
                if min_d[i] > best.0 {
                    best = (min_d[i], i);
                }
            }
            if best.1 == usize::MAX || best.0 <= 0.0 {
                break;
            }
            next = best.1;
        }
        chosen
    }

    #[test]
    fn parallel_picks_equal_the_serial_scan() {
        // Sizes below, at and across the 4096-row chunks; small integer coordinates make many
        // exact distance ties, across chunks too, which the reduction must break like the scan.
        // 128 columns: the projected width, where the SIMD build's lanes are all in use.
        let sizes =
            [(1, 3, 1), (50, 2, 20), (4096, 3, 300), (4097, 2, 500), (13_001, 4, 900), (9000, 128, 200), (700, 13, 90)];
        for (i, &(n, dim, count)) in sizes.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            let points: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(0..6) as f32).collect();
            let first = rng.gen_range(0..n);
            let want = greedy_k_center_serial(&points, dim, count, first);
            assert_eq!(greedy_k_center(&points, dim, count, first), want, "n {n} dim {dim}");
            assert_eq!(greedy_k_center_scan(&points, dim, count, first), want, "n {n} dim {dim}, scan");
            let floats: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let want = greedy_k_center_serial(&floats, dim, count, first);
            assert_eq!(greedy_k_center(&floats, dim, count, first), want, "n {n} dim {dim}, floats");
            assert_eq!(greedy_k_center_scan(&floats, dim, count, first), want, "n {n} dim {dim}, floats, scan");
        }
    }

    /// Gaussian blobs around `centres` random centres, spread `spread`, scaled by `scale`.
    fn blobs(n: usize, dim: usize, centres: usize, spread: f32, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let means: Vec<f32> = (0..centres * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = rng.gen_range(0..centres);
            for j in 0..dim {
                let g: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>() * 0.5;
                out.push(scale * (means[c * dim + j] + spread * g));
            }
        }
        out
    }

    #[test]
    fn pruned_picks_equal_the_serial_scan_on_clustered_data() {
        // Clustered rows, where the pruning skips most measurements, at the projected width and
        // a small one; 20,000 rows put more than the parallel threshold in the first cluster.
        for (i, &(n, dim, centres, spread, count)) in
            [(20_000, 128, 40, 0.05, 2000), (6000, 16, 12, 0.2, 3000), (3000, 128, 3, 0.01, 3000)].iter().enumerate()
        {
            let points = blobs(n, dim, centres, spread, 1.0, i as u64);
            let want = greedy_k_center_serial(&points, dim, count, 7);
            assert_eq!(greedy_k_center(&points, dim, count, 7), want, "n {n} dim {dim}");
        }
    }

    #[test]
    fn pruned_picks_equal_the_serial_scan_at_extreme_magnitudes() {
        // Tiny rows (squared distances in the subnormal range), huge ones (some squared
        // distances overflow to infinity) and exact duplicates (a pick at distance 0 stops).
        for (i, scale) in [1e-21f32, 1e-19, 1e18, 3e18].into_iter().enumerate() {
            let points = blobs(2500, 24, 6, 0.1, scale, 10 + i as u64);
            let want = greedy_k_center_serial(&points, 24, 800, 3);
            assert_eq!(greedy_k_center(&points, 24, 800, 3), want, "scale {scale}");
        }
        let mut dup = blobs(100, 8, 4, 0.1, 1.0, 20);
        dup.extend_from_within(..);
        let want = greedy_k_center_serial(&dup, 8, 150, 0);
        assert!(want.len() <= 100, "duplicates end the selection early");
        assert_eq!(greedy_k_center(&dup, 8, 150, 0), want);
    }

    #[test]
    fn the_prune_bound_never_skips_a_point_that_would_come_nearer() {
        // x between its centre a and the new centre c, on or near the segment, around the
        // midpoint where the triangle inequality is tight: whenever the bound says skip, the
        // computed distance to c must not be below the computed distance to a.
        let dim = PROJECTION_DIM;
        let bound = PruneBound::new(dim).expect("a bound at 128 dimensions");
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut skipped, mut checked) = (0, 0);
        for _ in 0..400 {
            let a: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let c: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let keep_below = bound.keep_below(sq_dist(&a, &c));
            for _ in 0..200 {
                let t = 0.5 - rng.gen_range(0.0f32..2e-5);
                let x: Vec<f32> =
                    a.iter().zip(&c).map(|(&p, &q)| p + t * (q - p) + rng.gen_range(-1e-7f32..1e-7)).collect();
                let (to_a, to_c) = (sq_dist(&x, &a), sq_dist(&x, &c));
                checked += 1;
                if f64::from(to_a) < keep_below {
                    skipped += 1;
                    assert!(to_c >= to_a, "skipped a point that comes nearer: {to_c} < {to_a}");
                }
            }
        }
        assert!(skipped > checked / 10, "the bound skipped {skipped} of {checked}: too loose to be of use");
        // Far from the midpoint it skips, at the midpoint it must not.
        let a = vec![0.0f32; dim];
        let mut c = vec![0.0f32; dim];
        c[0] = 2.0;
        let mut x = vec![0.0f32; dim];
        x[0] = 0.9;
        assert!(f64::from(sq_dist(&x, &a)) < bound.keep_below(sq_dist(&a, &c)));
        x[0] = 1.0;
        assert!(f64::from(sq_dist(&x, &a)) >= bound.keep_below(sq_dist(&a, &c)));
        assert_eq!(bound.keep_below(f32::INFINITY), f64::NEG_INFINITY);
        assert_eq!(bound.keep_below(f32::NAN), f64::NEG_INFINITY);
    }

    #[test]
    fn picks_the_farthest_points_of_a_line() {
        // Points 0, 1, ..., 10 on a line, starting at 0: then 10, then 5, then one of {2, 3} ...
        let pts: Vec<f32> = (0..=10).map(|v| v as f32).collect();
        let got = greedy_k_center(&pts, 1, 3, 0);
        assert_eq!(got, vec![0, 10, 5]);
        // Then ties at distance 2 ({2, 3, 7, 8}) go to the lowest index: 2, after which 7.
        assert_eq!(greedy_k_center(&pts, 1, 5, 0), vec![0, 10, 5, 2, 7]);
    }

    #[test]
    fn outliers_of_a_1024_dim_cluster_are_all_selected() {
        let dim = 1024;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut rows: Vec<f32> = (0..2000 * dim).map(|_| rng.gen_range(-0.05..0.05)).collect();
        // Five far points, each shifted by 10 along its own axis.
        let outliers = [17usize, 500, 901, 1333, 1999];
        for (k, &o) in outliers.iter().enumerate() {
            rows[o * dim + k * 7] += 10.0;
        }
        let picked = select(&rows, dim, 6.0 / 2000.0, 42);
        assert_eq!(picked.len(), 6);
        for o in outliers {
            assert!(picked.contains(&o), "outlier {o} missing from {picked:?}");
        }
        assert_eq!(select(&rows, dim, 1.0, 42).len(), 2000, "coreset 1.0 keeps every row");
    }
}
