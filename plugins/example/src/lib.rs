//! An example plugin library to copy when writing your own: one map stage that turns an
//! image into a score map of its Sobel gradient magnitude (a per-pixel statistic that
//! highlights edges, scratches and cracks).
//!
//! Each stage lives in `src/stages/<name>.rs`, named after the stage (`-` as `_`).

mod stages;

pub use stages::gradient_magnitude::{GradientMagnitude, GradientMagnitudeConfig};

anoflow_sdk::export_plugin! { stages: [GradientMagnitude] }
