//! Errors of the TTT4AS maths. The stage turns them into `StageError`s naming node and sample.

use anoflow_sdk::prelude::StageError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TttError {
    #[error("{what} holds a non-finite value ({value}) at {place}")]
    NonFinite { what: String, value: f32, place: String },
    #[error(
        "feature map `{name}` ({h}x{w} cells, stride {stride}) covers {cov_h}x{cov_w} image pixels, \
         but the score map is {score_h}x{score_w}: they must describe the same image \
         (allowed difference: one stride)"
    )]
    SizeMismatch {
        name: String,
        h: usize,
        w: usize,
        stride: f32,
        cov_h: f32,
        cov_w: f32,
        score_h: usize,
        score_w: usize,
    },
    #[error("the prior decision map has {len} values, expected {h}x{w} like the score map")]
    PriorSize { len: usize, h: usize, w: usize },
    #[error("no feature map on input `features`: TTT4AS needs at least one")]
    NoFeatures,
    #[error("invalid classifier setting: {0}")]
    Classifier(String),
    #[error("classifier failed: {0}")]
    Fit(String),
}

impl TttError {
    pub fn into_stage_error(self, node: &str, sample: &str) -> StageError {
        let msg = format!("node `{node}`, sample `{sample}`: {self}");
        match self {
            TttError::Classifier(_) => StageError::invalid_param(msg),
            TttError::Fit(_) => StageError::internal(msg),
            _ => StageError::invalid_input(msg),
        }
    }
}
