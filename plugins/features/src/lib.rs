//! # anoflow-plugin-features
//!
//! `patch-aggregate`: PatchCore's locally aware patch features from several backbone layers
//! (see [`aggregate`] for the exact recipe), and [`sample_bilinear`], the feature at an image
//! pixel without materialising the full-resolution map (TTT4AS trains on a few hundred pixels;
//! the upsampled map would be `C x H x W` floats, 308 MB for 1536 x 224 x 224).

pub mod aggregate;

pub use aggregate::{
    adaptive_avg_pool, aggregate, box_average, projection_matrix, sample_bilinear, AdaptivePool, AggregateConfig,
    ChannelReduction, Reduction,
};

mod stages;

pub use stages::patch_aggregate::{PatchAggregate, PatchAggregateConfig, ReductionConfig};

anoflow_sdk::export_plugin! { stages: [PatchAggregate] }

#[cfg(test)]
mod tests;
