//! `score-maps`: anomaly maps computed by another tool, one file per test sample, so that
//! binarizers such as TTT4AS run downstream of methods anoflow does not implement.
//!
//! Matching rule: the map of a sample is `<root>/<key>.<extension>`, where `<key>` is
//!
//! - `key: { kind: id }` (default): the sample id, e.g. `bottle/test/broken_large/000`
//!   -> `<root>/bottle/test/broken_large/000.npy`;
//! - `key: { kind: path, path_root: DIR }`: the sample's source file path relative to
//!   `DIR`, without its extension, e.g. `DIR/bottle/test/crack/001.png` ->
//!   `<root>/bottle/test/crack/001.npy`.
//!
//! The format follows the extension: `npy` (float32/float64, shape (h, w), (1, h, w) or
//! (h, w, 1)), `tif`/`tiff` (one 32- or 64-bit float channel), `png` (8/16-bit greyscale,
//! value = stored integer x `scale`).

pub mod formats;
mod stages;

pub use stages::score_maps::{Extension, KeyConfig, ScoreMaps, ScoreMapsConfig};

anoflow_sdk::export_plugin! { stages: [ScoreMaps] }
