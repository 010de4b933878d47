//! # anoflow-imaging
//!
//! Pure helpers shared by anoflow plugins: reading and writing images, masks and organized
//! point clouds ([`io`]), resampling on f32 buffers ([`geometry`]; per-pixel bilinear taps in [`resample`]), and which files are images and
//! which paths a pattern names ([`paths`], for the `folder` source and `anoflow predict`). No stage
//! lives here. Also atomic file writes ([`atomic`], used by the host too) and the mask and
//! score helpers several plugins need: connected components ([`mask`]) and percentiles ([`stats`]).
//!
//! Every error names the file (or the buffer) it is about and what was expected.

pub mod atomic;
pub mod budget;
pub mod geometry;
pub mod io;
pub mod mask;
pub mod paths;
pub mod resample;
pub mod scoremap;
pub mod stats;

pub use geometry::{
    center_crop, center_crop_offsets, gaussian_blur, resize, resize_bilinear, resize_bilinear_antialias,
    resize_nearest, resize_points, resize_region, resize_shorter_side_then_crop, shorter_side_size, upsample_bilinear,
    Component, Interp, PointInterp, Region,
};
pub use io::{
    decode_image, encode_png, encode_tiff_f32_xyz, read_image, read_image_rgb, read_mask, read_tiff_f32_xyz, to_rgb,
    write_atomic, write_png_u8, write_tiff_f32_xyz,
};

use std::path::PathBuf;

/// What can go wrong reading, writing or resampling.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid {format} file ({reason})", path.display())]
    Decode { path: PathBuf, format: &'static str, reason: String },
    #[error("{}: unsupported image format (expected PNG or TIFF; the file starts with {magic})", path.display())]
    UnknownFormat { path: PathBuf, magic: String },
    #[error("{}: unsupported {what}; expected {expected}", path.display())]
    Unsupported { path: PathBuf, what: String, expected: String },
    #[error("{}: mask is {found_h}x{found_w} (h x w), expected {expected_h}x{expected_w} (the size of its image)", path.display())]
    MaskSize { path: PathBuf, found_h: usize, found_w: usize, expected_h: usize, expected_w: usize },
    #[error("{}: mask is not binary: found values {found:?}; expected only {{0, 255}} or {{0, 1}}", path.display())]
    MaskNotBinary { path: PathBuf, found: Vec<u8> },
    #[error("{}: cannot encode {format}: {reason}", path.display())]
    Encode { path: PathBuf, format: &'static str, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "{}: a {width}x{height} image needs {needed} bytes to decode, more than the whole decode budget of {limit} \
         bytes; raise ANOFLOW_DECODE_BUDGET (e.g. `8G`) if the machine has the memory", path.display()
    )]
    OverBudget { path: PathBuf, width: u32, height: u32, needed: u64, limit: u64 },
}

pub type Result<T> = std::result::Result<T, ImagingError>;

impl From<ImagingError> for anoflow_sdk::prelude::StageError {
    fn from(e: ImagingError) -> Self {
        use anoflow_sdk::prelude::{ErrorKind, StageError};
        let kind = match e {
            ImagingError::Io { .. } | ImagingError::Encode { .. } => ErrorKind::Io,
            _ => ErrorKind::InvalidInput,
        };
        StageError::new(kind, e.to_string())
    }
}

pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ImagingError {
    ImagingError::Invalid { what: what.into(), reason: reason.into() }
}
