//! FPFH (Fast Point Feature Histograms, Rusu et al. 2009) on an organized point cloud, as BTF
//! computes them for MVTec 3D-AD, then pooled to a pixel-aligned feature map.
//!
//! - Normals: PCA of the covariance of the valid points in a `(2r+1)^2` pixel window (r =
//!   `normal_radius`); the eigenvector of the smallest eigenvalue, oriented towards the camera
//!   at the origin. Fewer than 3 valid points in the window: no normal.
//! - SPFH of a point p: over its neighbours q (valid points with a normal in the
//!   `feature_radius` pixel window, p excluded), the Darboux-frame pair features (alpha, phi,
//!   theta) as PCL/Open3D compute them (source and target swapped so the source's normal makes
//!   the smaller angle with the line), each binned into 11 bins; every 11-bin histogram sums
//!   to 100.
//! - FPFH(p) = SPFH(p) + the neighbours' SPFH weighted by 1/distance(p, q), each 11-bin part of
//!   that weighted sum rescaled to sum to 100 (Open3D's form of the paper's formula; Open3D
//!   weights by the squared distance, the paper by the distance, which is what we use).
//! - Pooling: the mean FPFH of the points of each `stride x stride` cell that have a feature
//!   (valid, a normal, at least one neighbour). A cell without any: all zeros, which also
//!   marks "no geometry here" for downstream scorers.
//!
//! The neighbourhood is the pixel window, not a 3D radius: on an organized cloud it is the
//! sensor's own neighbourhood and costs no search structure.

use crate::cloud::{cross, dot, norm, sub, Organized};
use crate::eigen3::{scatter, symmetric_eigen};

pub const BINS: usize = 11;
pub const DIM: usize = 3 * BINS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpfhConfig {
    /// Half side of the normal-estimation window, in pixels.
    pub normal_radius: usize,
    /// Half side of the SPFH/FPFH neighbourhood window, in pixels.
    pub feature_radius: usize,
    /// Pixels per output cell.
    pub stride: usize,
}

impl Default for FpfhConfig {
    fn default() -> Self {
        Self { normal_radius: 2, feature_radius: 3, stride: 8 }
    }
}

fn window(i: usize, h: usize, w: usize, r: usize) -> impl Iterator<Item = usize> + Clone {
    let (y, x) = (i / w, i % w);
    let (y0, y1) = (y.saturating_sub(r), (y + r).min(h - 1));
    let (x0, x1) = (x.saturating_sub(r), (x + r).min(w - 1));
    (y0..=y1).flat_map(move |yy| (x0..=x1).map(move |xx| yy * w + xx))
}

/// Unit normals per pixel (`None`: invalid point or too few neighbours).
pub fn estimate_normals(cloud: &Organized, radius: usize) -> Vec<Option<[f32; 3]>> {
    let (h, w) = (cloud.height, cloud.width);
    (0..h * w)
        .map(|i| {
            if !cloud.valid[i] {
                return None;
            }
            let pts = window(i, h, w, radius).filter(|&j| cloud.valid[j]).map(|j| cloud.points[j]);
            let (_, cov, n) = scatter(pts)?;
            if n < 3 {
                return None;
            }
            let (vals, vecs) = symmetric_eigen(cov);
            // All neighbours on one line (or one point): no plane, no normal.
            if vals[1] <= 1e-12 * vals[2].max(f64::MIN_POSITIVE) {
                return None;
            }
            let mut nrm = [vecs[0][0] as f32, vecs[0][1] as f32, vecs[0][2] as f32];
            let len = norm(nrm);
            if !(len > 0.0 && len.is_finite()) {
                return None;
            }
            nrm.iter_mut().for_each(|v| *v /= len);
            // Towards the camera at the origin.
            if dot(nrm, cloud.points[i]) > 0.0 {
                nrm.iter_mut().for_each(|v| *v = -*v);
            }
            Some(nrm)
        })
        .collect()
}

