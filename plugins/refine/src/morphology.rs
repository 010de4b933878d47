//! Binary-mask operations on `h x w` 0/1 masks (row-major).

pub use anoflow_imaging::mask::components;

/// Clears the 8-connected components smaller than `min_area` pixels.
pub fn remove_small(mask: &mut [u8], h: usize, w: usize, min_area: usize) {
    if min_area <= 1 {
        return;
    }
    let (label, sizes) = components(mask, h, w);
    for (m, &l) in mask.iter_mut().zip(&label) {
        if l != u32::MAX && sizes[l as usize] < min_area {
            *m = 0;
        }
    }
}

/// Sets every 0-pixel that is not 4-connected to the border through 0-pixels (a hole).
pub fn fill_holes(mask: &mut [u8], h: usize, w: usize) {
    let mut outside = vec![false; h * w];
    let mut stack: Vec<usize> = (0..h * w)
        .filter(|&p| {
            let (y, x) = (p / w, p % w);
            (y == 0 || x == 0 || y == h - 1 || x == w - 1) && mask[p] == 0
        })
        .collect();
    for &p in &stack {
        outside[p] = true;
    }
    while let Some(p) = stack.pop() {
        let (y, x) = (p / w, p % w);
        let mut visit = |q: usize| {
            if mask[q] == 0 && !outside[q] {
                outside[q] = true;
                stack.push(q);
            }
        };
        if y > 0 {
            visit(p - w);
        }
        if y + 1 < h {
            visit(p + w);
        }
        if x > 0 {
            visit(p - 1);
        }
        if x + 1 < w {
            visit(p + 1);
        }
    }
    for (m, &o) in mask.iter_mut().zip(&outside) {
        if *m == 0 && !o {
            *m = 1;
        }
    }
}

/// Edge-aware smoothing guided by the image (a joint-bilateral vote): each pixel takes the
/// weighted majority of the mask in its `(2r+1)^2` window, weights
/// `exp(-d^2 / 2r^2) * exp(-|I_p - I_q|^2 / 2 sigma^2)` on the image's colour (`c` channels,
/// 0-255 scale). Mask edges move to nearby image edges; isolated speckles vanish. Only
/// pixels within `r` of a mask edge can change, so the cost is proportional to the edge length.
/// `mask` holds 0 or 1 per pixel (as every `Mask` does).
pub fn guided_vote(mask: &[u8], image: &[f32], h: usize, w: usize, c: usize, r: usize, sigma: f32) -> Vec<u8> {
    let mut out = mask.to_vec();
    let ri = r as isize;
    let spatial: Vec<f32> = (-ri..=ri)
        .flat_map(|dy| (-ri..=ri).map(move |dx| (-((dy * dy + dx * dx) as f32) / (2.0 * (r * r) as f32)).exp()))
        .collect();
    let inv = 1.0 / (2.0 * sigma * sigma);
    let on_count = WindowCounts::new(mask, h, w);
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            // Skip pixels whose whole window agrees with them (nothing to vote about).
            let (y0, y1, x0, x1) = (y.saturating_sub(r), (y + r + 1).min(h), x.saturating_sub(r), (x + r + 1).min(w));
            let on = on_count.sum(y0, y1, x0, x1);
            let mixed = if mask[p] != 0 { on < (y1 - y0) * (x1 - x0) } else { on > 0 };
            if !mixed {
                continue;
            }
            let ip = &image[p * c..(p + 1) * c];
            let (mut on, mut total) = (0.0f32, 0.0f32);
            for ny in y0..y1 {
                for nx in x0..x1 {
                    let q = ny * w + nx;
                    let iq = &image[q * c..(q + 1) * c];
                    let d2: f32 = ip.iter().zip(iq).map(|(a, b)| (a - b) * (a - b)).sum();
                    let k = (ny + r - y) * (2 * r + 1) + (nx + r - x);
                    let wt = spatial[k] * (-d2 * inv).exp();
                    total += wt;
                    if mask[q] != 0 {
                        on += wt;
                    }
                }
            }
            out[p] = u8::from(on > 0.5 * total);
        }
    }
    out
}

/// Counts of nonzero mask pixels over any rectangle, from a summed-area table.
struct WindowCounts {
    /// `(h + 1) x (w + 1)`: entry (y, x) counts the nonzero pixels above and left of (y, x).
    table: Vec<usize>,
    w1: usize,
}

impl WindowCounts {
    fn new(mask: &[u8], h: usize, w: usize) -> Self {
        let w1 = w + 1;
        let mut table = vec![0usize; (h + 1) * w1];
        for y in 0..h {
            let mut row = 0;
            for x in 0..w {
                row += usize::from(mask[y * w + x] != 0);
                table[(y + 1) * w1 + x + 1] = table[y * w1 + x + 1] + row;
            }
        }
        Self { table, w1 }
    }

