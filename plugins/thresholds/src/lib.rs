//! Threshold baselines: fitted stages that learn one threshold (or one per pixel) from the
//! score maps of their fit split and binarize every later map with `score > threshold`.
//!
//! - `threshold-mean-std`: global mean + k * std over every validation pixel (THR, k = 3);
//! - `threshold-pixelwise`: per-pixel mean + k * std map (all maps the same size);
//! - `threshold-percentile`: a percentile of all validation pixels, times a factor (the VAND
//!   4.0 challenge winner's rule is the 95th percentile x 1.421);
//! - `threshold-max`: the validation maximum;
//! - `threshold-oracle`: the F1-optimal global threshold chosen WITH the ground truth of the
//!   split it is fitted on (normally test). It is an upper bound for global thresholds, not a
//!   deployable method, and says ORACLE in its summary, its ports and its `note` output.
//!
//! - `mebin` (fitted, [`stages::mebin`]): MEBin's per-image stable-component threshold, its sweep
//!   floored at the smallest peak of the nominal fit maps.
//!
//! Statistics are exact: per-map two-pass mean and squared deviations in f64, merged across
//! maps with Chan's formula (order-independent up to rounding); the percentile is taken over
//! every pooled fit-split pixel (no histogram).

mod common;
mod global;
pub mod stages;
#[cfg(test)]
mod testutil;

pub use anoflow_imaging::stats::percentile;
pub use common::{f1_optimal_threshold, Moments};
pub use stages::mebin::{self, Mebin};
pub use stages::threshold_fixed::{FixedConfig, ThresholdFixed};
pub use stages::threshold_max::ThresholdMax;
pub use stages::threshold_mean_std::{MeanStdConfig, ThresholdMeanStd};
pub use stages::threshold_oracle::ThresholdOracle;
pub use stages::threshold_percentile::{PercentileConfig, ThresholdPercentile};
pub use stages::threshold_pixelwise::{PixelwiseConfig, ThresholdPixelwise};

anoflow_sdk::export_plugin! {
    stages: [ThresholdMeanStd, ThresholdPixelwise, ThresholdPercentile, ThresholdMax, ThresholdOracle, ThresholdFixed, Mebin]
}
