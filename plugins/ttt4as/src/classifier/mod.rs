//! The per-image classifier, a swappable component chosen by `classifier.kind`.

pub mod kernel_svm;
pub mod linear_svm;
pub mod logistic;

use serde_json::{Map, Value as Json};

use crate::error::TttError;
pub use kernel_svm::{Kernel, KernelModel, KernelSvmConfig};
pub use linear_svm::{LinearSvmConfig, Loss};
pub use logistic::LogisticConfig;

/// Training rows (`n x d`, row-major), labels +1 / -1, and the per-class multipliers of C
/// `(positive, negative)` that class balancing chose.
#[derive(Debug, Clone, Copy)]
pub struct TrainingSet<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub d: usize,
    pub class_weight: (f64, f64),
}

impl TrainingSet<'_> {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

/// `w . x + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub w: Vec<f32>,
    pub b: f32,
}

impl LinearModel {
    pub fn decision(&self, x: &[f32]) -> f32 {
        dot(&self.w, x) + self.b
    }
}

/// How a fit went, for logs and benches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitInfo {
    pub iterations: usize,
    pub converged: bool,
    pub support_vectors: usize,
}

#[derive(Debug)]
pub enum Model {
    Linear(LinearModel),
    Kernel(KernelModel),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClassifierSpec {
    LinearSvm(LinearSvmConfig),
    Logistic(LogisticConfig),
    KernelSvm(KernelSvmConfig),
}

impl Default for ClassifierSpec {
    fn default() -> Self {
        ClassifierSpec::LinearSvm(LinearSvmConfig::default())
    }
}

/// Keys each kind accepts in the `classifier` mapping.
const LINEAR_SVM_KEYS: &[&str] = &["kind", "c", "loss", "bias", "tol", "max_iter", "shrinking"];
const LOGISTIC_KEYS: &[&str] = &["kind", "c", "bias", "tol", "max_iter"];
const KERNEL_SVM_KEYS: &[&str] = &["kind", "c", "kernel", "gamma", "tol", "exact"];

impl ClassifierSpec {
    /// Parses `{ kind: linear-svm | logistic | kernel-svm, c: ..., ... }`. Missing keys take
    /// their defaults (C = 0.001 for the linear kinds, 1 for kernel-svm); unknown keys and
    /// values of the wrong type are errors naming the key.
    pub fn from_json(obj: &Map<String, Json>) -> Result<Self, TttError> {
        let kind = match obj.get("kind") {
            None => "linear-svm",
            Some(Json::String(s)) => s.as_str(),
            Some(other) => return Err(TttError::Classifier(format!("`kind` must be a string, found {other}"))),
        };
        let allowed = match kind {
            "linear-svm" => LINEAR_SVM_KEYS,
            "logistic" => LOGISTIC_KEYS,
            "kernel-svm" => KERNEL_SVM_KEYS,
            other => {
                return Err(TttError::Classifier(format!(
                    "unknown kind `{other}` (expected linear-svm, logistic or kernel-svm)"
                )))
            }
        };
        if let Some(bad) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(TttError::Classifier(format!(
                "`{bad}` does not apply to kind `{kind}` (allowed: {})",
                allowed.join(", ")
            )));
        }
        let num = |key: &str, default: f64, positive: bool| -> Result<f64, TttError> {
            match obj.get(key) {
                None => Ok(default),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && (!positive || x > 0.0) && x >= 0.0 => Ok(x),
                    _ => Err(TttError::Classifier(format!(
                        "`{key}` must be a {} number, found {v}",
                        if positive { "positive" } else { "non-negative" }
                    ))),
                },
            }
        };
        let int = |key: &str, default: usize| -> Result<usize, TttError> {
            match obj.get(key) {
                None => Ok(default),
                Some(v) => match v.as_u64() {
                    Some(x) if x > 0 => Ok(x as usize),
                    _ => Err(TttError::Classifier(format!("`{key}` must be a positive integer, found {v}"))),
                },
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, TttError> {
            match obj.get(key) {
                None => Ok(default),
                Some(Json::Bool(b)) => Ok(*b),
                Some(v) => Err(TttError::Classifier(format!("`{key}` must be true or false, found {v}"))),
            }
        };
        let word = |key: &str, default: &'static str| -> Result<String, TttError> {
            match obj.get(key) {
                None => Ok(default.to_string()),
                Some(Json::String(s)) => Ok(s.clone()),
                Some(v) => Err(TttError::Classifier(format!("`{key}` must be a string, found {v}"))),
            }
        };
        Ok(match kind {
            "linear-svm" => {
                let d = LinearSvmConfig::default();
                let loss = match word("loss", "l2")?.as_str() {
                    "l2" | "squared-hinge" => Loss::L2,
                    "l1" | "hinge" => Loss::L1,
                    other => return Err(TttError::Classifier(format!("`loss`: `{other}` is not l1 or l2"))),
                };
                ClassifierSpec::LinearSvm(LinearSvmConfig {
                    c: num("c", d.c, true)?,
                    loss,
                    bias: num("bias", d.bias, false)?,
                    tol: num("tol", d.tol, true)?,
                    max_iter: int("max_iter", d.max_iter)?,
                    shrinking: flag("shrinking", d.shrinking)?,
                })
            }
            "logistic" => {
                let d = LogisticConfig::default();
                ClassifierSpec::Logistic(LogisticConfig {
                    c: num("c", d.c, true)?,
                    bias: num("bias", d.bias, false)?,
                    tol: num("tol", d.tol, true)?,
                    max_iter: int("max_iter", d.max_iter)?,
                })
            }
            _ => {
                let d = KernelSvmConfig::default();
                let kernel = match word("kernel", "gaussian")?.as_str() {
                    "gaussian" | "rbf" => {
                        Kernel::Gaussian { gamma: obj.get("gamma").map(|_| num("gamma", 1.0, true)).transpose()? }
                    }
                    "linear" => Kernel::Linear,
                    other => {
                        return Err(TttError::Classifier(format!("`kernel`: `{other}` is not gaussian or linear")))
                    }
                };
                ClassifierSpec::KernelSvm(KernelSvmConfig {
                    c: num("c", d.c, true)?,
                    kernel,
                    tol: num("tol", d.tol, true)?,
                    exact: flag("exact", d.exact)?,
                })
            }
        })
    }

