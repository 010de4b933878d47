//! Closed-form ridge regression with an intercept: `Y ~ (X - mean_x) W + mean_y`, with
//! `W = (Xc^T Xc + lambda I)^-1 Xc^T Yc`. The Gram matrices are accumulated in f64 in row
//! chunks (bounded memory), the system is solved by Cholesky (`anoflow-linalg`).
//!
//! `lambda = ridge * trace(Xc^T Xc) / dim_x`: the `ridge` parameter is relative to the mean
//! variance (times n) of the inputs, so one value suits CNN features (~1) and FPFH (~100)
//! alike.

#![allow(clippy::needless_range_loop)] // index loops read like the matrix algebra they implement

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RidgeError {
    #[error("no rows to fit on")]
    Empty,
    #[error("row buffers disagree: {0}")]
    Shape(String),
    #[error("the regularised Gram matrix is not positive definite (pivot {pivot} = {value}); raise `ridge`")]
    NotPositiveDefinite { pivot: usize, value: f64 },
}

/// A fitted linear map from `dim_in` to `dim_out` features.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearMap {
    pub dim_in: usize,
    pub dim_out: usize,
    /// `dim_in x dim_out`, row-major.
    pub weights: Vec<f32>,
    pub mean_in: Vec<f32>,
    pub mean_out: Vec<f32>,
}

fn means(rows: &[f32], dim: usize) -> Vec<f64> {
    let n = rows.len() / dim;
    let mut m = vec![0.0f64; dim];
    for r in rows.chunks_exact(dim) {
        for (a, &v) in m.iter_mut().zip(r) {
            *a += f64::from(v);
        }
    }
    m.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    m
}

/// `C += A^T B` for row-major `A (n x a)`, `B (n x b)`, `C (a x b)`, all f64.
fn gemm_tn(n: usize, a: usize, b: usize, lhs: &[f64], rhs: &[f64], out: &mut [f64]) {
    // SAFETY: the slices hold exactly n*a, n*b and a*b elements (checked by the caller's
    // chunking); the strides describe A^T (a x n) and B (n x b) in row-major storage.
    debug_assert!(lhs.len() == n * a && rhs.len() == n * b && out.len() == a * b);
    unsafe {
        matrixmultiply::dgemm(
            a,
            n,
            b,
            1.0,
            lhs.as_ptr(),
            1,
            a as isize,
            rhs.as_ptr(),
            b as isize,
            1,
            1.0,
            out.as_mut_ptr(),
            b as isize,
            1,
        );
    }
}

/// Solves `A X = B` for symmetric positive definite `A (d x d)` and `B (d x m)`, in place in `b`.
fn cholesky_solve(a: &[f64], d: usize, b: &mut [f64], m: usize) -> Result<(), RidgeError> {
    // A pivot at or below 1e-10 of its diagonal entry was lost to cancellation: the matrix is
    // singular up to rounding.
    anoflow_linalg::cholesky_solve(a, d, b, m, 1e-10)
        .map_err(|e| RidgeError::NotPositiveDefinite { pivot: e.pivot, value: e.value })
}

