//! # anoflow-plugin-metrics
//!
//! Exact, mergeable anomaly-segmentation metrics.
//!
//! Stage:
//! - `segmentation-metrics` (sink): per mask source, pixel precision / recall / F1 / IoU pooled
//!   and per image, on anomalous and on all test images, and false-positive area on good
//!   images (all `deployable`); per score source, pixel AUROC, AUPRO, image AUROC and F1-max
//!   (all `oracle`). Per category and the mean over categories. Writes results.json,
//!   results.csv, results.md, samples.csv (each test image's scores and mask counts) and
//!   accumulators.bin (for `anoflow merge`).
//!
//! The maths lives in the plain library `anoflow-seg-metrics` (ranking, confusion counts,
//! accumulators, results files), shared with the `report` sink (`anoflow-plugin-report`).

mod stages;
pub use stages::segmentation_metrics::{SegmentationMetrics, SegmentationMetricsConfig};

anoflow_sdk::export_plugin! { stages: [SegmentationMetrics] }

#[cfg(test)]
mod missing_tests;
#[cfg(test)]
mod tests;
