//! `segmentation-metrics`: exact pixel and image metrics of masks and score maps, per category
//! and mean; mergeable across shards.

use std::{
    path::Path,
    sync::{Mutex, PoisonError},
};

use anoflow_sdk::prelude::*;

use anoflow_seg_metrics::{
    accumulate::{self, Accumulators},
    finish_outputs, headline, relative_files, results, sample_view, ExpectedSources,
};

/// The `segmentation-metrics` sink.
pub struct SegmentationMetrics;

/// Params of `segmentation-metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentationMetricsConfig {
    /// AUPRO integrates the PRO curve up to this false-positive rate.
    #[serde(default = "default_fpr_limit")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1))]
    pub fpr_limit: f64,
    /// Also write accumulators.bin (every pixel score, compact); the host keeps the same state
    /// as sink.state for `anoflow merge`.
    #[serde(default)]
    pub save_accumulators: bool,
}

fn default_fpr_limit() -> f64 {
    0.3
}

impl StagePlugin for SegmentationMetrics {
    type Config = SegmentationMetricsConfig;
    type Stage = Box<dyn Sink>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "segmentation-metrics",
            "exact pixel/image metrics of masks (deployable) and score maps (oracle), per category and mean; \
             mergeable across shards",
        )
        .input("gt", ValueKind::Mask, "ground-truth mask (all zeros for good samples)")
        .optional_multi_input("masks", ValueKind::Mask, "binary masks to evaluate, one edge per method")
        .optional_multi_input("scores", ValueKind::ScoreMap, "anomaly score maps (same size as gt)")
        .optional_multi_input(
            "image_scores",
            ValueKind::Scalar,
            "image-level scores; paired with the score map of the same node, else reported alone \
             (score maps without one use their maximum)",
        )
    }

    fn create(config: SegmentationMetricsConfig, ctx: &CreateContext) -> StageResult<Box<dyn Sink>> {
        Ok(Box::new(MetricsSink {
            acc: Mutex::new(Accumulators::new()),
            fpr_limit: config.fpr_limit,
            save_accumulators: config.save_accumulators,
            expected: ExpectedSources::from_context(ctx),
        }))
    }
}

struct MetricsSink {
    /// Behind a lock only so that `save_state` (which takes `&self`) can sort the score
    /// lists in place: `finish` then finds them sorted, and nothing is copied.
    acc: Mutex<Accumulators>,
    fpr_limit: f64,
    save_accumulators: bool,
    expected: ExpectedSources,
}

impl MetricsSink {
    fn acc(&mut self) -> &mut Accumulators {
        self.acc.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink for MetricsSink {
    fn consume(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let view = sample_view(sample, &self.expected)?;
        Ok(self.acc.get_mut().unwrap_or_else(PoisonError::into_inner).add(&view)?)
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        Ok(self.acc.lock().unwrap_or_else(PoisonError::into_inner).to_bytes()?)
    }

    fn merge_state(&mut self, state: &[u8]) -> StageResult<()> {
        let other = Accumulators::from_bytes(state, "merged state")?;
        let acc = self.acc();
        *acc = accumulate::merge(std::mem::take(acc), other)?;
        Ok(())
    }

    fn finish(&mut self, ctx: &FinishContext) -> StageResult<SinkReport> {
        let dir = Path::new(ctx.out_dir.as_str());
        let (fpr_limit, save) = (self.fpr_limit, self.save_accumulators);
        let (res, files) = finish_outputs(self.acc(), dir, fpr_limit, save)
            .map_err(|e| StageError::from(e).context(format!("node `{}`", ctx.node_id)))?;
        let json = serde_json::to_string(&res).map_err(|e| StageError::internal(e.to_string()))?;
        Ok(SinkReport {
            markdown: results::markdown(&res).into(),
            json: json.into(),
            files: relative_files(dir, files),
            headline: headline(&res).into(),
        })
    }
}
