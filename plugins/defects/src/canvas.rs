//! The working copy of an image: f32 pixels in 0-255 units, `h x w x c` interleaved, and
//! the rule that turns a rendered copy back into an image of the input's type plus the
//! exact mask of what changed visibly.

use anoflow_sdk::prelude::*;

/// A pixel counts as changed when one of its channels moved by more than this many grey
/// levels (0-255 units). Smaller changes are reverted, so soft edges never mark pixels
/// nobody can see, and every pixel outside the mask keeps its exact input value.
pub const VISIBLE_LEVEL: f32 = 8.0;

/// How the input stored its pixels, to write the output the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    U8,
    /// f32 pixels; `scale` maps them to 0-255 units (255 for images in `[0, 1]`, else 1).
    F32 {
        scale: f32,
    },
}

/// An image in 0-255 working units.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub px: Vec<f32>,
    storage: Storage,
}

impl Canvas {
    /// The working copy of `image`. f32 images whose values all lie in `[0, 1]` are taken as
    /// 0-1 images, others as 0-255 ones (the project uses both conventions). Only 1 or 3
    /// channels and finite values are accepted; the error says what was found.
    pub fn from_image(image: &Image) -> Result<Self, String> {
        let (h, w, c) = (image.height(), image.width(), image.channels());
        if c != 1 && c != 3 {
            return Err(format!("image has {c} channels; expected 1 (grey) or 3 (RGB)"));
        }
        let (px, storage) = match image.pixels() {
            Pixels::U8(d) => (d.iter().map(|&v| f32::from(v)).collect(), Storage::U8),
            Pixels::F32(d) => {
                if let Some(i) = d.iter().position(|v| !v.is_finite()) {
                    return Err(format!("image holds {} at pixel (y {}, x {})", d[i], i / c / w, i / c % w));
                }
                let unit = d.iter().all(|v| (0.0..=1.0).contains(v));
                let scale = if unit { 255.0 } else { 1.0 };
                (d.iter().map(|&v| v * scale).collect(), Storage::F32 { scale })
            }
        };
        Ok(Self { h, w, c, px, storage })
    }

    pub fn pixel(&self, i: usize) -> &[f32] {
        &self.px[i * self.c..(i + 1) * self.c]
    }

    /// Mean grey level of the pixels `idx` (mean over channels).
    pub fn mean_level(&self, idx: &[usize]) -> f32 {
        if idx.is_empty() {
            return 128.0;
        }
        let sum: f32 = idx.iter().map(|&i| self.pixel(i).iter().sum::<f32>() / self.c as f32).sum();
        sum / idx.len() as f32
    }

    /// Bilinear sample at `(y, x)` in pixel-centre coordinates, clamped to the image.
    pub fn sample(&self, y: f32, x: f32, out: &mut [f32]) {
        let y = y.clamp(0.0, (self.h - 1) as f32);
        let x = x.clamp(0.0, (self.w - 1) as f32);
        let (y0, x0) = (y.floor() as usize, x.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(self.h - 1), (x0 + 1).min(self.w - 1));
        let (fy, fx) = (y - y0 as f32, x - x0 as f32);
        let at = |yy: usize, xx: usize, ch: usize| self.px[(yy * self.w + xx) * self.c + ch];
        for (ch, o) in out.iter_mut().enumerate().take(self.c) {
            let top = at(y0, x0, ch) * (1.0 - fx) + at(y0, x1, ch) * fx;
            let bottom = at(y1, x0, ch) * (1.0 - fx) + at(y1, x1, ch) * fx;
            *o = top * (1.0 - fy) + bottom * fy;
        }
    }

    /// The value a rendered channel value takes once stored back (0-255 units).
    fn stored(&self, v: f32) -> f32 {
        match self.storage {
            Storage::U8 => v.round().clamp(0.0, 255.0),
            Storage::F32 { .. } => v.clamp(0.0, 255.0),
        }
    }

    /// Whether pixel `i` of `rendered` differs visibly from this image once stored.
    pub fn changed(&self, rendered: &[f32], i: usize) -> bool {
        let range = i * self.c..(i + 1) * self.c;
        rendered[range.clone()].iter().zip(&self.px[range]).any(|(&r, &o)| (self.stored(r) - o).abs() > VISIBLE_LEVEL)
    }

    /// How many pixels of `rendered` differ visibly.
    pub fn count_changed(&self, rendered: &[f32]) -> usize {
        (0..self.h * self.w).filter(|&i| self.changed(rendered, i)).count()
    }

    /// The output image (same pixel type as `original`, which this canvas was made from) and
    /// the mask of the visibly changed pixels; every other pixel is copied from `original`.
    pub fn finish(&self, original: &Image, rendered: &[f32]) -> StageResult<(Image, Mask)> {
        let n = self.h * self.w;
        let mask: Vec<u8> = (0..n).map(|i| u8::from(self.changed(rendered, i))).collect();
        let (h, w, c) = (self.h as u32, self.w as u32, self.c as u32);
        let image = match (original.pixels(), self.storage) {
            (Pixels::U8(d), _) => {
                let mut out = d.to_vec();
                for i in (0..n).filter(|&i| mask[i] == 1) {
                    for k in i * self.c..(i + 1) * self.c {
                        out[k] = self.stored(rendered[k]) as u8;
                    }
                }
                Image::from_u8(h, w, c, out)?
            }
            (Pixels::F32(d), Storage::F32 { scale }) => {
                let mut out = d.to_vec();
                for i in (0..n).filter(|&i| mask[i] == 1) {
                    for k in i * self.c..(i + 1) * self.c {
                        out[k] = self.stored(rendered[k]) / scale;
                    }
                }
                Image::from_f32(h, w, c, out)?
            }
            (Pixels::F32(_), Storage::U8) => {
                return Err(StageError::internal("canvas made from a u8 image finished with an f32 one"))
            }
        };
        Ok((image, Mask::new(h, w, mask)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_changes_are_reverted_and_visible_ones_kept() {
        let img = Image::from_u8(1, 3, 1, vec![100, 100, 100]).unwrap();
        let canvas = Canvas::from_image(&img).unwrap();
        let (out, mask) = canvas.finish(&img, &[107.0, 108.6, 60.0]).unwrap();
        assert_eq!(out.to_u8(), vec![100, 109, 60]);
        assert_eq!(mask.data(), &[0, 1, 1]);
    }

    #[test]
    fn unit_range_f32_images_keep_their_scale() {
        let img = Image::from_f32(1, 2, 1, vec![0.2, 0.9]).unwrap();
        let canvas = Canvas::from_image(&img).unwrap();
        assert!((canvas.px[0] - 51.0).abs() < 1e-4);
        let (out, mask) = canvas.finish(&img, &[0.0, canvas.px[1] + 2.0]).unwrap();
        assert_eq!(mask.data(), &[1, 0]);
        assert_eq!(out.to_f32(), vec![0.0, 0.9], "the unchanged pixel keeps its exact value");
        let wide = Image::from_f32(1, 2, 1, vec![0.5, 200.0]).unwrap();
        assert_eq!(Canvas::from_image(&wide).unwrap().px, vec![0.5, 200.0]);
        let bad = Image::from_f32(1, 2, 1, vec![0.5, f32::NAN]).unwrap();
        assert!(Canvas::from_image(&bad).unwrap_err().contains("pixel (y 0, x 1)"));
        let four = Image::from_u8(1, 1, 4, vec![0; 4]).unwrap();
        assert!(Canvas::from_image(&four).unwrap_err().contains("4 channels"));
    }
}
