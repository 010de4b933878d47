//! `pointcloud-prep`: invalid points to zeros, optional RANSAC background-plane removal.

use anoflow_sdk::prelude::*;

use crate::{
    id_hash,
    plane::{self, RansacConfig},
    read_cloud,
};

/// Stage type `pointcloud-prep`.
pub struct PointcloudPrep;

/// Params of `pointcloud-prep`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointcloudPrepConfig {
    /// Fit the dominant plane by RANSAC and drop the points near it.
    #[serde(default = "yes")]
    pub remove_plane: bool,
    /// RANSAC hypotheses (three random points each).
    #[serde(default = "default_iterations")]
    #[schemars(range(min = 1))]
    pub iterations: usize,
    /// Inlier distance to the plane, in the cloud's units; points within it are removed
    /// (BTF/M3DM use 0.005 on MVTec 3D-AD).
    #[serde(default = "default_distance")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub distance: f64,
    /// Fit the plane only on points within this many pixels of the image border (0: every
    /// point).
    #[serde(default)]
    pub border: usize,
    /// Hypotheses are scored on at most this many points (seeded subsample).
    #[serde(default = "default_max_eval")]
    #[schemars(range(min = 1))]
    pub max_eval: usize,
    /// Mixed with the sample id to seed RANSAC.
    #[serde(default)]
    pub seed: u64,
}

fn yes() -> bool {
    true
}
fn default_iterations() -> usize {
    1000
}
fn default_distance() -> f64 {
    0.005
}
fn default_max_eval() -> usize {
    4096
}

impl StagePlugin for PointcloudPrep {
    type Config = PointcloudPrepConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "pointcloud-prep",
            "Point-cloud preprocessing: NaN/inf points become invalid (zeros); background plane removal by RANSAC",
        )
        .input("xyz", ValueKind::PointCloud, "organized point cloud, zeros = no point")
        .output(
            "xyz",
            ValueKind::PointCloud,
            "the same cloud with NaN/inf and background-plane points set to zeros",
        )
    }

    fn create(config: PointcloudPrepConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let ransac = RansacConfig {
            iterations: config.iterations,
            distance: config.distance as f32,
            border: config.border,
            seed: config.seed,
            max_eval: config.max_eval,
        };
        Ok(Box::new(PrepStage { node: ctx.node_id.to_string(), remove_plane: config.remove_plane, ransac }))
    }
}

struct PrepStage {
    node: String,
    remove_plane: bool,
    ransac: RansacConfig,
}

impl Map for PrepStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let mut cloud = read_cloud(sample, &self.node)?;
        if self.remove_plane {
            let cfg = RansacConfig { seed: self.ransac.seed ^ id_hash(&sample.meta.id), ..self.ransac };
            let plane = plane::fit_plane(&cloud, &cfg).ok_or_else(|| {
                StageError::invalid_input(format!(
                    "node `{}`, sample `{}`: no plane can be fitted: fewer than 3 non-collinear valid points{}",
                    self.node,
                    sample.meta.id,
                    if cfg.border > 0 { format!(" within {} px of the border", cfg.border) } else { String::new() }
                ))
            })?;
            plane::remove_plane(&mut cloud, &plane, cfg.distance);
            if cloud.valid_count() == 0 {
                return Err(StageError::invalid_input(format!(
                    "node `{}`, sample `{}`: every point lies within {} of the fitted plane, so none is left; lower \
                     `distance` or set `remove_plane: false` (e.g. for flat textures)",
                    self.node, sample.meta.id, cfg.distance
                )));
            }
        }
        let out = PointCloud::new(cloud.height as u32, cloud.width as u32, cloud.to_raw())?;
        Ok(Outputs::new().with("xyz", out))
    }
}
