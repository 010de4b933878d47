//! From patch scores to an image-resolution score map: bilinear upsampling (half-pixel
//! centres, as `torch.nn.functional.interpolate(..., align_corners=False)`) and a Gaussian
//! blur that matches `scipy.ndimage.gaussian_filter` (truncate 4, mode `reflect`).
//!
//! Same signatures as `anoflow-imaging`'s helpers, kept here until that crate lands.

/// Bilinear resize of an `h x w` map to `nh x nw`, sampling at half-pixel centres.
pub fn upsample_bilinear(map: &[f32], h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    let axis = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(h, nh), axis(w, nw));
    let mut out = Vec::with_capacity(nh * nw);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
            let bottom = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// scipy's Gaussian kernel: radius `round(4 sigma)`, normalised to sum 1.
fn kernel(sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let k: Vec<f64> = (-radius..=radius).map(|x| (-0.5 * (x as f64 / sigma as f64).powi(2)).exp()).collect();
    let sum: f64 = k.iter().sum();
    k.iter().map(|v| (v / sum) as f32).collect()
}

/// scipy's `reflect` mode (d c b a | a b c d | d c b a) for any offset.
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

/// Separable Gaussian blur of an `h x w` map; `sigma <= 0` returns the map unchanged.
pub fn gaussian_blur(map: &[f32], h: usize, w: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 || map.is_empty() {
        return map.to_vec();
    }
    let k = kernel(sigma);
    let r = (k.len() / 2) as i64;
    let mut tmp = vec![0.0f32; h * w];
    let mut line = Vec::new();
    for y in 0..h {
        let row = &map[y * w..(y + 1) * w];
        line.clear();
        line.extend((-r..w as i64 + r).map(|x| row[reflect(x, w)]));
        for x in 0..w {
            tmp[y * w + x] = k.iter().zip(&line[x..]).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0f32; h * w];
    for x in 0..w {
        line.clear();
        line.extend((-r..h as i64 + r).map(|y| tmp[reflect(y, h) * w + x]));
        for y in 0..h {
            out[y * w + x] = k.iter().zip(&line[y..]).map(|(a, b)| a * b).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_keeps_constants_and_interpolates_half_pixel() {
        let up = upsample_bilinear(&[0.0, 1.0], 1, 2, 1, 4);
        // Output centres at 0.5/4*2-0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.0]);
        assert!(upsample_bilinear(&[3.0; 4], 2, 2, 7, 5).iter().all(|&v| (v - 3.0).abs() < 1e-6));
    }

    #[test]
    fn blur_matches_scipy_on_an_impulse() {
        // scipy.ndimage.gaussian_filter(impulse at (10, 10) of a 21x21 zero map, sigma=2)[10, 10..13]
        // = 0.03979014, 0.03511467, 0.02413394.
        let mut m = vec![0.0; 21 * 21];
        m[10 * 21 + 10] = 1.0;
        let b = gaussian_blur(&m, 21, 21, 2.0);
        for (x, want) in [(10, 0.039_790_14f32), (11, 0.035_114_67), (12, 0.024_133_94)] {
            assert!((b[10 * 21 + x] - want).abs() < 1e-6, "{x}: {}", b[10 * 21 + x]);
        }
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5, "mass is kept");
        // Reflection at the border keeps a constant map constant even when the kernel is wider.
        assert!(gaussian_blur(&[2.0; 12], 3, 4, 4.0).iter().all(|&v| (v - 2.0).abs() < 1e-5));
    }
}