/// Fits `y ~ x` on paired rows (`x`: n x dim_x, `y`: n x dim_y).
pub fn fit(x: &[f32], dim_x: usize, y: &[f32], dim_y: usize, ridge: f64) -> Result<LinearMap, RidgeError> {
    if dim_x == 0 || dim_y == 0 || !x.len().is_multiple_of(dim_x) || !y.len().is_multiple_of(dim_y) {
        return Err(RidgeError::Shape(format!(
            "{} values for dim {dim_x}, {} values for dim {dim_y}",
            x.len(),
            y.len()
        )));
    }
    let n = x.len() / dim_x;
    if n != y.len() / dim_y {
        return Err(RidgeError::Shape(format!("{n} input rows but {} output rows", y.len() / dim_y)));
    }
    if n == 0 {
        return Err(RidgeError::Empty);
    }
    let (mx, my) = (means(x, dim_x), means(y, dim_y));
    let mut gram = vec![0.0f64; dim_x * dim_x];
    let mut cross = vec![0.0f64; dim_x * dim_y];
    const CHUNK: usize = 1024;
    let mut cx = Vec::with_capacity(CHUNK * dim_x);
    let mut cy = Vec::with_capacity(CHUNK * dim_y);
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        cx.clear();
        cy.clear();
        for r in start..end {
            cx.extend(x[r * dim_x..(r + 1) * dim_x].iter().zip(&mx).map(|(&v, m)| f64::from(v) - m));
            cy.extend(y[r * dim_y..(r + 1) * dim_y].iter().zip(&my).map(|(&v, m)| f64::from(v) - m));
        }
        gemm_tn(end - start, dim_x, dim_x, &cx, &cx, &mut gram);
        gemm_tn(end - start, dim_x, dim_y, &cx, &cy, &mut cross);
    }
    let trace: f64 = (0..dim_x).map(|i| gram[i * dim_x + i]).sum();
    // A constant input still gets a positive definite system.
    let lambda = ridge * (trace / dim_x as f64).max(1e-12);
    for i in 0..dim_x {
        gram[i * dim_x + i] += lambda;
    }
    cholesky_solve(&gram, dim_x, &mut cross, dim_y)?;
    Ok(LinearMap {
        dim_in: dim_x,
        dim_out: dim_y,
        weights: cross.iter().map(|&v| v as f32).collect(),
        mean_in: mx.iter().map(|&v| v as f32).collect(),
        mean_out: my.iter().map(|&v| v as f32).collect(),
    })
}

impl LinearMap {
    /// Predictions for `rows` (n x dim_in), n x dim_out.
    pub fn predict(&self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.dim_in;
        let centred: Vec<f32> =
            rows.chunks_exact(self.dim_in).flat_map(|r| r.iter().zip(&self.mean_in).map(|(v, m)| v - m)).collect();
        let mut out: Vec<f32> = (0..n).flat_map(|_| self.mean_out.iter().copied()).collect();
        // SAFETY: centred is n x dim_in, weights dim_in x dim_out, out n x dim_out, row-major.
        unsafe {
            matrixmultiply::sgemm(
                n,
                self.dim_in,
                self.dim_out,
                1.0,
                centred.as_ptr(),
                self.dim_in as isize,
                1,
                self.weights.as_ptr(),
                self.dim_out as isize,
                1,
                1.0,
                out.as_mut_ptr(),
                self.dim_out as isize,
                1,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn recovers_a_known_linear_map_with_a_tiny_ridge() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (n, a, b) = (3000, 64, 33);
        let x: Vec<f32> = (0..n * a).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..a * b).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let bias: Vec<f32> = (0..b).map(|_| rng.gen_range(-5.0..5.0)).collect();
        let mut y = vec![0.0f32; n * b];
        for r in 0..n {
            for j in 0..b {
                y[r * b + j] = bias[j] + (0..a).map(|k| x[r * a + k] * w[k * b + j]).sum::<f32>();
            }
        }
        let map = fit(&x, a, &y, b, 1e-9).unwrap();
        let worst = map.weights.iter().zip(&w).map(|(p, t)| (p - t).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "weights off by {worst}");
        let pred = map.predict(&x[..10 * a]);
        let worst = pred.iter().zip(&y[..10 * b]).map(|(p, t)| (p - t).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "predictions off by {worst}");
        // A large ridge shrinks the map towards the mean.
        let shrunk = fit(&x, a, &y, b, 100.0).unwrap();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(norm(&shrunk.weights) < 0.05 * norm(&w));
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(fit(&[], 3, &[], 2, 1.0), Err(RidgeError::Empty));
        assert!(matches!(fit(&[1.0; 6], 3, &[1.0; 6], 2, 1.0), Err(RidgeError::Shape(_))));
        // Constant inputs: the map is the mean, and stays finite.
        let m = fit(&[2.0; 30], 3, &[5.0; 20], 2, 1e-3).unwrap();
        assert!(m.predict(&[2.0, 2.0, 2.0]).iter().all(|&v| (v - 5.0).abs() < 1e-5));
        // Ridge 0 on rank-deficient inputs is refused with advice.
        let err = fit(&[1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 2, &[1.0, 2.0, 3.0], 1, 0.0).unwrap_err();
        assert!(err.to_string().contains("raise `ridge`"), "{err}");
    }
}
