//! Image operations for anoflow pipelines.
//!
//! - `resize-crop` (map): PatchCore's preprocessing, shorter side to `resize` then a centre
//!   crop of `crop x crop`, applied consistently to the image (bilinear), the mask (nearest)
//!   and the point cloud (bilinear over valid points only);
//! - `write-png` (sink): writes every connected image, mask and score map of each test sample
//!   as PNG, atomically.

mod stages;

pub use stages::resize_crop::{Interpolation, ResizeCrop, ResizeCropConfig, ResizeCropStage, XyzInterpolation};
pub use stages::write_png::{score_to_u8, ScoreRange, WritePng, WritePngConfig, WritePngStage};

anoflow_sdk::export_plugin! { stages: [ResizeCrop, WritePng] }