/// PCL's pair features `(theta, alpha, phi)` of (p1, n1) and (p2, n2): `theta` in [-pi, pi],
/// `alpha`, `phi` in [-1, 1]. `None` when the points coincide or the frame is degenerate.
pub fn pair_features(p1: [f32; 3], n1: [f32; 3], p2: [f32; 3], n2: [f32; 3]) -> Option<[f32; 3]> {
    let mut d = sub(p2, p1);
    let dist = norm(d);
    if dist == 0.0 {
        return None;
    }
    let a1 = dot(n1, d) / dist;
    let a2 = dot(n2, d) / dist;
    // acos(|a1|) > acos(|a2|)  <=>  |a1| < |a2|: swap so the source has the smaller angle.
    let (u, n_t, phi) = if a1.abs() < a2.abs() {
        d = [-d[0], -d[1], -d[2]];
        (n2, n1, -a2)
    } else {
        (n1, n2, a1)
    };
    let v = cross(d, u);
    let vn = norm(v);
    if vn == 0.0 {
        return None;
    }
    let v = [v[0] / vn, v[1] / vn, v[2] / vn];
    let w = cross(u, v);
    let alpha = dot(v, n_t);
    let theta = dot(w, n_t).atan2(dot(u, n_t));
    Some([theta, alpha, phi])
}

fn bin(value: f32, lo: f32, hi: f32) -> usize {
    let b = ((value - lo) / (hi - lo) * BINS as f32).floor();
    (b.max(0.0) as usize).min(BINS - 1)
}

/// Per-pixel SPFH (`None`: no normal or no neighbour with one). Each unordered pair is
/// computed once and counted for both points: with the source/target swap, the pair features
/// of (p, q) and (q, p) are the same (up to exact ties of the two angles).
pub fn spfh_per_point(cloud: &Organized, normals: &[Option<[f32; 3]>], radius: usize) -> Vec<Option<[f32; DIM]>> {
    let (h, w) = (cloud.height, cloud.width);
    let mut hist = vec![[0.0f32; DIM]; h * w];
    let mut count = vec![0u32; h * w];
    let r = radius as isize;
    for i in 0..h * w {
        let Some(ni) = normals[i] else { continue };
        let (y, x) = ((i / w) as isize, (i % w) as isize);
        let pi = cloud.points[i];
        // The half of the window after `i` in row-major order.
        for dy in 0..=r {
            let yy = y + dy;
            if yy >= h as isize {
                break;
            }
            let dx_start = if dy == 0 { 1 } else { -r };
            for dx in dx_start..=r {
                let xx = x + dx;
                if xx < 0 || xx >= w as isize {
                    continue;
                }
                let j = yy as usize * w + xx as usize;
                let Some(nj) = normals[j] else { continue };
                let Some([theta, alpha, phi]) = pair_features(pi, ni, cloud.points[j], nj) else { continue };
                let bins = [
                    bin(theta, -std::f32::consts::PI, std::f32::consts::PI),
                    BINS + bin(alpha, -1.0, 1.0),
                    2 * BINS + bin(phi, -1.0, 1.0),
                ];
                for b in bins {
                    hist[i][b] += 1.0;
                    hist[j][b] += 1.0;
                }
                count[i] += 1;
                count[j] += 1;
            }
        }
    }
    hist.into_iter()
        .zip(count)
        .map(|(mut hi, c)| {
            if c == 0 {
                return None;
            }
            let incr = 100.0 / c as f32;
            hi.iter_mut().for_each(|v| *v *= incr);
            Some(hi)
        })
        .collect()
}

/// Per-pixel FPFH (`None`: no feature, see the module docs).
pub fn fpfh_per_point(cloud: &Organized, normals: &[Option<[f32; 3]>], radius: usize) -> Vec<Option<[f32; DIM]>> {
    let (h, w) = (cloud.height, cloud.width);
    let spfh = spfh_per_point(cloud, normals, radius);
    (0..h * w)
        .map(|i| {
            let own = spfh[i]?;
            let pi = cloud.points[i];
            let mut acc = [0.0f32; DIM];
            for j in window(i, h, w, radius).filter(|&j| j != i) {
                let Some(sj) = &spfh[j] else { continue };
                let d = norm(sub(cloud.points[j], pi));
                if d == 0.0 {
                    continue;
                }
                let wgt = 1.0 / d;
                for (a, &s) in acc.iter_mut().zip(sj.iter()) {
                    *a += wgt * s;
                }
            }
            let mut out = own;
            for part in 0..3 {
                let range = part * BINS..(part + 1) * BINS;
                let sum: f32 = acc[range.clone()].iter().sum();
                if sum > 0.0 {
                    let scale = 100.0 / sum;
                    for k in range {
                        out[k] += acc[k] * scale;
                    }
                }
            }
            Some(out)
        })
        .collect()
}

