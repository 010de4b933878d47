use super::*;

/// A symmetric positive definite matrix `G^T G + n I` from a fixed pseudo-random `G`.
fn spd(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let g: Vec<f64> = (0..n * n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] =
                (0..n).map(|k| g[k * n + i] * g[k * n + j]).sum::<f64>() + if i == j { n as f64 } else { 0.0 };
        }
    }
    a
}

#[test]
fn packed_factor_reproduces_the_matrix() {
    let n = 40;
    let a = spd(n, 3);
    let mut p: Vec<f64> = (0..n).flat_map(|i| (0..=i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j]).collect();
    cholesky_packed(&mut p, n).unwrap();
    let at = |i: usize, j: usize| if j <= i { p[i * (i + 1) / 2 + j] } else { 0.0 };
    for i in 0..n {
        for j in 0..n {
            let llt: f64 = (0..n).map(|k| at(i, k) * at(j, k)).sum();
            assert!((llt - a[i * n + j]).abs() < 1e-10 * a[i * n + i].abs(), "({i}, {j})");
        }
    }
    // |L^-1 x|^2 = x^T A^-1 x: with x = A e_0, that is a_00.
    let x: Vec<f64> = (0..n).map(|i| a[i * n]).collect();
    let q = solve_lower_sq_norm(&p, &x, &mut vec![0.0; n]);
    assert!((q - a[0]).abs() < 1e-9 * a[0]);
}

#[test]
fn solve_recovers_a_known_solution_and_refuses_singular_matrices() {
    let (d, m) = (30, 4);
    let a = spd(d, 5);
    let x: Vec<f64> = (0..d * m).map(|i| (i as f64 * 0.37).sin()).collect();
    let mut b: Vec<f64> = (0..d)
        .flat_map(|i| (0..m).map(move |c| (i, c)))
        .map(|(i, c)| (0..d).map(|k| a[i * d + k] * x[k * m + c]).sum())
        .collect();
    cholesky_solve(&a, d, &mut b, m, 1e-10).unwrap();
    for (got, want) in b.iter().zip(&x) {
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
    }
    // Rank one: the second pivot is lost to cancellation.
    let v = [1.0, 2.0, 3.0];
    let a: Vec<f64> = (0..9).map(|k| v[k / 3] * v[k % 3]).collect();
    let err = cholesky_solve(&a, 3, &mut [1.0; 3], 1, 1e-10).unwrap_err();
    assert_eq!(err.pivot, 1);
    assert!(err.value.abs() < 1e-9, "{err}");
    let mut indefinite = [1.0, 0.0, -1.0];
    assert_eq!(cholesky_packed(&mut indefinite, 2), Err(NotPositiveDefinite { pivot: 1, value: -1.0 }));
}

#[test]
fn eigenpairs_of_a_rotated_diagonal_matrix() {
    // Q diag(5, 2, 0.5) Q^T with Q a rotation: values and vectors come back, largest first.
    let (c, s) = (0.6f64, 0.8f64);
    let q = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    let d = [5.0, 2.0, 0.5];
    let mut m = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = (0..3).map(|k| q[i][k] * d[k] * q[j][k]).sum();
        }
    }
    let flat: Vec<f64> = m.iter().flatten().copied().collect();
    let (values, vecs) = symmetric_eigen(&flat, 3);
    for (got, want) in values.iter().zip([5.0, 2.0, 0.5]) {
        assert!((got - want).abs() < 1e-12);
    }
    for k in 0..3 {
        let dot: f64 = (0..3).map(|i| vecs[k * 3 + i] * q[i][k]).sum();
        assert!((dot.abs() - 1.0).abs() < 1e-12, "vector {k}");
    }
    assert_eq!(symmetric_eigen(&[], 0), (vec![], vec![]));
}

#[test]
fn repeated_eigenvalues_give_an_orthonormal_basis() {
    let (values, v) = symmetric_eigen(&[2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0], 3);
    assert_eq!(values, [2.0; 3]);
    for a in 0..3 {
        for b in 0..3 {
            let dot: f64 = (0..3).map(|i| v[a * 3 + i] * v[b * 3 + i]).sum();
            assert!((dot - f64::from(u8::from(a == b))).abs() < 1e-12);
        }
    }
}
