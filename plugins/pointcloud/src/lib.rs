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
mod stages;
pub use anoflow_pointops as sampling;
pub use stages::{
    fpfh_features::{FpfhFeatures, FpfhFeaturesConfig},
    pointcloud_prep::{PointcloudPrep, PointcloudPrepConfig},
};

use anoflow_sdk::prelude::*;

use crate::cloud::Organized;

/// FNV-1a of a sample id, mixed into seeds so results do not depend on sample order.
pub(crate) fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The cloud on port `xyz`, refused when it holds no valid point.
pub(crate) fn read_cloud(sample: &Sample<'_>, node: &str) -> StageResult<Organized> {
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
