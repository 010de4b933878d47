//! The geometry around the encoder: Point-MAE's tokenizer on the valid points of an organized
//! cloud, and M3DM's way back from one feature per group to one feature per pixel.

use anoflow_pointops::{dist2, farthest_point_sampling, grouped_patches, is_valid_point, knn_group};

/// The encoder's input for one cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// Number of groups (G) and points per group (k).
    pub groups: usize,
    pub k: usize,
    /// `G x k x 3`: each group's points minus its centre.
    pub patches: Vec<f32>,
    /// `G x 3`: the centres' coordinates.
    pub centres: Vec<[f32; 3]>,
}

/// The valid points of a raw `h x w x 3` buffer and the pixel each came from (row-major).
pub fn valid_points(data: &[f32]) -> (Vec<[f32; 3]>, Vec<usize>) {
    let mut points = Vec::new();
    let mut pixels = Vec::new();
    for (i, c) in data.chunks_exact(3).enumerate() {
        let p = [c[0], c[1], c[2]];
        if is_valid_point(p) {
            points.push(p);
            pixels.push(i);
        }
    }
    (points, pixels)
}

/// SplitMix64: turns a seed into a well-mixed start index for FPS.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FPS of `min(groups, n)` centres, starting from a point chosen by `seed`, then the `min(k, n)`
/// nearest points of each centre, relative to it. `points` must not be empty.
pub fn tokenize(points: &[[f32; 3]], groups: usize, k: usize, seed: u64) -> Tokens {
    let first = (mix(seed) % points.len().max(1) as u64) as usize;
    let centre_idx = farthest_point_sampling(points, groups, first);
    let k = k.min(points.len());
    let members = knn_group(points, &centre_idx, k);
    let patches = grouped_patches(points, &centre_idx, &members, k);
    Tokens { groups: centre_idx.len(), k, patches, centres: centre_idx.iter().map(|&i| points[i]).collect() }
}

/// The (up to) 3 nearest centres of `p` and their inverse-distance weights (summing to 1), as
/// M3DM interpolates Point-MAE features: w = 1 / (d + 1e-8), d the Euclidean distance.
fn three_nearest(p: [f32; 3], centres: &[[f32; 3]]) -> ([usize; 3], [f32; 3], usize) {
    let mut best = [(f32::INFINITY, usize::MAX); 3];
    for (j, &c) in centres.iter().enumerate() {
        let d = dist2(p, c);
        if d < best[2].0 {
            // Insertion into the sorted top 3; ties keep the lower centre index first.
            let mut slot = 2;
            while slot > 0 && d < best[slot - 1].0 {
                best[slot] = best[slot - 1];
                slot -= 1;
            }
            best[slot] = (d, j);
        }
    }
    let n = centres.len().min(3);
    let mut idx = [0usize; 3];
    let mut w = [0.0f32; 3];
    for s in 0..n {
        idx[s] = best[s].1;
        w[s] = 1.0 / (best[s].0.sqrt() + 1e-8);
    }
    let total: f32 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= total);
    (idx, w, n)
}

/// Spreads the group features (`G x c`, row-major, one row per centre) back to the valid pixels
/// (each takes the inverse-distance-weighted mean of its 3 nearest centres' features) and
/// averages them over `stride x stride` cells of an `h x w` grid. Returns the
/// `ceil(h/stride) x ceil(w/stride) x c` map (channels-last); a cell without a valid point is
/// zeros.
pub fn spread_to_grid(
    points: &[[f32; 3]],
    pixels: &[usize],
    centres: &[[f32; 3]],
    features: &[f32],
    c: usize,
    (h, w): (usize, usize),
    stride: usize,
) -> (Vec<f32>, usize, usize) {
    let (fh, fw) = (h.div_ceil(stride), w.div_ceil(stride));
    let mut sums = vec![0.0f32; fh * fw * c];
    let mut counts = vec![0u32; fh * fw];
    for (&p, &pixel) in points.iter().zip(pixels) {
        let (y, x) = (pixel / w, pixel % w);
        let cell = (y / stride) * fw + x / stride;
        counts[cell] += 1;
        let (idx, wt, n) = three_nearest(p, centres);
        let out = &mut sums[cell * c..(cell + 1) * c];
        for s in 0..n {
            let f = &features[idx[s] * c..(idx[s] + 1) * c];
            for (o, v) in out.iter_mut().zip(f) {
                *o += wt[s] * v;
            }
        }
    }
    for (cell, &n) in counts.iter().enumerate() {
        if n > 0 {
            let inv = 1.0 / n as f32;
            sums[cell * c..(cell + 1) * c].iter_mut().for_each(|v| *v *= inv);
        }
    }
    (sums, fh, fw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_point_mae_shapes_and_clamp_to_the_cloud() {
        let pts: Vec<[f32; 3]> = (0..500).map(|i| [(i % 25) as f32, (i / 25) as f32, (i % 7) as f32 * 0.1]).collect();
        let t = tokenize(&pts, 64, 16, 3);
        assert_eq!((t.groups, t.k, t.patches.len(), t.centres.len()), (64, 16, 64 * 16 * 3, 64));
        // Each patch's first point is its centre, so it is at the origin.
        assert!(t.patches.chunks_exact(16 * 3).all(|p| p[..3] == [0.0, 0.0, 0.0]));
        assert_eq!(t, tokenize(&pts, 64, 16, 3), "deterministic");
        assert_ne!(t.centres, tokenize(&pts, 64, 16, 4).centres, "the seed picks the first centre");
        let few = tokenize(&pts[..10], 64, 16, 0);
        assert_eq!((few.groups, few.k), (10, 10));
    }

    #[test]
    fn spread_back_interpolates_and_pools_per_cell() {
        // Two centres, 1-d features equal to their x coordinate: a point between them gets the
        // inverse-distance mix, a point on a centre gets that centre's feature.
        let centres = [[0.0, 0.0, 1.0], [4.0, 0.0, 1.0]];
        let feats = [0.0, 4.0];
        let points = [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [3.0, 0.0, 1.0]];
        // A 4x4 grid, stride 2: pixels 0 and 1 share cell 0, pixel 15 is cell 3.
        let (map, fh, fw) = spread_to_grid(&points, &[0, 1, 15], &centres, &feats, 1, (4, 4), 2);
        assert_eq!((fh, fw), (2, 2));
        // Pixel 0: 0. Pixel 1: weights 1/1 and 1/3 -> (0*1 + 4/3) / (4/3) = 1. Cell 0: mean 0.5.
        assert!((map[0] - 0.5).abs() < 1e-5, "{map:?}");
        assert_eq!(map[1], 0.0, "no valid point");
        assert_eq!(map[2], 0.0, "no valid point");
        assert!((map[3] - 3.0).abs() < 1e-5, "{map:?}");
    }

    #[test]
    fn three_nearest_picks_the_closest_centres() {
        let centres: Vec<[f32; 3]> = (0..10).map(|i| [i as f32, 0.0, 0.0]).collect();
        let (idx, w, n) = three_nearest([6.2, 0.0, 0.0], &centres);
        assert_eq!((idx, n), ([6, 7, 5], 3));
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6 && w[0] > w[1] && w[1] > w[2]);
    }
}
