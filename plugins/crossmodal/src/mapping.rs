//! The crossmodal feature-mapping score (CFM, Costanzino et al., CVPR 2024, with closed-form
//! linear maps instead of MLPs): on nominal data, a 2D feature predicts the 3D feature of the
//! same location and vice versa; where either prediction fails, the two modalities disagree,
//! which is what an anomaly looks like.

use crate::ridge::LinearMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    /// `1 - cos(prediction, actual)`; 1 when either vector is zero and the other is not, 0
    /// when both are.
    Cosine,
    /// Euclidean distance.
    L2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// `d(2D->3D) * d(3D->2D)`, as CFM.
    Product,
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scoring {
    pub distance: Distance,
    pub combine: Combine,
    /// Cells whose 3D feature is all zeros (no geometry: background removed, no measurement)
    /// score 0 and are left out of the fit.
    pub skip_empty_3d: bool,
}

pub fn is_empty(row: &[f32]) -> bool {
    row.iter().all(|&v| v == 0.0)
}

pub fn distance(kind: Distance, pred: &[f32], actual: &[f32]) -> f32 {
    match kind {
        Distance::L2 => pred.iter().zip(actual).map(|(p, a)| (p - a) * (p - a)).sum::<f32>().sqrt(),
        Distance::Cosine => {
            let (mut dot, mut pp, mut aa) = (0.0f64, 0.0f64, 0.0f64);
            for (&p, &a) in pred.iter().zip(actual) {
                dot += f64::from(p) * f64::from(a);
                pp += f64::from(p) * f64::from(p);
                aa += f64::from(a) * f64::from(a);
            }
            match (pp > 0.0, aa > 0.0) {
                (true, true) => (1.0 - dot / (pp.sqrt() * aa.sqrt())) as f32,
                (false, false) => 0.0,
                _ => 1.0,
            }
        }
    }
}

/// Per-cell scores of paired rows `f2` (n x to3.dim_in) and `f3` (n x to2.dim_in).
pub fn cell_scores(to3: &LinearMap, to2: &LinearMap, f2: &[f32], f3: &[f32], scoring: &Scoring) -> Vec<f32> {
    let (d2, d3) = (to3.dim_in, to2.dim_in);
    let pred3 = to3.predict(f2);
    let pred2 = to2.predict(f3);
    f2.chunks_exact(d2)
        .zip(f3.chunks_exact(d3))
        .zip(pred3.chunks_exact(d3).zip(pred2.chunks_exact(d2)))
        .map(|((x2, x3), (p3, p2))| {
            if scoring.skip_empty_3d && is_empty(x3) {
                return 0.0;
            }
            let e3 = distance(scoring.distance, p3, x3);
            let e2 = distance(scoring.distance, p2, x2);
            match scoring.combine {
                Combine::Product => e3 * e2,
                Combine::Sum => e3 + e2,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert!((distance(Distance::Cosine, &[1.0, 0.0], &[0.0, 2.0]) - 1.0).abs() < 1e-6);
        assert!(distance(Distance::Cosine, &[1.0, 1.0], &[3.0, 3.0]).abs() < 1e-6);
        assert_eq!(distance(Distance::Cosine, &[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(distance(Distance::Cosine, &[0.0, 0.0], &[1.0, 0.0]), 1.0);
        assert!((distance(Distance::L2, &[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-6);
    }
}
