//! One file per stage, named after its `plugin:` name.

pub mod gate_mask;
pub mod grow_mask;
pub mod mask_refine;
pub mod select_mask;
