//! Turning per-cell scores on a feature grid into a score map at image resolution, the last
//! step every patch-based scorer shares.

use anoflow_sdk::prelude::*;

use crate::geometry::{gaussian_blur, upsample_bilinear};

/// Upsamples `scores` (one per cell of `fm`'s grid) bilinearly to the image size, then blurs
/// it with `sigma` (0: no blur). The image size is that of `like` when given (any spatial
/// value of the sample), else the grid size times the stride.
pub fn cells_to_image_map(
    scores: &[f32],
    fm: &FeatureMap,
    like: Option<&Value>,
    sigma: f32,
    sample_id: &str,
) -> StageResult<ScoreMap> {
    let (fh, fw) = (fm.height(), fm.width());
    let (h, w) = match like {
        Some(v) => v.spatial_size().ok_or_else(|| {
            StageError::invalid_input(format!(
                "sample `{sample_id}`: input `like` is a {}, which has no height and width",
                v.kind()
            ))
        })?,
        None => ((fh as f32 * fm.stride()).round() as usize, (fw as f32 * fm.stride()).round() as usize),
    };
    let (h, w) = (h.max(1), w.max(1));
    let up = if (h, w) == (fh, fw) { scores.to_vec() } else { upsample_bilinear(scores, fh, fw, h, w)? };
    ScoreMap::new(h as u32, w as u32, gaussian_blur(&up, h, w, sigma)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_comes_from_like_or_stride() {
        let fm = FeatureMap::new(1, 2, 2, 8.0, vec![0.0; 4]).unwrap();
        let m = cells_to_image_map(&[1.0, 1.0, 1.0, 1.0], &fm, None, 0.0, "s").unwrap();
        assert_eq!((m.height(), m.width()), (16, 16));
        assert!(m.data().iter().all(|&v| (v - 1.0).abs() < 1e-6));
        let like = Value::from(Mask::zeros(10, 12).unwrap());
        let m = cells_to_image_map(&[0.0, 1.0, 0.0, 1.0], &fm, Some(&like), 4.0, "s").unwrap();
        assert_eq!((m.height(), m.width()), (10, 12));
        let err = cells_to_image_map(&[0.0; 4], &fm, Some(&Value::Scalar(1.0)), 0.0, "s9").unwrap_err();
        assert!(err.message.contains("sample `s9`: input `like` is a scalar"), "{err}");
    }
}
