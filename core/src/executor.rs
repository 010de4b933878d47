//! Runs a checked pipeline.
//!
//! Phases are derived from the graph: fitted nodes are grouped into fit passes (same split,
//! same scope, none upstream of another); each pass streams its split once through the nodes
//! its members depend on, every member observes it, then each fits; then the test split streams
//! through every node, and sinks consume it in sample order. Samples move in chunks of
//! bounded size (`in_flight`), computed node by node with rayon across samples, so memory
//! does not grow with the number of samples.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use abi_stable::std_types::{RResult, RString, RVec};
use anoflow_sdk::{
    abi::{CreateContext, FinishContext, InputEdge, SinkReport, StageBox},
    codec,
    descriptor::StageKind,
    error::StageError,
    value::{PortValue, SampleInput, SampleMeta},
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{check::CheckedPipeline, fsutil::write_atomic, provenance};

mod calibrate;
mod categories;
mod export;
mod phases;
pub use calibrate::{markdown as calibration_markdown, CalibrationReport};
pub use categories::default_in_flight as default_categories_in_flight;
pub use export::{fit_for_export, CategoryInstance, FittedPipeline, NodeState, Prediction, Predictor};
pub use phases::{summary_line as phases_summary_line, PhaseStats};

/// Set by the Ctrl-C handler; the executor stops between chunks, so every file written so
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
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{phase}: {}{}: {message}", if node.is_empty() { "run".to_string() } else { format!("node `{node}` (stage `{stage}`)") }, sample.as_ref().map(|s| format!(", sample `{s}`")).unwrap_or_default())]
pub struct RunError {
    pub phase: String,
    pub node: String,
    pub stage: String,
    pub sample: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
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
    pub fit_seconds: Option<f64>,
    /// `fitted`, `loaded from cache`, or absent.
    pub fit_state: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkResult {
    pub node: String,
    pub markdown: String,
    pub json: serde_json::Value,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
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

/// The stage instance a group of samples goes to, and the samples (index in chunk, input).
type Route<'a> = (Option<&'a StageBox>, Vec<(usize, SampleInput)>);
/// Chunk indices of a batch, the stage's per-sample results, and the time it took.
type BatchResult = (Vec<usize>, Vec<RResult<RVec<PortValue>, StageError>>, Duration);

/// Which outputs [`Runner::compute_retaining`] leaves in a chunk once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retain {
    /// Only those the consumers read: nothing else reads the chunk afterwards (fit, test).
    ConsumerInputs,
    /// Also those any node outside the computed ones reads.
    OutsideReads,
}

struct Slot {
    meta: SampleMeta,
    outputs: Vec<Vec<PortValue>>,
    /// The sample is dropped for every node (a failure outside the test phase).
    failed: bool,
    /// Test phase: a failure drops only the failing node's branch of the sample (see
    /// `lost`), so sinks still get the values of the other branches.
    isolated: bool,
    /// Per node: no output for this sample, as the node or one of its inputs failed on it
    /// (the failure is recorded once, where it happened).
    lost: Vec<bool>,
    /// More identity for the node-output cache than the sample's own: what made the image of
    /// a calibration sample (the defects node's signature). Empty for every other sample.
    cache_tag: String,
}

struct Runner<'a> {
    p: &'a CheckedPipeline,
    opts: &'a RunOptions,
    stages: Vec<StageBox>,
    stats: Vec<Mutex<NodeStats>>,
    failures: Mutex<Vec<RunError>>,
    /// Content address of each fitted node's state, once fitted (part of its signature).
    fit_keys: Vec<Option<String>>,
    /// Fitted nodes with `fit_scope: category`: one fitted instance per category.
    per_category: Vec<BTreeMap<String, StageBox>>,
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

    let stages = (0..p.nodes.len()).map(|n| create_stage(p, n, opts)).collect::<Result<Vec<_>, _>>()?;
    let mut runner = Runner::new(p, opts, stages);
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
    fn new(p: &'a CheckedPipeline, opts: &'a RunOptions, stages: Vec<StageBox>) -> Self {
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
            stages,
            stats,
            failures: Mutex::new(Vec::new()),
            fit_keys: vec![None; p.nodes.len()],
            per_category: p.nodes.iter().map(|_| BTreeMap::new()).collect(),
            content: p.nodes.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    fn err(&self, phase: &str, node: usize, sample: Option<&SampleMeta>, message: impl Into<String>) -> RunError {
        let id = &self.p.nodes[node].id;
        let mut message = message.into();
        // Stages name their node and sample themselves (they also run outside a host, in
        // harnesses and benches); the error's own prefix says both already.
        let echoes = [sample.map(|m| format!("node `{id}`, sample `{}`: ", m.id)), Some(format!("node `{id}`: "))];
        if let Some(rest) = echoes.iter().flatten().find_map(|echo| message.strip_prefix(echo.as_str())) {
            message = rest.to_string();
        }
        RunError {
            phase: phase.to_string(),
            node: id.clone(),
            stage: self.p.nodes[node].plugin().to_string(),
            sample: sample.map(|m| m.id.to_string()),
            message,
        }
    }

    fn with_stats(&self, node: usize, f: impl FnOnce(&mut NodeStats)) {
        if let Ok(mut s) = self.stats[node].lock() {
            f(&mut s);
        }
    }

    /// Every node's `busy_seconds` so far, summed.
    fn busy_total(&self) -> f64 {
        self.stats.iter().filter_map(|s| s.lock().ok().map(|s| s.busy_seconds)).sum()
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
        let mut metas = self.stages[src]
            .list(split.into())
            .into_result()
            .map_err(|e| self.err(&format!("list {split}"), src, None, e.to_string()))?
            .into_vec();
        for (i, m) in metas.iter_mut().enumerate() {
            m.index = i as u64;
        }
        Ok(metas)
    }

    /// A sample failed at `node`: stop the run, or record it and drop the sample (in the
    /// test phase: drop the node's branch of it).
    fn sample_failed(&self, phase: &str, node: usize, slot: &mut Slot, message: String) -> Result<(), RunError> {
        self.record_failure(phase, node, &slot.meta, message)?;
        if slot.isolated {
            slot.lost[node] = true;
        } else {
            slot.failed = true;
        }
        Ok(())
    }

    /// Counts a failure of `node` on a sample: stops the run, or (`--keep-going`) lists it.
    fn record_failure(&self, phase: &str, node: usize, meta: &SampleMeta, message: String) -> Result<(), RunError> {
        let e = self.err(phase, node, Some(meta), message);
        self.with_stats(node, |s| s.errors += 1);
        if !self.opts.keep_going {
            return Err(e);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.push(e);
        }
        Ok(())
    }

    /// The values on `node`'s inputs for one sample, named by their edges.
    fn gather(&self, node: usize, slot: &Slot) -> Result<Vec<PortValue>, String> {
        let mut inputs = Vec::new();
        for e in &self.p.nodes[node].inputs {
            let values = self.edge_values(e, slot);
            if values.is_empty() {
                let from = &self.p.nodes[e.from].id;
                return Err(format!("input `{}` got no value: node `{from}` produced no `{}`", e.to_port, e.from_port));
            }
            inputs.extend(values);
        }
        Ok(inputs)
    }

    /// The values one edge carries for a sample, named `node.port` (`node.port[label]` for
    /// the labelled values of a multi-value output).
    fn edge_values(&self, e: &crate::check::Edge, slot: &Slot) -> Vec<PortValue> {
        let from = &self.p.nodes[e.from].id;
        slot.outputs[e.from]
            .iter()
            .filter(|pv| pv.port == e.from_port.as_str())
            .map(|pv| {
                let source = if pv.source.is_empty() {
                    format!("{from}.{}", e.from_port)
                } else {
                    format!("{from}.{}[{}]", e.from_port, pv.source)
                };
                PortValue { port: e.to_port.as_str().into(), source: source.into(), value: pv.value.clone() }
            })
            .collect()
    }

    /// Checks a stage's outputs against its descriptor, without the sample's inputs (so
    /// without the declared size relations).
    fn check_outputs(&self, node: usize, outs: &[PortValue]) -> Result<(), String> {
        self.check_outputs_for(node, &[], outs)
    }

    /// The SDK's output checks, the same the test harness runs.
    fn check_outputs_for(&self, node: usize, inputs: &[PortValue], outs: &[PortValue]) -> Result<(), String> {
        anoflow_sdk::checks::check_outputs(&self.p.nodes[node].stage.descriptor, inputs, outs)
    }

    /// Batch size for a node: its `batch_size` param if it has one, else 1.
    fn batch_size(&self, node: usize) -> usize {
        self.p.nodes[node].params.get("batch_size").and_then(serde_json::Value::as_u64).map_or(1, |b| b.max(1) as usize)
    }

    /// Samples per chunk of one category's fit while `workers` categories are fitted at once:
    /// `--in-flight` shared among them, so that the samples in flight stay bounded by it (a
    /// chunk's feature maps are what a fit holds most of). The share is cut to a multiple of
    /// every batch size of `nodes`, so each batch holds the samples it holds when categories
    /// are fitted one at a time; where that cannot be (a share below a batch, or `--in-flight`
    /// not a multiple of the batch sizes), each category takes the whole `--in-flight`.
    fn category_chunk(&self, nodes: &[usize], workers: usize) -> usize {
        in_flight_share(self.opts.in_flight, workers, nodes.iter().map(|&n| self.batch_size(n)))
    }

    /// [`Self::compute_retaining`], leaving every output that a node outside `nodes` reads: for
    /// callers that compute more of the chunk afterwards (calibration, below the value its
    /// defects replace).
    fn compute(&self, phase: &str, nodes: &[usize], consumers: &[usize], chunk: &mut [Slot]) -> Result<(), RunError> {
        self.compute_retaining(phase, nodes, consumers, Retain::OutsideReads, chunk)
    }

    /// Computes what `consumers` (sinks, or the fitted node being fitted) need from `nodes`
    /// (topological order, consumers excluded) for every live sample of a chunk. A node whose
    /// outputs are in the cache for a sample is loaded instead of run, and then nothing
    /// upstream of it runs for that sample unless another node needs it. A node's outputs are
    /// dropped once the last node of `nodes` reading them has run, unless `retain` keeps them.
    fn compute_retaining(
        &self,
        phase: &str,
        nodes: &[usize],
        consumers: &[usize],
        retain: Retain,
        chunk: &mut [Slot],
    ) -> Result<(), RunError> {
        let n_nodes = self.p.nodes.len();
        let keys: Vec<Vec<Option<PathBuf>>> = match &self.opts.cache_dir {
            Some(dir) => {
                let samples: Vec<Vec<u8>> = chunk
                    .par_iter()
                    .map(|slot| {
                        let mut key = sample_key(&slot.meta);
                        if !slot.cache_tag.is_empty() {
                            key.push(0);
                            key.extend_from_slice(slot.cache_tag.as_bytes());
                        }
                        key
                    })
                    .collect();
                (0..n_nodes)
                    .map(|n| {
                        if !(nodes.contains(&n) && self.p.nodes[n].cache) {
                            return vec![None; chunk.len()];
                        }
                        let node = Sha256::digest(self.signature(n).as_bytes());
                        samples.iter().map(|sample| Some(output_cache_path(dir, &node, sample))).collect()
                    })
                    .collect()
            }
            None => vec![vec![None; chunk.len()]; n_nodes],
        };
        // Demand flows from the consumers up, stopping at cache entries that load.
        let mut demanded = vec![vec![false; chunk.len()]; n_nodes];
        let mut preloaded: Vec<Vec<Option<Vec<PortValue>>>> = vec![vec![None; chunk.len()]; n_nodes];
        for &c in consumers {
            demanded[c].iter_mut().for_each(|d| *d = true);
        }
        for n in (0..n_nodes).rev() {
            for s in 0..chunk.len() {
                if !demanded[n][s] || chunk[s].failed {
                    continue;
                }
                if !consumers.contains(&n) {
                    if !nodes.contains(&n) {
                        continue;
                    }
                    if let Some(values) =
                        keys[n][s].as_ref().filter(|p| p.is_file()).and_then(|p| read_cached_outputs(p))
                    {
                        preloaded[n][s] = Some(values);
                        continue;
                    }
                }
                for e in &self.p.nodes[n].inputs {
                    demanded[e.from][s] = true;
                }
            }
        }

        let edges =
            self.p.nodes.iter().enumerate().flat_map(|(to, node)| node.inputs.iter().map(move |e| (e.from, to)));
        let release = release_points(n_nodes, edges, nodes, consumers, retain);
        for (step, &n) in nodes.iter().enumerate() {
            let mut work: Vec<(usize, SampleInput)> = Vec::new();
            let mut loaded = 0u64;
            for i in 0..chunk.len() {
                if chunk[i].failed || !demanded[n][i] {
                    continue;
                }
                if let Some(values) = preloaded[n][i].take() {
                    chunk[i].outputs[n] = values;
                    loaded += 1;
                    continue;
                }
                if self.p.nodes[n].inputs.iter().any(|e| chunk[i].lost[e.from]) {
                    // An input failed on this sample (recorded there): the branch ends here.
                    chunk[i].lost[n] = true;
                    continue;
                }
                let slot = &mut chunk[i];
                match self.gather(n, slot) {
                    Ok(inputs) => work.push((i, SampleInput { meta: slot.meta.clone(), inputs: inputs.into() })),
                    Err(msg) => self.sample_failed(phase, n, slot, msg)?,
                }
            }
            let batch = self.batch_size(n);
            // Route each sample to its stage instance (one per category for nodes fitted per
            // category), then batch within each instance.
            let mut routed: BTreeMap<String, Route<'_>> = BTreeMap::new();
            for (i, input) in work {
                let category =
                    if self.per_category[n].is_empty() { String::new() } else { input.meta.category.to_string() };
                let entry = routed.entry(category.clone()).or_insert_with(|| {
                    let stage =
                        if category.is_empty() { Some(&self.stages[n]) } else { self.per_category[n].get(&category) };
                    (stage, Vec::new())
                });
                entry.1.push((i, input));
            }
            let mut tasks: Vec<(&StageBox, &[(usize, SampleInput)])> = Vec::new();
            for (category, (stage, items)) in &routed {
                match stage {
                    Some(stage) => tasks.extend(items.chunks(batch).map(|c| (*stage, c))),
                    None => {
                        let known: Vec<&str> = self.per_category[n].keys().map(String::as_str).collect();
                        let message = format!(
                            "no model of this node was fitted for category `{category}` (the fit split has: {})",
                            known.join(", ")
                        );
                        for (i, _) in items {
                            self.sample_failed(phase, n, &mut chunk[*i], message.clone())?;
                        }
                    }
                }
            }
            let (fresh, busy) = self.run_batches(phase, n, &tasks, chunk)?;
            let ok = fresh.len() as u64;
            drop(tasks);
            drop(routed);
            // Cache writes run in parallel; a failed write only costs a recomputation later.
            fresh.par_iter().for_each(|&i| {
                if let (Some(path), Ok(bytes)) = (&keys[n][i], codec::encode(&chunk[i].outputs[n])) {
                    let _ = write_atomic(path, &encode_state(&bytes));
                }
            });
            self.with_stats(n, |s| {
                s.samples += ok;
                s.cached += loaded;
                s.busy_seconds += busy.as_secs_f64();
            });
            for &done in &release[step] {
                chunk.iter_mut().for_each(|slot| drop(std::mem::take(&mut slot.outputs[done])));
            }
        }
        Ok(())
    }

    /// Runs batches (a stage instance and its samples, by index into `slots`) in parallel and
    /// stores each checked output in its slot; a failing sample goes through `sample_failed`.
    /// Returns the slots that got outputs and the time spent inside the stages.
    fn run_batches(
        &self,
        phase: &str,
        n: usize,
        tasks: &[(&StageBox, &[(usize, SampleInput)])],
        slots: &mut [Slot],
    ) -> Result<(Vec<usize>, Duration), RunError> {
        let results: Vec<BatchResult> = tasks
            .par_iter()
            .map(|(stage, group)| {
                let idx: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
                let input: RVec<SampleInput> = group.iter().map(|(_, s)| s.clone()).collect();
                let t = Instant::now();
                let out = stage.process(input).into_vec();
                (idx, out, t.elapsed())
            })
            .collect();
        let mut busy = Duration::ZERO;
        let mut fresh = Vec::new();
        for ((_, group), (idx, outs, dt)) in tasks.iter().zip(results) {
            busy += dt;
            if outs.len() != idx.len() {
                return Err(self.err(
                    phase,
                    n,
                    None,
                    format!("the stage returned {} results for {} samples", outs.len(), idx.len()),
                ));
            }
            for ((i, out), (_, input)) in idx.into_iter().zip(outs).zip(group.iter()) {
                let slot = &mut slots[i];
                match out.into_result() {
                    Ok(values) => match self.check_outputs_for(n, &input.inputs, &values) {
                        Ok(()) => {
                            slot.outputs[n] = values.into_vec();
                            fresh.push(i);
                        }
                        Err(msg) => self.sample_failed(phase, n, slot, msg)?,
                    },
                    Err(e) => self.sample_failed(phase, n, slot, e.to_string())?,
                }
            }
        }
        Ok((fresh, busy))
    }

    fn check_interrupt(&self, phase: &str, done: usize, total: usize) -> Result<(), RunError> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(RunError {
                phase: phase.to_string(),
                node: String::new(),
                stage: String::new(),
                sample: None,
                message: format!("interrupted after {done} of {total} samples; no partial output was written"),
            });
        }
        Ok(())
    }

    fn new_chunk(&self, metas: &[SampleMeta]) -> Vec<Slot> {
        metas
            .iter()
            .map(|m| Slot {
                meta: m.clone(),
                outputs: vec![Vec::new(); self.p.nodes.len()],
                failed: false,
                isolated: false,
                lost: vec![false; self.p.nodes.len()],
                cache_tag: String::new(),
            })
            .collect()
    }

    /// Inputs of a consuming node (fitted observer or sink) for the live samples, in order.
    fn consumer_batch(&self, phase: &str, node: usize, chunk: &mut [Slot]) -> Result<RVec<SampleInput>, RunError> {
        let mut batch = RVec::new();
        for slot in chunk.iter_mut().filter(|s| !s.failed) {
            match self.gather(node, slot) {
                Ok(inputs) => batch.push(SampleInput { meta: slot.meta.clone(), inputs: inputs.into() }),
                Err(msg) => self.sample_failed(phase, node, slot, msg)?,
            }
        }
        Ok(batch)
    }

    /// Fits the nodes of one pass (see [`fit_passes`]): their split streams once through
    /// the union of their ancestors, and every node of the pass observes each chunk.
    fn fit(&mut self, pass: &[usize]) -> Result<(), RunError> {
        let first = &self.p.nodes[pass[0]];
        let split = first.fit.clone().unwrap_or_else(|| "train".into());
        let ids: Vec<&str> = pass.iter().map(|&f| self.p.nodes[f].id.as_str()).collect();
        let phase = format!("fit {} on {split}", ids.join(", "));
        // A fit per category is done by the task owning the category; one over every category
        // by every task (or loaded from the cache they share).
        let metas = if first.fit_per_category { self.list(&split)? } else { self.list_all(&split)? };
        if metas.is_empty() {
            return Err(self.err(&phase, pass[0], None, format!("the `{split}` split is empty: nothing to fit on")));
        }
        // The instances created with the others (so bad params failed before any work) are
        // fitted first; further categories get fresh instances.
        let mut unfitted: Vec<Option<StageBox>> =
            pass.iter().map(|&f| Some(std::mem::replace(&mut self.stages[f], placeholder_stage()))).collect();
        let bars = progress_bars(self.opts);
        if !first.fit_per_category {
            let fitted = self.fit_instances(pass, &phase, &metas, &mut unfitted, 1, &bars)?;
            for (&f, (stage, key)) in pass.iter().zip(fitted) {
                self.stages[f] = stage;
                self.fit_keys[f] = Some(key);
            }
            return Ok(());
        }
        // One instance per node and category, each fitted on that category's samples only;
        // `categories_in_flight` categories at once (see `categories`), the first one with the
        // instances created above.
        let mut by_category: BTreeMap<String, Vec<SampleMeta>> = BTreeMap::new();
        for m in metas {
            by_category.entry(m.category.to_string()).or_default().push(m);
        }
        let categories: Vec<(String, Vec<SampleMeta>)> = by_category.into_iter().collect();
        let phases: Vec<String> = categories.iter().map(|(category, _)| format!("{phase} [{category}]")).collect();
        let created = Mutex::new(unfitted);
        let failures_before = self.failures.lock().map_or(0, |f| f.len());
        let runner = &*self;
        let workers = self.opts.categories_in_flight.clamp(1, categories.len());
        let fitted = categories::run_in_order(categories.len(), self.opts.categories_in_flight, |i| {
            let mut fresh: Vec<Option<StageBox>> = pass.iter().map(|_| None).collect();
            let mut created = if i == 0 { created.lock().ok() } else { None };
            let unfitted = created.as_deref_mut().map_or(fresh.as_mut_slice(), Vec::as_mut_slice);
            runner.fit_instances(pass, &phases[i], &categories[i].1, unfitted, workers, &bars)
        });
        self.order_failures(failures_before, &phases);
        let mut keys = vec![Vec::new(); pass.len()];
        for ((category, _), fitted) in categories.iter().zip(fitted?) {
            for (j, (stage, key)) in fitted.into_iter().enumerate() {
                self.per_category[pass[j]].insert(category.clone(), stage);
                keys[j].push(key);
            }
        }
        for (&f, keys) in pass.iter().zip(keys) {
            self.fit_keys[f] = Some(hex::encode(Sha256::digest(keys.join(",").as_bytes())));
        }
        Ok(())
    }

    /// Puts the failures recorded since the `from`th in the order of `phases` (each
    /// category's in the order recorded): the order a run doing one category after another
    /// records them in, however the categories' work interleaved.
    fn order_failures(&self, from: usize, phases: &[String]) {
        if let Some(recent) = self.failures.lock().ok().as_mut().and_then(|f| f.get_mut(from..)) {
            recent.sort_by_key(|e| phases.iter().position(|p| *p == e.phase).unwrap_or(phases.len()));
        }
    }

    /// Fits one instance of each node of `pass` on `metas` (or loads its cached state);
    /// returns the instances with their cache keys, in the order of `pass`.
    fn fit_instances(
        &self,
        pass: &[usize],
        phase: &str,
        metas: &[SampleMeta],
        unfitted: &mut [Option<StageBox>],
        workers: usize,
        bars: &MultiProgress,
    ) -> Result<Vec<(StageBox, String)>, RunError> {
        let mut instances = Vec::with_capacity(pass.len());
        let mut pending = Vec::new();
        for (j, &f) in pass.iter().enumerate() {
            let key = self.cache_key(f, metas);
            let mut stage = unfitted[j].take().map_or_else(|| create_stage(self.p, f, self.opts), Ok)?;
            if !self.load_cached_state(f, &key, &mut stage) {
                pending.push(j);
            }
            instances.push((stage, key));
        }
        if pending.is_empty() {
            return Ok(instances);
        }
        let targets: Vec<usize> = pending.iter().map(|&j| pass[j]).collect();
        let needed: Vec<usize> =
            targets.iter().flat_map(|&f| self.p.ancestors(f)).collect::<BTreeSet<_>>().into_iter().collect();
        let bar = bars.add(progress_bar(self.opts, metas.len(), phase.to_string()));
        let t = Instant::now();
        let in_flight = self.category_chunk(&needed, workers);
        for (c, group) in metas.chunks(in_flight).enumerate() {
            self.check_interrupt(phase, c * in_flight, metas.len())?;
            let mut chunk = self.new_chunk(group);
            self.compute_retaining(phase, &needed, &targets, Retain::ConsumerInputs, &mut chunk)?;
            for &j in &pending {
                let f = pass[j];
                let batch = self.consumer_batch(phase, f, &mut chunk)?;
                let t0 = Instant::now();
                instances[j].0.fit_observe(batch).into_result().map_err(|e| self.err(phase, f, None, e.to_string()))?;
                self.with_stats(f, |s| s.busy_seconds += t0.elapsed().as_secs_f64());
            }
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
        bars.remove(&bar);
        let streamed = t.elapsed().as_secs_f64();
        for &j in &pending {
            let f = pass[j];
            let (stage, key) = &mut instances[j];
            let t0 = Instant::now();
            stage.fit_finish().into_result().map_err(|e| self.err(phase, f, None, e.to_string()))?;
            let finished = t0.elapsed().as_secs_f64();
            self.with_stats(f, |s| {
                s.busy_seconds += finished;
                *s.fit_seconds.get_or_insert(0.0) += streamed + finished;
                s.fit_state = Some("fitted".into());
            });
            match stage.save_state().into_result() {
                Ok(state) => self.cache_write(key, &state),
                Err(e) if e.kind == anoflow_sdk::error::ErrorKind::Unsupported => {}
                Err(e) => eprintln!("warning: node `{}`: could not save its fitted state: {e}", self.p.nodes[f].id),
            }
        }
        Ok(instances)
    }

    /// Loads node `f`'s fitted state from the cache into `stage`; false when there is none
    /// (or it was rejected: then the node is fitted again).
    fn load_cached_state(&self, f: usize, key: &str, stage: &mut StageBox) -> bool {
        let Some(state) = self.cache_read(key) else {
            return false;
        };
        let t = Instant::now();
        match stage.load_state(state.into()).into_result() {
            Ok(()) => {
                self.with_stats(f, |s| {
                    *s.fit_seconds.get_or_insert(0.0) += t.elapsed().as_secs_f64();
                    s.fit_state = Some("loaded from cache".into());
                });
                true
            }
            Err(e) => {
                eprintln!("warning: node `{}`: cached state rejected ({e}); fitting again", self.p.nodes[f].id);
                false
            }
        }
    }

    fn test(&mut self) -> Result<usize, RunError> {
        let mut metas = self.list_all("test")?;
        if let Some(shard) = &self.opts.shard {
            metas.retain(|m| shard.owns_test_sample(m));
        }
        let compute: Vec<usize> =
            (0..self.p.nodes.len()).filter(|&n| self.p.nodes[n].kind() != StageKind::Sink).collect();
        let sinks: Vec<usize> =
            (0..self.p.nodes.len()).filter(|&n| self.p.nodes[n].kind() == StageKind::Sink).collect();
        let bar = progress_bar(self.opts, metas.len(), "test".to_string());
        for (c, group) in metas.chunks(self.opts.in_flight.max(1)).enumerate() {
            self.check_interrupt("test", c * self.opts.in_flight.max(1), metas.len())?;
            let mut chunk = self.new_chunk(group);
            chunk.iter_mut().for_each(|slot| slot.isolated = true);
            self.compute_retaining("test", &compute, &sinks, Retain::ConsumerInputs, &mut chunk)?;
            for &s in &sinks {
                let t0 = Instant::now();
                let mut count = 0u64;
                for slot in chunk.iter().filter(|slot| !slot.failed) {
                    if self.sink_consume(s, slot)? {
                        count += 1;
                    }
                }
                self.with_stats(s, |st| {
                    st.samples += count;
                    st.busy_seconds += t0.elapsed().as_secs_f64();
                });
            }
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
        Ok(metas.len())
    }

    /// Sink `s` consumes one test sample, one call per sample so that a failure names it.
    /// An edge whose producer failed on the sample is left out (that failure is recorded
    /// already); a value the sink rejects ([`StageError::input`]) is blamed on the node that
    /// produced it and, with `--keep-going`, the sample is offered again without it. A
    /// sample left without a value on a required port is not consumed. Returns whether the
    /// sink took the sample.
    fn sink_consume(&mut self, s: usize, slot: &Slot) -> Result<bool, RunError> {
        let p = self.p;
        let sink = &p.nodes[s];
        let mut inputs = Vec::new();
        for e in sink.inputs.iter().filter(|e| !slot.lost[e.from]) {
            let values = self.edge_values(e, slot);
            if values.is_empty() {
                let message = format!("produced no `{}` for node `{}` (input `{}`)", e.from_port, sink.id, e.to_port);
                self.record_failure("test", e.from, &slot.meta, message)?;
            }
            inputs.extend(values);
        }
        loop {
            let mut required = sink.stage.descriptor.inputs.iter().filter(|port| !port.optional);
            if !required.all(|port| inputs.iter().any(|v| v.port == port.name)) {
                return Ok(false);
            }
            let batch = RVec::from(vec![SampleInput { meta: slot.meta.clone(), inputs: inputs.clone().into() }]);
            let Err(e) = self.stages[s].consume(batch).into_result() else {
                return Ok(true);
            };
            let rejected = inputs.iter().position(|v| !e.input.is_empty() && v.source == e.input);
            let producer = rejected.and_then(|i| {
                let source = inputs[i].source.as_str();
                sink.inputs.iter().find(|edge| {
                    let name = format!("{}.{}", p.nodes[edge.from].id, edge.from_port);
                    source == name || source.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with('['))
                })
            });
            match (rejected, producer) {
                (Some(i), Some(edge)) => {
                    let message =
                        format!("node `{}` cannot use its value on `{}`: {}", sink.id, inputs[i].source, e.message);
                    self.record_failure("test", edge.from, &slot.meta, message)?;
                    inputs.remove(i);
                }
                _ => {
                    self.record_failure("test", s, &slot.meta, e.to_string())?;
                    return Ok(false);
                }
            }
        }
    }

    /// Each sink's accumulated state, kept so that shards can be merged exactly later.
    fn save_sink_states(&self) -> Result<(), RunError> {
        for s in 0..self.p.nodes.len() {
            if self.p.nodes[s].kind() != StageKind::Sink {
                continue;
            }
            match self.stages[s].save_state().into_result() {
                Ok(state) => {
                    let path = self.opts.out_dir.join(&self.p.nodes[s].id).join(SINK_STATE_FILE);
                    write_atomic(&path, &encode_state(&state))
                        .map_err(|e| self.err("finish", s, None, format!("cannot write {}: {e}", path.display())))?;
                }
                Err(e) if e.kind == anoflow_sdk::error::ErrorKind::Unsupported => {}
                Err(e) => return Err(self.err("finish", s, None, e.to_string())),
            }
        }
        Ok(())
    }

    fn finish_sinks(&mut self) -> Result<Vec<SinkResult>, RunError> {
        let mut results = Vec::new();
        for s in 0..self.p.nodes.len() {
            if self.p.nodes[s].kind() != StageKind::Sink {
                continue;
            }
            let id = self.p.nodes[s].id.clone();
            let out_dir = self.opts.out_dir.join(&id);
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| self.err("finish", s, None, format!("cannot create {}: {e}", out_dir.display())))?;
            let ctx = FinishContext {
                node_id: RString::from(id.as_str()),
                out_dir: out_dir.to_string_lossy().as_ref().into(),
            };
            let t0 = Instant::now();
            let report: SinkReport =
                self.stages[s].finish(&ctx).into_result().map_err(|e| self.err("finish", s, None, e.to_string()))?;
            self.with_stats(s, |st| st.busy_seconds += t0.elapsed().as_secs_f64());
            let json = serde_json::from_str(&report.json).unwrap_or(serde_json::Value::Null);
            results.push(SinkResult {
                node: id,
                markdown: report.markdown.to_string(),
                json,
                files: report.files.iter().map(|f| f.to_string()).collect(),
            });
        }
        Ok(results)
    }

    /// A content address for a fitted node's state: its signature (stage, library file,
    /// params and the files they name, inputs recursively) and every fit sample (id, file,
    /// labels, and the SHA-256 of its file's content).
    fn cache_key(&self, f: usize, fit_samples: &[SampleMeta]) -> String {
        let mut h = Sha256::new();
        h.update(self.signature(f).as_bytes());
        let samples: Vec<Vec<u8>> = fit_samples.par_iter().map(sample_key).collect();
        for (m, key) in fit_samples.iter().zip(samples) {
            h.update(&key);
            h.update([0]);
            h.update(m.category.as_bytes());
            h.update([0]);
            h.update(m.defect.as_bytes());
            h.update([0]);
            h.update(m.label.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// What node `n`'s results depend on, as text: its stage, library (name, version and the
    /// SHA-256 of the library file), params, the content of the files and directories its
    /// params name, its fitted state, and the same for its inputs.
    fn signature(&self, n: usize) -> String {
        let node = &self.p.nodes[n];
        let inputs: Vec<String> =
            node.inputs.iter().map(|e| format!("{}<-{}:{}", e.to_port, e.from_port, self.signature(e.from))).collect();
        let fitted = self.fit_keys[n].as_deref().unwrap_or_default();
        let content = self.content[n].get_or_init(|| {
            let skip: Vec<PathBuf> =
                [Some(&self.opts.out_dir), self.opts.cache_dir.as_ref()].into_iter().flatten().cloned().collect();
            format!(
                "lib={}|files={}",
                provenance::sha256_or_reason(&node.stage.library.path),
                provenance::named_content(self.p, n, &skip)
            )
        });
        format!(
            "{}@{}/{}|{content}|{}|fit={:?}:{fitted}|[{}]",
            node.stage.library.name,
            node.stage.library.version,
            node.plugin(),
            serde_json::Value::Object(node.params.clone()),
            node.fit,
            inputs.join(",")
        )
    }

    fn cache_path(&self, key: &str) -> Option<PathBuf> {
        self.opts.cache_dir.as_ref().map(|d| d.join("fitted").join(format!("{key}.state")))
    }

    fn cache_read(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.cache_path(key)?;
        let bytes = crate::cache_store::read_entry(&path).ok()?;
        match decode_state(&bytes) {
            Some(state) => Some(state),
            None => {
                eprintln!("warning: cache entry {} is corrupt; recomputing", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn cache_write(&self, key: &str, state: &[u8]) {
        if let Some(path) = self.cache_path(key) {
            if let Err(e) = write_atomic(&path, &encode_state(state)) {
                eprintln!("warning: could not write cache entry {}: {e}", path.display());
            }
        }
    }
}

const STATE_MAGIC: &[u8] = b"ANOFLOW-STATE-1\n";
/// Where a sink's accumulated state is kept inside its output directory.
pub const SINK_STATE_FILE: &str = "sink.state";

/// A cached state: magic, SHA-256 of the payload, payload. The hash catches corruption.
fn encode_state(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATE_MAGIC.len() + 32 + state.len());
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&Sha256::digest(state));
    out.extend_from_slice(state);
    out
}

/// What identifies a sample for the caches: its id, its file, and the file's size,
/// modification time and SHA-256 (hashed once per process), so an edited file is never
/// served stale outputs, even when the edit keeps its size and timestamp.
fn sample_key(meta: &SampleMeta) -> Vec<u8> {
    let mut key = Vec::with_capacity(meta.id.len() + meta.path.len() + 96);
    key.extend_from_slice(meta.id.as_bytes());
    key.push(0);
    key.extend_from_slice(meta.path.as_bytes());
    if !meta.path.is_empty() {
        key.push(0);
        match provenance::file_digest(Path::new(meta.path.as_str())) {
            Ok(d) => {
                key.extend_from_slice(&d.size.to_le_bytes());
                key.extend_from_slice(&d.mtime_ns.to_le_bytes());
                key.extend_from_slice(d.sha256.as_bytes());
            }
            Err(e) => key.extend_from_slice(format!("unreadable: {e}").as_bytes()),
        }
    }
    key
}

/// Where a node's outputs for one sample are cached: addressed by the hash of the node's
/// signature (stage, library version, params, inputs, fitted states) and the sample's key.
fn output_cache_path(dir: &Path, node: &[u8], sample: &[u8]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(node);
    h.update([0]);
    h.update(sample);
    let key = hex::encode(h.finalize());
    dir.join("outputs").join(&key[..2]).join(format!("{key}.bin"))
}

/// A cached node output, or `None` when missing or corrupt (a corrupt entry is removed, so
/// it is recomputed and rewritten).
fn read_cached_outputs(path: &Path) -> Option<Vec<PortValue>> {
    let bytes = crate::cache_store::read_entry(path).ok()?;
    let values = decode_state(&bytes).and_then(|payload| codec::decode(&payload).ok());
    if values.is_none() {
        eprintln!("warning: cache entry {} is corrupt; recomputing", path.display());
        let _ = std::fs::remove_file(path);
    }
    values
}

fn decode_state(bytes: &[u8]) -> Option<Vec<u8>> {
    let rest = bytes.strip_prefix(STATE_MAGIC)?;
    if rest.len() < 32 {
        return None;
    }
    let (digest, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == digest).then(|| payload.to_vec())
}

/// Merges the sink states of several runs of the same pipeline (typically the shards of
/// one run) into `out_dir`, as if one run had seen every sample.
pub fn merge(p: &CheckedPipeline, runs: &[PathBuf], out_dir: &Path, threads: usize) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let opts = RunOptions {
        out_dir: out_dir.to_path_buf(),
        threads,
        keep_going: false,
        shard: None,
        in_flight: 1,
        categories_in_flight: 1,
        cache_dir: None,
        progress: false,
    };
    // Only sinks are created (merging needs no data); other nodes get a stage never called.
    let mut stages = Vec::with_capacity(p.nodes.len());
    for (n, node) in p.nodes.iter().enumerate() {
        stages.push(if node.kind() == StageKind::Sink { create_stage(p, n, &opts)? } else { placeholder_stage() });
    }
    for (s, node) in p.nodes.iter().enumerate().filter(|(_, node)| node.kind() == StageKind::Sink) {
        let fail = |message: String| RunError {
            phase: "merge".into(),
            node: node.id.clone(),
            stage: node.plugin().to_string(),
            sample: None,
            message,
        };
        for run in runs {
            let path = run.join(&node.id).join(SINK_STATE_FILE);
            let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            let state = decode_state(&bytes).ok_or_else(|| fail(format!("{} is corrupt", path.display())))?;
            stages[s].load_state(state.into()).into_result().map_err(|e| fail(format!("{}: {e}", path.display())))?;
        }
    }
    let mut runner = Runner::new(p, &opts, stages);
    std::fs::create_dir_all(out_dir).map_err(|e| RunError {
        phase: "merge".into(),
        node: String::new(),
        stage: String::new(),
        sample: None,
        message: format!("cannot create {}: {e}", out_dir.display()),
    })?;
    runner.save_sink_states()?;
    let sinks = runner.finish_sinks()?;
    let calibration = merge_calibration(runs, out_dir)?;
    Ok(RunSummary {
        pipeline: p.spec.name.clone(),
        run_dir: out_dir.to_path_buf(),
        seconds: started.elapsed().as_secs_f64(),
        test_samples: 0,
        shard: None,
        shard_categories: None,
        nodes: Vec::new(),
        phases: Vec::new(),
        failures: Vec::new(),
        sinks,
        calibration,
    })
}

/// The shards' calibration reports (from their `run.json`) merged, and written as the merged
/// run's `calibration.md`; `None` when the pipeline calibrates nothing.
fn merge_calibration(runs: &[PathBuf], out_dir: &Path) -> Result<Option<CalibrationReport>, RunError> {
    let fail = |message: String| RunError {
        phase: "merge".into(),
        node: String::new(),
        stage: String::new(),
        sample: None,
        message,
    };
    let mut reports = Vec::new();
    for run in runs {
        let path = run.join(crate::report::RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("{} is not valid JSON: {e}", path.display())))?;
        match json.pointer("/run/calibration") {
            None | Some(serde_json::Value::Null) => {}
            Some(c) => reports.push(
                serde_json::from_value::<CalibrationReport>(c.clone())
                    .map_err(|e| fail(format!("{}: unreadable `run.calibration`: {e}", path.display())))?,
            ),
        }
    }
    if !reports.is_empty() && reports.len() != runs.len() {
        return Err(fail("some shards hold a calibration and others none: they are not shards of one run".into()));
    }
    let merged = calibrate::merge_reports(&reports).map_err(fail)?;
    if let Some(report) = &merged {
        let path = out_dir.join("calibration.md");
        write_atomic(&path, calibrate::markdown(report, true).as_bytes())
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(merged)
}

/// Creates the stage of node `n` with its checked params.
/// The fitted nodes grouped into fit passes, in the order they run. Nodes share a pass when
/// they learn from the same split with the same scope and have the same number of fitted
/// nodes above them on their longest path (so none feeds another): the split then streams
/// once through their common ancestors instead of once per node.
fn fit_passes(p: &CheckedPipeline) -> Vec<Vec<usize>> {
    let fitted = |n: usize| p.nodes[n].kind() == StageKind::Fitted;
    // Node indices are topological, so every input's depth is known when it is read.
    let mut depth = vec![0usize; p.nodes.len()];
    for n in 0..p.nodes.len() {
        depth[n] = p.nodes[n].inputs.iter().map(|e| depth[e.from] + usize::from(fitted(e.from))).max().unwrap_or(0);
    }
    /// Depth, split, per category.
    type PassKey<'a> = (usize, &'a str, bool);
    let mut passes: Vec<(PassKey, Vec<usize>)> = Vec::new();
    for f in (0..p.nodes.len()).filter(|&n| fitted(n)) {
        let key = (depth[f], p.nodes[f].fit.as_deref().unwrap_or("train"), p.nodes[f].fit_per_category);
        match passes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nodes)) => nodes.push(f),
            None => passes.push((key, vec![f])),
        }
    }
    // Stable: passes of one depth keep the order of their first node.
    passes.sort_by_key(|((depth, ..), _)| *depth);
    passes.into_iter().map(|(_, nodes)| nodes).collect()
}

