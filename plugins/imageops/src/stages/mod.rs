//! One file per stage, named after the stage (`-` as `_`).

pub mod resize_crop;
pub mod write_png;
