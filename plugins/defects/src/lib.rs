//! Synthetic defects for calibrating binarizers on nominal data only.
//!
//! `synthetic-defects` (fitted, on clean validation images) keeps the images it observed as
//! a donor pool, then pastes one synthetic defect into each sample and returns the image
//! with the exact mask of the pixels it changed visibly. Families: cut-paste, scar,
//! noise-blend, warp, stain, missing (see [`families`]). The renderer is this crate's own,
//! with other shapes than the synthetic dataset's, so that calibrating on these defects does
//! not tune a binarizer to the generator it is evaluated with.

pub mod canvas;
pub mod families;
pub mod pool;
pub mod shapes;
pub mod stages;

pub use stages::synthetic_defects::SyntheticDefects;

anoflow_sdk::export_plugin! { stages: [SyntheticDefects] }
