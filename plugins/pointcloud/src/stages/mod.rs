//! One file per stage, named as in YAML.

pub mod fpfh_features;
pub mod pointcloud_prep;
