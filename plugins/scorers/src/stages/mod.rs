//! One file per stage, named after its `plugin:` name.

pub mod padim;
pub mod patchcore;
pub mod pca_residual;
