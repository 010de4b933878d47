//! Dataset sources for anoflow.
//!
//! - `synthetic`: a deterministic MVTec-like dataset rendered in memory by the
//!   `anoflow-scene` library (libs/scene); the `make-synthetic` binary writes the same data
//!   in the MVTec AD or MVTec 3D-AD layout (the writer holds out validation as the loaders do,
//!   so it lives here, beside them);
//! - `mvtec-ad`, `mvtec-3d`: the two MVTec layouts;
//! - `folder`: directories or globs of images with masks matched by relative stem + suffix.
//!
//! Listing is deterministic (sorted directory order, seeded validation hold-out); loading
//! reads one sample, so the host can load samples in parallel.

pub mod common;
pub mod stages;

pub use stages::folder::Folder;
pub use stages::mvtec_3d::Mvtec3d;
pub use stages::mvtec_ad::MvtecAd;
pub use stages::synthetic::{write_mvtec_3d, write_mvtec_ad, Synthetic};

anoflow_sdk::export_plugin! { stages: [Synthetic, MvtecAd, Mvtec3d, Folder] }

#[cfg(test)]
mod disk_tests;
