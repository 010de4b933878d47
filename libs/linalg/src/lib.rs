//! # anoflow-linalg
//!
//! The dense symmetric linear algebra plugins share, on `nalgebra` instead of hand-written
//! solvers: Cholesky factors and solves (PaDiM's covariances, the cross-modal ridge
//! regression) and symmetric eigendecompositions (PCA bases). Matrix products stay where they
//! are (the scorers' GEMM tiles). A plain library, not a plugin.
//!
//! Point-cloud normals keep their own 3x3 Jacobi (`plugins/pointcloud/src/eigen3.rs`):
//! nalgebra's eigenvectors differ from it by ~1e-16, and FPFH's histogram bins turn that into
//! different masks.
//!
//! Layouts are the callers': row-major `n x n` slices and packed lower triangles (row `i`
//! holds columns `0..=i`).

use nalgebra::{DMatrix, SymmetricEigen};

/// A matrix that is not (numerically) positive definite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not positive definite: pivot {pivot} = {value}")]
pub struct NotPositiveDefinite {
    /// The first pivot (0-based) that failed.
    pub pivot: usize,
    /// Its value: the diagonal entry minus the squares already taken out of it.
    pub value: f64,
}

/// The lower Cholesky factor of a symmetric `n x n` matrix read from its lower triangle by
/// `at(i, j)` (`j <= i`). A pivot `s_j` (the square of `L_jj`) must be finite and above
/// `min_pivot_ratio * a_jj`: 0 asks for plain positive definiteness, a small positive ratio
/// also refuses a pivot lost to cancellation (a matrix singular up to rounding).
fn factor(
    n: usize,
    at: impl Fn(usize, usize) -> f64,
    min_pivot_ratio: f64,
) -> Result<DMatrix<f64>, NotPositiveDefinite> {
    let a = DMatrix::from_fn(n, n, |i, j| if j <= i { at(i, j) } else { at(j, i) });
    let l = nalgebra::Cholesky::new_unchecked(a).unpack();
    for j in 0..n {
        let s = l[(j, j)] * l[(j, j)];
        let diag = at(j, j);
        if !(s.is_finite() && l[(j, j)] > 0.0 && s > min_pivot_ratio * diag.abs()) {
            // Report the pivot as the hand-written loop saw it (negative when the matrix is
            // indefinite): the rows above `j` are still valid.
            let value = diag - (0..j).map(|k| l[(j, k)] * l[(j, k)]).sum::<f64>();
            return Err(NotPositiveDefinite { pivot: j, value });
        }
    }
    Ok(l)
}

/// Packed lower-triangular storage: `n (n + 1) / 2` values.
pub fn packed_len(n: usize) -> usize {
    n * (n + 1) / 2
}

/// Replaces a symmetric positive definite matrix stored packed lower-triangular by its lower
/// Cholesky factor, in the same layout.
pub fn cholesky_packed(a: &mut [f64], n: usize) -> Result<(), NotPositiveDefinite> {
    assert_eq!(a.len(), packed_len(n), "packed matrix of order {n}");
    let at = |i: usize, j: usize| i * (i + 1) / 2 + j;
    let l = factor(n, |i, j| a[at(i, j)], 0.0)?;
    for i in 0..n {
        for j in 0..=i {
            a[at(i, j)] = l[(i, j)];
        }
    }
    Ok(())
}

/// |L^-1 x|^2 for a packed lower Cholesky factor `l` (forward substitution, `z` scratch of
/// `x.len()`): the squared Mahalanobis distance of `x` when `l` factors the covariance. Kept
/// as a loop over the packed rows: it runs once per pixel and sample, where building a
/// matrix would cost more than the solve.
pub fn solve_lower_sq_norm(l: &[f64], x: &[f64], z: &mut [f64]) -> f64 {
    let n = x.len();
    let mut s = 0.0;
    for i in 0..n {
        let row = &l[i * (i + 1) / 2..i * (i + 1) / 2 + i + 1];
        let mut v = x[i];
        for k in 0..i {
            v -= row[k] * z[k];
        }
        z[i] = v / row[i];
        s += z[i] * z[i];
    }
    s
}

/// Solves `A X = B` for a symmetric positive definite `A` (`d x d`, row-major, lower triangle
/// read) and `B` (`d x m`, row-major), in place in `b`. `min_pivot_ratio` as in the factor:
/// a pivot at or below `min_pivot_ratio * a_jj` is refused.
pub fn cholesky_solve(
    a: &[f64],
    d: usize,
    b: &mut [f64],
    m: usize,
    min_pivot_ratio: f64,
) -> Result<(), NotPositiveDefinite> {
    assert_eq!(a.len(), d * d, "matrix of order {d}");
    assert_eq!(b.len(), d * m, "right-hand side of {d} x {m}");
    let l = factor(d, |i, j| a[i * d + j], min_pivot_ratio)?;
    let mut x = DMatrix::from_row_slice(d, m, b);
    // L Y = B, then L^T X = Y.
    if !l.solve_lower_triangular_mut(&mut x) || !l.tr_solve_lower_triangular_mut(&mut x) {
        return Err(NotPositiveDefinite { pivot: 0, value: 0.0 });
    }
    for i in 0..d {
        for c in 0..m {
            b[i * m + c] = x[(i, c)];
        }
    }
    Ok(())
}

/// Eigendecomposition of a symmetric `n x n` matrix (row-major `a`): eigenvalues in
/// descending order and the matching unit eigenvectors as the columns of a column-major
/// matrix (vector `j` is `vecs[j * n..(j + 1) * n]`). An eigenvector's sign is arbitrary.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "matrix of order {n}");
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let eig = SymmetricEigen::new(DMatrix::from_row_slice(n, n, a));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| eig.eigenvalues[y].total_cmp(&eig.eigenvalues[x]));
    let values = order.iter().map(|&j| eig.eigenvalues[j]).collect();
    let mut vecs = Vec::with_capacity(n * n);
    for &j in &order {
        vecs.extend(eig.eigenvectors.column(j).iter());
    }
    (values, vecs)
}

#[cfg(test)]
mod tests;
