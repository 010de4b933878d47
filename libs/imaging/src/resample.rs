//! Bilinear resampling with half-pixel centres, as [`crate::upsample_bilinear`]
//! and `F.interpolate(..., mode="bilinear", align_corners=False)`: destination pixel `d`
//! reads source coordinate `(d + 0.5) * src / dst - 0.5`, clamped to `[0, src - 1]`.
//!
//! Sampling a feature map at one pixel and upsampling a whole map use the same
//! [`Axis`] tables, so "decide at feature resolution, then upsample" and "upsample the
//! features, then decide" read exactly the same four cells with the same weights.

/// Interpolation taps along one axis: destination index -> (lower source index, upper
/// source index, weight of the upper one).
#[derive(Debug, Clone)]
pub struct Axis {
    lo: Vec<u32>,
    hi: Vec<u32>,
    t: Vec<f32>,
}

impl Axis {
    /// Taps for resampling `src` cells onto `dst` pixels.
    pub fn new(src: usize, dst: usize) -> Self {
        let mut axis = Self { lo: Vec::with_capacity(dst), hi: Vec::with_capacity(dst), t: Vec::with_capacity(dst) };
        let scale = src as f64 / dst as f64;
        for d in 0..dst {
            let (lo, hi, t) = taps(src, (d as f64 + 0.5) * scale - 0.5);
            axis.lo.push(lo);
            axis.hi.push(hi);
            axis.t.push(t);
        }
        axis
    }

    pub fn len(&self) -> usize {
        self.lo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lo.is_empty()
    }

    /// `(lo, hi, t)` at destination index `d`.
    #[inline]
    pub fn at(&self, d: usize) -> (usize, usize, f32) {
        (self.lo[d] as usize, self.hi[d] as usize, self.t[d])
    }
}

/// Taps at a continuous source coordinate, clamped to the grid: (lower source index, upper
/// source index, weight of the upper one).
pub fn taps(src: usize, coord: f64) -> (u32, u32, f32) {
    let max = (src - 1) as f64;
    let c = coord.clamp(0.0, max);
    let lo = c.floor();
    let hi = (lo + 1.0).min(max);
    (lo as u32, hi as u32, (c - lo) as f32)
}

/// Bilinear upsampling (or downsampling) of a single-channel `h x w` map to `nh x nw`.
pub fn upsample(map: &[f32], h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    let ys = Axis::new(h, nh);
    let xs = Axis::new(w, nw);
    let mut out = vec![0.0f32; nh * nw];
    upsample_into(map, w, &ys, &xs, &mut out, false);
    out
}

/// Writes (or, with `accumulate`, adds) the bilinear resampling of `map` (row length `w`)
/// through the `ys` x `xs` taps into `out` (`ys.len() x xs.len()`).
pub fn upsample_into(map: &[f32], w: usize, ys: &Axis, xs: &Axis, out: &mut [f32], accumulate: bool) {
    let nw = xs.len();
    // One horizontally resampled source row at a time: two rows are live per output row.
    let mut row_lo = vec![0.0f32; nw];
    let mut row_hi = vec![0.0f32; nw];
    let mut cached = (usize::MAX, usize::MAX);
    for (oy, out_row) in out.chunks_exact_mut(nw).enumerate() {
        let (y0, y1, ty) = ys.at(oy);
        if cached != (y0, y1) {
            resample_row(&map[y0 * w..(y0 + 1) * w], xs, &mut row_lo);
            resample_row(&map[y1 * w..(y1 + 1) * w], xs, &mut row_hi);
            cached = (y0, y1);
        }
        for ((o, &a), &b) in out_row.iter_mut().zip(&row_lo).zip(&row_hi) {
            let v = a + ty * (b - a);
            if accumulate {
                *o += v;
            } else {
                *o = v;
            }
        }
    }
}

fn resample_row(src: &[f32], xs: &Axis, out: &mut [f32]) {
    for (ox, o) in out.iter_mut().enumerate() {
        let (x0, x1, tx) = xs.at(ox);
        let (a, b) = (src[x0], src[x1]);
        *o = a + tx * (b - a);
    }
}

/// Taps of both axes: a source grid resampled onto a destination grid.
#[derive(Debug, Clone)]
pub struct Grid {
    pub ys: Axis,
    pub xs: Axis,
}

impl Grid {
    /// `src_h x src_w` cells onto `dst_h x dst_w` pixels.
    pub fn new(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> Self {
        Self { ys: Axis::new(src_h, dst_h), xs: Axis::new(src_w, dst_w) }
    }
}

/// The bilinearly interpolated feature vector of a channels-last `h x w x c` map at
/// destination pixel `(oy, ox)` of `grid`, written into `out` (`c` values). Uses the same
/// arithmetic as [`upsample_into`] per channel.
pub fn sample_into(data: &[f32], w: usize, c: usize, grid: &Grid, (oy, ox): (usize, usize), out: &mut [f32]) {
    let (y0, y1, ty) = grid.ys.at(oy);
    let (x0, x1, tx) = grid.xs.at(ox);
    let cell = |y: usize, x: usize| &data[(y * w + x) * c..(y * w + x + 1) * c];
    let (f00, f01, f10, f11) = (cell(y0, x0), cell(y0, x1), cell(y1, x0), cell(y1, x1));
    for j in 0..c {
        let a = f00[j] + tx * (f01[j] - f00[j]);
        let b = f10[j] + tx * (f11[j] - f10[j]);
        out[j] = a + ty * (b - a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_pixel_centres_match_the_closed_form() {
        // 2 -> 4: destination 0 reads -0.25 (clamped to 0), 1 reads 0.25, 2 reads 0.75, 3 reads 1.25 -> 1.
        let up = upsample(&[0.0, 4.0], 1, 2, 1, 4);
        assert_eq!(up, vec![0.0, 1.0, 3.0, 4.0]);
        // Identity size is the identity.
        let m: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(upsample(&m, 3, 4, 3, 4), m);
    }

    #[test]
    fn upsampling_a_constant_map_keeps_it_constant_and_sampling_agrees() {
        let up = upsample(&[2.5; 28 * 28], 28, 28, 224, 224);
        assert!(up.iter().all(|&v| (v - 2.5).abs() < 1e-6));
        let data: Vec<f32> = (0..7 * 5 * 3).map(|v| (v as f32 * 0.37).sin()).collect();
        let grid = Grid::new(7, 5, 56, 40);
        let mut channel0 = vec![0.0; 56 * 40];
        let plane: Vec<f32> = data.chunks_exact(3).map(|c| c[0]).collect();
        upsample_into(&plane, 5, &grid.ys, &grid.xs, &mut channel0, false);
        let mut f = [0.0f32; 3];
        for (oy, ox) in [(0, 0), (13, 27), (55, 39), (30, 2)] {
            sample_into(&data, 5, 3, &grid, (oy, ox), &mut f);
            assert_eq!(f[0], channel0[oy * 40 + ox]);
        }
    }
}
