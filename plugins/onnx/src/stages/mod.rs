//! One file per stage, named after the stage (`-` as `_`).

pub mod onnx_features;
pub mod onnx_scorer;
