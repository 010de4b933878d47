//! Background plane removal by RANSAC, as the 3D anomaly detection literature preprocesses
//! MVTec 3D-AD (BTF, M3DM): fit the dominant plane, then drop every point within a distance
//! of it.
//!
//! Hypotheses are scored on a seeded subsample of the candidate points (at most
//! [`RansacConfig::max_eval`]) so the cost does not grow with the image; the best hypothesis
//! is then refined by a least-squares (PCA) fit to its inliers among all candidates, and the
//! refined plane decides which points are removed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cloud::{cross, dot, norm, sub, Organized};
use crate::eigen3::{scatter, symmetric_eigen};

/// A plane `normal . p + offset = 0`, `normal` of unit length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plane {
    pub normal: [f32; 3],
    pub offset: f32,
}

impl Plane {
    pub fn distance(&self, p: [f32; 3]) -> f32 {
        (dot(self.normal, p) + self.offset).abs()
    }

    fn through(a: [f32; 3], b: [f32; 3], c: [f32; 3]) -> Option<Self> {
        let n = cross(sub(b, a), sub(c, a));
        let len = norm(n);
        // Degenerate (collinear) triples give no plane.
        let scale = norm(sub(b, a)) * norm(sub(c, a));
        if !(len > 1e-6 * scale && len > 0.0) {
            return None;
        }
        let normal = [n[0] / len, n[1] / len, n[2] / len];
        Some(Self { normal, offset: -dot(normal, a) })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RansacConfig {
    pub iterations: usize,
    /// Inlier distance, in the cloud's units.
    pub distance: f32,
    /// Fit only on points within this many pixels of the image border (0: every point), as
    /// BTF fits the table plane on the border strip, where the object never is.
    pub border: usize,
    pub seed: u64,
    /// Hypotheses are scored on at most this many candidate points.
    pub max_eval: usize,
}

impl Default for RansacConfig {
    fn default() -> Self {
        Self { iterations: 1000, distance: 0.005, border: 0, seed: 0, max_eval: 4096 }
    }
}

/// The candidate pixels a plane is fitted to.
fn candidates(cloud: &Organized, border: usize) -> Vec<usize> {
    let (h, w) = (cloud.height, cloud.width);
    (0..h * w)
        .filter(|&i| cloud.valid[i])
        .filter(|&i| {
            let (y, x) = (i / w, i % w);
            border == 0 || y < border || x < border || y + border >= h || x + border >= w
        })
        .collect()
}

/// The dominant plane of the cloud's valid points, or `None` when fewer than three
/// non-collinear candidates exist.
pub fn fit_plane(cloud: &Organized, cfg: &RansacConfig) -> Option<Plane> {
    let cand = candidates(cloud, cfg.border);
    if cand.len() < 3 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let eval: Vec<[f32; 3]> = if cand.len() <= cfg.max_eval {
        cand.iter().map(|&i| cloud.points[i]).collect()
    } else {
        rand::seq::index::sample(&mut rng, cand.len(), cfg.max_eval)
            .into_iter()
            .map(|k| cloud.points[cand[k]])
            .collect()
    };
    let mut best: Option<(usize, Plane)> = None;
    for _ in 0..cfg.iterations.max(1) {
        let a = cloud.points[cand[rng.gen_range(0..cand.len())]];
        let b = cloud.points[cand[rng.gen_range(0..cand.len())]];
        let c = cloud.points[cand[rng.gen_range(0..cand.len())]];
        let Some(plane) = Plane::through(a, b, c) else { continue };
        let inliers = eval.iter().filter(|&&p| plane.distance(p) <= cfg.distance).count();
        if best.is_none_or(|(n, _)| inliers > n) {
            best = Some((inliers, plane));
        }
    }
    let (_, plane) = best?;
    // Least-squares refinement on the hypothesis' inliers among all candidates.
    let inliers = cand.iter().map(|&i| cloud.points[i]).filter(|&p| plane.distance(p) <= cfg.distance);
    match scatter(inliers) {
        Some((mean, cov, n)) if n >= 3 => {
            let (_, vecs) = symmetric_eigen(cov);
            let nrm = [vecs[0][0] as f32, vecs[0][1] as f32, vecs[0][2] as f32];
            let refined = Plane {
                normal: nrm,
                offset: -(nrm[0] as f64 * mean[0] + nrm[1] as f64 * mean[1] + nrm[2] as f64 * mean[2]) as f32,
            };
            Some(refined)
        }
        _ => Some(plane),
    }
}

/// Invalidates every valid point within `distance` of `plane`; returns how many.
pub fn remove_plane(cloud: &mut Organized, plane: &Plane, distance: f32) -> usize {
    let mut removed = 0;
    for i in 0..cloud.points.len() {
        if cloud.valid[i] && plane.distance(cloud.points[i]) <= distance {
            cloud.invalidate(i);
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 224x224 tilted table (z = 400 + 0.05 x + 0.02 y, mm) with a box 3 mm high in the middle,
    /// some dropouts and outliers.
    pub(crate) fn table_with_box() -> Organized {
        let n = 224;
        let mut raw = vec![0.0f32; n * n * 3];
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                if (x * 7 + y * 13) % 97 == 0 {
                    continue; // dropout
                }
                let (px, py) = (x as f32 * 0.1, y as f32 * 0.1);
                let mut z = 400.0 + 0.05 * px + 0.02 * py;
                if (80..150).contains(&x) && (70..160).contains(&y) {
                    z -= 3.0;
                }
                if (x * 31 + y * 17) % 211 == 0 {
                    z += 5.0; // outlier
                }
                raw[i * 3..i * 3 + 3].copy_from_slice(&[px, py, z]);
            }
        }
        Organized::from_raw(n, n, &raw)
    }

    #[test]
    fn finds_the_table_and_keeps_the_box() {
        let mut c = table_with_box();
        let cfg = RansacConfig { iterations: 200, distance: 0.2, seed: 3, ..RansacConfig::default() };
        let plane = fit_plane(&c, &cfg).unwrap();
        // The true normal is (0.05, 0.02, -1) normalised.
        let t = [0.05f32, 0.02, -1.0];
        let tn = norm(t);
        let cos = dot(plane.normal, [t[0] / tn, t[1] / tn, t[2] / tn]).abs();
        assert!(cos > 0.9999, "normal {:?}", plane.normal);
        let before = c.valid_count();
        let removed = remove_plane(&mut c, &plane, 0.2);
        assert!(removed > 0 && removed < before);
        // What remains: the box (70x90 minus dropouts) and the outliers, nothing of the table.
        for y in 0..224 {
            for x in 0..224 {
                let i = y * 224 + x;
                let in_box = (80..150).contains(&x) && (70..160).contains(&y);
                let outlier = (x * 31 + y * 17) % 211 == 0;
                let dropout = (x * 7 + y * 13) % 97 == 0;
                assert_eq!(c.valid[i], !dropout && (in_box || outlier), "pixel ({y}, {x})");
            }
        }
        // Border-only fitting finds the same plane.
        let c2 = table_with_box();
        let p2 = fit_plane(&c2, &RansacConfig { border: 10, ..cfg }).unwrap();
        assert!(dot(p2.normal, plane.normal).abs() > 0.99999);
    }

    #[test]
    fn too_few_points_give_no_plane() {
        let mut raw = vec![0.0f32; 4 * 4 * 3];
        raw[0..6].copy_from_slice(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        let c = Organized::from_raw(4, 4, &raw);
        assert!(fit_plane(&c, &RansacConfig::default()).is_none());
    }
}
