//! Tests on the real runtime, the real default backbone and real photos: the feature extractor's here, with
//! the helpers the stages' own tests (in their files under `stages/`) share.

use std::path::{Path, PathBuf};

use crate::FeatureExtractor;
use anoflow_sdk::{
    harness::{HarnessOutputs, StageHarness},
    prelude::*,
};

pub(crate) fn project_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

pub(crate) fn test_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data").join(name)
}

/// Whether the ONNX tests run. They need ONNX Runtime's library and the default backbone,
/// which the project's tools prepare; missing files FAIL the test (so CI cannot pass without
/// running them) unless ANOFLOW_SKIP_ONNX_TESTS=1 says to skip.
pub(crate) fn onnx_ready(test: &str) -> bool {
    if std::env::var("ANOFLOW_SKIP_ONNX_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("!!!!! SKIPPED {test}: ANOFLOW_SKIP_ONNX_TESTS=1 (no ONNX Runtime test ran) !!!!!");
        return false;
    }
    let model = project_root().join("models/mobilenet_v2.onnx");
    let runtime = anoflow_ort_locate::locate();
    if let Err(e) = &runtime {
        panic!("{test}: {e}\n(or set ANOFLOW_SKIP_ONNX_TESTS=1 to skip the ONNX tests)");
    }
    assert!(
        model.is_file(),
        "{test}: {} is missing: run `tools/fetch_onnxruntime.sh` and `python3 tools/prepare_default_model.py` \
         (needs `pip install numpy onnx`) in the project, or set ANOFLOW_SKIP_ONNX_TESTS=1 to skip the ONNX tests",
        model.display()
    );
    true
}

pub(crate) fn photo(name: &str) -> Image {
    anoflow_imaging::read_image_rgb(test_data(&format!("{name}.png"))).unwrap()
}

/// A stage with a scratch work directory of its own.
pub(crate) fn stage<T: StagePlugin>(params: serde_json::Value) -> StageResult<StageHarness> {
    StageHarness::with_scratch_work_dir::<T>(params, &project_root().join("pipelines"), "onnx-test")
}

pub(crate) fn labelled_maps(out: &HarnessOutputs) -> Vec<(String, FeatureMap)> {
    out.0
        .iter()
        .map(|p| match &p.value {
            Value::FeatureMap(f) => (p.source.to_string(), f.clone()),
            other => panic!("`{}` is not a feature map: {other:?}", p.port),
        })
        .collect()
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

#[test]
fn a_batch_gives_the_same_maps_as_single_images() {
    if !onnx_ready("a_batch_gives_the_same_maps_as_single_images") {
        return;
    }
    let settings = crate::config::ModelSettings {
        model: Model("mobilenet_v2".into()),
        input_size: None,
        mean: None,
        std: None,
        runtime: crate::params::RuntimeParams { threads: 2, provider: crate::Provider::Cpu },
    };
    let cfg = crate::config::load(
        &settings,
        &CreateContext {
            node_id: "batch".into(),
            params_json: "{}".into(),
            base_dir: project_root().to_string_lossy().as_ref().into(),
            work_dir: ".".into(),
            threads: 1,
            inputs: Default::default(),
        },
        |_| Vec::new(),
    )
    .unwrap();
    let fx =
        FeatureExtractor::new(cfg.model, cfg.preprocess, vec!["features.14.expand".into(), "logits".into()]).unwrap();
    let photos = [photo("chelsea"), photo("coffee"), photo("motorcycle_left")];
    let batch: Vec<(&Image, &str)> = photos.iter().map(|p| (p, "p")).collect();
    let together = fx.extract(&batch).unwrap();
    for (i, p) in photos.iter().enumerate() {
        let alone = fx.extract(&[(p, "p")]).unwrap().remove(0);
        for ((_, a), (_, b)) in alone.iter().zip(&together[i]) {
            let diff = a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-3, "photo {i}: batch and single runs differ by {diff}");
        }
    }
}

/// A model cut down to the requested maps gives the same bits as the whole model, and drops
/// the layers after them (the logits are gone).
#[test]
fn a_model_cut_to_its_outputs_gives_the_same_maps() {
    if !onnx_ready("a_model_cut_to_its_outputs_gives_the_same_maps") {
        return;
    }
    let path = project_root().join("models/mobilenet_v2.onnx");
    let wanted: Vec<String> = vec!["features.7.expand".into(), "features.14.expand".into()];
    let open = |keep: &[String]| {
        let spinning = anoflow_ort_session::Spinning::On;
        crate::session::OnnxModel::open(&path, "mobilenet_v2", None, 1, crate::Provider::Cpu, keep, spinning).unwrap()
    };
    let (whole, cut) = (open(&[]), open(&wanted));
    assert!(whole.output_names().contains(&"logits".to_string()));
    assert_eq!(cut.output_names(), wanted.as_slice(), "only the requested outputs are left");
    let image = photo("coffee");
    let mut batch = Vec::new();
    crate::preprocess::Preprocess {
        height: 224,
        width: 224,
        scale: 255.0,
        mean: crate::manifest::IMAGENET_MEAN,
        std: crate::manifest::IMAGENET_STD,
    }
    .append_chw(&image, &mut batch)
    .unwrap();
    let a = whole.run(1, 224, 224, batch.clone(), &wanted).unwrap();
    let b = cut.run(1, 224, 224, batch, &wanted).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.shape, y.shape);
        assert!(x.data.iter().zip(&y.data).all(|(p, q)| p.to_bits() == q.to_bits()), "maps differ");
    }
    // A name the model lacks leaves it whole, so the error lists every output.
    let unknown = open(&["features.99".to_string()]);
    let err = unknown.check_outputs(&["features.99".to_string()]).unwrap_err().to_string();
    assert!(err.contains("logits") && err.contains("features.14.expand"), "{err}");
}

pub(crate) fn error_of<T: StagePlugin>(params: serde_json::Value) -> String {
    match stage::<T>(params) {
        Ok(_) => panic!("stage was created; expected an error"),
        Err(e) => e.to_string(),
    }
}
