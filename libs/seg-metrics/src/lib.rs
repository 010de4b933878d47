//! # anoflow-seg-metrics
//!
//! Exact, mergeable anomaly-segmentation metrics: a plain library (not a plugin) shared by the
//! `segmentation-metrics` sink (`anoflow-plugin-metrics`) and the `report` sink
//! (`anoflow-plugin-report`).
//!
//! - [`ranking`]: order-preserving score keys, the threshold sweep, AUROC, AUPRO, F1-max, PR
//!   curves.
//! - [`confusion`]: per-image confusion counts and the figures from them.
//! - [`accumulate`]: what a sink keeps per category while samples stream by, its binary file
//!   and the exact [`accumulate::merge`] of two of them.
//! - [`results`]: the figures ([`results::compute`]) and results.json / .csv / .md,
//!   samples.csv.
//!
//! Beside them, what both sinks do with the SDK's types: reading a sample's inputs
//! ([`sample_view`], [`ExpectedSources`]), writing the results ([`finish_outputs`],
//! [`merge_files`]), the headline figures, and `From<MetricsError> for StageError`.

pub mod accumulate;
pub mod confusion;
pub mod ranking;
pub mod results;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::path::Path;

use anoflow_sdk::prelude::*;

use accumulate::{Accumulators, MetricsError, SampleView};
use results::Results;

/// Name of the accumulator file next to the results.
pub const ACCUMULATORS_FILE: &str = "accumulators.bin";
/// Name of the per-sample table next to the results.
pub const SAMPLES_FILE: &str = "samples.csv";

impl From<MetricsError> for StageError {
    fn from(e: MetricsError) -> Self {
        match &e {
            MetricsError::Io { .. } => StageError::new(ErrorKind::Io, e.to_string()),
            MetricsError::Format { .. } => StageError::new(ErrorKind::Io, e.to_string()),
            // One input's value is unusable: the host blames the node that produced it.
            MetricsError::SizeMismatch { edge, .. } | MetricsError::NotFinite { edge, .. } => {
                StageError::bad_input(edge, e.to_string())
            }
            _ => StageError::invalid_input(e.to_string()),
        }
    }
}

/// The sources a sink expects on each multi-edge port (`node.port`, in pipeline order), from
/// the edges the host lists at creation. A sample that arrives without one (its producer
/// failed on it under `--keep-going`) counts as missing for that source, and a source that
/// fails on every sample still has its column. `None`: take the sources from the samples.
#[derive(Debug, Clone, Default)]
pub struct ExpectedSources {
    masks: Option<Vec<String>>,
    scores: Option<Vec<String>>,
    image_scores: Option<Vec<String>>,
}

impl ExpectedSources {
    pub fn from_context(ctx: &CreateContext) -> Self {
        // Labelled values (`node.port[label]`) are only known from the samples.
        let of = |port: &str| {
            let edges: Vec<&anoflow_sdk::abi::InputEdge> = ctx.edges(port).collect();
            (!edges.is_empty() && edges.iter().all(|e| !e.labelled))
                .then(|| edges.iter().map(|e| e.source.to_string()).collect())
        };
        Self { masks: of("masks"), scores: of("scores"), image_scores: of("image_scores") }
    }
}

