//! Resampling on f32 buffers: row-major, channels interleaved (`h x w x c`).
//!
//! Conventions (so that maps line up with the Python references):
//! - bilinear uses half-pixel centres (`align_corners = false`), as `torch.nn.functional.interpolate`;
//!   [`Interp::BilinearAntialias`] widens the triangle filter by the scale factor when shrinking,
//!   as PIL's `Image.resize(BILINEAR)` and torchvision's `Resize` on PIL images do
//!   (equal to plain bilinear when enlarging);
//! - nearest picks the source pixel whose centre is closest (`floor((x + 0.5) * in / out)`,
//!   PIL's `NEAREST` and torch's `nearest-exact`);
//! - centre crop offsets are `round((in - out) / 2)` with ties to even, as torchvision;
//! - [`gaussian_blur`] matches `scipy.ndimage.gaussian_filter(x, sigma)`: kernel truncated at
//!   4 sigma, `reflect` border (`d c b a | a b c d | d c b a`), rows then columns.

use std::collections::VecDeque;

use crate::{invalid, Result};

/// How to resample an image or a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    Nearest,
    Bilinear,
    BilinearAntialias,
}

/// How to resample an organized point cloud, where `(0, 0, 0)` (or a non-finite value)
/// marks a pixel without a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInterp {
    /// The nearest source point, valid or not.
    Nearest,
    /// A bilinear (triangle-filter) average over the VALID source points only; an output
    /// point is invalid when less than half of its filter weight falls on valid points.
    /// An invalid point never pulls a valid one towards the origin.
    ValidBilinear { antialias: bool },
}

fn check_buffer<T>(what: &str, src: &[T], h: usize, w: usize, c: usize) -> Result<()> {
    if h == 0 || w == 0 || c == 0 {
        return Err(invalid(what, format!("every dimension must be positive, got {h}x{w}x{c}")));
    }
    if src.len() != h * w * c {
        return Err(invalid(what, format!("buffer holds {} values but {h}x{w}x{c} needs {}", src.len(), h * w * c)));
    }
    Ok(())
}

fn check_target(what: &str, nh: usize, nw: usize) -> Result<()> {
    if nh == 0 || nw == 0 {
        return Err(invalid(what, format!("target size must be positive, got {nh}x{nw}")));
    }
    Ok(())
}

/// Filter taps of one axis: for output `i`, source indices `start[i]..start[i] + len[i]` with
/// weights `weights[i * width..]`, normalized to sum 1.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    width: usize,
    weights: Vec<f32>,
}

impl Taps {
    /// Triangle filter, PIL's coefficient scheme (`precompute_coeffs`); without antialias the
    /// support stays one source pixel, which is exactly torch's `align_corners=False` bilinear
    /// with edge clamping.
    fn triangle(n_in: usize, n_out: usize, antialias: bool) -> Self {
        let scale = n_in as f64 / n_out as f64;
        let filter_scale = if antialias && scale > 1.0 { scale } else { 1.0 };
        let support = filter_scale;
        let width = (support.ceil() as usize) * 2 + 1;
        let mut t = Taps { start: vec![0; n_out], len: vec![0; n_out], width, weights: vec![0.0; n_out * width] };
        for i in 0..n_out {
            let center = (i as f64 + 0.5) * scale;
            // Truncation toward zero, as PIL's `(int)` casts.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, n_in as i64) as usize;
            let hi = hi.max(lo + 1).min(n_in);
            let lo = lo.min(hi - 1);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let x = (j as f64 - center + 0.5) / filter_scale;
                    (1.0 - x.abs()).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                w.iter_mut().for_each(|v| *v = 0.0);
                w[0] = 1.0;
            }
            let n = w.len().min(width);
            t.start[i] = lo;
            t.len[i] = n;
            for (k, v) in w.iter().take(n).enumerate() {
                t.weights[i * width + k] = *v as f32;
            }
        }
        t
    }

    /// One tap of weight 1 on the source pixel whose centre is nearest.
    fn nearest(n_in: usize, n_out: usize) -> Self {
        let scale = n_in as f64 / n_out as f64;
        let start = (0..n_out).map(|i| (((i as f64 + 0.5) * scale).floor() as usize).min(n_in - 1)).collect();
        Taps { start, len: vec![1; n_out], width: 1, weights: vec![1.0; n_out] }
    }

    fn new(n_in: usize, n_out: usize, interp: Interp) -> Self {
        match interp {
            Interp::Nearest => Self::nearest(n_in, n_out),
            Interp::Bilinear => Self::triangle(n_in, n_out, false),
            Interp::BilinearAntialias => Self::triangle(n_in, n_out, true),
        }
    }

    fn of(&self, i: usize) -> (usize, &[f32]) {
        (self.start[i], &self.weights[i * self.width..i * self.width + self.len[i]])
    }
}

