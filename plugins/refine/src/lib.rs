//! Mask post-processing for any binarizer (THR, TTT4AS, ...):
//!
//! - `mask-refine` (map): removes 8-connected components smaller than `min_area`, fills holes,
//!   and optionally smooths the mask edge guided by the image (a joint-bilateral vote);
//! - `gate-mask` (fitted, on nominal validation data): an empty mask when the image score lies
//!   within the nominal range learned on validation, the mask unchanged otherwise. The
//!   paper's protocol scores anomalous test images only; users also see good ones;
//! - `select-mask` (map, [`stages::select_mask`]): one of several masks, picked by the edge it
//!   arrives on;
//! - `grow-mask` (map, [`stages::grow_mask`]): seeded growth of a precise mask within a wider
//!   one.
//!
//! Each stage lives in `src/stages/<name>.rs`; `morphology` holds the shared mask algorithms.

pub mod morphology;
pub mod stages;
#[cfg(test)]
mod testdata;

pub use stages::gate_mask::{GateMask, GateMaskConfig, GateRule};
pub use stages::grow_mask::GrowMask;
pub use stages::mask_refine::{MaskRefine, MaskRefineConfig, Smooth};
pub use stages::select_mask::SelectMask;

anoflow_sdk::export_plugin! { stages: [MaskRefine, GateMask, SelectMask, GrowMask] }
