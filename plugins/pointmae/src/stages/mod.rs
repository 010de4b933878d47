//! One file per stage, named after the stage's `plugin:` name.

pub mod point_mae_features;
