//! Errors of the onnx plugin. Each says which model (file), which sample and what was expected.

use std::path::PathBuf;

use anoflow_sdk::prelude::{ErrorKind, StageError};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("ONNX Runtime is not usable: {0}")]
    Runtime(String),
    #[error("{}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("{0}")]
    ModelNotFound(String),
    #[error(
        "model file {} has sha256 {found} but {} says {expected}: the file is corrupted or is another model; {fix}",
        path.display(),
        manifest.display()
    )]
    HashMismatch { path: PathBuf, manifest: PathBuf, found: String, expected: String, fix: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model {model}: {reason}")]
    BadParam { model: String, reason: String },
    #[error("model {model} has no output `{name}`; its outputs are: {}", available.join(", "))]
    UnknownOutput { model: String, name: String, available: Vec<String> },
    #[error("model {model} refuses input size {height}x{width} (h x w): {reason}")]
    InputSize { model: String, height: usize, width: usize, reason: String },
    #[error("model {model}, sample `{sample}`: {reason}")]
    Sample { model: String, sample: String, reason: String },
    #[error("model {model}: ONNX Runtime failed: {reason}")]
    Ort { model: String, reason: String },
}

impl From<OnnxError> for StageError {
    fn from(e: OnnxError) -> Self {
        let kind = match &e {
            OnnxError::BadParam { .. } | OnnxError::UnknownOutput { .. } | OnnxError::InputSize { .. } => {
                ErrorKind::InvalidParam
            }
            OnnxError::Io { .. } | OnnxError::ModelNotFound(_) => ErrorKind::Io,
            OnnxError::Manifest { .. } | OnnxError::HashMismatch { .. } | OnnxError::Sample { .. } => {
                ErrorKind::InvalidInput
            }
            OnnxError::Runtime(_) | OnnxError::Ort { .. } => ErrorKind::Internal,
        };
        StageError::new(kind, e.to_string())
    }
}
