//! One file per stage, named after its `plugin:` name.

pub mod mebin;
pub mod threshold_fixed;
pub mod threshold_max;
pub mod threshold_mean_std;
pub mod threshold_oracle;
pub mod threshold_percentile;
pub mod threshold_pixelwise;
