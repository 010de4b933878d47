//! Dense linear algebra the scorers need: a checked wrapper over `matrixmultiply`'s GEMM,
//! exact nearest-neighbour search built on it; Cholesky factors and the symmetric
//! eigendecomposition come from `anoflow-linalg`.

use rayon::prelude::*;

use crate::nn_exact::ExactRule;

/// A row-major or strided view of a matrix for [`sgemm`] (f32) and [`dgemm`] (f64).
#[derive(Clone, Copy)]
pub struct View<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }
    /// The transpose of a row-major `rows x cols` matrix (a `cols x rows` view).
    pub fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// The element types `matrixmultiply` multiplies.
pub trait GemmScalar: Copy {
    /// `matrixmultiply`'s GEMM for this type.
    ///
    /// # Safety
    /// As `matrixmultiply::sgemm`: every strided index the shapes reach lies inside its buffer,
    /// and `c` is exclusive.
    #[allow(clippy::too_many_arguments)]
    unsafe fn raw_gemm(
        shape: (usize, usize, usize),
        alpha: Self,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        beta: Self,
        c: (*mut Self, isize, isize),
    );
}

impl GemmScalar for f32 {
    unsafe fn raw_gemm(
        (m, k, n): (usize, usize, usize),
        alpha: f32,
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        beta: f32,
        c: (*mut f32, isize, isize),
    ) {
        // SAFETY: the caller's contract is matrixmultiply's.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2) }
    }
}

impl GemmScalar for f64 {
    unsafe fn raw_gemm(
        (m, k, n): (usize, usize, usize),
        alpha: f64,
        a: (*const f64, isize, isize),
        b: (*const f64, isize, isize),
        beta: f64,
        c: (*mut f64, isize, isize),
    ) {
        // SAFETY: the caller's contract is matrixmultiply's.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2) }
    }
}

/// `c = alpha * a * b + beta * c`, with `c` row-major `a.rows x b.cols`.
///
/// # Panics
/// If the shapes do not agree or a view does not fit its buffer (internal invariants).
pub fn gemm<T: GemmScalar>(alpha: T, a: View<'_, T>, b: View<'_, T>, beta: T, c: &mut [T]) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    assert!(a.fits() && b.fits(), "gemm: a view exceeds its buffer");
    assert_eq!(c.len(), a.rows * b.cols, "gemm: output has the wrong size");
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    // SAFETY: every index the kernel reads, (i * rs + j * cs) for i < rows, j < cols, was
    // checked above to lie inside its slice; `c` is exactly m x n, row-major, exclusive.
    unsafe {
        T::raw_gemm(
            (a.rows, a.cols, b.cols),
            alpha,
            (a.data.as_ptr(), a.row_stride as isize, a.col_stride as isize),
            (b.data.as_ptr(), b.row_stride as isize, b.col_stride as isize),
            beta,
            (c.as_mut_ptr(), b.cols as isize, 1),
        );
    }
}

/// [`gemm`] in f32.
pub fn sgemm(alpha: f32, a: View<'_>, b: View<'_>, beta: f32, c: &mut [f32]) {
    gemm(alpha, a, b, beta, c);
}

/// [`gemm`] in f64.
pub fn dgemm(alpha: f64, a: View<'_, f64>, b: View<'_, f64>, beta: f64, c: &mut [f64]) {
    gemm(alpha, a, b, beta, c);
}

/// Squared Euclidean distance, written with eight independent accumulators so it vectorises
/// (inlined, so callers compiled for wider registers get them).
#[inline(always)]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// Squared norm of each row of a row-major matrix with `dim` columns.
pub fn row_sq_norms(data: &[f32], dim: usize) -> Vec<f32> {
    data.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect()
}

/// Most query rows per tile, and bank rows per chunk: one distance tile is 256 x 2048 f32 (2 MiB),
/// so memory stays bounded whatever the bank size.
const QUERY_TILE: usize = 256;
const BANK_CHUNK: usize = 2048;

