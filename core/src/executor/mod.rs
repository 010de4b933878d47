//! Runs a checked pipeline.
//!
//! Phases are derived from the graph: fitted nodes are grouped into fit passes (same split,
//! same scope, none upstream of another); each pass streams its split once through the nodes
//! its members depend on, every member observes it, then each fits; then the test split streams
//! through every node, and sinks consume it in sample order. Samples move in chunks of
//! bounded size (`in_flight`), computed node by node with rayon across samples, so memory
//! does not grow with the number of samples.
//!
//! The modules: `plan` (fit passes, demand, when outputs are released), `instances` (the
//! stage instances of each node), `cache` (content addresses, the cache envelope), `chunk`
//! (computing a chunk of samples), `fit`, `calibrate`, `sinks` (the test phase and the
//! sinks), `merge` (shards), `export` (bundles); the phases run in order here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Mutex, OnceLock},
    time::Instant,
};

use anoflow_sdk::{
    abi::StageBox,
    descriptor::StageKind,
    error::StageError,
    value::{PortValue, SampleInput, SampleMeta},
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{check::CheckedPipeline, fsutil::write_atomic, provenance};

mod cache;
mod calibrate;
mod categories;
mod chunk;
mod export;
mod fit;
mod instances;
mod merge;
mod phases;
mod plan;
mod sinks;
pub use cache::SINK_STATE_FILE;
pub use calibrate::{markdown as calibration_markdown, CalibrationReport};
pub use categories::default_in_flight as default_categories_in_flight;
pub use export::{fit_for_export, CategoryInstance, FittedPipeline, NodeState, Prediction, Predictor};
pub use instances::test_categories;
pub use merge::merge;
pub use phases::{summary_line as phases_summary_line, PhaseStats};

use chunk::Slot;
use instances::{create_stage, create_stage_with, Instances};
use plan::{fit_passes, Retain};

/// far is complete (all writes are atomic) and the report says where the run stopped.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory (created if missing).
    pub out_dir: PathBuf,
    pub threads: usize,
    /// Skip failing samples (and report them) instead of stopping at the first failure.
    pub keep_going: bool,
    /// Process only this task's share of the run (its categories, or test samples by index).
    pub shard: Option<crate::shard::Shard>,
    /// Samples in flight at once (per category in flight).
    pub in_flight: usize,
    /// Categories fitted at once by nodes fitted per category, each holding its own fit state
    /// (1: one after the other); [`default_categories_in_flight`] when the user does not say.
    pub categories_in_flight: usize,
    /// Where fitted states are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    pub progress: bool,
}

