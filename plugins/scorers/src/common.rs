//! What the three scorers share: reading checked feature maps, collecting fit rows, and
//! turning per-patch scores into image-resolution score maps.

use anoflow_sdk::prelude::*;

use anoflow_imaging::scoremap::cells_to_image_map;

/// The feature map on port `features`, refused if it holds NaN or infinity.
pub fn checked_features<'a>(sample: &Sample<'a>, node: &str) -> StageResult<&'a FeatureMap> {
    let fm = sample.feature_map("features")?;
    if let Some(i) = fm.data().iter().position(|v| !v.is_finite()) {
        let c = fm.channels();
        let (cell, ch) = (i / c, i % c);
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: feature map holds {} at cell (y {}, x {}), channel {ch}",
            sample.meta.id,
            fm.data()[i],
            cell / fm.width(),
            cell % fm.width()
        )));
    }
    Ok(fm)
}

/// Refuses a feature map whose channel count differs from the fitted one.
pub fn check_dim(node: &str, sample: &Sample<'_>, fitted: usize, found: usize) -> StageResult<()> {
    if fitted != found {
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: feature map has {found} channels but the scorer was fitted on {fitted}",
            sample.meta.id
        )));
    }
    Ok(())
}

/// What the fit split looked like so far: how many samples, all of one channel count.
#[derive(Default)]
pub struct FitShape {
    pub dim: usize,
    pub samples: usize,
    first_sample: String,
}

impl FitShape {
    /// The sample's checked feature map, counted; refused if its channel count differs from
    /// the first fit sample's.
    pub fn accept<'a>(&mut self, node: &str, sample: &Sample<'a>) -> StageResult<&'a FeatureMap> {
        let fm = checked_features(sample, node)?;
        if self.samples == 0 {
            self.dim = fm.channels();
            self.first_sample = sample.meta.id.to_string();
        } else if fm.channels() != self.dim {
            return Err(StageError::invalid_input(format!(
                "node `{node}`, sample `{}`: feature map has {} channels but fit sample `{}` had {}",
                sample.meta.id,
                fm.channels(),
                self.first_sample,
                self.dim
            )));
        }
        self.samples += 1;
        Ok(fm)
    }

    /// Refuses an empty fit split.
    pub fn require_some(&self, node: &str) -> StageResult<()> {
        if self.samples == 0 {
            return Err(StageError::invalid_input(format!(
                "node `{node}`: the fit split delivered no samples; nothing to fit on"
            )));
        }
        Ok(())
    }
}

/// Patch rows gathered over the fit split, all of one dimension.
#[derive(Default)]
pub struct FitRows {
    pub rows: Vec<f32>,
    pub shape: FitShape,
}

impl FitRows {
    pub fn observe(&mut self, node: &str, sample: &Sample<'_>) -> StageResult<()> {
        let fm = self.shape.accept(node, sample)?;
        self.rows.extend_from_slice(fm.data());
        Ok(())
    }
}

/// How a per-patch score grid becomes an image-resolution map.
#[derive(Clone, Copy, Debug)]
pub struct MapShaping {
    pub sigma: f32,
}

impl MapShaping {
    /// From a config's `sigma` (its schema keeps it in [0, 1000]).
    pub fn new(sigma: f64) -> Self {
        Self { sigma: sigma as f32 }
    }

    /// A scorer's outputs: `score`, the cell `scores` (`fm.height() x fm.width()`) upsampled to
    /// the image size, then blurred, and `image_score`. The image size is that of the optional
    /// `like` input, else the feature size times its stride.
    pub fn outputs(
        &self,
        sample: &Sample<'_>,
        fm: &FeatureMap,
        scores: &[f32],
        image_score: f32,
    ) -> StageResult<Outputs> {
        let map = cells_to_image_map(scores, fm, sample.maybe("like"), self.sigma, &sample.meta.id)?;
        Ok(Outputs::new().with("score", map).with("image_score", f64::from(image_score)))
    }

    /// [`Self::outputs`] with the largest cell score (0 at least) as the image score.
    pub fn outputs_max(&self, sample: &Sample<'_>, fm: &FeatureMap, scores: &[f32]) -> StageResult<Outputs> {
        let image_score = scores.iter().copied().fold(0.0f32, f32::max);
        self.outputs(sample, fm, scores, image_score)
    }
}

/// The fitted model, or an internal error naming the node (`what` says what went wrong).
pub fn fitted<'a, T>(model: &'a Option<T>, node: &str, what: &str) -> StageResult<&'a T> {
    model.as_ref().ok_or_else(|| StageError::internal(format!("node `{node}`: {what}")))
}

/// The default of every scorer's `sigma` param.
pub fn default_sigma() -> f64 {
    4.0
}

/// The descriptor parts every scorer shares: its ports (each config declares `sigma`).
pub fn scorer_ports(desc: StageDescriptor) -> StageDescriptor {
    desc.input("features", ValueKind::FeatureMap, "patch features, channels-last (one row per cell)")
        .optional_input("like", ValueKind::Any, "any spatial value whose size the score map takes (e.g. the image)")
        .output("score", ValueKind::ScoreMap, "anomaly score map at image resolution")
        .output("image_score", ValueKind::Scalar, "image-level anomaly score")
}
