//! Turns a parsed pipeline into a checked graph, against the stages the registry holds.
//! Every problem is collected with its position and node into one list of diagnostics; a
//! [`CheckedPipeline`] that exists is runnable, and later code does not re-check it.
//!
//! The checks, in the order they report: `resolve` (each node's stage), `node` (its params
//! and settings, the source, the fit splits), `edges` (ports, kinds, required inputs), `graph`
//! (cycles, then the topological order of the checked nodes).

use std::collections::{BTreeMap, BTreeSet};

use anoflow_sdk::{descriptor::StageKind, value::ValueKind};
use serde_json::{Map, Value as Json};

use crate::{
    calibration_plan::{self, CalibrationPlan},
    diag::{Diagnostics, PipelineErrors},
    registry::{Registry, StageEntry},
    spec::PipelineSpec,
};

mod edges;
mod graph;
mod node;
mod resolve;

/// An edge into a node's input port.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Index of the producing node in [`CheckedPipeline::nodes`].
    pub from: usize,
    pub from_port: String,
    pub to_port: String,
}

#[derive(Debug, Clone)]
pub struct CheckedNode {
    pub id: String,
    pub stage: StageEntry,
    pub fit: Option<String>,
    /// Params merged with the stage's defaults.
    pub params: Map<String, Json>,
    /// Inputs in pipeline order.
    pub inputs: Vec<Edge>,
    /// Whether the node's per-sample outputs go to the node-output cache.
    pub cache: bool,
    /// Fitted nodes: one model per category (`fit_scope: category`, the default) or one for all.
    pub fit_per_category: bool,
}

impl CheckedNode {
    pub fn kind(&self) -> StageKind {
        self.stage.descriptor.kind
    }
    pub fn plugin(&self) -> &str {
        &self.stage.descriptor.name
    }
}

/// A pipeline whose every node, edge, param and split has been checked.
#[derive(Debug, Clone)]
pub struct CheckedPipeline {
    pub spec: PipelineSpec,
    /// Nodes in a topological order (producers before consumers).
    pub nodes: Vec<CheckedNode>,
    /// Index of the source node.
    pub source: usize,
    /// The `calibrate:` section, resolved.
    pub calibration: Option<CalibrationPlan>,
}

impl CheckedPipeline {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The nodes `target` depends on (transitively), in topological order, without itself.
    pub fn ancestors(&self, target: usize) -> Vec<usize> {
        let mut needed = BTreeSet::new();
        let mut stack = vec![target];
        while let Some(n) = stack.pop() {
            for e in &self.nodes[n].inputs {
                if needed.insert(e.from) {
                    stack.push(e.from);
                }
            }
        }
        needed.into_iter().collect()
    }

    /// The splits the source provides.
    pub fn splits(&self) -> Vec<String> {
        self.nodes[self.source].stage.descriptor.splits.iter().map(|s| s.to_string()).collect()
    }
}

/// Checks `spec` against `registry`, reporting every problem at once.
pub fn check(spec: PipelineSpec, registry: &Registry) -> Result<CheckedPipeline, PipelineErrors> {
    let mut d = Diagnostics::new(&spec.file);
    let stages = resolve::stages(&spec, registry, &mut d);
    node::check_nodes(&spec, &stages, &mut d);
    let sources = node::check_sources(&spec, &stages, &mut d);
    let edges = edges::connect(&spec, &stages, &mut d);
    let graph = graph::Graph::new(&spec, &edges);
    graph.check_cycles(&spec, &mut d);
    if let [source] = sources.as_slice() {
        node::check_fit_splits(&spec, &stages, source, &mut d);
    }
    if !d.is_empty() {
        return Err(PipelineErrors(d.into_vec()));
    }
    // Everything is consistent: order the nodes topologically (stable by file order).
    let nodes = graph.ordered_nodes(&spec, &stages, edges).ok_or_else(|| PipelineErrors(Vec::new()))?;
    let source = nodes.iter().position(|n| n.kind() == StageKind::Source).unwrap_or(0);
    let calibration = calibration_plan::resolve(&spec, &nodes, &mut d);
    if !d.is_empty() {
        return Err(PipelineErrors(d.into_vec()));
    }
    Ok(CheckedPipeline { spec, nodes, source, calibration })
}

/// Map and fitted stages whose outputs are small (score maps, masks, scalars) are cached by
/// default; stages producing images or feature maps only when the node says `cache: true`.
pub(crate) fn default_cache(d: &anoflow_sdk::descriptor::StageDescriptor) -> bool {
    matches!(d.kind, StageKind::Map | StageKind::Fitted)
        && d.outputs
            .iter()
            .all(|o| matches!(o.kind, ValueKind::ScoreMap | ValueKind::Mask | ValueKind::Scalar | ValueKind::Text))
}

/// The value kinds on every output of every node (for `graph` labels).
pub fn edge_labels(p: &CheckedPipeline) -> BTreeMap<(usize, usize), Vec<String>> {
    let mut out: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for (to, n) in p.nodes.iter().enumerate() {
        for e in &n.inputs {
            let kind = p.nodes[e.from].stage.descriptor.output_port(&e.from_port).map_or(ValueKind::Any, |o| o.kind);
            let label = if e.from_port == e.to_port {
                format!("{} ({kind})", e.from_port)
            } else {
                format!("{} -> {} ({kind})", e.from_port, e.to_port)
            };
            out.entry((e.from, to)).or_default().push(label);
        }
    }
    out
}
