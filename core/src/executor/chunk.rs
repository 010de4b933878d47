//! Computing a chunk of samples through a set of nodes: gather each node's inputs, route them
//! to the node's instance for their category, batch, call the stage in parallel, check its
//! outputs, write them to the cache, and count.

use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RResult, RVec};
use anoflow_sdk::{
    abi::StageBox,
    error::StageError,
    value::{PortValue, SampleInput, SampleMeta},
};
use rayon::prelude::*;

use super::{
    plan::{release_points, Demand, Retain},
    RunError, Runner, INTERRUPTED,
};

/// Chunk indices of a batch, the stage's per-sample results, and the time it took.
type BatchResult = (Vec<usize>, Vec<RResult<RVec<PortValue>, StageError>>, Duration);
/// Samples by index in the chunk, with their inputs.
type Work = Vec<(usize, SampleInput)>;

pub(super) struct Slot {
    pub meta: SampleMeta,
    pub outputs: Vec<Vec<PortValue>>,
    /// The sample is dropped for every node (a failure outside the test phase).
    pub failed: bool,
    /// Test phase: a failure drops only the failing node's branch of the sample (see
    /// `lost`), so sinks still get the values of the other branches.
    pub isolated: bool,
    /// Per node: no output for this sample, as the node or one of its inputs failed on it
    /// (the failure is recorded once, where it happened).
    pub lost: Vec<bool>,
    /// More identity for the node-output cache than the sample's own: what made the image of
    /// a calibration sample (the defects node's signature). Empty for every other sample.
    pub cache_tag: String,
}