fn create_stage(p: &CheckedPipeline, n: usize, opts: &RunOptions) -> Result<StageBox, RunError> {
    create_stage_with(p, n, &p.nodes[n].params, opts)
}

/// The categories of `p`'s test split, sorted: the units a run split by category has.
pub fn test_categories(p: &CheckedPipeline) -> Result<Vec<String>, RunError> {
    let opts = RunOptions {
        out_dir: p.spec.base_dir.clone(),
        threads: 1,
        keep_going: false,
        shard: None,
        in_flight: 1,
        categories_in_flight: 1,
        cache_dir: None,
        progress: false,
    };
    let source = create_stage(p, p.source, &opts)?;
    let metas = source.list("test".into()).into_result().map_err(|e| RunError {
        phase: "list test".into(),
        node: p.nodes[p.source].id.clone(),
        stage: p.nodes[p.source].plugin().to_string(),
        sample: None,
        message: e.to_string(),
    })?;
    Ok(metas.iter().map(|m| m.category.to_string()).collect::<BTreeSet<_>>().into_iter().collect())
}

/// Creates the stage of node `n` with `params` in place of its checked ones (calibration
/// candidates).
fn create_stage_with(
    p: &CheckedPipeline,
    n: usize,
    params: &serde_json::Map<String, serde_json::Value>,
    opts: &RunOptions,
) -> Result<StageBox, RunError> {
    let node = &p.nodes[n];
    let ctx = CreateContext {
        node_id: node.id.as_str().into(),
        params_json: serde_json::Value::Object(params.clone()).to_string().into(),
        base_dir: p.spec.base_dir.to_string_lossy().as_ref().into(),
        work_dir: opts.out_dir.join(&node.id).to_string_lossy().as_ref().into(),
        threads: opts.threads as u32,
        inputs: node
            .inputs
            .iter()
            .map(|e| {
                let from = &p.nodes[e.from];
                InputEdge {
                    port: e.to_port.as_str().into(),
                    source: format!("{}.{}", from.id, e.from_port).into(),
                    labelled: from.stage.descriptor.output_port(&e.from_port).is_some_and(|o| o.multiple),
                }
            })
            .collect(),
    };
    (node.stage.factory.create)(&ctx).into_result().map_err(|e| RunError {
        phase: "create".into(),
        node: node.id.clone(),
        stage: node.plugin().to_string(),
        sample: None,
        message: e.to_string(),
    })
}