    /// Nonzero pixels in rows `y0..y1`, columns `x0..x1`.
    fn sum(&self, y0: usize, y1: usize, x0: usize, x1: usize) -> usize {
        let t = |y: usize, x: usize| self.table[y * self.w1 + x];
        t(y1, x1) + t(y0, x0) - t(y0, x1) - t(y1, x0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(h: usize, w: usize, cy: f32, cx: f32, r: f32) -> Vec<u8> {
        (0..h * w).map(|p| u8::from(((p / w) as f32 - cy).hypot((p % w) as f32 - cx) <= r)).collect()
    }

    #[test]
    fn small_components_go_and_large_ones_stay() {
        let (h, w) = (224, 224);
        let mut m = disc(h, w, 100.0, 100.0, 20.0);
        // Three speckles of 1, 4 and 9 pixels.
        m[10 * w + 10] = 1;
        for (y, x) in [(30, 30), (30, 31), (31, 30), (31, 31)] {
            m[y * w + x] = 1;
        }
        for y in 50..53 {
            for x in 180..183 {
                m[y * w + x] = 1;
            }
        }
        let big = disc(h, w, 100.0, 100.0, 20.0).iter().filter(|&&v| v == 1).count();
        let (_, sizes) = components(&m, h, w);
        assert_eq!(sizes.len(), 4);
        remove_small(&mut m, h, w, 5);
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), big + 9);
        remove_small(&mut m, h, w, 10);
        assert_eq!(m, disc(h, w, 100.0, 100.0, 20.0));
    }

    #[test]
    fn holes_are_filled_but_background_touching_the_border_is_not() {
        let (h, w) = (224, 224);
        let ring: Vec<u8> = disc(h, w, 112.0, 112.0, 40.0)
            .iter()
            .zip(disc(h, w, 112.0, 112.0, 15.0))
            .map(|(&a, b)| a & (1 - b))
            .collect();
        let mut m = ring.clone();
        fill_holes(&mut m, h, w);
        assert_eq!(m, disc(h, w, 112.0, 112.0, 40.0));
        // A "C" open to the border keeps its inside empty.
        let mut c_shape = ring.clone();
        for y in 105..120 {
            for x in 112..w {
                c_shape[y * w + x] = 0;
            }
        }
        let before = c_shape.clone();
        fill_holes(&mut c_shape, h, w);
        assert_eq!(c_shape, before);
    }

    #[test]
    fn window_counts_match_a_direct_count() {
        let (h, w) = (37, 23);
        let mask: Vec<u8> = (0..h * w).map(|p| u8::from((p * 7919) % 13 < 5)).collect();
        let counts = WindowCounts::new(&mask, h, w);
        for (y0, y1, x0, x1) in [(0, h, 0, w), (0, 1, 0, 1), (3, 10, 5, 6), (30, 37, 20, 23), (4, 4, 2, 9)] {
            let direct =
                (y0..y1).flat_map(|y| (x0..x1).map(move |x| (y, x))).filter(|&(y, x)| mask[y * w + x] != 0).count();
            assert_eq!(counts.sum(y0, y1, x0, x1), direct, "{y0}..{y1} x {x0}..{x1}");
        }
    }

    #[test]
    fn guided_vote_snaps_a_blob_to_the_image_region() {
        // Image: a dark square (50..90) on a light background; the mask is the square grown
        // by 2 px plus a speckle. The vote pulls the mask back to the square's edges.
        let (h, w) = (224, 224);
        let square = |y: usize, x: usize| (50..90).contains(&y) && (50..90).contains(&x);
        let image: Vec<f32> = (0..h * w).flat_map(|p| [if square(p / w, p % w) { 40.0 } else { 200.0 }; 3]).collect();
        let mut mask: Vec<u8> =
            (0..h * w).map(|p| u8::from((48..92).contains(&(p / w)) && (48..92).contains(&(p % w)))).collect();
        mask[150 * w + 150] = 1;
        let out = guided_vote(&mask, &image, h, w, 3, 3, 25.0);
        let truth: Vec<u8> = (0..h * w).map(|p| u8::from(square(p / w, p % w))).collect();
        let wrong = out.iter().zip(&truth).filter(|(a, b)| a != b).count();
        let wrong_before = mask.iter().zip(&truth).filter(|(a, b)| a != b).count();
        assert!(wrong * 2 < wrong_before, "{wrong} wrong pixels after, {wrong_before} before");
        assert_eq!(out[150 * w + 150], 0);
    }
}
