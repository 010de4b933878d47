//! The `point-mae-features` stage.

use anoflow_ort_session::{
    params::{resolve_model, RuntimeParams},
    Provider,
};
use anoflow_sdk::prelude::*;

use crate::encoder::Encoder;
use crate::spread;

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

#[cfg(test)]
mod tests {
    //! Stage tests on the real runtime with a tiny random-weight encoder that has Point-MAE's
    //! interface (tools/make_onnx_test_models.py).

    use std::path::{Path, PathBuf};

    use anoflow_sdk::{
        harness::{inputs, meta, StageHarness},
        prelude::*,
    };
    use serde_json::json;

    use crate::PointMaeFeatures;

    fn test_data(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data").join(name).display().to_string()
    }

    /// ONNX Runtime must be there (tools/fetch_onnxruntime.sh): a missing runtime FAILS the test
    /// unless ANOFLOW_SKIP_ONNX_TESTS=1 says to skip, as in the onnx plugin.
    fn onnx_ready(test: &str) -> bool {
        if std::env::var("ANOFLOW_SKIP_ONNX_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("!!!!! SKIPPED {test}: ANOFLOW_SKIP_ONNX_TESTS=1 (no ONNX Runtime test ran) !!!!!");
            return false;
        }
        if let Err(e) = anoflow_ort_locate_check() {
            panic!("{test}: {e}\n(or set ANOFLOW_SKIP_ONNX_TESTS=1 to skip the ONNX tests)");
        }
        true
    }

    fn anoflow_ort_locate_check() -> Result<(), String> {
        anoflow_ort_session::runtime::environment().map(|_| ()).map_err(|e| e.to_string())
    }

