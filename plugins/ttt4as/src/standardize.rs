//! Per-dimension standardization fitted on one image's training pixels.
//!
//! The mean and variance are weighted by the same per-sample weights as the class balancing
//! (class weights: each class counts half), so "class weights" and "oversample" standardize
//! alike. With a small C the SVM decision is close to a class-mean difference through the
//! standardization centre; centring on the balanced mean puts the boundary midway between
//! the classes instead of next to the (500 times more numerous) nominal pixels.

/// `z = (x - mean) * scale`, per dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    /// `1 / std`, or 1 for a dimension that is constant over the training pixels.
    pub scale: Vec<f32>,
}

impl Standardizer {
    /// The identity transform (`standardize: false`).
    pub fn identity(d: usize) -> Self {
        Self { mean: vec![0.0; d], scale: vec![1.0; d] }
    }

    /// Fits on `x` (`weights.len()` rows of `d` values) with per-row weights.
    pub fn fit(x: &[f32], d: usize, weights: &[f64]) -> Self {
        let total: f64 = weights.iter().sum();
        let mut mean = vec![0.0f64; d];
        for (row, &wt) in x.chunks_exact(d).zip(weights) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += wt * f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= total);
        // Two passes: the variance from centred values, exact enough in f64.
        let mut var = vec![0.0f64; d];
        for (row, &wt) in x.chunks_exact(d).zip(weights) {
            for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
                let c = f64::from(v) - m;
                *s += wt * c * c;
            }
        }
        let scale = var
            .iter()
            .zip(&mean)
            .map(|(&s, &m)| {
                let std = (s / total).sqrt();
                if std > 1e-6 * (1.0 + m.abs()) {
                    (1.0 / std) as f32
                } else {
                    1.0
                }
            })
            .collect();
        Self { mean: mean.into_iter().map(|m| m as f32).collect(), scale }
    }

    /// Standardizes every row of `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        let d = self.mean.len();
        for row in x.chunks_exact_mut(d) {
            for ((v, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) * s;
            }
        }
    }

    /// A linear decision `w . z + b` on standardized features, rewritten on raw features:
    /// `(w * scale) . x + (b - sum(w * scale * mean))`.
    pub fn fold(&self, w: &[f32], b: f32) -> (Vec<f32>, f32) {
        let w_raw: Vec<f32> = w.iter().zip(&self.scale).map(|(&w, &s)| w * s).collect();
        let shift: f64 = w_raw.iter().zip(&self.mean).map(|(&w, &m)| f64::from(w) * f64::from(m)).sum();
        (w_raw, (f64::from(b) - shift) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_fit_centres_and_scales() {
        // Two rows of 2 dims; the second dim is constant.
        let x = vec![0.0, 5.0, 4.0, 5.0];
        let s = Standardizer::fit(&x, 2, &[1.0, 1.0]);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.scale, vec![0.5, 1.0]);
        // Weight 3 on the second row moves the mean to 3.
        let s = Standardizer::fit(&x, 2, &[1.0, 3.0]);
        assert_eq!(s.mean[0], 3.0);
        let mut z = x.clone();
        s.apply(&mut z);
        let w = [0.7f32, -1.3];
        let (w_raw, b_raw) = s.fold(&w, 0.25);
        for (row_x, row_z) in x.chunks(2).zip(z.chunks(2)) {
            let on_z = w[0] * row_z[0] + w[1] * row_z[1] + 0.25;
            let on_x = w_raw[0] * row_x[0] + w_raw[1] * row_x[1] + b_raw;
            assert!((on_z - on_x).abs() < 1e-5);
        }
    }
}
