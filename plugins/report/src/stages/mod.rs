//! One file per stage, named as in YAML.

pub mod report;