/// A pixel component the resampler reads in place: a u8 image is never copied to f32 whole.
pub trait Component: Copy {
    fn to_f32(self) -> f32;
}

impl Component for u8 {
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

impl Component for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

/// A rectangle of an image: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Region {
    /// The whole `h x w` image.
    pub fn whole(h: usize, w: usize) -> Self {
        Region { top: 0, left: 0, height: h, width: w }
    }

    /// The centre `ch x cw` of an `h x w` image, placed as torchvision's `CenterCrop`.
    pub fn center(h: usize, w: usize, ch: usize, cw: usize) -> Result<Self> {
        let (top, left) = center_crop_offsets(h, w, ch, cw)?;
        Ok(Region { top, left, height: ch, width: cw })
    }

    fn check(&self, what: &str, h: usize, w: usize) -> Result<()> {
        if self.height == 0 || self.width == 0 || self.top + self.height > h || self.left + self.width > w {
            return Err(invalid(
                what,
                format!(
                    "region {}x{} at ({}, {}) does not fit in the {h}x{w} resized image",
                    self.height, self.width, self.top, self.left
                ),
            ));
        }
        Ok(())
    }
}

/// Resizes an `h x w x c` buffer to `nh x nw x c`.
pub fn resize(src: &[f32], h: usize, w: usize, c: usize, nh: usize, nw: usize, interp: Interp) -> Result<Vec<f32>> {
    resize_region(src, h, w, c, nh, nw, Region::whole(nh, nw), interp)
}

/// `region` of the `h x w x c` buffer resized to `nh x nw`, as f32: to the bit the values of
/// [`resize`] followed by a crop, without the whole resized image or an f32 copy of the source.
/// Rows are resampled first (only the region's columns), then columns; a source row is
/// resampled when the first output row needs it and dropped when no later one does, so
/// besides the output only about `2 * filter support + 1` rows of `region.width * c` values
/// are held (a 16000 x 16000 RGB image to 224 x 224: a few hundred KB, not 3 GB).
#[allow(clippy::too_many_arguments)]
pub fn resize_region<T: Component>(
    src: &[T],
    h: usize,
    w: usize,
    c: usize,
    nh: usize,
    nw: usize,
    region: Region,
    interp: Interp,
) -> Result<Vec<f32>> {
    check_buffer("resize", src, h, w, c)?;
    check_target("resize", nh, nw)?;
    region.check("resize", nh, nw)?;
    let Region { top, left, height, width } = region;
    let row_len = width * c;
    if (h, w) == (nh, nw) {
        // Nothing to resample (a one-tap filter would turn a NaN neighbour into NaN).
        let mut dst = Vec::with_capacity(height * row_len);
        for y in top..top + height {
            dst.extend(src[(y * w + left) * c..(y * w + left + width) * c].iter().map(|v| v.to_f32()));
        }
        return Ok(dst);
    }
    let tx = Taps::new(w, nw, interp);
    let ty = Taps::new(h, nh, interp);
    let mut window = RowWindow::new(row_len);
    let mut dst = vec![0.0f32; height * row_len];
    for (y, out) in (top..top + height).zip(dst.chunks_exact_mut(row_len)) {
        let (start, wts) = ty.of(y);
        window.slide_to(start, wts.len(), |r, buf| resample_row(&src[r * w * c..(r + 1) * w * c], c, &tx, left, buf));
        for (k, &wt) in wts.iter().enumerate() {
            for (o, v) in out.iter_mut().zip(window.row(start + k)) {
                *o += wt * v;
            }
        }
    }
    Ok(dst)
}

/// One source row resampled horizontally into `out`: output columns `left..left + out.len() / c`.
fn resample_row<T: Component>(row: &[T], c: usize, tx: &Taps, left: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (x, o) in out.chunks_exact_mut(c).enumerate() {
        let (start, wts) = tx.of(left + x);
        for (k, &wt) in wts.iter().enumerate() {
            let s = &row[(start + k) * c..(start + k + 1) * c];
            // Indexed, not zipped: with a handful of channels, a vectorized loop's alias
            // checks cost more than they save.
            for ch in 0..c {
                o[ch] += wt * s[ch].to_f32();
            }
        }
    }
}

/// The horizontally resampled source rows `first..first + rows.len()` that the current output
/// row reads; filter windows only move down, so each source row is resampled once.
struct RowWindow {
    first: usize,
    rows: VecDeque<Vec<f32>>,
    /// Buffers of dropped rows, reused.
    spare: Vec<Vec<f32>>,
    row_len: usize,
}

