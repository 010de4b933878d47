//! Bringing feature maps of one image onto a common grid.

use anoflow_imaging::resize_bilinear;
use anoflow_sdk::prelude::*;

/// Image pixels a feature map covers, `(height * stride, width * stride)`.
pub fn extent(fm: &FeatureMap) -> (f32, f32) {
    (fm.height() as f32 * fm.stride(), fm.width() as f32 * fm.stride())
}

/// Refuses two maps that do not cover the same image: their extents may differ by up to the
/// larger stride (one grid rounds the image size up, the other down), no more.
pub fn check_same_image(what: impl Fn() -> String, a: &FeatureMap, b: &FeatureMap) -> StageResult<()> {
    let (ea, eb) = (extent(a), extent(b));
    let tol = a.stride().max(b.stride());
    if (ea.0 - eb.0).abs() > tol || (ea.1 - eb.1).abs() > tol {
        return Err(StageError::invalid_input(format!(
            "{}: the feature maps come from images of different sizes: {}x{} cells at stride {} cover {}x{} px, \
             {}x{} cells at stride {} cover {}x{} px (is the point cloud another size than the RGB image?)",
            what(),
            a.height(),
            a.width(),
            a.stride(),
            ea.0,
            ea.1,
            b.height(),
            b.width(),
            b.stride(),
            eb.0,
            eb.1
        )));
    }
    Ok(())
}

/// The map's channels-last data on an `h x w` grid (bilinear, `align_corners=False`; the same
/// buffer when the grid already matches).
pub fn on_grid(fm: &FeatureMap, h: usize, w: usize) -> StageResult<std::borrow::Cow<'_, [f32]>> {
    if (fm.height(), fm.width()) == (h, w) {
        return Ok(std::borrow::Cow::Borrowed(fm.data()));
    }
    Ok(std::borrow::Cow::Owned(resize_bilinear(fm.data(), fm.height(), fm.width(), fm.channels(), h, w)?))
}

/// The first non-finite value of a map, as an error naming node, sample, port and cell.
pub fn check_finite(node: &str, sample: &Sample<'_>, port: &str, fm: &FeatureMap) -> StageResult<()> {
    if let Some(i) = fm.data().iter().position(|v| !v.is_finite()) {
        let c = fm.channels();
        let cell = i / c;
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: input {port} holds {} at cell (y {}, x {}), channel {}",
            sample.meta.id,
            fm.data()[i],
            cell / fm.width(),
            cell % fm.width(),
            i % c
        )));
    }
    Ok(())
}
