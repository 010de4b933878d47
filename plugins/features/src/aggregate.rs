//! PatchCore's locally aware patch features, on channels-last maps:
//!
//! 1. each layer is averaged over a `patch_size x patch_size` neighbourhood (stride 1, zero
//!    padding). By default the padded zeros COUNT in the average, as `torch.nn.AvgPool2d(3, 1, 1)`
//!    does (anomalib's PatchCore); `count_include_pad: false` averages only the cells inside.
//!    (PatchCore's reference code unfolds the 3x3 patch and adaptive-pools the flattened
//!    `C x 3 x 3` values; the box average is the usual simplification.)
//! 2. every layer is brought to the finest layer's grid, bilinear with half-pixel centres
//!    (`F.interpolate(mode="bilinear", align_corners=False)`);
//! 3. per location, the layers are reduced: `adaptive-avg` pools each layer's channels to
//!    `layer_dim` (PatchCore's pretrain_embed_dimension), concatenates, then pools to `dim`
//!    (PatchCore's target_embed_dimension), with `adaptive_avg_pool1d`'s windows;
//!    `random-projection` concatenates and multiplies by a seeded `dim x C` matrix of
//!    `+-1/sqrt(dim)` entries; `none` keeps the concatenation.

use anoflow_imaging::resize_bilinear;
use anoflow_sdk::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the concatenated channels are reduced per location.
#[derive(Debug, Clone, PartialEq)]
pub enum Reduction {
    /// Concatenation as is.
    None,
    /// Adaptive average pooling over channels: per layer to `layer_dim` (0: skip that step),
    /// then the concatenation to `dim`.
    AdaptiveAvg { layer_dim: usize, dim: usize },
    /// A seeded random projection to `dim`.
    RandomProjection { dim: usize, seed: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateConfig {
    pub patch_size: usize,
    pub count_include_pad: bool,
    pub reduction: Reduction,
}

impl Default for AggregateConfig {
    /// PatchCore's defaults.
    fn default() -> Self {
        Self {
            patch_size: 3,
            count_include_pad: true,
            reduction: Reduction::AdaptiveAvg { layer_dim: 1024, dim: 1024 },
        }
    }
}

/// Box average over `p x p` neighbourhoods of an `h x w x c` buffer (stride 1, zero padding).
pub fn box_average(data: &[f32], h: usize, w: usize, c: usize, p: usize, count_include_pad: bool) -> Vec<f32> {
    if p <= 1 {
        return data.to_vec();
    }
    let r = (p / 2) as isize;
    // Rows: sum along x, then columns: sum along y (separable).
    let mut rows = vec![0.0f32; data.len()];
    for y in 0..h {
        for x in 0..w {
            let out = &mut rows[(y * w + x) * c..(y * w + x + 1) * c];
            for dx in -r..=r {
                let sx = x as isize + dx;
                if sx < 0 || sx >= w as isize {
                    continue;
                }
                let src = &data[(y * w + sx as usize) * c..(y * w + sx as usize + 1) * c];
                out.iter_mut().zip(src).for_each(|(o, s)| *o += s);
            }
        }
    }
    let mut out = vec![0.0f32; data.len()];
    for y in 0..h {
        let ny = (-r..=r).filter(|d| (0..h as isize).contains(&(y as isize + d))).count();
        for x in 0..w {
            let nx = (-r..=r).filter(|d| (0..w as isize).contains(&(x as isize + d))).count();
            let norm = 1.0 / if count_include_pad { (p * p) as f32 } else { (nx * ny) as f32 };
            let o = &mut out[(y * w + x) * c..(y * w + x + 1) * c];
            for dy in -r..=r {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                let src = &rows[(sy as usize * w + x) * c..(sy as usize * w + x + 1) * c];
                o.iter_mut().zip(src).for_each(|(o, s)| *o += s);
            }
            o.iter_mut().for_each(|v| *v *= norm);
        }
    }
    out
}

/// `torch.nn.functional.adaptive_avg_pool1d` of one vector to length `out.len()`: output `i`
/// averages `src[floor(i*L/dim) .. ceil((i+1)*L/dim)]`.
pub fn adaptive_avg_pool(src: &[f32], dim: usize, out: &mut [f32]) {
    AdaptivePool::new(src.len(), dim).apply(src, &mut out[..dim]);
}

/// The windows of an adaptive average pooling from `len` to `dim` values, computed once and
/// applied at every location.
#[derive(Debug, Clone)]
pub struct AdaptivePool {
    windows: Vec<(usize, usize, f32)>,
}

impl AdaptivePool {
    pub fn new(len: usize, dim: usize) -> Self {
        let windows = (0..dim)
            .map(|i| {
                let (start, end) = (i * len / dim, ((i + 1) * len).div_ceil(dim));
                (start, end, 1.0 / (end - start) as f32)
            })
            .collect();
        Self { windows }
    }

    pub fn apply(&self, src: &[f32], out: &mut [f32]) {
        for (o, &(start, end, inv)) in out.iter_mut().zip(&self.windows) {
            *o = src[start..end].iter().sum::<f32>() * inv;
        }
    }
}

/// PatchCore's two poolings (each layer to `layer_dim`, then the concatenation to `dim`) composed
/// into one sparse linear map from the concatenated channels to `dim`, with a fixed number of
/// taps per output (zero-weight padding) so applying it has no data-dependent branches.
#[derive(Debug, Clone)]
pub struct ChannelReduction {
    dim: usize,
    taps: usize,
    index: Vec<u32>,
    weight: Vec<f32>,
}

impl ChannelReduction {
    /// `channels`: the channel count of each layer, in concatenation order.
    pub fn new(channels: &[usize], layer_dim: usize, dim: usize) -> Self {
        // stacked[s] = sum of (input channel, weight)
        let mut stacked: Vec<Vec<(usize, f32)>> = Vec::new();
        let mut offset = 0;
        for &c in channels {
            if layer_dim == 0 {
                stacked.extend((0..c).map(|k| vec![(offset + k, 1.0)]));
            } else {
                for &(start, end, inv) in &AdaptivePool::new(c, layer_dim).windows {
                    stacked.push((start..end).map(|k| (offset + k, inv)).collect());
                }
            }
            offset += c;
        }
        let rows: Vec<Vec<(usize, f32)>> = AdaptivePool::new(stacked.len(), dim)
            .windows
            .iter()
            .map(|&(start, end, inv)| {
                let mut row: Vec<(usize, f32)> = Vec::new();
                for (k, w) in stacked[start..end].iter().flatten() {
                    match row.iter_mut().find(|(i, _)| i == k) {
                        Some(entry) => entry.1 += w * inv,
                        None => row.push((*k, w * inv)),
                    }
                }
                row
            })
            .collect();
        let taps = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut index = vec![0u32; dim * taps];
        let mut weight = vec![0.0f32; dim * taps];
        for (j, row) in rows.iter().enumerate() {
            for (t, &(k, w)) in row.iter().enumerate() {
                index[j * taps + t] = k as u32;
                weight[j * taps + t] = w;
            }
        }
        Self { dim, taps, index, weight }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Reduces one location's concatenated features into `out` (`dim` values).
    pub fn apply(&self, src: &[f32], out: &mut [f32]) {
        let rows = self.index.chunks_exact(self.taps).zip(self.weight.chunks_exact(self.taps));
        for (o, (idx, w)) in out.iter_mut().zip(rows) {
            *o = idx.iter().zip(w).map(|(&k, &w)| src[k as usize] * w).sum();
        }
    }
}

/// The seeded `dim x c` projection matrix (row-major), entries `+-1/sqrt(dim)`.
pub fn projection_matrix(dim: usize, c: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = 1.0 / (dim as f32).sqrt();
    (0..dim * c).map(|_| if rng.gen::<bool>() { v } else { -v }).collect()
}

/// Aggregates the layers of one sample into one feature map on the finest layer's grid.
pub fn aggregate(maps: &[&FeatureMap], cfg: &AggregateConfig) -> Result<FeatureMap, String> {
    let finest = maps
        .iter()
        .max_by_key(|m| m.height() * m.width())
        .ok_or_else(|| "no feature map on input `features`".to_string())?;
    let (h, w, stride) = (finest.height(), finest.width(), finest.stride());
    let (img_h, img_w) = (h as f32 * stride, w as f32 * stride);
    for m in maps {
        let (mh, mw) = (m.height() as f32 * m.stride(), m.width() as f32 * m.stride());
        if (mh - img_h).abs() > m.stride() || (mw - img_w).abs() > m.stride() {
            return Err(format!(
                "feature maps cover different image sizes: {}x{} cells at stride {} ({mh}x{mw} pixels) vs {h}x{w} \
                 at stride {stride} ({img_h}x{img_w} pixels); they must come from the same image",
                m.height(),
                m.width(),
                m.stride()
            ));
        }
    }
    // Per layer: local average at its own resolution, then up to the finest grid.
    let layers: Vec<(usize, Vec<f32>)> = maps
        .iter()
        .map(|m| {
            let (mh, mw, c) = (m.height(), m.width(), m.channels());
            let avg = box_average(m.data(), mh, mw, c, cfg.patch_size, cfg.count_include_pad);
            let up = if (mh, mw) == (h, w) {
                avg
            } else {
                resize_bilinear(&avg, mh, mw, c, h, w).map_err(|e| e.to_string())?
            };
            Ok((c, up))
        })
        .collect::<Result<_, String>>()?;
    let n = h * w;
    let total: usize = layers.iter().map(|(c, _)| c).sum();
    let concat = || {
        let mut out = vec![0.0f32; n * total];
        for (p, row) in out.chunks_exact_mut(total).enumerate() {
            let mut at = 0;
            for (c, data) in &layers {
                row[at..at + c].copy_from_slice(&data[p * c..(p + 1) * c]);
                at += c;
            }
        }
        out
    };
    let (dim, data) = match &cfg.reduction {
        Reduction::None => (total, concat()),
        Reduction::AdaptiveAvg { layer_dim, dim } => {
            let channels: Vec<usize> = layers.iter().map(|(c, _)| *c).collect();
            let reduction = ChannelReduction::new(&channels, *layer_dim, *dim);
            let x = concat();
            let mut out = vec![0.0f32; n * dim];
            for (src, dst) in x.chunks_exact(total).zip(out.chunks_exact_mut(*dim)) {
                reduction.apply(src, dst);
            }
            (*dim, out)
        }
        Reduction::RandomProjection { dim, seed } => {
            let x = concat();
            let r = projection_matrix(*dim, total, *seed);
            let mut out = vec![0.0f32; n * dim];
            // out (n x dim) = x (n x total) * r^T (total x dim).
            // SAFETY: the pointers cover n*total, dim*total and n*dim floats, as the strides say.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    total,
                    *dim,
                    1.0,
                    x.as_ptr(),
                    total as isize,
                    1,
                    r.as_ptr(),
                    1,
                    total as isize,
                    0.0,
                    out.as_mut_ptr(),
                    *dim as isize,
                    1,
                );
            }
            (*dim, out)
        }
    };
    FeatureMap::new(dim as u32, h as u32, w as u32, stride, data).map_err(|e| e.message.to_string())
}

/// The feature at image pixel `(img_y, img_x)` as if `fm` were first upsampled bilinearly
/// (half-pixel centres, edges clamped) to the image size `round(height * stride) x
/// round(width * stride)`, without building that map. `out` must hold `fm.channels()` values.
pub fn sample_bilinear(fm: &FeatureMap, img_y: f32, img_x: f32, out: &mut [f32]) {
    let (h, w, c) = (fm.height(), fm.width(), fm.channels());
    // The taps TTT4AS's resampling uses, at one continuous coordinate.
    let axis = |pos: f32, n: usize| {
        let n_img = (n as f32 * fm.stride()).round().max(1.0);
        let (lo, hi, t) =
            anoflow_imaging::resample::taps(n, (f64::from(pos) + 0.5) * n as f64 / f64::from(n_img) - 0.5);
        (lo as usize, hi as usize, t)
    };
    let (y0, y1, fy) = axis(img_y, h);
    let (x0, x1, fx) = axis(img_x, w);
    let (a, b, cc, d) = (fm.at(y0, x0), fm.at(y0, x1), fm.at(y1, x0), fm.at(y1, x1));
    let (w00, w01, w10, w11) = ((1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx);
    for (i, o) in out.iter_mut().enumerate().take(c) {
        *o = w00 * a[i] + w01 * b[i] + w10 * cc[i] + w11 * d[i];
    }
}