/// Smallest approximate distances the GEMM-tile path keeps per query for [`ExactRule::resolve`]:
/// enough that the rows within the rounding bound of the minimum almost always fit.
const GEMM_SLOTS: usize = 4;

/// Exact nearest neighbours of `queries` (row-major, `dim` columns) among `bank` rows, by the rule
/// of [`crate::nn_exact`]: the smallest [`crate::nn_exact::exact_sq_dist`], ties to the lowest index, whatever the
/// kernel.
///
/// Distances are estimated as |q|^2 + |b|^2 - 2 q.b with GEMM tiles (`bank_norms` are the rows'
/// squared norms summed in f32), the [`GEMM_SLOTS`] smallest per query kept, and the winner chosen
/// among them exactly. Returns (Euclidean distance, bank index) per query. Query tiles run in
/// parallel when `parallel`.
pub fn nearest_neighbours(
    bank: &[f32],
    bank_norms: &[f32],
    queries: &[f32],
    dim: usize,
    parallel: bool,
) -> Vec<(f32, u32)> {
    assert!(dim > 0 && bank.len() == bank_norms.len() * dim);
    let nq = queries.len() / dim;
    assert_eq!(nq * dim, queries.len(), "queries are whole rows");
    let mut out = vec![(f32::INFINITY, 0u32); nq];
    if bank_norms.is_empty() {
        return out;
    }
    let rule = ExactRule::new(bank, bank_norms, dim);
    let tile = |(qt, res): (&[f32], &mut [(f32, u32)])| {
        let rows = qt.len() / dim;
        let qn = row_sq_norms(qt, dim);
        // Per query, the GEMM_SLOTS smallest (d~, index) so far, ascending.
        let mut kept = vec![(f32::INFINITY, u32::MAX); rows * GEMM_SLOTS];
        let mut dots = vec![0.0f32; rows * BANK_CHUNK.min(bank_norms.len())];
        for (ci, (chunk, cn)) in bank.chunks(BANK_CHUNK * dim).zip(bank_norms.chunks(BANK_CHUNK)).enumerate() {
            let m = cn.len();
            let dots = &mut dots[..rows * m];
            sgemm(1.0, View::rows(qt, rows, dim), View::transposed(chunk, m, dim), 0.0, dots);
            for (i, (row, slots)) in dots.chunks_exact(m).zip(kept.chunks_exact_mut(GEMM_SLOTS)).enumerate() {
                for (j, (&dot, &n)) in row.iter().zip(cn).enumerate() {
                    let d2 = qn[i] + n - 2.0 * dot;
                    if d2 < slots[GEMM_SLOTS - 1].0 {
                        let at = slots.partition_point(|s| s.0 <= d2);
                        slots.copy_within(at..GEMM_SLOTS - 1, at + 1);
                        slots[at] = (d2, (ci * BANK_CHUNK + j) as u32);
                    }
                }
            }
        }
        for (i, (r, slots)) in res.iter_mut().zip(kept.chunks_exact(GEMM_SLOTS)).enumerate() {
            *r = rule.resolve(&qt[i * dim..(i + 1) * dim], qn[i], slots, GEMM_SLOTS);
        }
    };
    if parallel {
        // Few queries (those a projected bound hands back) still spread over the threads.
        let rows = nq.div_ceil(2 * rayon::current_num_threads()).clamp(8, QUERY_TILE);
        queries.par_chunks(rows * dim).zip(out.par_chunks_mut(rows)).for_each(tile);
    } else {
        queries.chunks(QUERY_TILE * dim).zip(out.chunks_mut(QUERY_TILE)).for_each(tile);
    }
    out
}

/// The `k` rows of `bank` nearest to `query` (exact), nearest first: (Euclidean distance, index).
pub fn k_nearest_rows(bank: &[f32], query: &[f32], k: usize) -> Vec<(f32, u32)> {
    let dim = query.len();
    let mut all: Vec<(f32, u32)> =
        bank.chunks_exact(dim).enumerate().map(|(j, r)| (sq_dist(r, query), j as u32)).collect();
    let k = k.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    all.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().map(|(d, j)| (d.sqrt(), j)).collect()
}