impl RowWindow {
    fn new(row_len: usize) -> Self {
        RowWindow { first: 0, rows: Default::default(), spare: Vec::new(), row_len }
    }

    /// Holds rows `start..start + n`, resampling the missing ones with `fill(row, buffer)`.
    fn slide_to(&mut self, start: usize, n: usize, mut fill: impl FnMut(usize, &mut [f32])) {
        if start < self.first {
            self.spare.extend(self.rows.drain(..));
        }
        while self.first < start && !self.rows.is_empty() {
            self.spare.extend(self.rows.pop_front());
            self.first += 1;
        }
        if self.rows.is_empty() {
            self.first = start;
        }
        while self.first + self.rows.len() < start + n {
            let mut buf = self.spare.pop().unwrap_or_else(|| vec![0.0; self.row_len]);
            fill(self.first + self.rows.len(), &mut buf);
            self.rows.push_back(buf);
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.rows[r - self.first]
    }
}

/// Bilinear resize with half-pixel centres (`align_corners=False`), no antialiasing (torch's
/// `F.interpolate(mode="bilinear")`).
pub fn resize_bilinear(src: &[f32], h: usize, w: usize, c: usize, nh: usize, nw: usize) -> Result<Vec<f32>> {
    resize(src, h, w, c, nh, nw, Interp::Bilinear)
}

/// Bilinear resize that averages over the footprint when shrinking (PIL `BILINEAR`).
pub fn resize_bilinear_antialias(src: &[f32], h: usize, w: usize, c: usize, nh: usize, nw: usize) -> Result<Vec<f32>> {
    resize(src, h, w, c, nh, nw, Interp::BilinearAntialias)
}

/// Nearest-neighbour resize (pixel centres), for masks and labels; generic so masks stay u8.
pub fn resize_nearest<T: Copy>(src: &[T], h: usize, w: usize, c: usize, nh: usize, nw: usize) -> Result<Vec<T>> {
    check_buffer("resize_nearest", src, h, w, c)?;
    check_target("resize_nearest", nh, nw)?;
    let tx = Taps::nearest(w, nw);
    let ty = Taps::nearest(h, nh);
    let mut dst = Vec::with_capacity(nh * nw * c);
    for y in 0..nh {
        let sy = ty.start[y];
        for x in 0..nw {
            let sx = tx.start[x];
            dst.extend_from_slice(&src[(sy * w + sx) * c..(sy * w + sx + 1) * c]);
        }
    }
    Ok(dst)
}

/// A single-channel map upsampled (or downsampled) bilinearly, `align_corners=False`.
// Kept on the general `resize` taps (weighted sum `w0 a + w1 b`) rather than [`crate::resample`]
// (lerp `a + t (b - a)`): the two round differently, and shipped score maps stay byte-identical.
pub fn upsample_bilinear(map: &[f32], h: usize, w: usize, nh: usize, nw: usize) -> Result<Vec<f32>> {
    resize(map, h, w, 1, nh, nw, Interp::Bilinear)
}

/// Python's `round(d / 2)` for a non-negative integer `d` (ties to even).
fn half_round_even(d: usize) -> usize {
    let q = d / 2;
    if d % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Top and left offsets of a centre crop, as torchvision's `CenterCrop`.
pub fn center_crop_offsets(h: usize, w: usize, ch: usize, cw: usize) -> Result<(usize, usize)> {
    if ch == 0 || cw == 0 || ch > h || cw > w {
        return Err(invalid("center_crop", format!("cannot crop {ch}x{cw} out of {h}x{w}")));
    }
    Ok((half_round_even(h - ch), half_round_even(w - cw)))
}

/// Centre crop of an `h x w x c` buffer to `ch x cw x c`.
pub fn center_crop<T: Copy>(src: &[T], h: usize, w: usize, c: usize, ch: usize, cw: usize) -> Result<Vec<T>> {
    check_buffer("center_crop", src, h, w, c)?;
    let (top, left) = center_crop_offsets(h, w, ch, cw)?;
    let mut dst = Vec::with_capacity(ch * cw * c);
    for y in top..top + ch {
        dst.extend_from_slice(&src[(y * w + left) * c..(y * w + left + cw) * c]);
    }
    Ok(dst)
}

/// The size after resizing the shorter side to `size`, keeping the aspect ratio as
/// torchvision's `Resize(int)` does (the longer side is truncated).
pub fn shorter_side_size(h: usize, w: usize, size: usize) -> (usize, usize) {
    let (short, long) = if h <= w { (h, w) } else { (w, h) };
    let new_long = ((size as f64 * long as f64) / short as f64) as usize;
    if h <= w {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// PatchCore's preprocessing on one buffer: shorter side to `resize` (if given), then a
/// centre crop of `crop x crop` (if given). Returns the buffer and its height and width.
pub fn resize_shorter_side_then_crop(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    resize_to: Option<usize>,
    crop: Option<usize>,
    interp: Interp,
) -> Result<(Vec<f32>, usize, usize)> {
    check_buffer("resize_shorter_side_then_crop", src, h, w, c)?;
    let (nh, nw) = resize_to.map_or((h, w), |size| shorter_side_size(h, w, size));
    let region = match crop {
        Some(size) => Region::center(nh, nw, size, size)?,
        None => Region::whole(nh, nw),
    };
    let out = resize_region(src, h, w, c, nh, nw, region, interp)?;
    Ok((out, region.height, region.width))
}

/// `scipy.ndimage` `reflect` border: `d c b a | a b c d | d c b a`, repeated for long kernels.
fn reflect(i: isize, n: usize) -> usize {
    let n2 = 2 * n as isize;
    let m = i.rem_euclid(n2);
    if m >= n as isize {
        (n2 - 1 - m) as usize
    } else {
        m as usize
    }
}

/// Gaussian kernel truncated at 4 sigma, as scipy builds it (radius `int(4 sigma + 0.5)`).
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let mut k: Vec<f64> = (-radius..=radius).map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp()).collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Separable Gaussian blur of an `h x w` map, matching `scipy.ndimage.gaussian_filter(map, sigma)`
/// on float32 input. `sigma <= 0` returns the map unchanged.
pub fn gaussian_blur(map: &[f32], h: usize, w: usize, sigma: f32) -> Result<Vec<f32>> {
    check_buffer("gaussian_blur", map, h, w, 1)?;
    if !sigma.is_finite() || sigma < 0.0 {
        return Err(invalid("gaussian_blur", format!("sigma must be a finite non-negative number, got {sigma}")));
    }
    if sigma == 0.0 {
        return Ok(map.to_vec());
    }
    let k = gaussian_kernel(f64::from(sigma));
    let r = (k.len() / 2) as isize;
    // Axis 0 (columns) first, then axis 1, keeping the intermediate in f32 as scipy does.
    let mut tmp = vec![0.0f32; h * w];
    let rows: Vec<Vec<usize>> = (0..h as isize).map(|y| (-r..=r).map(|d| reflect(y + d, h)).collect()).collect();
    let mut acc = vec![0.0f64; w];
    for y in 0..h {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (kv, &sy) in k.iter().zip(&rows[y]) {
            let src = &map[sy * w..(sy + 1) * w];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += kv * f64::from(v);
            }
        }
        for (t, a) in tmp[y * w..(y + 1) * w].iter_mut().zip(&acc) {
            *t = *a as f32;
        }
    }
    // Axis 1 on a row padded by reflection, every output pixel accumulating its taps in kernel
    // order at once (vectorizable): each pixel sees the same additions, in the same order, from
    // the same start as a per-pixel sum of its taps.
    let mut dst = vec![0.0f32; h * w];
    let start: f64 = std::iter::empty::<f64>().sum();
    let mut padded = vec![0.0f64; w + 2 * r as usize];
    for y in 0..h {
        let row = &tmp[y * w..(y + 1) * w];
        for (i, p) in padded.iter_mut().enumerate() {
            *p = f64::from(row[reflect(i as isize - r, w)]);
        }
        acc.iter_mut().for_each(|a| *a = start);
        for (t, kv) in k.iter().enumerate() {
            for (a, &v) in acc.iter_mut().zip(&padded[t..t + w]) {
                *a += kv * v;
            }
        }
        for (d, a) in dst[y * w..(y + 1) * w].iter_mut().zip(&acc) {
            *d = *a as f32;
        }
    }
    Ok(dst)
}

fn point_valid(p: &[f32]) -> bool {
    p.iter().all(|v| v.is_finite()) && p.iter().any(|&v| v != 0.0)
}

/// Resizes an organized point cloud (`h x w x 3`) without mixing invalid points (zeros or
/// non-finite) into valid ones; see [`PointInterp`].
pub fn resize_points(src: &[f32], h: usize, w: usize, nh: usize, nw: usize, interp: PointInterp) -> Result<Vec<f32>> {
    check_buffer("resize_points", src, h, w, 3)?;
    check_target("resize_points", nh, nw)?;
    let antialias = match interp {
        PointInterp::Nearest => return resize_nearest(src, h, w, 3, nh, nw),
        PointInterp::ValidBilinear { antialias } => antialias,
    };
    let tx = Taps::triangle(w, nw, antialias);
    let ty = Taps::triangle(h, nh, antialias);
    let valid: Vec<bool> = src.chunks_exact(3).map(point_valid).collect();
    let mut dst = vec![0.0f32; nh * nw * 3];
    for y in 0..nh {
        let (sy0, wy) = ty.of(y);
        for x in 0..nw {
            let (sx0, wx) = tx.of(x);
            let (mut total, mut wsum, mut acc) = (0.0f64, 0.0f64, [0.0f64; 3]);
            for (dy, &a) in wy.iter().enumerate() {
                for (dx, &b) in wx.iter().enumerate() {
                    let wt = f64::from(a) * f64::from(b);
                    total += wt;
                    let i = (sy0 + dy) * w + sx0 + dx;
                    if wt > 0.0 && valid[i] {
                        wsum += wt;
                        for ch in 0..3 {
                            acc[ch] += wt * f64::from(src[i * 3 + ch]);
                        }
                    }
                }
            }
            if wsum > 0.0 && wsum >= 0.5 * total {
                let o = &mut dst[(y * nw + x) * 3..(y * nw + x + 1) * 3];
                for ch in 0..3 {
                    o[ch] = (acc[ch] / wsum) as f32;
                }
            }
        }
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }

    /// The two-pass resize as it was before [`resize_region`] (whole h x nw x c intermediate,
    /// from a whole f32 copy): the reference the streaming one must equal to the bit.
    fn resize_two_pass(src: &[f32], h: usize, w: usize, c: usize, nh: usize, nw: usize, interp: Interp) -> Vec<f32> {
        if (h, w) == (nh, nw) {
            return src.to_vec();
        }
        let tx = Taps::new(w, nw, interp);
        let ty = Taps::new(h, nh, interp);
        let mut tmp = vec![0.0f32; h * nw * c];
        for y in 0..h {
            let row = &src[y * w * c..(y + 1) * w * c];
            let out = &mut tmp[y * nw * c..(y + 1) * nw * c];
            for x in 0..nw {
                let (start, wts) = tx.of(x);
                let o = &mut out[x * c..(x + 1) * c];
                for (k, &wt) in wts.iter().enumerate() {
                    let s = &row[(start + k) * c..(start + k + 1) * c];
                    for ch in 0..c {
                        o[ch] += wt * s[ch];
                    }
                }
            }
        }
        let mut dst = vec![0.0f32; nh * nw * c];
        let row_len = nw * c;
        for y in 0..nh {
            let (start, wts) = ty.of(y);
            let out = &mut dst[y * row_len..(y + 1) * row_len];
            for (k, &wt) in wts.iter().enumerate() {
                let s = &tmp[(start + k) * row_len..(start + k + 1) * row_len];
                for (o, v) in out.iter_mut().zip(s) {
                    *o += wt * v;
                }
            }
        }
        dst
    }

    /// Deterministic noise with structure (a gradient, stripes and speckle), `h x w x c` u8.
    fn test_image(h: usize, w: usize, c: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..h * w * c)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let (y, x) = (i / (w * c), (i / c) % w);
                let stripe = if (x / 7 + y / 11) % 2 == 0 { 60 } else { 0 };
                ((x + 2 * y) % 128 + stripe + (state >> 28) as usize) as u8
            })
            .collect()
    }

    fn assert_bits_equal(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        if let Some(i) = a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits()) {
            panic!("{what}: index {i}: {} vs {}", a[i], b[i]);
        }
    }

    #[test]
    fn streaming_resize_equals_the_two_pass_resize_to_the_bit() {
        // Real sizes: 256 x 256 and 1024 x 768 RGB, u8 and f32, shrunk (shorter side 256, 224
        // and an odd size), enlarged, and resized to the shorter side then centre-cropped.
        for (h, w) in [(256usize, 256usize), (768, 1024)] {
            let bytes = test_image(h, w, 3, (h * w) as u32);
            let float: Vec<f32> = bytes.iter().map(|&v| f32::from(v) * 0.731 - 3.5).collect();
            for interp in [Interp::BilinearAntialias, Interp::Bilinear, Interp::Nearest] {
                for (nh, nw) in [shorter_side_size(h, w, 256), shorter_side_size(h, w, 224), (97, 131), (300, 517)] {
                    let as_f32: Vec<f32> = bytes.iter().map(|&v| f32::from(v)).collect();
                    let reference = resize_two_pass(&as_f32, h, w, 3, nh, nw, interp);
                    let what = format!("{h}x{w} u8 -> {nh}x{nw} {interp:?}");
                    let whole = resize_region(&bytes, h, w, 3, nh, nw, Region::whole(nh, nw), interp).unwrap();
                    assert_bits_equal(&whole, &reference, &what);
                    let side = nh.min(nw) * 7 / 8;
                    let region = Region::center(nh, nw, side, side).unwrap();
                    let cropped = resize_region(&bytes, h, w, 3, nh, nw, region, interp).unwrap();
                    let expected = center_crop(&reference, nh, nw, 3, side, side).unwrap();
                    assert_bits_equal(&cropped, &expected, &format!("{what}, crop {side}"));

                    let reference = resize_two_pass(&float, h, w, 3, nh, nw, interp);
                    let what = format!("{h}x{w} f32 -> {nh}x{nw} {interp:?}");
                    assert_bits_equal(&resize(&float, h, w, 3, nh, nw, interp).unwrap(), &reference, &what);
                    let cropped = resize_region(&float, h, w, 3, nh, nw, region, interp).unwrap();
                    let expected = center_crop(&reference, nh, nw, 3, side, side).unwrap();
                    assert_bits_equal(&cropped, &expected, &format!("{what}, crop {side}"));
                }
            }
        }
        // Same size: a crop, converted.
        let bytes = test_image(20, 30, 1, 5);
        let out = resize_region(&bytes, 20, 30, 1, 20, 30, Region::center(20, 30, 8, 8).unwrap(), Interp::Bilinear);
        let expected: Vec<f32> = center_crop(&bytes, 20, 30, 1, 8, 8).unwrap().into_iter().map(f32::from).collect();
        assert_eq!(out.unwrap(), expected);
    }

    #[test]
    fn a_region_outside_the_resized_image_is_an_error() {
        let src = vec![0u8; 40 * 50];
        let err =
            resize_region(&src, 40, 50, 1, 20, 25, Region { top: 10, left: 0, height: 11, width: 5 }, Interp::Bilinear);
        assert!(err.unwrap_err().to_string().contains("region 11x5 at (10, 0) does not fit in the 20x25"));
        assert!(resize_region(&src, 40, 50, 1, 20, 25, Region::whole(0, 3), Interp::Bilinear).is_err());
        assert!(resize_region(&src, 40, 49, 1, 20, 25, Region::whole(20, 25), Interp::Bilinear).is_err());
    }

    #[test]
    fn bilinear_upsample_matches_torch_align_corners_false() {
        // torch.nn.functional.interpolate([[0,1],[2,3]], size=(4,4), mode="bilinear", align_corners=False)
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 1, 4, 4).unwrap();
        #[rustfmt::skip]
        let expected = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        close(&out, &expected, 1e-6);
        assert_eq!(upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4).unwrap(), out);
    }

    #[test]
    fn bilinear_downsample_with_and_without_antialias() {
        let row = [0.0, 1.0, 2.0, 3.0];
        // torch: sample points at 0.5 and 2.5.
        close(&resize_bilinear(&row, 1, 4, 1, 1, 2).unwrap(), &[0.5, 2.5], 1e-6);
        // PIL / torch antialias=True: triangle of half-width 2 -> (0.75*0 + 0.75*1 + 0.25*2) / 1.75, ...
        close(&resize_bilinear_antialias(&row, 1, 4, 1, 1, 2).unwrap(), &[1.25 / 1.75, 4.0 / 1.75], 1e-6);
        // Enlarging: antialias changes nothing.
        let up_a = resize_bilinear_antialias(&row, 1, 4, 1, 3, 7).unwrap();
        let up_b = resize_bilinear(&row, 1, 4, 1, 3, 7).unwrap();
        assert_eq!(up_a, up_b);
    }

    #[test]
    fn interleaved_channels_are_resized_independently() {
        // Two channels: c0 = x, c1 = 10 * y.
        let (h, w) = (3, 5);
        let src: Vec<f32> = (0..h * w).flat_map(|i| [(i % w) as f32, 10.0 * (i / w) as f32]).collect();
        let out = resize_bilinear_antialias(&src, h, w, 2, 7, 11).unwrap();
        for y in 0..7 {
            for x in 0..11 {
                let p = &out[(y * 11 + x) * 2..(y * 11 + x) * 2 + 2];
                assert!(p[0] >= 0.0 && p[0] <= 4.0);
                // c1 does not depend on x.
                assert!((p[1] - out[(y * 11) * 2 + 1]).abs() < 1e-5);
            }
        }
        // A constant image stays constant under any resize.
        let flat = vec![7.5f32; 90 * 120 * 3];
        for interp in [Interp::Nearest, Interp::Bilinear, Interp::BilinearAntialias] {
            assert!(resize(&flat, 90, 120, 3, 41, 257, interp).unwrap().iter().all(|&v| (v - 7.5).abs() < 1e-5));
        }
    }

    #[test]
    fn nearest_picks_centres() {
        assert_eq!(resize_nearest(&[1u8, 2], 1, 2, 1, 1, 4).unwrap(), vec![1, 1, 2, 2]);
        assert_eq!(resize_nearest(&[1u8, 2, 3, 4], 1, 4, 1, 1, 2).unwrap(), vec![2, 4]);
        // 3 -> 2: centres at 0.75 and 2.25 -> pixels 0 and 2.
        assert_eq!(resize_nearest(&[5u8, 6, 7], 3, 1, 1, 2, 1).unwrap(), vec![5, 7]);
    }

    #[test]
    fn crop_offsets_follow_torchvision() {
        assert_eq!(center_crop_offsets(256, 256, 224, 224).unwrap(), (16, 16));
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2 in Python.
        assert_eq!(center_crop_offsets(5, 4, 4, 3).unwrap(), (0, 0));
        assert_eq!(center_crop_offsets(5, 7, 2, 2).unwrap(), (2, 2));
        assert!(center_crop_offsets(10, 10, 11, 5).is_err());
        let src: Vec<u8> = (0..20).collect(); // 4 x 5
        assert_eq!(center_crop(&src, 4, 5, 1, 2, 3).unwrap(), vec![6, 7, 8, 11, 12, 13]);
    }

    #[test]
    fn shorter_side_then_crop_sizes() {
        assert_eq!(shorter_side_size(900, 1200, 256), (256, 341));
        assert_eq!(shorter_side_size(1200, 900, 256), (341, 256));
        assert_eq!(shorter_side_size(1024, 1024, 256), (256, 256));
        let src = vec![1.0f32; 300 * 400 * 3];
        let (out, h, w) =
            resize_shorter_side_then_crop(&src, 300, 400, 3, Some(256), Some(224), Interp::BilinearAntialias).unwrap();
        assert_eq!((h, w, out.len()), (224, 224, 224 * 224 * 3));
        let (out, h, w) = resize_shorter_side_then_crop(&src, 300, 400, 3, None, None, Interp::Nearest).unwrap();
        assert_eq!((h, w, out.len()), (300, 400, src.len()));
        assert!(resize_shorter_side_then_crop(&src, 300, 400, 3, Some(100), Some(224), Interp::Bilinear).is_err());
    }

    #[test]
    fn gaussian_rows_at_once_give_a_per_pixel_sums_bits() {
        // The per-pixel form of the second pass: each output a sum of its reflected taps.
        fn per_pixel(map: &[f32], h: usize, w: usize, sigma: f32) -> Vec<f32> {
            let k = gaussian_kernel(f64::from(sigma));
            let r = (k.len() / 2) as isize;
            let mut tmp = vec![0.0f32; h * w];
            for y in 0..h {
                for x in 0..w {
                    let mut a = 0.0f64;
                    for (t, kv) in k.iter().enumerate() {
                        a += kv * f64::from(map[reflect(y as isize + t as isize - r, h) * w + x]);
                    }
                    tmp[y * w + x] = a as f32;
                }
            }
            (0..h * w)
                .map(|p| {
                    let (y, x) = (p / w, p % w);
                    let s: f64 = k
                        .iter()
                        .enumerate()
                        .map(|(t, kv)| kv * f64::from(tmp[y * w + reflect(x as isize + t as isize - r, w)]))
                        .sum();
                    s as f32
                })
                .collect()
        }
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.3) * 5.0
        };
        for (h, w, sigma) in [(224, 224, 4.0), (28, 31, 4.0), (5, 7, 2.0), (3, 40, 1.5), (1, 10, 1.0)] {
            let mut m: Vec<f32> = (0..h * w).map(|_| next()).collect();
            m[0] = -0.0;
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gaussian_blur(&m, h, w, sigma).unwrap()), bits(&per_pixel(&m, h, w, sigma)), "{h}x{w}");
        }
        let zeros = vec![-0.0f32; 6 * 6];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&gaussian_blur(&zeros, 6, 6, 1.0).unwrap()), bits(&per_pixel(&zeros, 6, 6, 1.0)));
    }

    #[test]
    fn gaussian_matches_scipy_hand_values() {
        // Kernel sum for sigma 1, radius 4: 1 + 2 (e^-0.5 + e^-2 + e^-4.5 + e^-8).
        let s: f64 = 1.0 + 2.0 * ((-0.5f64).exp() + (-2.0f64).exp() + (-4.5f64).exp() + (-8.0f64).exp());
        // An impulse in the middle of a 9x9 map: centre value = k0^2.
        let mut m = vec![0.0f32; 81];
        m[40] = 1.0;
        let out = gaussian_blur(&m, 9, 9, 1.0).unwrap();
        close(&[out[40]], &[(1.0 / (s * s)) as f32], 1e-7);
        close(&[out.iter().sum::<f32>()], &[1.0], 1e-5);
        // Reflect border on one row: x = [1, 0, ..., 0] -> out[0] = k0 + k1 (x[-1] mirrors x[0]).
        let mut row = vec![0.0f32; 10];
        row[0] = 1.0;
        let out = gaussian_blur(&row, 1, 10, 1.0).unwrap();
        close(&[out[0]], &[((1.0 + (-0.5f64).exp()) / s) as f32], 1e-7);
        // scipy.ndimage.gaussian_filter1d([1,0,0,0,0,0,0,0,0,0], 1)[1] = (k1 + k2)... (x[-2] mirrors x[1] = 0)
        close(&[out[1]], &[(((-0.5f64).exp() + (-2.0f64).exp()) / s) as f32], 1e-7);
        // A 5x7 map, narrower than the sigma-2 kernel (radius 8): several reflections.
        // Values from scipy.ndimage.gaussian_filter(np.arange(35, dtype=np.float32).reshape(5, 7) ** 1.5, 2.0).
        let m: Vec<f32> = (0..35).map(|v| (v as f32).powf(1.5)).collect();
        let out = gaussian_blur(&m, 5, 7, 2.0).unwrap();
        close(&out[..4], &[35.888092, 37.49061, 40.378784, 44.024094], 1e-3);
        close(&[out[34]], &[129.3811], 1e-3);
        // A constant map stays constant, borders included; a map narrower than the kernel works.
        let flat = vec![3.0f32; 5 * 3];
        assert!(gaussian_blur(&flat, 5, 3, 4.0).unwrap().iter().all(|v| (v - 3.0).abs() < 1e-5));
        assert_eq!(gaussian_blur(&row, 1, 10, 0.0).unwrap(), row);
        assert!(gaussian_blur(&row, 1, 10, f32::NAN).is_err());
    }

    #[test]
    fn point_resize_never_mixes_invalid_points() {
        // 4x4 cloud, z = 10 everywhere except an invalid 2x2 corner.
        let mut src = Vec::new();
        for y in 0..4 {
            for x in 0..4 {
                if y < 2 && x < 2 {
                    src.extend([0.0, 0.0, 0.0]);
                } else {
                    src.extend([x as f32, y as f32, 10.0]);
                }
            }
        }
        for antialias in [false, true] {
            for (nh, nw) in [(8, 8), (2, 2), (3, 5)] {
                let out = resize_points(&src, 4, 4, nh, nw, PointInterp::ValidBilinear { antialias }).unwrap();
                let mut valid = 0;
                for p in out.chunks_exact(3) {
                    if p != [0.0, 0.0, 0.0] {
                        valid += 1;
                        assert!((p[2] - 10.0).abs() < 1e-6, "z pulled towards 0: {p:?}");
                    }
                }
                // Roughly three quarters stay valid.
                let frac = valid as f32 / (nh * nw) as f32;
                assert!(frac > 0.4 && frac < 0.95, "{nh}x{nw}: {frac}");
            }
        }
        // The top-left output of an 8x8 upsample is invalid; the bottom-right is valid and exact.
        let out = resize_points(&src, 4, 4, 8, 8, PointInterp::ValidBilinear { antialias: false }).unwrap();
        assert_eq!(&out[0..3], &[0.0, 0.0, 0.0]);
        assert_eq!(&out[63 * 3..64 * 3], &[3.0, 3.0, 10.0]);
        let near = resize_points(&src, 4, 4, 2, 2, PointInterp::Nearest).unwrap();
        assert_eq!(near, vec![0.0, 0.0, 0.0, 3.0, 1.0, 10.0, 1.0, 3.0, 10.0, 3.0, 3.0, 10.0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(resize(&[0.0; 5], 2, 2, 1, 3, 3, Interp::Bilinear).is_err());
        assert!(resize(&[0.0; 4], 2, 2, 1, 0, 3, Interp::Bilinear).is_err());
        assert!(gaussian_blur(&[0.0; 3], 2, 2, 1.0).is_err());
        assert!(resize_points(&[0.0; 12], 2, 2, 4, 4, PointInterp::Nearest).is_ok());
        assert!(resize_points(&[0.0; 8], 2, 2, 4, 4, PointInterp::Nearest).is_err());
    }
}
