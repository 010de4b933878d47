//! # anoflow-plugin-pointcloud
//!
//! Organized point clouds (`PointCloud`, `h x w x 3`, zeros = no point) for multimodal RGB+3D
//! pipelines:
//!
//! - `pointcloud-prep`: NaN/infinite coordinates become invalid points (zeros); optionally the
//!   background plane is found by RANSAC and every point within `distance` of it is made
//!   invalid (BTF/M3DM preprocessing). A cloud with no valid point, before or after the plane
//!   removal, is an error naming the sample.
//! - `fpfh-features`: FPFH per point, pooled to a `stride`-pixel grid aligned with an RGB
//!   backbone's feature map (see [`fpfh`]).
//!
//! The maths lives in plain modules ([`cloud`], [`plane`], [`fpfh`]) usable from benches and
//! tests; [`sampling`] (farthest point sampling and kNN grouping for a Point-MAE tokenizer) is
//! the `anoflow-pointops` library, re-exported.

pub mod cloud;
pub mod eigen3;
pub mod fpfh;
pub mod plane;
pub use anoflow_pointops as sampling;

use anoflow_sdk::prelude::*;

use crate::{
    cloud::Organized,
    fpfh::{FpfhConfig, DIM},
    plane::RansacConfig,
};

/// FNV-1a of a sample id, mixed into seeds so results do not depend on sample order.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The cloud on port `xyz`, refused when it holds no valid point.
fn read_cloud(sample: &Sample<'_>, node: &str) -> StageResult<Organized> {
    let cloud = Organized::from_cloud(sample.point_cloud("xyz")?);
    if cloud.valid_count() == 0 {
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: the point cloud ({}x{}) holds no valid point (every point is zero or \
             non-finite)",
            sample.meta.id, cloud.height, cloud.width
        )));
    }
    Ok(cloud)
}

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

anoflow_sdk::export_plugin! { stages: [PointcloudPrep, FpfhFeatures] }

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    fn cloud_value(c: &Organized) -> Value {
        PointCloud::new(c.height as u32, c.width as u32, c.to_raw()).unwrap().into()
    }

    #[test]
    fn prep_removes_the_table_and_nan_points() {
        let mut c = plane::tests::table_with_box();
        let mut raw = c.to_raw();
        raw[(100 * 224 + 100) * 3] = f32::NAN; // inside the box
        c = Organized::from_raw(224, 224, &raw);
        let h = StageHarness::new::<PointcloudPrep>(json!({"distance": 0.2, "iterations": 300})).unwrap();
        let out = h.process(&meta("s"), inputs(vec![("xyz", cloud_value(&c))])).unwrap();
        let Some(Value::PointCloud(pc)) = out.get("xyz") else { panic!("no xyz") };
        let o = Organized::from_cloud(pc);
        assert!(pc.data().iter().all(|v| v.is_finite()), "NaN points are zeroed");
        assert!(!o.valid[100 * 224 + 100]);
        assert!(o.valid[100 * 224 + 101]);
        assert!(!o.valid[5 * 224 + 5], "table point removed");
        let box_points = (70..160).flat_map(|y| (80..150).map(move |x| y * 224 + x)).filter(|&i| o.valid[i]).count();
        assert!(box_points > 6000 && o.valid_count() < box_points + 300, "{box_points} / {}", o.valid_count());
    }

    #[test]
    fn all_invalid_clouds_are_errors_naming_the_sample() {
        let mut raw = vec![0.0f32; 224 * 224 * 3];
        raw[3] = f32::NAN;
        let v: Value = PointCloud::new(224, 224, raw).unwrap().into();
        for err in [
            StageHarness::new::<PointcloudPrep>(json!({}))
                .unwrap()
                .process(&meta("cat/test/x/007"), inputs(vec![("xyz", v.clone())])),
            StageHarness::new::<FpfhFeatures>(json!({}))
                .unwrap()
                .process(&meta("cat/test/x/007"), inputs(vec![("xyz", v.clone())])),
        ] {
            let err = err.unwrap_err();
            assert!(err.message.contains("sample `cat/test/x/007`") && err.message.contains("no valid point"), "{err}");
        }
        // A flat cloud loses every point to the plane: an error with a hint, not an empty cloud.
        let flat: Vec<f32> = (0..64 * 64).flat_map(|i| [(i % 64) as f32, (i / 64) as f32, 100.0]).collect();
        let v: Value = PointCloud::new(64, 64, flat).unwrap().into();
        let err = StageHarness::new::<PointcloudPrep>(json!({"distance": 0.01}))
            .unwrap()
            .process(&meta("flat"), inputs(vec![("xyz", v.clone())]))
            .unwrap_err();
        assert!(err.message.contains("remove_plane: false"), "{err}");
        let ok = StageHarness::new::<PointcloudPrep>(json!({"remove_plane": false}))
            .unwrap()
            .process(&meta("flat"), inputs(vec![("xyz", v)]));
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_params_are_refused_by_name() {
        let err = StageHarness::new::<PointcloudPrep>(json!({"distance": 0})).err().unwrap();
        assert!(err.message.contains("param `distance`: 0 is out of range: expected a value > 0"), "{err}");
        let err = StageHarness::new::<PointcloudPrep>(json!({"iterations": 0})).err().unwrap();
        assert!(err.message.contains("param `iterations`: 0 is out of range"), "{err}");
        let err = StageHarness::new::<FpfhFeatures>(json!({"strid": 4})).err().unwrap();
        assert!(err.message.contains("unknown param `strid` (did you mean `stride`?)"), "{err}");
    }

    #[test]
    fn fpfh_map_is_aligned_with_a_stride_8_backbone() {
        let c = plane::tests::table_with_box();
        let h = StageHarness::new::<FpfhFeatures>(json!({"stride": 8})).unwrap();
        let out = h.process(&meta("s"), inputs(vec![("xyz", cloud_value(&c))])).unwrap();
        let fm = out.feature_map("features");
        assert_eq!((fm.height(), fm.width(), fm.channels(), fm.stride()), (28, 28, 33, 8.0));
        assert!(fm.data().iter().all(|v| v.is_finite()));
        // The box edge (x = 80 is cell column 10) looks different from the flat table.
        let d: f32 = fm.at(14, 10).iter().zip(fm.at(14, 3)).map(|(a, b)| (a - b).abs()).sum();
        assert!(d > 20.0, "{d}");
        assert!(StageHarness::new::<FpfhFeatures>(json!({"stride": 0})).is_err());
    }
}
