//! # anoflow-pointops
//!
//! Point-MAE's tokenizer, in Rust: farthest point sampling picks group centres, k nearest
//! neighbours form each group, and each group is expressed relative to its centre. This is
//! the input a Point-MAE encoder exported to ONNX (`tools/export_point_mae.py`) takes:
//! `[1, G, k, 3]` patches and `[1, G, 3]` centres.
//!
//! A plain library (no stages) so that several plugin crates can share it: a plugin crate may
//! not depend on another one.

/// Whether a raw point is a measurement: finite and not all zeros (MVTec 3D-AD stores missing
/// points as zeros; a non-finite point is treated as missing too).
pub fn is_valid_point(p: [f32; 3]) -> bool {
    p.iter().all(|v| v.is_finite()) && p != [0.0, 0.0, 0.0]
}

/// Squared Euclidean distance.
pub fn dist2(a: [f32; 3], b: [f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// Indices of `n` points chosen by farthest point sampling, starting from `first`. Each
/// next point is the one farthest from every point chosen so far (ties: the lowest index).
/// Returns fewer than `n` only when there are fewer points.
pub fn farthest_point_sampling(points: &[[f32; 3]], n: usize, first: usize) -> Vec<usize> {
    if points.is_empty() || n == 0 {
        return Vec::new();
    }
    let n = n.min(points.len());
    let mut chosen = Vec::with_capacity(n);
    let mut nearest = vec![f32::INFINITY; points.len()];
    let mut current = first.min(points.len() - 1);
    for _ in 0..n {
        chosen.push(current);
        let c = points[current];
        let mut far = (0usize, -1.0f32);
        for (i, (p, d)) in points.iter().zip(nearest.iter_mut()).enumerate() {
            let dd = dist2(*p, c);
            if dd < *d {
                *d = dd;
            }
            if *d > far.1 {
                far = (i, *d);
            }
        }
        current = far.0;
    }
    chosen
}

/// For each centre, the indices of its `k` nearest points (itself included), nearest first;
/// `centres.len() x k`, row-major. Needs `k <= points.len()`.
pub fn knn_group(points: &[[f32; 3]], centres: &[usize], k: usize) -> Vec<usize> {
    let k = k.min(points.len());
    let mut out = Vec::with_capacity(centres.len() * k);
    let mut dist: Vec<(f32, usize)> = Vec::with_capacity(points.len());
    for &c in centres {
        let cp = points[c];
        dist.clear();
        dist.extend(points.iter().enumerate().map(|(i, p)| (dist2(*p, cp), i)));
        let cmp = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if k < dist.len() {
            dist.select_nth_unstable_by(k - 1, cmp);
        }
        let head = &mut dist[..k];
        head.sort_unstable_by(cmp);
        out.extend(head.iter().map(|&(_, i)| i));
    }
    out
}

/// Point-MAE patches: each group's points minus its centre, `G x k x 3`.
pub fn grouped_patches(points: &[[f32; 3]], centres: &[usize], groups: &[usize], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(groups.len() * 3);
    for (g, &c) in centres.iter().enumerate() {
        let cp = points[c];
        for &i in &groups[g * k..(g + 1) * k] {
            let p = points[i];
            out.extend_from_slice(&[p[0] - cp[0], p[1] - cp[1], p[2] - cp[2]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_spreads_out_and_is_deterministic() {
        // A 10x10 grid: FPS from a corner picks the opposite corner, then the other two.
        let pts: Vec<[f32; 3]> = (0..100).map(|i| [(i % 10) as f32, (i / 10) as f32, 0.0]).collect();
        let s = farthest_point_sampling(&pts, 4, 0);
        assert_eq!(s[..2], [0, 99]);
        let mut corners = s[2..].to_vec();
        corners.sort_unstable();
        assert_eq!(corners, vec![9, 90]);
        assert_eq!(s, farthest_point_sampling(&pts, 4, 0));
        // Minimum pairwise distance of FPS beats a plain prefix of the list.
        let s16 = farthest_point_sampling(&pts, 16, 0);
        let min_d = |idx: &[usize]| {
            let mut m = f32::MAX;
            for (a, &i) in idx.iter().enumerate() {
                for &j in &idx[a + 1..] {
                    m = m.min((pts[i][0] - pts[j][0]).hypot(pts[i][1] - pts[j][1]));
                }
            }
            m
        };
        assert!(min_d(&s16) >= 2.0, "{}", min_d(&s16));
        assert_eq!(farthest_point_sampling(&pts, 500, 0).len(), 100);
        assert!(farthest_point_sampling(&[], 5, 0).is_empty());
    }

    #[test]
    fn knn_groups_match_brute_force_and_patches_are_centred() {
        let pts: Vec<[f32; 3]> =
            (0..2000).map(|i| [((i * 37) % 101) as f32 * 0.1, ((i * 53) % 97) as f32 * 0.1, (i % 7) as f32]).collect();
        let centres = farthest_point_sampling(&pts, 32, 0);
        let k = 16;
        let groups = knn_group(&pts, &centres, k);
        assert_eq!(groups.len(), 32 * k);
        for (g, &c) in centres.iter().enumerate() {
            let row = &groups[g * k..(g + 1) * k];
            assert_eq!(row[0], c, "a centre is its own nearest neighbour");
            let d = |i: usize| (0..3).map(|a| (pts[i][a] - pts[c][a]).powi(2)).sum::<f32>();
            let kth = d(row[k - 1]);
            // No point outside the group is nearer than the group's farthest member.
            let inside = pts.len() - (0..pts.len()).filter(|&i| d(i) > kth).count();
            assert!(inside >= k, "group {g}");
            assert!(row.windows(2).all(|w| d(w[0]) <= d(w[1])));
        }
        let patches = grouped_patches(&pts, &centres, &groups, k);
        assert_eq!(patches.len(), 32 * k * 3);
        assert_eq!(&patches[0..3], &[0.0, 0.0, 0.0]);
    }
}
