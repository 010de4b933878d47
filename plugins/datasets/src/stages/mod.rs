//! One file per stage, named after the stage's `plugin:` name.

pub mod folder;
pub mod mvtec_3d;
pub mod mvtec_ad;
pub mod synthetic;
