//! A synthetic but realistically sized per-image case, shared by tests and benches: a
//! 224x224 PatchCore-like score map (cell noise upsampled, plus a bump over a round defect,
//! Gaussian-blurred with sigma 4) and non-negative ("post-ReLU") features at stride 8 whose
//! cells inside the defect are shifted along a subset of dimensions.

use anoflow_sdk::prelude::{FeatureMap, StageError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use anoflow_imaging::{gaussian_blur, resample::upsample};

#[derive(Debug, Clone)]
pub struct Case {
    pub size: usize,
    pub score: Vec<f32>,
    /// Ground-truth defect mask (0/1), `size x size`.
    pub gt: Vec<u8>,
    pub features: Vec<FeatureMap>,
}

#[derive(Debug, Clone)]
pub struct CaseSpec {
    pub size: usize,
    /// `(channels, stride)` of each feature map.
    pub maps: Vec<(usize, usize)>,
    /// Defect centre and radius in pixels.
    pub defect: (f32, f32, f32),
    /// Fraction of dimensions that change inside the defect, and by how much (absolute, so
    /// the change is small in high-magnitude channels and large in quiet ones).
    pub shifted_fraction: f32,
    pub shift: f32,
    /// Noise std relative to each channel's scale.
    pub noise: f32,
    /// Std of the log of the channel scales (0: every channel alike).
    pub scale_spread: f32,
    /// Overall feature magnitude. Standardized TTT4AS does not depend on it; raw features
    /// with a small C do (the FACTS.md trap needs small raw norms).
    pub magnitude: f32,
    pub seed: u64,
}

impl Default for CaseSpec {
    fn default() -> Self {
        Self {
            size: 224,
            maps: vec![(1536, 8)],
            defect: (120.0, 90.0, 22.0),
            shifted_fraction: 0.25,
            shift: 0.6,
            noise: 0.35,
            scale_spread: 0.5,
            magnitude: 0.3,
            seed: 1,
        }
    }
}

/// Builds the case; errors on a spec with a zero size or stride.
pub fn make_case(spec: &CaseSpec) -> Result<Case, StageError> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let n = spec.size;
    let (cy, cx, r) = spec.defect;
    let inside = |y: f32, x: f32| (y - cy).powi(2) + (x - cx).powi(2) <= r * r;
    let gt: Vec<u8> = (0..n * n).map(|p| u8::from(inside((p / n) as f32, (p % n) as f32))).collect();

    let mut features = Vec::new();
    for &(c, stride) in &spec.maps {
        if stride == 0 || stride > n {
            return Err(StageError::invalid_input(format!("synthetic case: stride {stride} for a {n} px image")));
        }
        let g = n / stride;
        // Channel magnitudes are heavy-tailed in real CNN features: log-normal scales.
        let scale: Vec<f32> = (0..c)
            .map(|_| ((0..4).map(|_| rng.gen::<f32>() - 0.5).sum::<f32>() * 1.7 * spec.scale_spread).exp())
            .collect();
        let mean: Vec<f32> = scale.iter().map(|s| s * (0.2 + 0.6 * rng.gen::<f32>())).collect();
        let shifted: Vec<bool> = (0..c).map(|_| rng.gen::<f32>() < spec.shifted_fraction).collect();
        let mut data = Vec::with_capacity(g * g * c);
        for cyi in 0..g {
            for cxi in 0..g {
                // Fraction of the cell's pixels inside the defect (4x4 sub-samples).
                let mut frac = 0.0;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let py = (cyi * stride) as f32 + (sy as f32 + 0.5) * stride as f32 / 4.0;
                        let px = (cxi * stride) as f32 + (sx as f32 + 0.5) * stride as f32 / 4.0;
                        frac += f32::from(u8::from(inside(py, px))) / 16.0;
                    }
                }
                for j in 0..c {
                    let noise: f32 = (0..3).map(|_| rng.gen::<f32>() - 0.5).sum::<f32>() * spec.noise * 2.0 * scale[j];
                    let shift = if shifted[j] { frac * spec.shift } else { 0.0 };
                    data.push(spec.magnitude * (mean[j] + noise + shift).max(0.0));
                }
            }
        }
        features.push(FeatureMap::new(c as u32, g as u32, g as u32, stride as f32, data)?);
    }

    // Score: cell-level noise at stride 8, upsampled, plus a bump over the defect, blurred.
    let g = n / 8;
    let cell_noise: Vec<f32> = (0..g * g).map(|_| 0.3 * rng.gen::<f32>()).collect();
    let mut score = upsample(&cell_noise, g, g, n, n);
    for (p, s) in score.iter_mut().enumerate() {
        let d2 = ((p / n) as f32 - cy).powi(2) + ((p % n) as f32 - cx).powi(2);
        *s += (-d2 / (2.0 * (r / 1.5).powi(2))).exp();
    }
    // The scorers' sigma-4 smoothing.
    let score = gaussian_blur(&score, n, n, 4.0).map_err(|e| StageError::internal(e.to_string()))?;
    Ok(Case { size: n, score, gt, features })
}

/// Pixel F1 of a predicted mask against a ground truth (0 when both are empty).
pub fn f1(pred: &[u8], gt: &[u8]) -> f64 {
    let tp = pred.iter().zip(gt).filter(|(&p, &g)| p == 1 && g == 1).count() as f64;
    let fp = pred.iter().zip(gt).filter(|(&p, &g)| p == 1 && g == 0).count() as f64;
    let fneg = pred.iter().zip(gt).filter(|(&p, &g)| p == 0 && g == 1).count() as f64;
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fneg)
    }
}
