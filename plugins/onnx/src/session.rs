//! One ONNX model opened in ONNX Runtime: its input, its outputs, and a run on an NCHW batch.

use std::{
    path::Path,
    sync::{Mutex, PoisonError},
};

use anoflow_ort_session::{
    open_session_for,
    ort::{
        session::{OutputSelector, RunOptions, Session},
        value::Tensor,
    },
    Spinning,
};

use crate::error::OnnxError;
pub use anoflow_ort_session::Provider;

/// An output tensor: its shape and row-major data.
#[derive(Debug, Clone)]
pub struct OutputTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model session. ONNX Runtime's `run` needs exclusive access, so calls from the host's
/// worker threads take turns; each run uses the session's intra-op threads.
pub struct OnnxModel {
    label: String,
    session: Mutex<Session>,
    input_name: String,
    /// Height and width of the input when the model fixes them (None: dynamic).
    static_hw: (Option<usize>, Option<usize>),
    output_names: Vec<String>,
}

impl OnnxModel {
    /// Opens `path`. `threads` = 0 keeps ONNX Runtime's default (one per physical core).
    /// With `outputs`, the graph keeps only what they need (the layers after them never run)
    /// when every one of them is an output of the model; otherwise it stays whole, so
    /// [`Self::check_outputs`] names what the model has.
    pub fn open(
        path: &Path,
        label: &str,
        input_name: Option<&str>,
        threads: usize,
        provider: Provider,
        outputs: &[String],
        spinning: Spinning,
    ) -> Result<Self, OnnxError> {
        let session = open_session_for(path, label, threads, provider, outputs, spinning)?;

        let inputs = session.inputs();
        let input = match input_name {
            Some(name) => inputs.iter().find(|i| i.name() == name).ok_or_else(|| OnnxError::BadParam {
                model: label.into(),
                reason: format!(
                    "has no input `{name}`; its inputs are: {}",
                    inputs.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
                ),
            })?,
            None => inputs
                .first()
                .ok_or_else(|| OnnxError::BadParam { model: label.into(), reason: "the model has no input".into() })?,
        };
        let shape: Vec<i64> = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
        if shape.len() != 4 || !(shape[1] == 3 || shape[1] < 0) {
            return Err(OnnxError::BadParam {
                model: label.into(),
                reason: format!(
                    "input `{}` has shape {shape:?}; expected an image batch [N, 3, H, W] (negative = dynamic)",
                    input.name()
                ),
            });
        }
        let fixed = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
        let static_hw = (fixed(shape[2]), fixed(shape[3]));
        let input_name = input.name().to_string();
        let output_names = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(Self { label: label.into(), session: Mutex::new(session), input_name, static_hw, output_names })
    }

    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }
    pub fn static_hw(&self) -> (Option<usize>, Option<usize>) {
        self.static_hw
    }

    /// Errors unless every name is an output of the model (the message lists the outputs).
    pub fn check_outputs(&self, names: &[String]) -> Result<(), OnnxError> {
        match names.iter().find(|n| !self.output_names.contains(n)) {
            Some(name) => Err(OnnxError::UnknownOutput {
                model: self.label.clone(),
                name: name.clone(),
                available: self.output_names.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Errors when the model fixes an input size other than `h x w`.
    pub fn check_input_size(&self, h: usize, w: usize) -> Result<(), OnnxError> {
        let (sh, sw) = self.static_hw;
        if sh.is_some_and(|s| s != h) || sw.is_some_and(|s| s != w) {
            return Err(OnnxError::InputSize {
                model: self.label.clone(),
                height: h,
                width: w,
                reason: format!(
                    "the model takes only {}x{} inputs",
                    sh.map_or("any".into(), |v| v.to_string()),
                    sw.map_or("any".into(), |v| v.to_string())
                ),
            });
        }
        Ok(())
    }

    /// Runs a batch `n x 3 x h x w` and returns the requested outputs in order, as f32.
    pub fn run(
        &self,
        n: usize,
        h: usize,
        w: usize,
        data: Vec<f32>,
        outputs: &[String],
    ) -> Result<Vec<OutputTensor>, OnnxError> {
        let ort_err = |e: &dyn std::fmt::Display| OnnxError::Ort { model: self.label.clone(), reason: e.to_string() };
        let input = Tensor::from_array(([n, 3, h, w], data)).map_err(|e| ort_err(&e))?;
        let selector = outputs.iter().fold(OutputSelector::no_default(), |s, name| s.with(name.as_str()));
        let options = RunOptions::new().map_err(|e| ort_err(&e))?.with_outputs(selector);
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let result = session
            .run_with_options(anoflow_ort_session::ort::inputs![self.input_name.as_str() => input], &options)
            .map_err(|e| OnnxError::InputSize {
                model: self.label.clone(),
                height: h,
                width: w,
                reason: format!("ONNX Runtime: {e}"),
            })?;
        outputs
            .iter()
            .map(|name| {
                let value = result.get(name.as_str()).ok_or_else(|| OnnxError::UnknownOutput {
                    model: self.label.clone(),
                    name: name.clone(),
                    available: self.output_names.clone(),
                })?;
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| OnnxError::Ort {
                    model: self.label.clone(),
                    reason: format!("output `{name}` is not a float tensor: {e}"),
                })?;
                let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
                Ok(OutputTensor { shape, data: data.to_vec() })
            })
            .collect()
    }
}
