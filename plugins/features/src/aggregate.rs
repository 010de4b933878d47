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

/// `torch.nn.functional.adaptive_avg_pool1d` of one vector to length `dim`: output `i`
/// averages `src[floor(i*L/dim) .. ceil((i+1)*L/dim)]`.
pub fn adaptive_avg_pool(src: &[f32], dim: usize, out: &mut [f32]) {
    let l = src.len();
    for (i, o) in out.iter_mut().enumerate().take(dim) {
        let start = i * l / dim;
        let end = ((i + 1) * l).div_ceil(dim);
        *o = src[start..end].iter().sum::<f32>() / (end - start) as f32;
    }
}

/// The seeded `dim x c` projection matrix (row-major), entries `+-1/sqrt(dim)`.
pub fn projection_matrix(dim: usize, c: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = 1.0 / (dim as f32).sqrt();
    (0..dim * c).map(|_| if rng.gen::<bool>() { v } else { -v }).collect()
}

/// Writes one layer's features at one location into `dst` (given `channels, src`); returns
/// how many values it wrote.
type LayerWriter<'a> = dyn Fn(usize, &[f32], &mut [f32]) -> usize + 'a;

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
    let concat = |out_c: usize, per_layer: &LayerWriter<'_>| {
        let mut out = vec![0.0f32; n * out_c];
        for (p, row) in out.chunks_exact_mut(out_c).enumerate() {
            let mut at = 0;
            for (c, data) in &layers {
                let width = per_layer(*c, &data[p * c..(p + 1) * c], &mut row[at..]);
                at += width;
            }
        }
        out
    };
    let (dim, data) = match &cfg.reduction {
        Reduction::None => (
            total,
            concat(total, &|c, src, dst| {
                dst[..c].copy_from_slice(src);
                c
            }),
        ),
        Reduction::AdaptiveAvg { layer_dim, dim } => {
            let ld = *layer_dim;
            let width = if ld == 0 { total } else { ld * layers.len() };
            let stacked = concat(width, &|c, src, dst| {
                if ld == 0 {
                    dst[..c].copy_from_slice(src);
                    c
                } else {
                    adaptive_avg_pool(src, ld, &mut dst[..ld]);
                    ld
                }
            });
            let mut out = vec![0.0f32; n * dim];
            for (src, dst) in stacked.chunks_exact(width).zip(out.chunks_exact_mut(*dim)) {
                adaptive_avg_pool(src, *dim, dst);
            }
            (*dim, out)
        }
        Reduction::RandomProjection { dim, seed } => {
            let x = concat(total, &|c, src, dst| {
                dst[..c].copy_from_slice(src);
                c
            });
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
    let axis = |pos: f32, n: usize| {
        let n_img = (n as f32 * fm.stride()).round().max(1.0);
        let src = ((pos + 0.5) * n as f32 / n_img - 0.5).clamp(0.0, (n - 1) as f32);
        let lo = src.floor() as usize;
        (lo, (lo + 1).min(n - 1), src - lo as f32)
    };
    let (y0, y1, fy) = axis(img_y, h);
    let (x0, x1, fx) = axis(img_x, w);
    let (a, b, cc, d) = (fm.at(y0, x0), fm.at(y0, x1), fm.at(y1, x0), fm.at(y1, x1));
    let (w00, w01, w10, w11) = ((1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx);
    for (i, o) in out.iter_mut().enumerate().take(c) {
        *o = w00 * a[i] + w01 * b[i] + w10 * cc[i] + w11 * d[i];
    }
}
