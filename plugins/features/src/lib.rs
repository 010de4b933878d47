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

use anoflow_sdk::prelude::*;

/// Stage type `patch-aggregate`.
pub struct PatchAggregate;

/// Params of `patch-aggregate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAggregateConfig {
    /// side of the local averaging window (odd; 1 = none)
    #[serde(default = "default_patch_size")]
    #[schemars(range(min = 1))]
    pub patch_size: usize,
    /// at the border, divide by the full window (zero padding counts, as AvgPool2d) or by the cells inside
    #[serde(default = "yes")]
    pub count_include_pad: bool,
    /// per-location reduction of the concatenated channels: `{ kind: adaptive-avg, dim, layer_dim }`
    /// (PatchCore's adaptive average pooling), `{ kind: random-projection, dim, seed }` (a seeded random
    /// projection), or `{ kind: none }`
    #[serde(default)]
    pub reduction: ReductionConfig,
}

/// The `reduction` param, with the settings of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReductionConfig {
    /// PatchCore's adaptive average pooling over channels.
    AdaptiveAvg {
        /// output channels
        #[serde(default = "default_dim")]
        #[schemars(range(min = 1))]
        dim: usize,
        /// each layer is first pooled to this many channels (PatchCore's pretrain_embed_dimension; 0 = skip)
        #[serde(default = "default_dim")]
        layer_dim: usize,
    },
    /// A seeded random projection.
    RandomProjection {
        /// output channels
        #[serde(default = "default_dim")]
        #[schemars(range(min = 1))]
        dim: usize,
        /// seed of the projection matrix
        #[serde(default)]
        seed: u64,
    },
    /// The concatenation as is.
    None,
}

impl Default for ReductionConfig {
    fn default() -> Self {
        ReductionConfig::AdaptiveAvg { dim: default_dim(), layer_dim: default_dim() }
    }
}

fn default_patch_size() -> usize {
    3
}
fn default_dim() -> usize {
    1024
}
fn yes() -> bool {
    true
}

impl StagePlugin for PatchAggregate {
    type Config = PatchAggregateConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "patch-aggregate",
            "PatchCore patch features: local average per layer, layers upsampled to the finest grid, concatenated, \
             reduced per location",
        )
        .multi_input("features", ValueKind::FeatureMap, "backbone feature maps of one image (several layers)")
        .output("features", ValueKind::FeatureMap, "one map on the finest layer's grid, with its stride")
    }

    fn create(config: PatchAggregateConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let patch_size = config.patch_size;
        if patch_size.is_multiple_of(2) {
            return Err(StageError::invalid_param(format!(
                "node `{}`: param `patch_size`: must be odd (the window is centred), found {patch_size}",
                ctx.node_id
            )));
        }
        let reduction = match config.reduction {
            ReductionConfig::None => Reduction::None,
            ReductionConfig::RandomProjection { dim, seed } => Reduction::RandomProjection { dim, seed },
            ReductionConfig::AdaptiveAvg { dim, layer_dim } => Reduction::AdaptiveAvg { layer_dim, dim },
        };
        let cfg = AggregateConfig { patch_size, count_include_pad: config.count_include_pad, reduction };
        Ok(Box::new(PatchAggregateStage { cfg }))
    }
}

struct PatchAggregateStage {
    cfg: AggregateConfig,
}

impl Map for PatchAggregateStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let maps = sample.feature_maps("features")?;
        let fm = aggregate(&maps, &self.cfg)
            .map_err(|e| StageError::invalid_input(format!("sample `{}`: {e}", sample.meta.id)))?;
        Ok(Outputs::new().with("features", fm))
    }
}

anoflow_sdk::export_plugin! { stages: [PatchAggregate] }

#[cfg(test)]
mod tests;
