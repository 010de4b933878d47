//! # anoflow-plugin-report
//!
//! The visual comparison report.
//!
//! Stage:
//! - `report` (sink): index.html and a page per category: F1 by category and binarizer against
//!   the oracle F1-max, false-positive area on good images, PR curves (SVG charts), and the
//!   worst failures of each binarizer as PNG panels.
//!
//! The figures come from the plain library `anoflow-seg-metrics` (the same accumulators and
//! results as the `segmentation-metrics` sink); the charts from `anoflow-charts`.

pub mod draw;
mod stages;
pub use stages::report;
mod report_html;
mod report_panels;
mod report_state;

anoflow_sdk::export_plugin! { stages: [report::Report] }

#[cfg(test)]
mod tests;