/// A failure inside the run, naming where it happened.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{phase}: {}{}: {message}", if node.is_empty() { "run".to_string() } else { format!("node `{node}` (stage `{stage}`)") }, sample.as_ref().map(|s| format!(", sample `{s}`")).unwrap_or_default())]
pub struct RunError {
    pub phase: String,
    pub node: String,
    pub stage: String,
    pub sample: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStats {
    pub id: String,
    pub stage: String,
    pub library: String,
    pub library_version: String,
    pub kind: String,
    /// Samples processed (or consumed) successfully, all phases.
    pub samples: u64,
    pub errors: u64,
    /// Time spent inside the stage (processing, observing and finishing a fit, consuming,
    /// finishing a sink), summed over worker threads.
    pub busy_seconds: f64,
    /// Samples whose outputs came from the node-output cache.
    pub cached: u64,
    /// Time spent writing the node's fresh outputs to the node-output cache (encoding, digest,
    /// file), summed over worker threads; part of the phases' busy time, not of `busy_seconds`.
    #[serde(default)]
    pub cache_seconds: f64,
    pub fit_seconds: Option<f64>,
    /// `fitted`, `loaded from cache`, or absent.
    pub fit_state: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkResult {
    pub node: String,
    pub markdown: String,
    pub json: serde_json::Value,
    pub files: Vec<String>,
    /// The sink's headline figures, name to number (`SinkReport::headline`).
    #[serde(default)]
    pub headline: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub run_dir: PathBuf,
    pub seconds: f64,
    pub test_samples: usize,
    pub shard: Option<String>,
    /// The categories a task split by category ran (fits, calibration and test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_categories: Option<Vec<String>>,
    pub nodes: Vec<NodeStats>,
    /// Wall time and utilization of each phase (`fit`, `calibrate`, `test`, `finish`).
    pub phases: Vec<PhaseStats>,
    pub failures: Vec<RunError>,
    pub sinks: Vec<SinkResult>,
    /// What the `calibrate:` phase chose per category, when the pipeline has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
}

struct Runner<'a> {
    p: &'a CheckedPipeline,
    opts: &'a RunOptions,
    /// Per node, the stage instances serving its samples.
    instances: Vec<Instances>,
    stats: Vec<Mutex<NodeStats>>,
    failures: Mutex<Vec<RunError>>,
    /// Content address of each fitted node's state, once fitted (part of its signature).
    fit_keys: Vec<Option<String>>,
    /// Each node's content fingerprint (library file, files its params name), computed once.
    content: Vec<OnceLock<String>>,
}

/// Runs `p`; the run directory gets each sink's outputs and `run.json`.
pub fn run(p: &CheckedPipeline, opts: &RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let setup_err = |message: String| RunError {
        phase: "setup".into(),
        node: String::new(),
        stage: String::new(),
        sample: None,
        message,
    };
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| setup_err(format!("cannot create the run directory {}: {e}", opts.out_dir.display())))?;

    let mut runner = Runner::new(p, opts, instances::create_all(p, opts)?);
    let mut phases = Vec::new();

    let passes = fit_passes(p);
    if !passes.is_empty() {
        let clock = runner.phase_clock("fit");
        for pass in passes {
            runner.fit(&pass)?;
        }
        phases.push(runner.phase_stop(clock));
    }
    let calibration = match &p.calibration {
        Some(plan) => {
            let clock = runner.phase_clock("calibrate");
            let report = runner.calibrate(plan)?;
            phases.push(runner.phase_stop(clock));
            let path = opts.out_dir.join("calibration.md");
            write_atomic(&path, calibrate::markdown(&report, true).as_bytes())
                .map_err(|e| setup_err(format!("cannot write {}: {e}", path.display())))?;
            Some(report)
        }
        None => None,
    };
    let clock = runner.phase_clock("test");
    let test_samples = runner.test()?;
    phases.push(runner.phase_stop(clock));
    let clock = runner.phase_clock("finish");
    runner.save_sink_states()?;
    let sinks = runner.finish_sinks()?;
    phases.push(runner.phase_stop(clock));

    let summary = RunSummary {
        pipeline: p.spec.name.clone(),
        run_dir: opts.out_dir.clone(),
        seconds: started.elapsed().as_secs_f64(),
        test_samples,
        shard: opts.shard.as_ref().map(crate::shard::Shard::label),
        shard_categories: opts.shard.as_ref().and_then(|s| s.categories.as_ref()).map(|c| c.iter().cloned().collect()),
        nodes: runner.stats.iter().map(|s| s.lock().map(|s| s.clone()).unwrap_or_default()).collect(),
        phases,
        failures: runner.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        sinks,
        calibration,
    };
    Ok(summary)
}
/// Where the progress bars of work side by side (categories fitted at once) go.
fn progress_bars(opts: &RunOptions) -> MultiProgress {
    MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    })
}

fn progress_bar(opts: &RunOptions, len: usize, prefix: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len as u64),
        if opts.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    if let Ok(style) = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

