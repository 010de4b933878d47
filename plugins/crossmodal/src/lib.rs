//! # anoflow-plugin-crossmodal
//!
//! Multimodal (RGB + 3D) stages over feature maps:
//!
//! - `concat-features`: several feature maps of one image (e.g. RGB backbone + FPFH) on the
//!   first map's grid, concatenated per location, so one memory bank (`patchcore`) scores both
//!   modalities at once (BTF/M3DM-style fusion). No per-channel standardization: optionally
//!   each map's vector is L2-normalized per location first (`normalize: l2`), so that neither
//!   modality dominates the distances by its scale alone (FPFH bins are ~0-200, CNN
//!   activations ~0-10).
//! - `crossmodal-mapping`: CFM-like scorer (see [`mapping`]) with closed-form ridge maps
//!   ([`ridge`]) 2D->3D and 3D->2D fitted on nominal patch features.

pub mod grid;
pub mod mapping;
pub mod ridge;
pub mod stages;
pub mod state;

pub use stages::concat_features::{ConcatConfig, ConcatFeatures, Normalize};
pub use stages::crossmodal_mapping::{CombineParam, CrossmodalMapping, DistanceParam, MappingConfig};

anoflow_sdk::export_plugin! { stages: [ConcatFeatures, CrossmodalMapping] }
