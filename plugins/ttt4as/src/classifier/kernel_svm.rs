//! Kernel C-SVC through `linfa-svm` (SMO with per-class C). Shrinking is left off: in
//! linfa-svm 0.8 it panics or returns a wrong model (FACTS.md).
//!
//! The decision is `sum_i a_i K(x_i, x) - rho`; `rho` is an unregularized intercept, unlike
//! the bias feature of the linear solvers.

use linfa::prelude::*;
use linfa_svm::Svm;
use ndarray::{Array1, Array2, ArrayView1};

use super::{FitInfo, TrainingSet};
use crate::error::TttError;

/// Written `kernel: { kind: gaussian, gamma: 0.5 }` or `kernel: { kind: linear }`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Kernel {
    /// `exp(-gamma |x - x'|^2)`; `None`: `0.01 / d`. A wide kernel: training features are
    /// interpolated at pixels and so smoother than the raw cells the grid decision reads;
    /// scikit-learn's `1 / d` fits the training pixels and rejects every raw cell.
    Gaussian {
        /// Kernel width; absent: 0.01 / (feature dims).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(extend("exclusiveMinimum" = 0))]
        gamma: Option<f64>,
    },
    /// `x . x'`.
    Linear,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelSvmConfig {
    pub c: f64,
    pub kernel: Kernel,
    /// SMO stopping tolerance.
    pub tol: f64,
    /// Decide on every image pixel (exact, slow) instead of on the feature grid then upsample.
    pub exact: bool,
}

impl Default for KernelSvmConfig {
    fn default() -> Self {
        Self { c: 1.0, kernel: Kernel::Gaussian { gamma: None }, tol: 1e-3, exact: false }
    }
}

/// A fitted kernel SVM; decides on standardized features.
pub struct KernelModel {
    svm: Svm<f64, bool>,
}

impl std::fmt::Debug for KernelModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelModel({} support vectors)", self.svm.nsupport())
    }
}

impl KernelModel {
    /// The signed decision value of one (standardized) feature vector.
    pub fn decision(&self, x: &[f32]) -> f32 {
        let x: Array1<f64> = x.iter().map(|&v| f64::from(v)).collect();
        (self.svm.weighted_sum(&x) - self.svm.rho) as f32
    }

    pub fn support_vectors(&self) -> usize {
        self.svm.nsupport()
    }
}

pub fn fit(set: &TrainingSet<'_>, cfg: &KernelSvmConfig) -> Result<(KernelModel, FitInfo), TttError> {
    let (n, d) = (set.len(), set.d);
    let records = Array2::from_shape_vec((n, d), set.x.iter().map(|&v| f64::from(v)).collect())
        .map_err(|e| TttError::Fit(format!("training matrix: {e}")))?;
    let targets: Array1<bool> = set.y.iter().map(|&y| y > 0.0).collect();
    let dataset = Dataset::new(records, targets);
    let params = Svm::<f64, bool>::params()
        .pos_neg_weights(cfg.c * set.class_weight.0, cfg.c * set.class_weight.1)
        .eps(cfg.tol)
        .shrinking(false);
    let params = match cfg.kernel {
        Kernel::Gaussian { gamma } => params.gaussian_kernel(1.0 / gamma.unwrap_or(0.01 / d as f64)),
        Kernel::Linear => params.linear_kernel(),
    };
    let svm = params.fit(&dataset).map_err(|e| TttError::Fit(format!("linfa-svm: {e}")))?;
    let info = FitInfo { iterations: 0, converged: true, support_vectors: svm.nsupport() };
    Ok((KernelModel { svm }, info))
}

/// Decision of a fitted model on a row given as a view (for benches comparing solvers).
pub fn decision_view(model: &KernelModel, x: ArrayView1<'_, f64>) -> f64 {
    model.svm.weighted_sum(&x) - model.svm.rho
}
