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
pub fn greedy_k_center(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
    let n = points.len() / dim;
    let count = count.min(n);
    if count == 0 {
        return Vec::new();
    }
    let mut chosen = Vec::with_capacity(count);
    let mut min_d = vec![f32::INFINITY; n];
    let mut next = first;
    const CHUNK: usize = 4096;
    while chosen.len() < count {
        chosen.push(next);
        let c = &points[next * dim..(next + 1) * dim];
        // Update every point's distance to the chosen set and find the farthest, per chunk.
        let (best_d, best_i) = min_d
            .par_chunks_mut(CHUNK)
            .zip(points.par_chunks(CHUNK * dim))
            .enumerate()
            .map(|(ci, (md, pts))| update_chunk(md, pts, c, ci * CHUNK))
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

/// Lowers each point's distance to the chosen set (`md`, one per row of `pts`) by its
/// distance to the new centre `c`; returns the farthest point, first on ties, its index
/// offset by `base` (`usize::MAX` if none beats -inf).
fn update_chunk(md: &mut [f32], pts: &[f32], c: &[f32], base: usize) -> (f32, usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU runs AVX2, checked just above.
        return unsafe { update_chunk_avx2(md, pts, c, base) };
    }
    update_chunk_portable(md, pts, c, base)
}

/// [`update_chunk_portable`] compiled for 256-bit registers: lane for lane the same
/// subtractions, multiplications and additions as `sq_dist` (no FMA, no reordering), so the
/// distances, and hence the picks, are bit-identical to the portable build.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_chunk_avx2(md: &mut [f32], pts: &[f32], c: &[f32], base: usize) -> (f32, usize) {
    update_chunk_portable(md, pts, c, base)
}

#[inline(always)]
fn update_chunk_portable(md: &mut [f32], pts: &[f32], c: &[f32], base: usize) -> (f32, usize) {
    let mut best = (f32::NEG_INFINITY, usize::MAX);
    for (j, (m, p)) in md.iter_mut().zip(pts.chunks_exact(c.len())).enumerate() {
        let d = sq_dist(p, c);
        if d < *m {
            *m = d;
        }
        if *m > best.0 {
            best = (*m, base + j);
        }
    }
    best
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
            let floats: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let want = greedy_k_center_serial(&floats, dim, count, first);
            assert_eq!(greedy_k_center(&floats, dim, count, first), want, "n {n} dim {dim}, floats");
        }
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
