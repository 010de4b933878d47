//! The feature extractor behind `onnx-features` (`stages/onnx_features.rs`): a frozen backbone's named
//! intermediate outputs as channels-last feature maps.

use anoflow_sdk::prelude::*;

use crate::{
    error::OnnxError,
    preprocess::Preprocess,
    session::{OnnxModel, OutputTensor},
};

/// Runs a model on image batches and returns its requested outputs as feature maps.
pub struct FeatureExtractor {
    model: OnnxModel,
    preprocess: Preprocess,
    outputs: Vec<String>,
}

impl FeatureExtractor {
    /// Checks the output names and the input size with one run on a zero tensor, so that a
    /// mistake shows when the pipeline starts, not on its first sample.
    pub fn new(model: OnnxModel, preprocess: Preprocess, outputs: Vec<String>) -> Result<Self, OnnxError> {
        if outputs.is_empty() {
            return Err(OnnxError::BadParam {
                model: model.label().into(),
                reason: format!("no outputs requested; the model has: {}", model.output_names().join(", ")),
            });
        }
        model.check_outputs(&outputs)?;
        model.check_input_size(preprocess.height, preprocess.width)?;
        let (h, w) = (preprocess.height, preprocess.width);
        model.run(1, h, w, vec![0.0; 3 * h * w], &outputs)?;
        Ok(Self { model, preprocess, outputs })
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// Runs the images (with their sample ids, for errors) as one batch. For each image, one
    /// `(output name, feature map)` per requested output; strides are relative to the image as
    /// given (before resizing to the model's input size).
    pub fn extract(&self, images: &[(&Image, &str)]) -> Result<Vec<Vec<(String, FeatureMap)>>, OnnxError> {
        let (h, w) = (self.preprocess.height, self.preprocess.width);
        let mut batch = Vec::with_capacity(images.len() * 3 * h * w);
        for (image, id) in images {
            self.preprocess.append_chw(image, &mut batch).map_err(|reason| self.sample_err(id, reason))?;
        }
        let tensors = self.model.run(images.len(), h, w, batch, &self.outputs)?;
        let mut per_image: Vec<Vec<(String, FeatureMap)>> = (0..images.len()).map(|_| Vec::new()).collect();
        for (name, tensor) in self.outputs.iter().zip(&tensors) {
            for (n, (image, id)) in images.iter().enumerate() {
                let fm = self.to_feature_map(name, tensor, n, image, id)?;
                per_image[n].push((name.clone(), fm));
            }
        }
        Ok(per_image)
    }

    fn sample_err(&self, id: &str, reason: impl Into<String>) -> OnnxError {
        OnnxError::Sample { model: self.model.label().into(), sample: id.into(), reason: reason.into() }
    }

    /// Item `n` of an `N x C x h x w` (or `N x C`) output as an `h x w x C` feature map.
    fn to_feature_map(
        &self,
        name: &str,
        t: &OutputTensor,
        n: usize,
        image: &Image,
        id: &str,
    ) -> Result<FeatureMap, OnnxError> {
        let (c, fh, fw) = match t.shape.as_slice() {
            [_, c, fh, fw] => (*c, *fh, *fw),
            [_, c] => (*c, 1, 1),
            other => {
                return Err(self
                    .sample_err(id, format!("output `{name}` has shape {other:?}; expected [N, C, H, W] or [N, C]")))
            }
        };
        let plane = fh * fw;
        let item = &t.data[n * c * plane..(n + 1) * c * plane];
        if let Some(i) = item.iter().position(|v| !v.is_finite()) {
            return Err(self
                .sample_err(id, format!("output `{name}` holds a non-finite value ({}) at flat index {i}", item[i])));
        }
        let mut hwc = vec![0.0f32; item.len()];
        for (ch, src) in item.chunks_exact(plane).enumerate() {
            for (p, &v) in src.iter().enumerate() {
                hwc[p * c + ch] = v;
            }
        }
        let sy = image.height() as f32 / fh as f32;
        let sx = image.width() as f32 / fw as f32;
        if t.shape.len() == 4 && (sy - sx).abs() > 0.01 * sy {
            return Err(self.sample_err(
                id,
                format!(
                    "image {}x{} gives a {fh}x{fw} map for `{name}`: the strides differ ({sy} down, {sx} across); \
                     resize the image to the model's aspect ratio first (resize-crop)",
                    image.height(),
                    image.width()
                ),
            ));
        }
        FeatureMap::new(c as u32, fh as u32, fw as u32, sy, hwc).map_err(|e| self.sample_err(id, e.message.to_string()))
    }
}
