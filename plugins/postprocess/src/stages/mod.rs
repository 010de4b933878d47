//! One file per stage, named after the stage (`-` as `_`).

pub mod gaussian_blur;
pub mod normalize_scores;
