//! `fpfh-features`: FPFH per point, pooled to a `stride`-pixel grid.

use anoflow_sdk::prelude::*;

use crate::{
    fpfh::{self, FpfhConfig, DIM},
    read_cloud,
};

/// Stage type `fpfh-features`.
pub struct FpfhFeatures;

/// Params of `fpfh-features`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FpfhFeaturesConfig {
    /// Half side (px) of the window whose points give each normal (PCA).
    #[serde(default = "default_normal_radius")]
    #[schemars(range(min = 1))]
    pub normal_radius: usize,
    /// Half side (px) of the SPFH/FPFH neighbourhood window.
    #[serde(default = "default_feature_radius")]
    #[schemars(range(min = 1))]
    pub feature_radius: usize,
    /// Pixels per output cell (8 aligns with a stride-8 RGB backbone map).
    #[serde(default = "default_stride")]
    #[schemars(range(min = 1))]
    pub stride: usize,
}

fn default_normal_radius() -> usize {
    2
}
fn default_feature_radius() -> usize {
    3
}
fn default_stride() -> usize {
    8
}

impl StagePlugin for FpfhFeatures {
    type Config = FpfhFeaturesConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "fpfh-features",
            "FPFH (33-d) of an organized point cloud, averaged over stride x stride cells (BTF's 3D features)",
        )
        .input("xyz", ValueKind::PointCloud, "organized point cloud, zeros (or NaN) = no point")
        .output(
            "features",
            ValueKind::FeatureMap,
            "ceil(h/stride) x ceil(w/stride) x 33, mean FPFH of the cell's points; cells without a point: zeros",
        )
    }

    fn create(config: FpfhFeaturesConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let cfg = FpfhConfig {
            normal_radius: config.normal_radius,
            feature_radius: config.feature_radius,
            stride: config.stride,
        };
        Ok(Box::new(FpfhStage { node: ctx.node_id.to_string(), cfg }))
    }
}

struct FpfhStage {
    node: String,
    cfg: FpfhConfig,
}

impl Map for FpfhStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let cloud = read_cloud(sample, &self.node)?;
        let (data, fh, fw, _) = fpfh::fpfh_feature_map(&cloud, &self.cfg);
        let fm = FeatureMap::new(DIM as u32, fh as u32, fw as u32, self.cfg.stride as f32, data)?;
        Ok(Outputs::new().with("features", fm))
    }
}