/// A stage that is never called (merging touches sinks only).
fn placeholder_stage() -> StageBox {
    struct Never;
    impl anoflow_sdk::stage::Map for Never {
        fn process(&self, _: &anoflow_sdk::stage::Sample<'_>) -> Result<anoflow_sdk::stage::Outputs, StageError> {
            Err(StageError::unsupported("placeholder stage"))
        }
    }
    anoflow_sdk::stage::StageAdapter::new("placeholder", anoflow_sdk::stage::StageImpl::Map(Box::new(Never))).into_box()
}

/// For each step of `nodes` (a call's nodes in the order they run), the nodes whose outputs
/// can be dropped after it: no later step reads them and `retain` does not keep them. A
/// 16000 x 16000 source image need not outlive the resize that read it. `edges` are
/// `(from, to)` pairs of the graph's `n_nodes` nodes.
fn release_points(
    n_nodes: usize,
    edges: impl IntoIterator<Item = (usize, usize)>,
    nodes: &[usize],
    consumers: &[usize],
    retain: Retain,
) -> Vec<Vec<usize>> {
    let mut step_of = vec![None; n_nodes];
    for (step, &n) in nodes.iter().enumerate() {
        step_of[n] = Some(step);
    }
    let mut last_read: Vec<Option<usize>> = vec![None; n_nodes];
    let mut retained = vec![false; n_nodes];
    for (from, reader) in edges {
        let consumer = consumers.contains(&reader);
        match step_of[reader] {
            Some(step) if !consumer => last_read[from] = last_read[from].max(Some(step)),
            _ if consumer || retain == Retain::OutsideReads => retained[from] = true,
            // Read by a node that neither this call nor its caller runs on the chunk.
            _ => {}
        }
    }
    let mut release = vec![Vec::new(); nodes.len()];
    for (step, &n) in nodes.iter().enumerate() {
        if !retained[n] && !consumers.contains(&n) {
            release[last_read[n].map_or(step, |last| last.max(step))].push(n);
        }
    }
    release
}