    /// Whether the decision is linear in the features (so it can be taken at feature
    /// resolution and upsampled exactly).
    pub fn is_linear(&self) -> bool {
        !matches!(self, ClassifierSpec::KernelSvm(_))
    }

    pub fn fit(&self, set: &TrainingSet<'_>, seed: u64) -> Result<(Model, FitInfo), TttError> {
        match self {
            ClassifierSpec::LinearSvm(cfg) => {
                let (m, info) = linear_svm::fit(set, cfg, seed);
                Ok((Model::Linear(m), info))
            }
            ClassifierSpec::Logistic(cfg) => {
                let (m, info) = logistic::fit(set, cfg);
                Ok((Model::Linear(m), info))
            }
            ClassifierSpec::KernelSvm(cfg) => {
                let (m, info) = kernel_svm::fit(set, cfg)?;
                Ok((Model::Kernel(m), info))
            }
        }
    }
}

/// Dot product with eight independent accumulators (vectorizes; f32 rounding is fine at
/// the sizes here: 1000s of dims of standardized values).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::json;

    /// Two Gaussian classes in `d` dims, separated along the first 10 dims.
    fn blobs(n_pos: usize, n_neg: usize, d: usize, shift: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity((n_pos + n_neg) * d);
        let mut y = Vec::with_capacity(n_pos + n_neg);
        for i in 0..n_pos + n_neg {
            let pos = i < n_pos;
            for j in 0..d {
                let noise: f32 = (0..4).map(|_| rng.gen::<f32>() - 0.5).sum::<f32>() * 1.7;
                x.push(noise + if pos && j < 10 { shift } else { 0.0 });
            }
            y.push(if pos { 1.0 } else { -1.0 });
        }
        (x, y)
    }

    fn accuracy(model: &Model, x: &[f32], y: &[f32], d: usize) -> f64 {
        let hits = x
            .chunks_exact(d)
            .zip(y)
            .filter(|(row, &y)| {
                let v = match model {
                    Model::Linear(m) => m.decision(row),
                    Model::Kernel(m) => m.decision(row),
                };
                (v > 0.0) == (y > 0.0)
            })
            .count();
        hits as f64 / y.len() as f64
    }

    #[test]
    fn every_kind_separates_shifted_blobs() {
        let d = 256;
        let (x, y) = blobs(60, 300, d, 1.5, 3);
        let (xt, yt) = blobs(60, 300, d, 1.5, 4);
        let set = TrainingSet { x: &x, y: &y, d, class_weight: (360.0 / 120.0, 360.0 / 600.0) };
        for spec in [
            json!({"kind": "linear-svm", "c": 0.01}),
            json!({"kind": "linear-svm", "c": 0.01, "loss": "l1"}),
            json!({"kind": "linear-svm", "c": 0.01, "shrinking": false}),
            json!({"kind": "logistic", "c": 1.0}),
            json!({"kind": "kernel-svm", "c": 1.0}),
        ] {
            let parsed = ClassifierSpec::from_json(spec.as_object().unwrap()).unwrap();
            let (model, info) = parsed.fit(&set, 1).unwrap();
            let acc = accuracy(&model, &xt, &yt, d);
            assert!(acc > 0.9, "{spec}: held-out accuracy {acc}, {info:?}");
        }
    }

    #[test]
    fn dual_cd_matches_the_kkt_conditions() {
        // At the optimum of the L1-loss dual: margin < 1 -> alpha = C, margin > 1 -> alpha = 0.
        // Checked through the primal: w = sum alpha_i y_i x_i must reproduce the model.
        let d = 32;
        let (x, y) = blobs(40, 80, d, 1.0, 9);
        let set = TrainingSet { x: &x, y: &y, d, class_weight: (1.0, 1.0) };
        let cfg = LinearSvmConfig { c: 0.1, loss: Loss::L1, tol: 1e-6, max_iter: 10_000, ..Default::default() };
        let (m, info) = linear_svm::fit(&set, &cfg, 0);
        assert!(info.converged);
        // Primal objective must not be improved by small random perturbations.
        let primal = |w: &[f32], b: f32| -> f64 {
            let reg = 0.5 * (w.iter().map(|v| f64::from(v * v)).sum::<f64>() + f64::from(b * b));
            let loss: f64 =
                x.chunks_exact(d).zip(&y).map(|(r, &yi)| (1.0 - f64::from(yi * (dot(w, r) + b))).max(0.0)).sum();
            reg + 0.1 * loss
        };
        let best = primal(&m.w, m.b);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..50 {
            let w2: Vec<f32> = m.w.iter().map(|v| v + (rng.gen::<f32>() - 0.5) * 0.02).collect();
            let b2 = m.b + (rng.gen::<f32>() - 0.5) * 0.02;
            assert!(primal(&w2, b2) >= best - 1e-4, "perturbation improved the primal: {best}");
        }
    }

    #[test]
    fn spec_parsing_names_the_bad_key() {
        let parse = |j: serde_json::Value| ClassifierSpec::from_json(j.as_object().unwrap());
        assert_eq!(parse(json!({})).unwrap(), ClassifierSpec::default());
        let err = parse(json!({"kind": "logistic", "loss": "l1"})).unwrap_err().to_string();
        assert!(err.contains("`loss` does not apply to kind `logistic`"), "{err}");
        let err = parse(json!({"kind": "linear-svm", "c": -1})).unwrap_err().to_string();
        assert!(err.contains("`c` must be a positive number"), "{err}");
        let err = parse(json!({"kind": "svm"})).unwrap_err().to_string();
        assert!(err.contains("unknown kind `svm`"), "{err}");
        assert!(!parse(json!({"kind": "kernel-svm"})).unwrap().is_linear());
    }
}
