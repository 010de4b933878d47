//! `onnx-features`: a frozen backbone's named intermediate outputs as channels-last feature maps.

use anoflow_sdk::prelude::*;

use crate::{
    config::{self, ModelSettings},
    features::FeatureExtractor,
    manifest::Size,
    params::RuntimeParams,
    Provider,
};

/// Stage type `onnx-features`.
pub struct OnnxFeatures;

/// Params of `onnx-features` (its `batch_size` is the host's: the stage is batched).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxFeaturesConfig {
    /// model: a name in models/manifest.yaml (searched from the pipeline's directory upward, then from the working
    /// directory upward) or a path to an .onnx file
    #[serde(default = "default_model")]
    pub model: Model,
    /// model outputs to return (layer names), e.g. [features.7.expand, features.14.expand]; default: the
    /// manifest's default_outputs
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
    /// model input size, one number (square) or [height, width]; images of another size are resized (default: the
    /// manifest's, else the model's fixed size)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<Size>,
    /// per-channel (RGB) mean after dividing pixels by 255 (default: the manifest's, else ImageNet's)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// per-channel (RGB) standard deviation (default: the manifest's, else ImageNet's)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
    /// ONNX Runtime intra-op threads per inference (0: its default, one per physical core)
    #[serde(default)]
    pub threads: usize,
    /// where ONNX Runtime runs the model; cuda needs the library of the onnxruntime-gpu wheel
    #[serde(default)]
    pub execution_provider: Provider,
}

fn default_model() -> Model {
    Model("mobilenet_v2".into())
}

impl OnnxFeaturesConfig {
    fn settings(&self) -> ModelSettings {
        ModelSettings {
            model: self.model.clone(),
            input_size: self.input_size,
            mean: self.mean.clone(),
            std: self.std.clone(),
            runtime: RuntimeParams { threads: self.threads, provider: self.execution_provider },
        }
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
        let loaded = config::load(&config.settings(), ctx)?;
        let outputs: Vec<String> = match config.outputs {
            Some(outputs) => outputs,
            None => loaded.resolved.entry.as_ref().map(|(e, _)| e.default_outputs.clone()).unwrap_or_default(),
        };
        let extractor = FeatureExtractor::new(loaded.model, loaded.preprocess, outputs)
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