/// The values on a multi-edge port, each read by `read`: the expected sources first (in
/// their order, `None` where the sample lacks one), then any other source the sample has.
fn listed<'a, T>(
    sample: &Sample<'a>,
    port: &str,
    expected: Option<&'a [String]>,
    read: impl Fn(&'a str, &'a Value) -> StageResult<T>,
) -> StageResult<Vec<(&'a str, Option<T>)>> {
    let mut out: Vec<(&'a str, Option<T>)> =
        expected.unwrap_or_default().iter().map(|name| (name.as_str(), None)).collect();
    for (source, v) in sample.all(port) {
        let value = read(source, v)?;
        match out.iter_mut().find(|(name, slot)| *name == source && slot.is_none()) {
            Some(slot) => slot.1 = Some(value),
            None => out.push((source, Some(value))),
        }
    }
    Ok(out)
}

/// Reads a sink's inputs (`gt`, `masks`, `scores`, `image_scores`) into a [`SampleView`].
pub fn sample_view<'a>(sample: &Sample<'a>, expected: &'a ExpectedSources) -> StageResult<SampleView<'a>> {
    let meta = sample.meta;
    let gt = sample.mask("gt")?;
    let wrong = |port: &str, source: &str, expected: &str, found: &Value| {
        StageError::bad_input(
            source,
            format!("sample `{}`: input `{port}` from `{source}` expected {expected}, found {}", meta.id, found.kind()),
        )
    };
    let masks = listed(sample, "masks", expected.masks.as_deref(), |source, v| match v {
        Value::Mask(m) => Ok((m.data(), m.height(), m.width())),
        other => Err(wrong("masks", source, "mask", other)),
    })?;
    let scores = listed(sample, "scores", expected.scores.as_deref(), |source, v| match v {
        Value::ScoreMap(m) => Ok((m.data(), m.height(), m.width())),
        other => Err(wrong("scores", source, "score-map", other)),
    })?;
    let image_scores = listed(sample, "image_scores", expected.image_scores.as_deref(), |source, v| match v {
        Value::Scalar(x) => Ok(*x),
        other => Err(wrong("image_scores", source, "scalar", other)),
    })?;
    let label = match meta.label {
        LABEL_ANOMALOUS => Some(true),
        LABEL_NOMINAL => Some(false),
        _ => None,
    };
    Ok(SampleView {
        id: meta.id.as_str(),
        index: meta.index,
        category: meta.category.as_str(),
        defect: meta.defect.as_str(),
        label,
        gt: (gt.data(), gt.height(), gt.width()),
        masks,
        scores,
        image_scores,
    })
}

/// Computes the figures and writes results.json / .csv / .md, samples.csv (and, if asked, the
/// accumulators) into `dir`. Used by the sink and by `anoflow merge`. Returns the results and
/// the names of the files written (relative to `dir`).
pub fn finish_outputs(
    acc: &mut Accumulators,
    dir: &Path,
    fpr_limit: f64,
    save_accumulators: bool,
) -> Result<(Results, Vec<String>), MetricsError> {
    let res = results::compute(acc, fpr_limit);
    let mut files = results::write_results(dir, &res)?;
    files.push(results::write(dir, SAMPLES_FILE, results::samples_csv(acc).as_bytes())?);
    if save_accumulators {
        acc.write(&dir.join(ACCUMULATORS_FILE))?;
        files.push(ACCUMULATORS_FILE.to_string());
    }
    Ok((res, files))
}

/// Merges accumulator files (e.g. the shards of one run) and writes the results into `dir`.
pub fn merge_files(inputs: &[&Path], dir: &Path, fpr_limit: f64) -> Result<(Results, Vec<String>), MetricsError> {
    let mut merged = Accumulators::new();
    for p in inputs {
        merged = accumulate::merge(merged, Accumulators::read(p)?)?;
    }
    finish_outputs(&mut merged, dir, fpr_limit, true)
}

/// The figures a sweep puts side by side (mean over categories): each mask source's pixel F1
/// and IoU on anomalous images (the paper's protocol) and F1 on all images; each score
/// source's pixel AUROC and AUPRO. Sorted by name, the order the sink's JSON gave them in.
pub fn headline(res: &Results) -> Vec<Headline> {
    let mut h = Vec::new();
    let mut put = |name: String, v: Option<f64>| {
        if let Some(value) = v {
            h.push(Headline { name: name.into(), value });
        }
    };
    for m in &res.mask_sources {
        put(format!("{m} F1"), res.get("mean", m, "f1", "anomalous", "pixels"));
        put(format!("{m} IoU"), res.get("mean", m, "iou", "anomalous", "pixels"));
        put(format!("{m} F1 (all images)"), res.get("mean", m, "f1", "all", "pixels"));
    }
    for s in &res.score_sources {
        put(format!("{s} pixel AUROC"), res.get("mean", s, "pixel_auroc", "all", "pixels"));
        put(format!("{s} AUPRO"), res.get("mean", s, "aupro", "all", "pixels"));
    }
    h.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    h
}

/// Files relative to the run directory: the sink's out_dir is `<run>/<node>`.
pub fn relative_files(
    out_dir: &Path,
    files: Vec<String>,
) -> abi_stable::std_types::RVec<abi_stable::std_types::RString> {
    let prefix = out_dir.file_name().map(|n| n.to_string_lossy().into_owned());
    files
        .into_iter()
        .map(|f| match &prefix {
            Some(p) => format!("{p}/{f}").into(),
            None => f.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
