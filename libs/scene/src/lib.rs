//! The synthetic scene renderer: a deterministic, MVTec-like anomaly-detection dataset.
//!
//! It renders whole images from nothing: four textures (woven, grain, tiles, carpet) and three
//! objects (washer, pill, screw), nominal or with one defect of nine kinds (scratch, crack,
//! hole, stain, color, contamination, missing; dent and bump on geometry alone), each with
//! its exact ground-truth mask and, when asked, an organized point cloud. This is the data the
//! datasets plugin's `synthetic` source serves and its `make-synthetic` binary writes in the
//! MVTec AD or MVTec 3D-AD layout; the pipelines named `*-synthetic` are evaluated on it.
//!
//! It is not the defects plugin's `synthetic-defects` stage, which pastes one defect
//! (cut-paste, scar, noise-blend, warp, stain, missing) into an existing clean validation
//! image to calibrate binarizers, and never touches test data. That stage has a renderer of
//! its own, with other shapes than this one's, so that calibration does not tune a binarizer
//! to the generator it is evaluated with; the two share no code on purpose.
//!
//! Each sample is rendered from its own seed (derived from the dataset seed, category,
//! split, defect and index), so any sample can be loaded alone and in any order.
//!
//! A scene is an albedo map, a height map (mm) and, for objects, a foreground mask
//! (`scene`). The RGB image is the albedo under a per-image illumination
//! (gain, gradient, colour temperature), Lambert shading from the height map, and sensor
//! noise; the optional point cloud is the height map as organized x/y/z, with invalid (zero)
//! points on steep edges and at random ([`render()`]).
//!
//! A defect edits albedo and/or height inside a region. Its mask is that region plus every
//! pixel whose RGB or xyz value differs from the same sample rendered without the defect
//! (shading changes one pixel around a height edit), so the mask is exactly what changed.
//!
//! Modules: [`spec`] (categories, defect kinds, the config, the samples of each split),
//! `noise` (hashes and value noise), `scene` (each category's clean scene), `defects`
//! (regions and their edits), [`render`](mod@render) (illumination, shading, point cloud, mask).

mod defects;
mod noise;
pub mod render;
mod scene;
pub mod spec;

pub use render::{defect_region, render, render_clean, Rendered};
pub use spec::{test_specs, train_specs, Category, DefectKind, Part, SampleSpec, SynthConfig};

#[cfg(test)]
mod difficulty;
