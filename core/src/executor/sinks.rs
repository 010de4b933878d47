//! The test phase and the sinks: every test sample streams through every node, sinks consume
//! it in sample order, then each sink saves its state (for merging shards) and finishes.

use std::{path::Path, time::Instant};

use abi_stable::std_types::{RString, RVec};
use anoflow_sdk::{
    abi::{FinishContext, SinkReport, StageBox},
    descriptor::StageKind,
    value::SampleInput,
};

use super::{
    cache::{encode_state, SINK_STATE_FILE},
    node_error, progress_bar, write_atomic, CheckedPipeline, Retain, RunError, Runner, SinkResult, Slot,
};

impl Runner<'_> {
    /// The test phase; returns the number of test samples this task ran.
    pub(super) fn test(&mut self) -> Result<usize, RunError> {
        let mut metas = self.list_all("test")?;
        if let Some(shard) = &self.opts.shard {
            metas.retain(|m| shard.owns_test_sample(m));
        }
        let compute: Vec<usize> =
            (0..self.p.nodes.len()).filter(|&n| self.p.nodes[n].kind() != StageKind::Sink).collect();
        let sinks = sink_nodes(self.p);
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
    pub(super) fn sink_consume(&mut self, s: usize, slot: &Slot) -> Result<bool, RunError> {
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
            let Err(e) = self.single_mut(s)?.consume(batch).into_result() else {
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
    pub(super) fn save_sink_states(&self) -> Result<(), RunError> {
        for s in sink_nodes(self.p) {
            save_sink_state(self.p, s, self.single(s)?, &self.opts.out_dir)?;
        }
        Ok(())
    }

    pub(super) fn finish_sinks(&mut self) -> Result<Vec<SinkResult>, RunError> {
        let mut results = Vec::new();
        for s in sink_nodes(self.p) {
            let (p, out_dir) = (self.p, self.opts.out_dir.clone());
            let (result, seconds) = finish_sink(p, s, self.single_mut(s)?, &out_dir)?;
            self.with_stats(s, |st| st.busy_seconds += seconds);
            results.push(result);
        }
        Ok(results)
    }
}

/// The sink nodes of `p`, in its order.
pub(super) fn sink_nodes(p: &CheckedPipeline) -> Vec<usize> {
    (0..p.nodes.len()).filter(|&n| p.nodes[n].kind() == StageKind::Sink).collect()
}

/// Writes sink `s`'s state (from `stage`) into its directory under `run_dir`; a sink that keeps
/// none writes nothing.
pub(super) fn save_sink_state(p: &CheckedPipeline, s: usize, stage: &StageBox, run_dir: &Path) -> Result<(), RunError> {
    match stage.save_state().into_result() {
        Ok(state) => {
            let path = run_dir.join(&p.nodes[s].id).join(SINK_STATE_FILE);
            write_atomic(&path, &encode_state(&state))
                .map_err(|e| node_error(p, "finish", s, None, format!("cannot write {}: {e}", path.display())))
        }
        Err(e) if e.kind == anoflow_sdk::error::ErrorKind::Unsupported => Ok(()),
        Err(e) => Err(node_error(p, "finish", s, None, e.to_string())),
    }
}

/// Finishes sink `s` (its `stage`) into its directory under `run_dir`; returns its result and
/// the seconds the stage took.
pub(super) fn finish_sink(
    p: &CheckedPipeline,
    s: usize,
    stage: &mut StageBox,
    run_dir: &Path,
) -> Result<(SinkResult, f64), RunError> {
    let id = p.nodes[s].id.clone();
    let out_dir = run_dir.join(&id);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| node_error(p, "finish", s, None, format!("cannot create {}: {e}", out_dir.display())))?;
    let ctx = FinishContext { node_id: RString::from(id.as_str()), out_dir: out_dir.to_string_lossy().as_ref().into() };
    let t0 = Instant::now();
    let report: SinkReport =
        stage.finish(&ctx).into_result().map_err(|e| node_error(p, "finish", s, None, e.to_string()))?;
    let seconds = t0.elapsed().as_secs_f64();
    let json = serde_json::from_str(&report.json).unwrap_or(serde_json::Value::Null);
    let result = SinkResult {
        node: id,
        markdown: report.markdown.to_string(),
        json,
        files: report.files.iter().map(|f| f.to_string()).collect(),
        headline: report.headline.iter().map(|h| (h.name.to_string(), serde_json::Value::from(h.value))).collect(),
    };
    Ok((result, seconds))
}
