//! One file per stage, named after its `plugin:` name.

pub mod concat_features;
pub mod crossmodal_mapping;