impl Runner<'_> {
    /// A sample failed at `node`: stop the run, or record it and drop the sample (in the
    /// test phase: drop the node's branch of it).
    pub(super) fn sample_failed(
        &self,
        phase: &str,
        node: usize,
        slot: &mut Slot,
        message: String,
    ) -> Result<(), RunError> {
        self.record_failure(phase, node, &slot.meta, message)?;
        if slot.isolated {
            slot.lost[node] = true;
        } else {
            slot.failed = true;
        }
        Ok(())
    }

    /// Counts a failure of `node` on a sample: stops the run, or (`--keep-going`) lists it.
    pub(super) fn record_failure(
        &self,
        phase: &str,
        node: usize,
        meta: &SampleMeta,
        message: String,
    ) -> Result<(), RunError> {
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
    pub(super) fn gather(&self, node: usize, slot: &Slot) -> Result<Vec<PortValue>, String> {
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
    pub(super) fn edge_values(&self, e: &crate::check::Edge, slot: &Slot) -> Vec<PortValue> {
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
    pub(super) fn check_outputs(&self, node: usize, outs: &[PortValue]) -> Result<(), String> {
        self.check_outputs_for(node, &[], outs)
    }

    /// The SDK's output checks, the same the test harness runs.
    pub(super) fn check_outputs_for(
        &self,
        node: usize,
        inputs: &[PortValue],
        outs: &[PortValue],
    ) -> Result<(), String> {
        anoflow_sdk::checks::check_outputs(&self.p.nodes[node].stage.descriptor, inputs, outs)
    }

    /// [`Self::compute_retaining`], leaving every output that a node outside `nodes` reads: for
    /// callers that compute more of the chunk afterwards (calibration, below the value its
    /// defects replace).
    pub(super) fn compute(
        &self,
        phase: &str,
        nodes: &[usize],
        consumers: &[usize],
        chunk: &mut [Slot],
    ) -> Result<(), RunError> {
        self.compute_retaining(phase, nodes, consumers, Retain::OutsideReads, chunk)
    }

    /// Computes what `consumers` (sinks, or the fitted node being fitted) need from `nodes`
    /// (topological order, consumers excluded) for every live sample of a chunk. A node whose
    /// outputs are in the cache for a sample is loaded instead of run, and then nothing
    /// upstream of it runs for that sample unless another node needs it. A node's outputs are
    /// dropped once the last node of `nodes` reading them has run, unless `retain` keeps them.
    pub(super) fn compute_retaining(
        &self,
        phase: &str,
        nodes: &[usize],
        consumers: &[usize],
        retain: Retain,
        chunk: &mut [Slot],
    ) -> Result<(), RunError> {
        let keys = self.output_keys(nodes, chunk);
        let mut demand = self.demand(nodes, consumers, chunk, &keys);
        let edges =
            self.p.nodes.iter().enumerate().flat_map(|(to, node)| node.inputs.iter().map(move |e| (e.from, to)));
        let release = release_points(self.p.nodes.len(), edges, nodes, consumers, retain);
        for (step, &n) in nodes.iter().enumerate() {
            let (work, loaded) = self.gather_work(phase, n, &mut demand, chunk)?;
            let routed = self.route(phase, n, work, chunk)?;
            let batch = self.batch_size(n);
            let tasks: Vec<(&StageBox, &[(usize, SampleInput)])> =
                routed.iter().flat_map(|(stage, items)| items.chunks(batch).map(move |c| (*stage, c))).collect();
            let (fresh, busy) = self.run_batches(phase, n, &tasks, chunk)?;
            drop(tasks);
            drop(routed);
            let writing = Instant::now();
            self.cache_outputs(n, &fresh, &keys, chunk);
            let writing = writing.elapsed();
            self.with_stats(n, |s| {
                s.samples += fresh.len() as u64;
                s.cached += loaded;
                s.busy_seconds += busy.as_secs_f64();
                s.cache_seconds += writing.as_secs_f64();
            });
            for &done in &release[step] {
                chunk.iter_mut().for_each(|slot| drop(std::mem::take(&mut slot.outputs[done])));
            }
        }
        Ok(())
    }

    /// The inputs of node `n` for every live sample that needs it, by index in the chunk.
    /// Outputs the cache holds are put in the chunk instead (the count is returned); a sample
    /// whose input failed loses this branch too.
    fn gather_work(
        &self,
        phase: &str,
        n: usize,
        demand: &mut Demand,
        chunk: &mut [Slot],
    ) -> Result<(Work, u64), RunError> {
        let mut work: Vec<(usize, SampleInput)> = Vec::new();
        let mut loaded = 0u64;
        for (i, slot) in chunk.iter_mut().enumerate() {
            if slot.failed || !demand.demanded[n][i] {
                continue;
            }
            if let Some(values) = demand.preloaded[n][i].take() {
                slot.outputs[n] = values;
                loaded += 1;
                continue;
            }
            if self.p.nodes[n].inputs.iter().any(|e| slot.lost[e.from]) {
                // An input failed on this sample (recorded there): the branch ends here.
                slot.lost[n] = true;
                continue;
            }
            match self.gather(n, slot) {
                Ok(inputs) => work.push((i, SampleInput { meta: slot.meta.clone(), inputs: inputs.into() })),
                Err(msg) => self.sample_failed(phase, n, slot, msg)?,
            }
        }
        Ok((work, loaded))
    }

    /// Routes each sample to the node's instance for its category (the one instance, for a
    /// node with one), in category order. Samples of a category without an instance fail.
    fn route(&self, phase: &str, n: usize, work: Work, chunk: &mut [Slot]) -> Result<Vec<(&StageBox, Work)>, RunError> {
        let instances = &self.instances[n];
        let by_category = !instances.categories().is_empty();
        let mut routed: BTreeMap<String, Work> = BTreeMap::new();
        for (i, input) in work {
            let category = if by_category { input.meta.category.to_string() } else { String::new() };
            routed.entry(category).or_default().push((i, input));
        }
        let mut groups = Vec::with_capacity(routed.len());
        for (category, items) in routed {
            match instances.for_category(&category) {
                Some(stage) => groups.push((stage, items)),
                None => {
                    let message = format!(
                        "no model of this node was fitted for category `{category}` (the fit split has: {})",
                        instances.categories().join(", ")
                    );
                    for (i, _) in &items {
                        self.sample_failed(phase, n, &mut chunk[*i], message.clone())?;
                    }
                }
            }
        }
        Ok(groups)
    }

    /// Runs batches (a stage instance and its samples, by index into `slots`) in parallel and
    /// stores each checked output in its slot; a failing sample goes through `sample_failed`.
    /// Returns the slots that got outputs and the time spent inside the stages.
    pub(super) fn run_batches(
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

    pub(super) fn check_interrupt(&self, phase: &str, done: usize, total: usize) -> Result<(), RunError> {
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

    pub(super) fn new_chunk(&self, metas: &[SampleMeta]) -> Vec<Slot> {
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
    pub(super) fn consumer_batch(
        &self,
        phase: &str,
        node: usize,
        chunk: &mut [Slot],
    ) -> Result<RVec<SampleInput>, RunError> {
        let mut batch = RVec::new();
        for slot in chunk.iter_mut().filter(|s| !s.failed) {
            match self.gather(node, slot) {
                Ok(inputs) => batch.push(SampleInput { meta: slot.meta.clone(), inputs: inputs.into() }),
                Err(msg) => self.sample_failed(phase, node, slot, msg)?,
            }
        }
        Ok(batch)
    }
}