impl<'a> Runner<'a> {
    fn new(p: &'a CheckedPipeline, opts: &'a RunOptions, instances: Vec<Instances>) -> Self {
        let stats = p
            .nodes
            .iter()
            .map(|node| {
                Mutex::new(NodeStats {
                    id: node.id.clone(),
                    stage: node.plugin().to_string(),
                    library: node.stage.library.name.clone(),
                    library_version: node.stage.library.version.clone(),
                    kind: node.kind().name().to_string(),
                    ..Default::default()
                })
            })
            .collect();
        Runner {
            p,
            opts,
            instances,
            stats,
            failures: Mutex::new(Vec::new()),
            fit_keys: vec![None; p.nodes.len()],
            content: p.nodes.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    fn err(&self, phase: &str, node: usize, sample: Option<&SampleMeta>, message: impl Into<String>) -> RunError {
        node_error(self.p, phase, node, sample, message)
    }

    fn with_stats(&self, node: usize, f: impl FnOnce(&mut NodeStats)) {
        if let Ok(mut s) = self.stats[node].lock() {
            f(&mut s);
        }
    }

    /// Every node's `busy_seconds` and `cache_seconds` so far, summed: work the workers did.
    fn busy_total(&self) -> f64 {
        self.stats.iter().filter_map(|s| s.lock().ok().map(|s| s.busy_seconds + s.cache_seconds)).sum()
    }

    fn phase_clock(&self, name: &'static str) -> phases::PhaseClock {
        phases::PhaseClock::start(name, self.busy_total())
    }

    fn phase_stop(&self, clock: phases::PhaseClock) -> PhaseStats {
        clock.stop(self.busy_total(), self.opts.threads)
    }

    /// The samples of `split` in this task's categories (every one unless split by category).
    fn list(&self, split: &str) -> Result<Vec<SampleMeta>, RunError> {
        let mut metas = self.list_all(split)?;
        if let Some(shard) = &self.opts.shard {
            metas.retain(|m| shard.owns_category(m));
        }
        Ok(metas)
    }

    /// Every sample of `split`, numbered in the source's order.
    fn list_all(&self, split: &str) -> Result<Vec<SampleMeta>, RunError> {
        let src = self.p.source;
        let mut metas = self
            .single(src)?
            .list(split.into())
            .into_result()
            .map_err(|e| self.err(&format!("list {split}"), src, None, e.to_string()))?
            .into_vec();
        for (i, m) in metas.iter_mut().enumerate() {
            m.index = i as u64;
        }
        Ok(metas)
    }

    /// The one instance of a node that serves every sample (a source, a sink).
    fn single(&self, n: usize) -> Result<&StageBox, RunError> {
        self.instances[n].single().ok_or_else(|| self.err("run", n, None, "the node has one instance per category"))
    }

    fn single_mut(&mut self, n: usize) -> Result<&mut StageBox, RunError> {
        let err = self.err("run", n, None, "the node has one instance per category");
        self.instances[n].single_mut().ok_or(err)
    }
}

/// An error of node `node`. Stages name their node and sample themselves (they also run
/// outside a host, in harnesses and benches); the error's own prefix says both already, so
/// that echo is dropped from the message.
fn node_error(
    p: &CheckedPipeline,
    phase: &str,
    node: usize,
    sample: Option<&SampleMeta>,
    message: impl Into<String>,
) -> RunError {
    let id = &p.nodes[node].id;
    let mut message = message.into();
    let echoes = [sample.map(|m| format!("node `{id}`, sample `{}`: ", m.id)), Some(format!("node `{id}`: "))];
    if let Some(rest) = echoes.iter().flatten().find_map(|echo| message.strip_prefix(echo.as_str())) {
        message = rest.to_string();
    }
    RunError {
        phase: phase.to_string(),
        node: id.clone(),
        stage: p.nodes[node].plugin().to_string(),
        sample: sample.map(|m| m.id.to_string()),
        message,
    }
}

/// The default run directory: `runs/<pipeline>/<UTC timestamp>`.
pub fn default_run_dir(root: &Path, pipeline: &str) -> PathBuf {
    root.join("runs").join(pipeline).join(crate::fsutil::utc_timestamp())
}
