//! Image -> normalized NCHW tensor, as the model was trained (ImageNet mean/std by default).

use anoflow_imaging::resize_bilinear_antialias;
use anoflow_sdk::prelude::Image;

/// How images are turned into the model's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub height: usize,
    pub width: usize,
    /// Pixels are divided by this first (255: u8 range to [0, 1]).
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// Appends the image as a `3 x height x width` normalized tensor to `out`. Grey images are
    /// replicated to RGB; an image of another size is resized (bilinear, antialiased when
    /// shrinking). f32 images are taken to be in the same `[0, 255]` range as u8 ones.
    pub fn append_chw(&self, image: &Image, out: &mut Vec<f32>) -> Result<(), String> {
        let (h, w, c) = (image.height(), image.width(), image.channels());
        if c != 1 && c != 3 {
            return Err(format!("image has {c} channels; expected 1 (grey) or 3 (RGB)"));
        }
        let pixels = image.to_f32();
        let pixels = if (h, w) == (self.height, self.width) {
            pixels
        } else {
            resize_bilinear_antialias(&pixels, h, w, c, self.height, self.width).map_err(|e| e.to_string())?
        };
        let plane = self.height * self.width;
        out.reserve(3 * plane);
        for ch in 0..3 {
            let src = if c == 1 { 0 } else { ch };
            let (m, s) = (self.mean[ch], self.std[ch]);
            let k = 1.0 / (self.scale * s);
            let b = m / s;
            out.extend((0..plane).map(|i| pixels[i * c + src] * k - b));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_into_planes_and_replicates_grey() {
        let pre = Preprocess { height: 2, width: 2, scale: 255.0, mean: [0.5, 0.0, 0.25], std: [0.5, 1.0, 0.25] };
        let rgb = Image::from_u8(2, 2, 3, [255, 0, 51].repeat(4)).unwrap();
        let mut out = Vec::new();
        pre.append_chw(&rgb, &mut out).unwrap();
        let expect = [[1.0f32; 4], [0.0; 4], [-0.2; 4]].concat();
        assert!(out.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-5), "{out:?}");

        let grey = Image::from_u8(4, 4, 1, vec![255; 16]).unwrap();
        let mut out = Vec::new();
        pre.append_chw(&grey, &mut out).unwrap();
        assert_eq!(out.len(), 12, "resized to 2x2, three planes");
        assert!((out[0] - 1.0).abs() < 1e-5 && (out[4] - 1.0).abs() < 1e-5 && (out[8] - 3.0).abs() < 1e-5);

        let rgba = Image::from_u8(2, 2, 4, vec![0; 16]).unwrap();
        assert!(pre.append_chw(&rgba, &mut Vec::new()).unwrap_err().contains("4 channels"));
    }
}
