//! TTT4AS (arXiv 2404.03743): per test image, pseudo-label the anomaly score map, train a
//! classifier on that image's own features at the pseudo-labelled pixels, and let it decide
//! every pixel. The maths lives in plain modules (usable from benches); the stage
//! (`stages/ttt4as.rs`) is a thin adapter.
//!
//! Degenerate cases, all tested:
//! - no anomalous pseudo-label (a flat map, or a map whose top percentile is its floor): empty
//!   mask, decision -1 everywhere, pseudo-labels all 0;
//! - anomalous labels but no nominal candidate (a single class): empty mask, decision -1;
//! - NaN or infinity in the score map or a feature map: an error naming node, sample, map
//!   and pixel or cell;
//! - a feature map that does not cover the score map (height or width times stride off by more
//!   than one stride, e.g. a map too small or from another resolution): an error naming it.

pub mod classifier;
pub mod error;
pub mod labelers;
pub mod memo;
pub mod pseudo_labels;
mod stages;
pub mod standardize;
pub mod synthetic;
pub mod ttt;

pub use stages::ttt4as::{BalanceChoice, LabelerConfig, NominalRegionConfig, Ttt4as, Ttt4asConfig};

anoflow_sdk::export_plugin! { stages: [Ttt4as] }
