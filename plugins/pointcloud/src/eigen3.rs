//! The eigenvector of a 3x3 symmetric matrix with the smallest eigenvalue (the normal of a
//! local point set, from its covariance), by cyclic Jacobi rotations: exact enough, branch-light
//! and robust for repeated eigenvalues.

#![allow(clippy::needless_range_loop)] // index loops read like the matrix algebra they implement

/// Eigenvalues (ascending) and the matching unit eigenvectors of a symmetric 3x3 matrix.
pub fn symmetric_eigen(m: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    // Columns of v are the eigenvectors.
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..32 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        let scale = a[0][0].abs() + a[1][1].abs() + a[2][2].abs();
        if off <= 1e-15 * scale || off == 0.0 {
            break;
        }
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // a <- J^T a J with the rotation J in the (p, q) plane.
            for k in 0..3 {
                let (akp, akq) = (a[k][p], a[k][q]);
                a[k][p] = c * akp - s * akq;
                a[k][q] = s * akp + c * akq;
            }
            for k in 0..3 {
                let (apk, aqk) = (a[p][k], a[q][k]);
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in v.iter_mut() {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| a[i][i].total_cmp(&a[j][j]));
    let values = [a[order[0]][order[0]], a[order[1]][order[1]], a[order[2]][order[2]]];
    let mut vectors = [[0.0; 3]; 3];
    for (out, &col) in vectors.iter_mut().zip(&order) {
        *out = [v[0][col], v[1][col], v[2][col]];
    }
    (values, vectors)
}

/// Mean and covariance (not divided by n) of a point set.
pub fn scatter(points: impl Iterator<Item = [f32; 3]> + Clone) -> Option<([f64; 3], [[f64; 3]; 3], usize)> {
    let mut n = 0usize;
    let mut mean = [0.0f64; 3];
    for p in points.clone() {
        for k in 0..3 {
            mean[k] += f64::from(p[k]);
        }
        n += 1;
    }
    if n == 0 {
        return None;
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = [[0.0f64; 3]; 3];
    for p in points {
        let d = [f64::from(p[0]) - mean[0], f64::from(p[1]) - mean[1], f64::from(p[2]) - mean[2]];
        for i in 0..3 {
            for j in i..3 {
                cov[i][j] += d[i] * d[j];
            }
        }
    }
    cov[1][0] = cov[0][1];
    cov[2][0] = cov[0][2];
    cov[2][1] = cov[1][2];
    Some((mean, cov, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_eigenpairs_of_a_rotated_diagonal_matrix() {
        // R diag(1, 4, 9) R^T for a rotation R about (1, 1, 1).
        let (c, s) = (0.6f64.cos(), 0.6f64.sin());
        let u = [1.0 / 3f64.sqrt(); 3];
        let mut r = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                let kron = if i == j { 1.0 } else { 0.0 };
                let cross = match (i, j) {
                    (0, 1) => -u[2],
                    (0, 2) => u[1],
                    (1, 0) => u[2],
                    (1, 2) => -u[0],
                    (2, 0) => -u[1],
                    (2, 1) => u[0],
                    _ => 0.0,
                };
                r[i][j] = c * kron + s * cross + (1.0 - c) * u[i] * u[j];
            }
        }
        let d = [1.0, 4.0, 9.0];
        let mut m = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = (0..3).map(|k| r[i][k] * d[k] * r[j][k]).sum();
            }
        }
        let (vals, vecs) = symmetric_eigen(m);
        for k in 0..3 {
            assert!((vals[k] - d[k]).abs() < 1e-10, "{vals:?}");
            let col = [r[0][k], r[1][k], r[2][k]];
            let dot: f64 = (0..3).map(|i| col[i] * vecs[k][i]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-10, "eigenvector {k}: {:?} vs {col:?}", vecs[k]);
        }
    }
}
