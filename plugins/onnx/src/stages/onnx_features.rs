//! `onnx-features`: a frozen backbone's named intermediate outputs as channels-last feature maps.

use anoflow_sdk::prelude::*;

use crate::{
    config::{self, image_model_config},
    features::FeatureExtractor,
};

/// Stage type `onnx-features`.
pub struct OnnxFeatures;

image_model_config! {
    /// Params of `onnx-features` (its `batch_size` is the host's: the stage is batched).
    pub struct OnnxFeaturesConfig {
        model = "mobilenet_v2";
        /// model outputs to return (layer names), e.g. [features.7.expand, features.14.expand]; default: the
        /// manifest's default_outputs
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub outputs: Option<Vec<String>>,
    }
}

impl StagePlugin for OnnxFeatures {
    type Config = OnnxFeaturesConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "onnx-features",
            "frozen backbone on ONNX Runtime: named intermediate outputs as feature maps",
        )
        .input("image", ValueKind::Image, "image (u8 or f32 in [0, 255], 1 or 3 channels)")
        .multi_output(
            "features",
            ValueKind::FeatureMap,
            "one channels-last feature map per requested output, labelled with the output's name; stride = image \
                 size / map size",
        )
        // Images per network run.
        .batched(8)
    }

    fn create(config: OnnxFeaturesConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let loaded = config::load(&config.settings(), ctx, |resolved| match config.outputs {
            Some(outputs) => outputs,
            None => resolved.entry.as_ref().map(|(e, _)| e.default_outputs.clone()).unwrap_or_default(),
        })?;
        let extractor = FeatureExtractor::new(loaded.model, loaded.preprocess, loaded.outputs)
            .map_err(|e| StageError::from(e).context(format!("node `{}`", ctx.node_id)))?;
        Ok(Box::new(OnnxFeaturesStage { extractor }))
    }
}

struct OnnxFeaturesStage {
    extractor: FeatureExtractor,
}

impl Map for OnnxFeaturesStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let image = sample.image("image")?;
        let mut maps = self.extractor.extract(&[(image, sample.meta.id.as_str())])?;
        let mut out = Outputs::new();
        for (name, fm) in maps.pop().unwrap_or_default() {
            out.push_labeled("features", &name, fm);
        }
        Ok(out)
    }

    /// One network run for the whole batch; a failing batch fails each of its samples.
    fn process_batch(&self, samples: &[Sample<'_>]) -> Vec<StageResult<Outputs>> {
        let images: Result<Vec<(&Image, &str)>, StageError> =
            samples.iter().map(|s| s.image("image").map(|i| (i, s.meta.id.as_str()))).collect();
        let maps = images.and_then(|images| self.extractor.extract(&images).map_err(StageError::from));
        match maps {
            Ok(maps) => maps
                .into_iter()
                .map(|layers| {
                    let mut out = Outputs::new();
                    for (name, fm) in layers {
                        out.push_labeled("features", &name, fm);
                    }
                    Ok(out)
                })
                .collect(),
            Err(e) => samples.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! On the real runtime and the real default backbone; helpers in `crate::tests`.

    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    use super::*;
    use crate::tests::{argmax, error_of, labelled_maps, onnx_ready, photo, stage, test_data};

    #[test]
    fn mobilenet_maps_at_224_have_the_manifest_channels_and_strides() {
        if !onnx_ready("mobilenet_maps_at_224") {
            return;
        }
        let layers =
            ["features.3", "features.6", "features.7.expand", "features.13", "features.14.expand", "features.17"];
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

    #[test]
    fn real_photos_get_their_imagenet_classes() {
        if !onnx_ready("real_photos_get_their_imagenet_classes") {
            return;
        }
        // ImageNet indices: 281-285 and 287 are domestic cats and lynx; 504 coffee mug, 967
        // espresso, 968 cup; 665 moped, 670 motor scooter.
        let cases: [(&str, &[usize]); 3] = [
            ("chelsea", &[281, 282, 283, 284, 285, 287]),
            ("coffee", &[504, 967, 968]),
            ("motorcycle_left", &[665, 670]),
        ];
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
    fn bad_params_are_refused_naming_them() {
        // Checked against the config's schema before any model is opened.
        let err = error_of::<OnnxFeatures>(json!({"execution_provider": "tpu"}));
        assert!(err.contains("param `execution_provider`: `tpu` is not one of cpu, cuda"), "{err}");
        let err = error_of::<OnnxFeatures>(json!({"batch_size": 0}));
        assert!(err.contains("param `batch_size`: 0 is out of range"), "{err}");
        let err = error_of::<OnnxFeatures>(json!({"outputs": "logits"}));
        assert!(err.contains("param `outputs`"), "{err}");
        let err = error_of::<OnnxFeatures>(json!({"modle": "mobilenet_v2"}));
        assert!(err.contains("unknown param `modle` (did you mean `model`?)"), "{err}");
    }
}
