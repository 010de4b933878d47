//! # anoflow-plugin-pointmae
//!
//! `point-mae-features`: Point-MAE features of an organized point cloud (`PointCloud`,
//! `h x w x 3`, zeros or non-finite = no point) on a `stride`-pixel grid aligned with an RGB
//! backbone's feature map, as M3DM uses them:
//!
//! 1. the valid points; farthest point sampling of `groups` centres (fewer when the cloud has
//!    fewer points), starting from a point picked by `seed` and the sample id (deterministic);
//! 2. the `k` nearest points of each centre, relative to it (Point-MAE's tokenizer,
//!    `anoflow-pointops`);
//! 3. one ONNX Runtime run of the encoder (`tools/export_point_mae.py`: inputs `neighborhood`
//!    `[1, G, k, 3]`, `center` `[1, G, 3]`, output `features` `[1, G, C]`);
//! 4. every valid point takes the inverse-distance-weighted mean of its 3 nearest centres'
//!    features (M3DM's interpolation), and the points of each `stride x stride` cell are
//!    averaged. A cell without a valid point is zeros.

pub mod encoder;
pub mod spread;

use anoflow_ort_session::{
    params::{resolve_model, RuntimeParams},
    Provider,
};
use anoflow_sdk::prelude::*;

use crate::encoder::Encoder;

/// FNV-1a of a sample id, mixed into the seed so results do not depend on sample order.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Stage type `point-mae-features`.
pub struct PointMaeFeatures;

/// Params of `point-mae-features`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointMaeConfig {
    /// The Point-MAE encoder: a name in models/manifest.yaml (searched from the pipeline's
    /// directory upward, then from the working directory upward; tools/export_point_mae.py
    /// writes `point_mae`) or a path to an .onnx file.
    #[serde(default = "default_model")]
    pub model: Model,
    /// Number of groups G (farthest point sampling centres); fewer when the cloud has fewer
    /// valid points.
    #[serde(default = "default_groups")]
    #[schemars(range(min = 1))]
    pub groups: usize,
    /// Points per group (nearest neighbours of each centre, the centre included).
    #[serde(default = "default_k")]
    #[schemars(range(min = 1))]
    pub k: usize,
    /// Pixels per output cell (8 aligns with a stride-8 RGB backbone map).
    #[serde(default = "default_stride")]
    #[schemars(range(min = 1))]
    pub stride: usize,
    /// Mixed with the sample id to pick the first FPS centre.
    #[serde(default)]
    pub seed: u64,
    /// ONNX Runtime intra-op threads per inference (0: its default, one per physical core).
    #[serde(default)]
    pub threads: usize,
    /// Where ONNX Runtime runs the model; cuda needs the library of the onnxruntime-gpu wheel.
    #[serde(default)]
    pub execution_provider: Provider,
}

fn default_model() -> Model {
    Model("point_mae".into())
}
fn default_groups() -> usize {
    1024
}
fn default_k() -> usize {
    32
}
fn default_stride() -> usize {
    8
}

impl StagePlugin for PointMaeFeatures {
    type Config = PointMaeConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "point-mae-features",
            "Point-MAE features of an organized point cloud (FPS + kNN groups, one ONNX encoder run), spread back to \
             the valid pixels and averaged over stride x stride cells (M3DM's 3D features)",
        )
        .input("xyz", ValueKind::PointCloud, "organized point cloud, zeros (or NaN) = no point")
        .output(
            "features",
            ValueKind::FeatureMap,
            "ceil(h/stride) x ceil(w/stride) x C (the encoder's width): mean feature of the cell's valid points, each \
             interpolated from its 3 nearest group centres; cells without a valid point: zeros",
        )
    }

    fn create(config: PointMaeConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let node = ctx.node_id.to_string();
        let PointMaeConfig { groups, k, stride, seed, .. } = config;
        let resolved = resolve_model(&config.model, ctx)?;
        let runtime = RuntimeParams { threads: config.threads, provider: config.execution_provider };
        let encoder = Encoder::open(&resolved.path, &resolved.label(), runtime.threads, runtime.provider)
            .map_err(|e| StageError::from(e).context(&node))?;
        for (name, value, fixed) in [("groups", groups, encoder.fixed_groups), ("k", k, encoder.fixed_k)] {
            if let Some(f) = fixed.filter(|&f| f != value) {
                return Err(StageError::invalid_param(format!(
                    "node `{node}`: param `{name}` is {value} but model {} takes only {f}",
                    encoder.label()
                )));
            }
        }
        Ok(Box::new(PointMaeStage { node, groups, k, stride, seed, encoder }))
    }
}

struct PointMaeStage {
    node: String,
    groups: usize,
    k: usize,
    stride: usize,
    seed: u64,
    encoder: Encoder,
}

impl Map for PointMaeStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let cloud = sample.point_cloud("xyz")?;
        let (h, w) = (cloud.height(), cloud.width());
        let (points, pixels) = spread::valid_points(cloud.data());
        if points.is_empty() {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: the point cloud ({h}x{w}) holds no valid point (every point is zero or \
                 non-finite)",
                self.node, sample.meta.id
            )));
        }
        let tokens = spread::tokenize(&points, self.groups, self.k, self.seed ^ id_hash(&sample.meta.id));
        let centres_flat: Vec<f32> = tokens.centres.iter().flatten().copied().collect();
        let (features, c) =
            self.encoder.run(tokens.groups, tokens.k, tokens.patches, centres_flat).map_err(|reason| {
                StageError::invalid_input(format!(
                    "node `{}`, sample `{}`, model {}: {reason}",
                    self.node,
                    sample.meta.id,
                    self.encoder.label()
                ))
            })?;
        let (data, fh, fw) =
            spread::spread_to_grid(&points, &pixels, &tokens.centres, &features, c, (h, w), self.stride);
        let fm = FeatureMap::new(c as u32, fh as u32, fw as u32, self.stride as f32, data)?;
        Ok(Outputs::new().with("features", fm))
    }
}

anoflow_sdk::export_plugin! { stages: [PointMaeFeatures] }

#[cfg(test)]
mod tests;
