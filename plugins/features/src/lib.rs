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

impl StagePlugin for PatchAggregate {
    fn descriptor() -> StageDescriptor {
        StageDescriptor::map(
            "patch-aggregate",
            "PatchCore patch features: local average per layer, layers upsampled to the finest grid, concatenated, \
             reduced per location",
        )
        .multi_input("features", ValueKind::FeatureMap, "backbone feature maps of one image (several layers)")
        .output("features", ValueKind::FeatureMap, "one map on the finest layer's grid, with its stride")
        .param(ParamSpec::int("patch_size", 3, "side of the local averaging window (odd; 1 = none)").min(1.0))
        .param(ParamSpec::bool(
            "count_include_pad",
            true,
            "at the border, divide by the full window (zero padding counts, as AvgPool2d) or by the cells inside",
        ))
        .param(ParamSpec::choice(
            "reduction",
            &["adaptive-avg", "random-projection", "none"],
            "per-location reduction of the concatenated channels: PatchCore's adaptive average pooling, a seeded \
             random projection, or none",
        ))
        .param(ParamSpec::int("dim", 1024, "output channels (adaptive-avg, random-projection)").min(1.0))
        .param(ParamSpec::int(
            "layer_dim",
            1024,
            "adaptive-avg: each layer is first pooled to this many channels (PatchCore's pretrain_embed_dimension; \
             0 = skip)",
        ).min(0.0))
        .param(ParamSpec::int("seed", 0, "random-projection: seed of the projection matrix").min(0.0))
    }

    fn create(params: &Params, _ctx: &CreateContext) -> StageResult<StageImpl> {
        let patch_size = params.positive("patch_size")?;
        if patch_size % 2 == 0 {
            return Err(StageError::invalid_param(format!(
                "node `{}`: param `patch_size`: must be odd (the window is centred), found {patch_size}",
                params.node()
            )));
        }
        let reduction = match params.string("reduction")?.as_str() {
            "none" => Reduction::None,
            "random-projection" => {
                Reduction::RandomProjection { dim: params.positive("dim")?, seed: params.get("seed")? }
            }
            _ => Reduction::AdaptiveAvg { layer_dim: params.usize("layer_dim")?, dim: params.positive("dim")? },
        };
        let cfg = AggregateConfig { patch_size, count_include_pad: params.bool("count_include_pad")?, reduction };
        Ok(StageImpl::Map(Box::new(PatchAggregateStage { cfg })))
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