    /// A stage with a scratch work directory of its own.
    fn stage(params: serde_json::Value) -> StageResult<StageHarness> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        StageHarness::with_scratch_work_dir::<PointMaeFeatures>(params, &root.join("pipelines"), "pointmae-test")
    }

    /// A 224x224 cloud in metres: a dome (radius 70 px) with a bump, on nothing (background removed);
    /// the top 40 rows and everything outside the dome are invalid (zeros).
    fn dome_cloud() -> PointCloud {
        let mut raw = vec![0.0f32; 224 * 224 * 3];
        for y in 40..224usize {
            for x in 0..224usize {
                let (dx, dy) = (x as f32 - 112.0, y as f32 - 130.0);
                let r2 = dx * dx + dy * dy;
                if r2 > 70.0 * 70.0 {
                    continue;
                }
                let bump = if (dx - 20.0).powi(2) + (dy + 10.0).powi(2) < 100.0 { 0.004 } else { 0.0 };
                let z = 0.5 + ((70.0f32 * 70.0 - r2).sqrt() * 0.0004) + bump;
                let i = (y * 224 + x) * 3;
                raw[i..i + 3].copy_from_slice(&[dx * 0.0004, dy * 0.0004, z]);
            }
        }
        PointCloud::new(224, 224, raw).unwrap()
    }

    fn run(h: &StageHarness, id: &str, cloud: &PointCloud) -> StageResult<FeatureMap> {
        let out = h.process(&meta(id), inputs(vec![("xyz", cloud.clone().into())]))?;
        Ok(out.feature_map("features").clone())
    }

    #[test]
    fn features_on_a_stride_8_grid_with_zeros_where_no_point() {
        if !onnx_ready("features_on_a_stride_8_grid_with_zeros_where_no_point") {
            return;
        }
        let h = stage(json!({"model": test_data("tiny_point_mae.onnx"), "groups": 256, "k": 32})).unwrap();
        let cloud = dome_cloud();
        let fm = run(&h, "dome/test/good/000", &cloud).unwrap();
        assert_eq!((fm.height(), fm.width(), fm.channels(), fm.stride()), (28, 28, 64, 8.0));
        assert!(fm.data().iter().all(|v| v.is_finite()));
        for cy in 0..28 {
            for cx in 0..28 {
                let any_valid = (cy * 8..cy * 8 + 8)
                    .flat_map(|y| (cx * 8..cx * 8 + 8).map(move |x| y * 224 + x))
                    .any(|i| cloud.data()[i * 3..i * 3 + 3] != [0.0; 3]);
                let zero = fm.at(cy, cx).iter().all(|&v| v == 0.0);
                assert_eq!(zero, !any_valid, "cell ({cy}, {cx})");
            }
        }
        // The bump (around pixel x 132, y 120: cell (15, 16)) looks different from the dome's far side.
        let d: f32 = fm.at(15, 16).iter().zip(fm.at(20, 9)).map(|(a, b)| (a - b).abs()).sum();
        assert!(d > 1.0, "{d}");
    }

    #[test]
    fn results_are_deterministic_and_seeded() {
        if !onnx_ready("results_are_deterministic_and_seeded") {
            return;
        }
        let model = test_data("tiny_point_mae.onnx");
        let h = stage(json!({"model": model, "groups": 128, "k": 16, "stride": 16})).unwrap();
        let cloud = dome_cloud();
        let a = run(&h, "s/1", &cloud).unwrap();
        assert_eq!((a.height(), a.width()), (14, 14));
        assert_eq!(a.data(), run(&h, "s/1", &cloud).unwrap().data());
        let again = stage(json!({"model": model, "groups": 128, "k": 16, "stride": 16})).unwrap();
        assert_eq!(a.data(), run(&again, "s/1", &cloud).unwrap().data(), "a new stage gives the same map");
        let other_seed = stage(json!({"model": model, "groups": 128, "k": 16, "stride": 16, "seed": 5})).unwrap();
        assert_ne!(a.data(), run(&other_seed, "s/1", &cloud).unwrap().data(), "the seed moves the centres");
    }

    #[test]
    fn a_small_cloud_gets_fewer_groups() {
        if !onnx_ready("a_small_cloud_gets_fewer_groups") {
            return;
        }
        let mut raw = vec![0.0f32; 64 * 64 * 3];
        for i in 0..20 {
            raw[(i * 64 + i) * 3..(i * 64 + i) * 3 + 3].copy_from_slice(&[i as f32 * 0.01, 0.0, 1.0]);
        }
        let h = stage(json!({"model": test_data("tiny_point_mae.onnx")})).unwrap();
        let fm = run(&h, "few", &PointCloud::new(64, 64, raw).unwrap()).unwrap();
        assert_eq!((fm.height(), fm.width(), fm.channels()), (8, 8, 64));
        assert!(fm.at(0, 0).iter().any(|&v| v != 0.0) && fm.at(7, 7).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn errors_name_the_sample_the_model_and_what_was_expected() {
        if !onnx_ready("errors_name_the_sample_the_model_and_what_was_expected") {
            return;
        }
        let h = stage(json!({"model": test_data("tiny_point_mae.onnx")})).unwrap();
        let mut raw = vec![0.0f32; 32 * 32 * 3];
        raw[5] = f32::NAN;
        let err = run(&h, "cat/test/crack/007", &PointCloud::new(32, 32, raw).unwrap()).unwrap_err();
        assert!(err.message.contains("sample `cat/test/crack/007`") && err.message.contains("no valid point"), "{err}");

        let err = stage(json!({"model": test_data("wrong_shape_point_mae.onnx")})).err().unwrap();
        assert!(
            err.message.contains("wrong_shape_point_mae.onnx") && err.message.contains("features [1, 64]"),
            "{err}"
        );
        assert!(err.message.contains("[1, G, C]"), "{err}");

        let err = stage(json!({"model": test_data("missing.onnx")})).err().unwrap();
        assert!(err.message.contains("missing.onnx does not exist"), "{err}");

        let sqrt: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../onnx/test-data/sqrt.onnx");
        let err = stage(json!({"model": sqrt.display().to_string()})).err().unwrap();
        assert!(err.message.contains("has no input `neighborhood`") && err.message.contains("image"), "{err}");

        // No manifest entry `point_mae` (only a real export writes one): the error says how to make it.
        let err = stage(json!({"model": "point_mae_not_exported"})).err().unwrap();
        assert!(err.message.contains("export_point_mae.py"), "{err}");

        assert!(stage(json!({"model": test_data("tiny_point_mae.onnx"), "k": 0})).is_err());
    }

    #[test]
    fn bad_params_are_refused_by_name_before_the_model_opens() {
        let err = stage(json!({"execution_provider": "tpu"})).err().unwrap();
        assert!(err.message.contains("param `execution_provider`: `tpu` is not one of cpu, cuda"), "{err}");
        let err = stage(json!({"groups": 0})).err().unwrap();
        assert!(err.message.contains("param `groups`: 0 is out of range: expected a value >= 1"), "{err}");
        let err = stage(json!({"strides": 4})).err().unwrap();
        assert!(err.message.contains("unknown param `strides` (did you mean `stride`?)"), "{err}");
    }
}
