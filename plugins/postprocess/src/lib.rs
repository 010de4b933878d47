//! Score-map post-processing: `gaussian-blur` (a map stage) and `normalize-scores` (fitted on
//! nominal validation maps: min-max, mean/std, or min to the median image maximum), so maps of
//! different scorers share a scale.

mod stages;

pub use stages::gaussian_blur::{GaussianBlur, GaussianBlurConfig};
pub use stages::normalize_scores::{Method, NormalizeScores, NormalizeScoresConfig};

/// Maximum of a map (the `image_score` both stages output).
fn max_of(data: &[f32]) -> f64 {
    f64::from(data.iter().copied().fold(f32::NEG_INFINITY, f32::max))
}

anoflow_sdk::export_plugin! { stages: [GaussianBlur, NormalizeScores] }