/// Lower Cholesky factor of a symmetric positive definite `n x n` matrix stored packed
/// lower-triangular (row i holds columns 0..=i), in place. Returns false if not positive definite.
pub fn cholesky_packed(a: &mut [f64], n: usize) -> bool {
    anoflow_linalg::cholesky_packed(a, n).is_ok()
}

pub use anoflow_linalg::{solve_lower_sq_norm, symmetric_eigen};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn nearest_neighbours_equal_brute_force_f64_on_1536_dims() {
        let dim = 1536;
        // 2500 bank rows cross a chunk border; 300 queries cross a tile border.
        let bank = random(2500 * dim, 1);
        let mut queries = random(300 * dim, 2);
        // A few queries sit almost on a bank row: the cancellation-prone case.
        for q in 0..5 {
            for c in 0..dim {
                queries[q * dim + c] = bank[(100 + q) * dim + c] + 1e-3;
            }
        }
        let norms = row_sq_norms(&bank, dim);
        for parallel in [false, true] {
            let got = nearest_neighbours(&bank, &norms, &queries, dim, parallel);
            for (q, &(d, j)) in got.iter().enumerate() {
                let qr = &queries[q * dim..(q + 1) * dim];
                let (bd, bj) = bank
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(j, r)| (r.iter().zip(qr).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>(), j))
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .unwrap();
                assert_eq!(j as usize, bj, "query {q}");
                let bd = bd.sqrt();
                assert!((d as f64 - bd).abs() <= 1e-5 * bd.max(1e-3) + 1e-6, "query {q}: {d} vs {bd}");
            }
        }
    }

    #[test]
    fn k_nearest_rows_are_sorted_and_exact() {
        let bank: Vec<f32> = [0.0, 0.0, 3.0, 4.0, 1.0, 0.0, 0.0, 2.0].to_vec();
        let got = k_nearest_rows(&bank, &[0.0, 0.0], 3);
        assert_eq!(got, vec![(0.0, 0), (1.0, 2), (2.0, 3)]);
    }

    #[test]
    fn gemm_matches_naive_product_with_transposed_views() {
        let (m, k, n) = (37, 129, 53);
        let a = random(m * k, 3);
        let b = random(n * k, 4);
        let mut c = vec![0.0; m * n];
        sgemm(1.0, View::rows(&a, m, k), View::transposed(&b, n, k), 0.0, &mut c);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-4, "{i},{j}");
            }
        }
    }

    #[test]
    fn eigen_reconstructs_a_symmetric_matrix() {
        let n = 120;
        let x = random(n * 300, 5);
        // A = X X^T / 300: symmetric positive semi-definite, with a repeated zero block.
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..300).map(|t| x[i * 300 + t] as f64 * x[j * 300 + t] as f64).sum::<f64>() / 300.0;
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, n);
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|t| vecs[t * n + i] * vals[t] * vecs[t * n + j]).sum();
                assert!((r - a[i * n + j]).abs() < 1e-9, "{i},{j}: {r} vs {}", a[i * n + j]);
                let dot: f64 = (0..n).map(|t| vecs[i * n + t] * vecs[j * n + t]).sum();
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4, 2], [2, 3]] = L L^T with L = [[2, 0], [1, sqrt 2]].
        let mut a = vec![4.0, 2.0, 3.0];
        assert!(cholesky_packed(&mut a, 2));
        assert!((a[2] - 2f64.sqrt()).abs() < 1e-12);
        let mut z = vec![0.0; 2];
        // x^T A^-1 x for x = (1, 1): A^-1 = [[3, -2], [-2, 4]] / 8 -> 3/8.
        let s = solve_lower_sq_norm(&a, &[1.0, 1.0], &mut z);
        assert!((s - 3.0 / 8.0).abs() < 1e-12);
        let mut bad = vec![1.0, 2.0, 1.0];
        assert!(!cholesky_packed(&mut bad, 2));
    }
}
