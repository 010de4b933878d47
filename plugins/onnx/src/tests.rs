//! Tests on the real runtime, the real default backbone and real photos.

use std::path::{Path, PathBuf};

use anoflow_sdk::{
    harness::{inputs, meta, HarnessOutputs, StageHarness},
    prelude::*,
};
use serde_json::json;

use crate::{FeatureExtractor, OnnxFeatures, OnnxScorer};

fn project_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn test_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data").join(name)
}

/// Whether the ONNX tests run. They need ONNX Runtime's library and the default backbone,
/// which the project's tools prepare; missing files FAIL the test (so CI cannot pass without
/// running them) unless ANOFLOW_SKIP_ONNX_TESTS=1 says to skip.
fn onnx_ready(test: &str) -> bool {
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

fn photo(name: &str) -> Image {
    anoflow_imaging::read_image_rgb(test_data(&format!("{name}.png"))).unwrap()
}

/// A stage with a scratch work directory of its own.
fn stage<T: StagePlugin>(params: serde_json::Value) -> StageResult<StageHarness> {
    StageHarness::with_scratch_work_dir::<T>(params, &project_root().join("pipelines"), "onnx-test")
}

fn labelled_maps(out: &HarnessOutputs) -> Vec<(String, FeatureMap)> {
    out.0
        .iter()
        .map(|p| match &p.value {
            Value::FeatureMap(f) => (p.source.to_string(), f.clone()),
            other => panic!("`{}` is not a feature map: {other:?}", p.port),
        })
        .collect()
}

#[test]
fn mobilenet_maps_at_224_have_the_manifest_channels_and_strides() {
    if !onnx_ready("mobilenet_maps_at_224") {
        return;
    }
    let layers = ["features.3", "features.6", "features.7.expand", "features.13", "features.14.expand", "features.17"];
    let h = stage::<OnnxFeatures>(json!({"model": "mobilenet_v2", "outputs": layers, "threads": 2})).unwrap();
    let out = h.process(&meta("chelsea"), inputs(vec![("image", photo("chelsea").into())])).unwrap();
    let maps = labelled_maps(&out);
    let expected = [(24, 4), (32, 8), (192, 8), (96, 16), (576, 16), (320, 32)];
    assert_eq!(maps.len(), layers.len());
    for ((label, fm), (name, (c, stride))) in maps.iter().zip(layers.iter().zip(expected)) {
        assert_eq!(label, name);
        assert_eq!((fm.channels(), fm.height(), fm.width()), (c, 224 / stride, 224 / stride), "{name}");
        assert_eq!(fm.stride(), stride as f32, "{name}");
        // ReLU6 outputs lie in [0, 6]; block outputs are linear. Either way: not a constant map.
        let (lo, hi) = fm.data().iter().fold((f32::MAX, f32::MIN), |(l, u), &v| (l.min(v), u.max(v)));
        assert!(hi - lo > 0.1, "{name}: values span only [{lo}, {hi}]");
        if name.ends_with(".expand") {
            assert!(lo >= 0.0 && hi <= 6.0, "{name}: ReLU6 output outside [0, 6]: [{lo}, {hi}]");
        }
    }

    // Default outputs: the manifest's stride-8 and stride-16 expansion maps (768 channels).
    let h = stage::<OnnxFeatures>(json!({})).unwrap();
    let out = h.process(&meta("coffee"), inputs(vec![("image", photo("coffee").into())])).unwrap();
    let shapes: Vec<_> =
        labelled_maps(&out).iter().map(|(l, f)| (l.clone(), f.channels(), f.height(), f.stride())).collect();
    assert_eq!(
        shapes,
        vec![("features.7.expand".to_string(), 192, 28, 8.0), ("features.14.expand".to_string(), 576, 14, 16.0)]
    );
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

#[test]
fn real_photos_get_their_imagenet_classes() {
    if !onnx_ready("real_photos_get_their_imagenet_classes") {
        return;
    }
    // ImageNet indices: 281-285 and 287 are domestic cats and lynx; 504 coffee mug, 967
    // espresso, 968 cup; 665 moped, 670 motor scooter.
    let cases: [(&str, &[usize]); 3] =
        [("chelsea", &[281, 282, 283, 284, 285, 287]), ("coffee", &[504, 967, 968]), ("motorcycle_left", &[665, 670])];
    let h = stage::<OnnxFeatures>(json!({"outputs": ["logits"]})).unwrap();
    for (name, classes) in cases {
        let out = h.process(&meta(name), inputs(vec![("image", photo(name).into())])).unwrap();
        let logits = labelled_maps(&out).remove(0).1;
        assert_eq!((logits.height(), logits.width(), logits.channels()), (1, 1, 1000));
        let top = argmax(logits.data());
        assert!(classes.contains(&top), "{name}: top class {top}, expected one of {classes:?}");
    }
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

fn error_of<T: StagePlugin>(params: serde_json::Value) -> String {
    match stage::<T>(params) {
        Ok(_) => panic!("stage was created; expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_models_layers_and_sizes_are_reported_clearly() {
    if !onnx_ready("bad_models_layers_and_sizes_are_reported_clearly") {
        return;
    }
    let err = error_of::<OnnxFeatures>(json!({"outputs": ["layer3"]}));
    assert!(err.contains("has no output `layer3`"), "{err}");
    assert!(err.contains("features.14.expand") && err.contains("logits"), "lists what exists: {err}");

    let err = error_of::<OnnxFeatures>(json!({"model": "models/nothing_here.onnx"}));
    assert!(err.contains("nothing_here.onnx does not exist"), "{err}");

    let err = error_of::<OnnxFeatures>(json!({"model": "wide_resnet50"}));
    assert!(err.contains("model `wide_resnet50` is not in any model manifest"), "{err}");
    assert!(err.contains("has: mobilenet_v2"), "{err}");

    let tiny = test_data("block_energy.onnx").to_string_lossy().to_string();
    let err = error_of::<OnnxFeatures>(json!({"model": tiny, "outputs": ["energy"], "input_size": 64}));
    assert!(err.contains("refuses input size 64x64"), "{err}");
    assert!(err.contains("only 32x32"), "{err}");

    // The runtime from the onnxruntime (CPU) wheel has no CUDA provider.
    let err = error_of::<OnnxFeatures>(json!({"execution_provider": "cuda"}));
    assert!(err.contains("has no CUDA execution provider") && err.contains("onnxruntime-gpu"), "{err}");

    let err = error_of::<OnnxFeatures>(json!({"std": [0.2, 0.2]}));
    assert!(err.contains("`std`: expected 3 numbers"), "{err}");

    // A corrupted model file: the manifest's hash catches it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::copy(test_data("sqrt.onnx"), dir.path().join("models/m.onnx")).unwrap();
    std::fs::write(
        dir.path().join("models/manifest.yaml"),
        format!("models:\n  - name: m\n    file: m.onnx\n    sha256: {}\n", "0".repeat(64)),
    )
    .unwrap();
    let err = match StageHarness::with_dirs::<OnnxFeatures>(json!({"model": "m"}), dir.path(), dir.path()) {
        Ok(_) => panic!("corrupted model accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("m.onnx has sha256") && err.contains("corrupted"), "{err}");
}

#[test]
fn bad_samples_are_reported_with_their_id() {
    if !onnx_ready("bad_samples_are_reported_with_their_id") {
        return;
    }
    // sqrt of a normalized image is NaN wherever the pixel is below the mean.
    let sqrt = test_data("sqrt.onnx").to_string_lossy().to_string();
    let h = stage::<OnnxFeatures>(json!({"model": sqrt, "outputs": ["root"], "input_size": 32})).unwrap();
    let dark = Image::from_u8(32, 32, 3, vec![10; 32 * 32 * 3]).unwrap();
    let err = h.process(&meta("dark-1"), inputs(vec![("image", dark.into())])).unwrap_err().to_string();
    assert!(err.contains("sample `dark-1`") && err.contains("non-finite value (NaN)"), "{err}");

    let h = stage::<OnnxFeatures>(json!({})).unwrap();
    let wide = Image::from_u8(224, 300, 3, vec![128; 224 * 300 * 3]).unwrap();
    let err = h.process(&meta("wide-7"), inputs(vec![("image", wide.into())])).unwrap_err().to_string();
    assert!(err.contains("sample `wide-7`") && err.contains("strides differ"), "{err}");

    let rgba = Image::from_u8(224, 224, 4, vec![0; 224 * 224 * 4]).unwrap();
    let err = h.process(&meta("rgba-2"), inputs(vec![("image", rgba.into())])).unwrap_err().to_string();
    assert!(err.contains("sample `rgba-2`") && err.contains("4 channels"), "{err}");
}

#[test]
fn onnx_scorer_returns_the_models_map_at_image_size() {
    if !onnx_ready("onnx_scorer_returns_the_models_map_at_image_size") {
        return;
    }
    // block_energy: channel mean of the squared input, 4x4 block averages, from a 32x32 input.
    // With mean 0 and std 1, a white pixel has energy 1 and a black one 0.
    let model = test_data("block_energy.onnx").to_string_lossy().to_string();
    let h = stage::<OnnxScorer>(json!({"model": model, "mean": [0, 0, 0], "std": [1, 1, 1]})).unwrap();
    let (ih, iw) = (96, 128);
    let pixels: Vec<u8> = (0..ih * iw).flat_map(|i| if i % iw < iw / 2 { [255u8; 3] } else { [0u8; 3] }).collect();
    let image = Image::from_u8(ih as u32, iw as u32, 3, pixels).unwrap();
    let out = h.process(&meta("half"), inputs(vec![("image", image.into())])).unwrap();
    let score = out.score_map("score");
    assert_eq!((score.height(), score.width()), (ih, iw));
    for y in [0, ih / 2, ih - 1] {
        assert!((score.get(y, 5) - 1.0).abs() < 1e-4, "left: {}", score.get(y, 5));
        assert!(score.get(y, iw - 5).abs() < 1e-4, "right: {}", score.get(y, iw - 5));
    }
    let mid = score.get(ih / 2, iw / 2);
    assert!(mid > 0.05 && mid < 0.95, "the edge is interpolated: {mid}");
    assert!((out.scalar("image_score") - 1.0).abs() < 1e-4);

    let err = error_of::<OnnxScorer>(json!({"model": model, "output": "score"}));
    assert!(err.contains("has no output `score`; its outputs are: energy"), "{err}");
}

#[test]
fn bad_params_are_refused_naming_them() {
    // Checked against the config's schema before any model is opened.
    let err = error_of::<OnnxFeatures>(json!({"execution_provider": "tpu"}));
    assert!(err.contains("param `execution_provider`: `tpu` is not one of cpu, cuda"), "{err}");
    let err = error_of::<OnnxFeatures>(json!({"batch_size": 0}));
    assert!(err.contains("param `batch_size`: 0 is out of range"), "{err}");
    let err = error_of::<OnnxFeatures>(json!({"outputs": "logits"}));
    assert!(err.contains("param `outputs`"), "{err}");
    let err = error_of::<OnnxScorer>(json!({}));
    assert!(err.contains("missing required param `model`"), "{err}");
    let err = error_of::<OnnxFeatures>(json!({"modle": "mobilenet_v2"}));
    assert!(err.contains("unknown param `modle` (did you mean `model`?)"), "{err}");
}