/// `in_flight` shared by `workers`, cut to a multiple of every one of `batch_sizes`; the whole
/// `in_flight` where the share would batch samples otherwise than `in_flight` does (see
/// [`Runner::category_chunk`]).
fn in_flight_share(in_flight: usize, workers: usize, batch_sizes: impl IntoIterator<Item = usize>) -> usize {
    let in_flight = in_flight.max(1);
    let step = batch_sizes.into_iter().fold(1, |a, b| a / gcd(a, b) * b.max(1));
    let share = in_flight / workers.max(1);
    if !in_flight.is_multiple_of(step) || share < step {
        return in_flight;
    }
    share / step * step
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The default run directory: `runs/<pipeline>/<UTC timestamp>`.
pub fn default_run_dir(root: &Path, pipeline: &str) -> PathBuf {
    root.join("runs").join(pipeline).join(crate::fsutil::utc_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_in_flight_share_in_flight_in_whole_batches() {
        assert_eq!(in_flight_share(32, 1, [8, 1]), 32);
        assert_eq!(in_flight_share(32, 2, [8, 1, 1]), 16);
        assert_eq!(in_flight_share(32, 3, [8]), 8, "10 each would batch 8 + 2");
        assert_eq!(in_flight_share(32, 2, [1]), 16);
        assert_eq!(in_flight_share(33, 2, [1]), 16);
        assert_eq!(in_flight_share(32, 2, [4, 6]), 32, "32 is no multiple of 12: batches would differ");
        assert_eq!(in_flight_share(48, 2, [4, 6]), 24);
        assert_eq!(in_flight_share(32, 8, [8]), 32, "a share below one batch");
        assert_eq!(in_flight_share(0, 2, []), 1);
        assert_eq!(gcd(12, 18), 6);
    }

    #[test]
    fn cached_state_detects_corruption() {
        let enc = encode_state(b"bank");
        assert_eq!(decode_state(&enc).as_deref(), Some(&b"bank"[..]));
        let mut bad = enc.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_state(&bad).is_none());
        assert!(decode_state(b"junk").is_none());
    }

    #[test]
    fn outputs_are_released_after_their_last_reader_unless_retained() {
        // 0 source -> 1 resize -> 2 features -> 3 scorer -> 5 sink; 1 -> 4 blur -> 5; 0 -> 5 (gt).
        let edges = [(0, 1), (1, 2), (2, 3), (3, 5), (1, 4), (4, 5), (0, 5)];
        let test = |retain| release_points(6, edges, &[0, 1, 2, 3, 4], &[5], retain);
        // The sink reads 0, 3 and 4: kept. 1 goes after 4 (its last reader), 2 after 3.
        let expected: Vec<Vec<usize>> = vec![vec![], vec![], vec![], vec![2], vec![1]];
        assert_eq!(test(Retain::ConsumerInputs), expected);
        assert_eq!(test(Retain::OutsideReads), expected);
        // Fitting 3 on 0..2: the sink and 4 do not run, so the source goes once 1 has read it,
        // and 1 once 2 has.
        let fit = |retain| release_points(6, edges, &[0, 1, 2], &[3], retain);
        assert_eq!(fit(Retain::ConsumerInputs), vec![vec![], vec![0], vec![1]]);
        // A caller that runs more of the chunk later (calibration) keeps what those nodes read.
        let none = |steps: usize| vec![Vec::<usize>::new(); steps];
        assert_eq!(fit(Retain::OutsideReads), none(3));
        // Nodes 0 and 1 first, consumer 2; then 4 runs on the same chunk and reads 1.
        assert_eq!(release_points(6, edges, &[0, 1], &[2], Retain::OutsideReads), none(2));
        // A node nothing reads is released once it has run.
        assert_eq!(
            release_points(3, [(0, 1)], &[0, 1, 2], &[], Retain::ConsumerInputs),
            vec![vec![], vec![0, 1], vec![2]]
        );
    }
}