/// Output grid size for `stride` (cells cover the cloud; the last row/column may be partial).
pub fn grid_size(h: usize, w: usize, stride: usize) -> (usize, usize) {
    (h.div_ceil(stride), w.div_ceil(stride))
}

/// The pooled FPFH map, channels-last `fh x fw x 33`, and the number of cells with a feature.
pub fn fpfh_feature_map(cloud: &Organized, cfg: &FpfhConfig) -> (Vec<f32>, usize, usize, usize) {
    let (h, w) = (cloud.height, cloud.width);
    let normals = estimate_normals(cloud, cfg.normal_radius);
    let per_point = fpfh_per_point(cloud, &normals, cfg.feature_radius);
    let (fh, fw) = grid_size(h, w, cfg.stride);
    let mut sums = vec![0.0f64; fh * fw * DIM];
    let mut counts = vec![0usize; fh * fw];
    for (i, f) in per_point.iter().enumerate() {
        let Some(f) = f else { continue };
        let cell = (i / w / cfg.stride) * fw + (i % w) / cfg.stride;
        counts[cell] += 1;
        for (s, &v) in sums[cell * DIM..(cell + 1) * DIM].iter_mut().zip(f.iter()) {
            *s += f64::from(v);
        }
    }
    let mut out = vec![0.0f32; fh * fw * DIM];
    for cell in 0..fh * fw {
        if counts[cell] > 0 {
            let inv = 1.0 / counts[cell] as f64;
            for k in 0..DIM {
                out[cell * DIM + k] = (sums[cell * DIM + k] * inv) as f32;
            }
        }
    }
    let filled = counts.iter().filter(|&&c| c > 0).count();
    (out, fh, fw, filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surface(n: usize, f: impl Fn(f32, f32) -> Option<f32>) -> Organized {
        let mut raw = vec![0.0f32; n * n * 3];
        for y in 0..n {
            for x in 0..n {
                let (px, py) = (x as f32 * 0.1 - n as f32 * 0.05, y as f32 * 0.1 - n as f32 * 0.05);
                if let Some(z) = f(px, py) {
                    raw[(y * n + x) * 3..(y * n + x) * 3 + 3].copy_from_slice(&[px, py, z]);
                }
            }
        }
        Organized::from_raw(n, n, &raw)
    }

    #[test]
    fn normals_of_a_tilted_plane_face_the_camera() {
        let c = surface(32, |x, y| Some(300.0 + 0.5 * x - 0.25 * y));
        let normals = estimate_normals(&c, 2);
        let t = [0.5f32, -0.25, -1.0];
        let tn = norm(t);
        for n in &normals {
            let n = n.unwrap();
            assert!((dot(n, t) / tn - 1.0).abs() < 1e-4, "{n:?}");
        }
    }

    #[test]
    fn pair_features_of_parallel_normals_on_a_plane() {
        let n = [0.0, 0.0, -1.0];
        let [theta, alpha, phi] = pair_features([0.0, 0.0, 1.0], n, [1.0, 0.0, 1.0], n).unwrap();
        assert!(theta.abs() < 1e-6 && alpha.abs() < 1e-6 && phi.abs() < 1e-6, "{theta} {alpha} {phi}");
        assert!(pair_features([0.0; 3], n, [0.0; 3], n).is_none());
    }

    #[test]
    fn a_plane_has_one_histogram_everywhere_and_a_bump_differs() {
        let cfg = FpfhConfig::default();
        let flat = surface(64, |_, _| Some(400.0));
        let (map, fh, fw, filled) = fpfh_feature_map(&flat, &cfg);
        assert_eq!((fh, fw, filled), (8, 8, 64));
        // Every 11-bin part of the FPFH of a plane sums to 200 (own SPFH 100 + weighted 100)
        // and sits in the middle bins.
        let cell = &map[27 * DIM..28 * DIM];
        for part in 0..3 {
            let s: f32 = cell[part * BINS..(part + 1) * BINS].iter().sum();
            assert!((s - 200.0).abs() < 1e-2, "part {part}: {s}");
        }
        assert!((cell[5] - 200.0).abs() < 1e-2 && (cell[BINS + 5] - 200.0).abs() < 1e-2, "{cell:?}");
        // A spherical bump (radius 1.5 mm) changes the cells it covers and no distant one.
        let bumpy = surface(64, |x, y| {
            let r2 = x * x + y * y;
            Some(if r2 < 2.25 { 400.0 - (2.25 - r2).sqrt() } else { 400.0 })
        });
        let (bmap, _, _, _) = fpfh_feature_map(&bumpy, &cfg);
        let diff = |cell: usize| -> f32 { (0..DIM).map(|k| (bmap[cell * DIM + k] - map[cell * DIM + k]).abs()).sum() };
        assert!(diff(3 * 8 + 3) > 50.0, "centre cell changes: {}", diff(27));
        assert!(diff(0) < 1e-3, "corner cell unchanged: {}", diff(0));
    }

    /// SPFH straight from the definition: every neighbour of every point, one by one.
    fn spfh_reference(cloud: &Organized, normals: &[Option<[f32; 3]>], radius: usize) -> Vec<Option<[f32; DIM]>> {
        let (h, w) = (cloud.height, cloud.width);
        (0..h * w)
            .map(|i| {
                let ni = normals[i]?;
                let mut hist = [0.0f32; DIM];
                let mut count = 0;
                for j in window(i, h, w, radius).filter(|&j| j != i) {
                    let Some(nj) = normals[j] else { continue };
                    let Some([t, a, p]) = pair_features(cloud.points[i], ni, cloud.points[j], nj) else { continue };
                    hist[bin(t, -std::f32::consts::PI, std::f32::consts::PI)] += 1.0;
                    hist[BINS + bin(a, -1.0, 1.0)] += 1.0;
                    hist[2 * BINS + bin(p, -1.0, 1.0)] += 1.0;
                    count += 1;
                }
                (count > 0).then(|| hist.map(|v| v * 100.0 / count as f32))
            })
            .collect()
    }

    #[test]
    fn pairwise_spfh_matches_the_per_point_definition() {
        // A wavy surface with holes, so angles vary and some neighbours are missing.
        let c = surface(48, |x, y| {
            ((x * 3.0 + y).sin() > -0.9).then(|| 400.0 + (x * 2.0).sin() * 0.4 + (y * 1.5).cos() * 0.3)
        });
        let normals = estimate_normals(&c, 2);
        let fast = spfh_per_point(&c, &normals, 3);
        let slow = spfh_reference(&c, &normals, 3);
        let mut compared = 0;
        for (f, s) in fast.iter().zip(&slow) {
            assert_eq!(f.is_some(), s.is_some());
            if let (Some(f), Some(s)) = (f, s) {
                let d: f32 = f.iter().zip(s).map(|(a, b)| (a - b).abs()).sum();
                assert!(d < 1e-3, "{f:?} vs {s:?}");
                compared += 1;
            }
        }
        assert!(compared > 1500, "{compared}");
    }

    #[test]
    fn invalid_points_stay_out_and_empty_cells_are_zero() {
        // Left half has no points: its cells are zeros, the right half is unaffected by it.
        let c = surface(32, |x, _| (x >= 0.0).then_some(400.0));
        let (map, fh, fw, filled) = fpfh_feature_map(&c, &FpfhConfig::default());
        assert_eq!((fh, fw), (4, 4));
        assert_eq!(filled, 8);
        for y in 0..4 {
            for x in 0..4 {
                let cell = &map[(y * 4 + x) * DIM..(y * 4 + x + 1) * DIM];
                if x < 2 {
                    assert!(cell.iter().all(|&v| v == 0.0));
                } else {
                    assert!(cell.iter().all(|v| v.is_finite()) && cell.iter().sum::<f32>() > 0.0);
                }
            }
        }
    }
}
