//! Turns a parsed pipeline into a checked graph, against the stages the registry holds.
//! Every problem is collected with its position and node; a [`CheckedPipeline`] that
//! exists is runnable, and later code does not re-check it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anoflow_sdk::{
    descriptor::StageKind,
    params::{check_params, did_you_mean, with_defaults},
    value::ValueKind,
};
use petgraph::{
    algo::{tarjan_scc, toposort},
    graph::{DiGraph, NodeIndex},
    visit::EdgeRef as _,
};
use serde_json::{Map, Value as Json};

use crate::{
    calibration_plan::{self, CalibrationPlan},
    diag::{Diagnostics, PipelineErrors},
    registry::{Registry, StageEntry},
    spec::PipelineSpec,
};

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
    let ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();

    // Resolve stages and params.
    let mut stages: HashMap<&str, &StageEntry> = HashMap::new();
    for node in &spec.nodes {
        let Some((plugin, ppos)) = &node.plugin else { continue };
        match registry.stage(plugin) {
            Some(entry) => {
                stages.insert(node.id.as_str(), entry);
                if let Some((name, paths)) = registry.conflicts.iter().find(|(n, _)| n == plugin) {
                    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                    d.error(
                        Some(*ppos),
                        Some(&node.id),
                        format!("stage `{name}` is exported by several libraries ({}); remove all but one from the plugin path", list.join(", ")),
                    );
                }
            }
            None => {
                let hint = did_you_mean(plugin, registry.stages.keys().map(String::as_str))
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                let known = if registry.stages.is_empty() {
                    " No plugin library was found: run `anoflow doctor`.".to_string()
                } else {
                    String::new()
                };
                d.error(Some(*ppos), Some(&node.id), format!("unknown plugin stage `{plugin}`{hint}.{known}"));
            }
        }
    }

    for node in &spec.nodes {
        let Some(entry) = stages.get(node.id.as_str()) else { continue };
        let desc = &entry.descriptor;
        for problem in check_params(desc, &node.params) {
            let pos = node.param_pos.get(problem.param()).copied().or(node.with_pos).or(Some(node.pos));
            d.error(pos, Some(&node.id), format!("{problem} (stage `{}`)", desc.name));
        }
        if let (Some(true), StageKind::Source | StageKind::Sink) = (node.cache, desc.kind) {
            d.error(
                Some(node.pos),
                Some(&node.id),
                format!("`cache` applies to map and fitted stages; `{}` is a {} stage", desc.name, desc.kind.name()),
            );
        }
        if let Some((scope, pos)) = &node.fit_scope {
            if desc.kind != StageKind::Fitted {
                d.error(
                    Some(*pos),
                    Some(&node.id),
                    format!(
                        "`fit_scope` applies to fitted stages only; `{}` is a {} stage",
                        desc.name,
                        desc.kind.name()
                    ),
                );
            } else if scope != "category" && scope != "all" {
                d.error(
                    Some(*pos),
                    Some(&node.id),
                    format!("`fit_scope` must be `category` (one model per category) or `all`, found `{scope}`"),
                );
            }
        }
        match (desc.kind, &node.fit) {
            (StageKind::Fitted, None) => d.error(
                Some(node.pos),
                Some(&node.id),
                format!("stage `{}` is fitted: say which split fits it, e.g. `fit: train`", desc.name),
            ),
            (StageKind::Fitted, Some(_)) | (_, None) => {}
            (kind, Some((_, pos))) => d.error(
                Some(*pos),
                Some(&node.id),
                format!("`fit` applies to fitted stages only; `{}` is a {} stage", desc.name, kind.name()),
            ),
        }
    }

    // Sources: the error points at the second source (the first one too many), or at the
    // first node when there is none.
    let source_nodes: Vec<&crate::spec::NodeSpec> = spec
        .nodes
        .iter()
        .filter(|n| stages.get(n.id.as_str()).is_some_and(|e| e.descriptor.kind == StageKind::Source))
        .collect();
    let sources: Vec<&str> = source_nodes.iter().map(|n| n.id.as_str()).collect();
    if let [_, second, ..] = source_nodes.as_slice() {
        let listed: Vec<String> = source_nodes.iter().map(|n| format!("`{}` (line {})", n.id, n.pos.line)).collect();
        d.error(
            Some(second.pos),
            Some(&second.id),
            format!("a pipeline has exactly one source node, found {}: {}", sources.len(), listed.join(", ")),
        );
    } else if sources.is_empty() && !stages.is_empty() && stages.len() == spec.nodes.len() {
        d.error(
            spec.nodes.first().map(|n| n.pos),
            None,
            "the pipeline has no source node (a stage that yields samples, e.g. `synthetic` or `mvtec-ad`)",
        );
    }

    // Edges.
    let mut edges: Vec<(usize, usize, String, String)> = Vec::new(); // from, to, from_port, to_port
    for (to_idx, node) in spec.nodes.iter().enumerate() {
        let Some(entry) = stages.get(node.id.as_str()) else { continue };
        let desc = &entry.descriptor;
        let mut connected = BTreeSet::new();
        for input in &node.inputs {
            let Some(port) = desc.input_port(&input.port) else {
                let hint = did_you_mean(&input.port, desc.inputs.iter().map(|p| p.name.as_str()))
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                let list: Vec<&str> = desc.inputs.iter().map(|p| p.name.as_str()).collect();
                let have = if list.is_empty() {
                    "it has no inputs".to_string()
                } else {
                    format!("it has: {}", list.join(", "))
                };
                d.error(
                    Some(input.pos),
                    Some(&node.id),
                    format!("stage `{}` has no input port `{}`{hint}; {have}", desc.name, input.port),
                );
                continue;
            };
            connected.insert(port.name.to_string());
            if !port.multiple && input.edges.len() > 1 {
                d.error(
                    Some(input.pos),
                    Some(&node.id),
                    format!("input `{}` takes one edge, found {}", input.port, input.edges.len()),
                );
            }
            for edge in &input.edges {
                let Some(from_idx) = ids.iter().position(|i| *i == edge.node) else {
                    let hint = did_you_mean(&edge.node, ids.iter().copied())
                        .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                    d.error(
                        Some(edge.pos),
                        Some(&node.id),
                        format!("input `{}`: no node `{}`{hint}", input.port, edge.node),
                    );
                    continue;
                };
                let Some(from_entry) = stages.get(edge.node.as_str()) else { continue };
                let from_desc = &from_entry.descriptor;
                let Some(out) = from_desc.output_port(&edge.port) else {
                    let hint = did_you_mean(&edge.port, from_desc.outputs.iter().map(|p| p.name.as_str()))
                        .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                    let list: Vec<&str> = from_desc.outputs.iter().map(|p| p.name.as_str()).collect();
                    d.error(
                        Some(edge.pos),
                        Some(&node.id),
                        format!(
                            "input `{}`: node `{}` (stage `{}`) has no output `{}`{hint}; its outputs: {}",
                            input.port,
                            edge.node,
                            from_desc.name,
                            edge.port,
                            if list.is_empty() { "none".to_string() } else { list.join(", ") }
                        ),
                    );
                    continue;
                };
                if !port.kind.accepts(out.kind) {
                    d.error(
                        Some(edge.pos),
                        Some(&node.id),
                        format!(
                            "type mismatch on edge {}.{} -> {}.{}: expected {}, found {}",
                            edge.node, edge.port, node.id, input.port, port.kind, out.kind
                        ),
                    );
                    continue;
                }
                if out.multiple && !port.multiple {
                    d.error(
                        Some(edge.pos),
                        Some(&node.id),
                        format!(
                            "edge {}.{} -> {}.{}: `{}` carries several values per sample (one per layer) but input `{}` takes one; aggregate it first (e.g. with `patch-aggregate`)",
                            edge.node, edge.port, node.id, input.port, edge.port, input.port
                        ),
                    );
                }
                if from_desc.kind == StageKind::Sink {
                    d.error(
                        Some(edge.pos),
                        Some(&node.id),
                        format!("node `{}` is a sink: it has no outputs", edge.node),
                    );
                    continue;
                }
                edges.push((from_idx, to_idx, edge.port.clone(), input.port.clone()));
            }
        }
        for port in desc.inputs.iter().filter(|p| !p.optional) {
            if !connected.contains(port.name.as_str()) {
                d.error(
                    Some(node.pos),
                    Some(&node.id),
                    format!("required input `{}` ({}) of stage `{}` is not connected", port.name, port.kind, desc.name),
                );
            }
        }
    }

    // Cycles, shown as their chain.
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let idx: Vec<NodeIndex> = (0..spec.nodes.len()).map(|i| graph.add_node(i)).collect();
    for (from, to, _, _) in &edges {
        graph.update_edge(idx[*from], idx[*to], ());
    }
    for scc in tarjan_scc(&graph) {
        let self_loop = scc.len() == 1 && graph.find_edge(scc[0], scc[0]).is_some();
        if scc.len() > 1 || self_loop {
            let chain = cycle_chain(&graph, &scc, &spec);
            let first = scc.iter().map(|n| graph[*n]).min().unwrap_or(0);
            d.error(Some(spec.nodes[first].pos), None, format!("cycle: {chain}"));
        }
    }

    // Fit splits must be provided by the source.
    if let [source_id] = sources.as_slice() {
        let splits: Vec<String> = stages[source_id].descriptor.splits.iter().map(|s| s.to_string()).collect();
        for node in &spec.nodes {
            if let Some((split, pos)) = &node.fit {
                if !splits.iter().any(|s| s == split) {
                    d.error(
                        Some(*pos),
                        Some(&node.id),
                        format!(
                            "fit split `{split}` is not provided by source `{source_id}`; it provides: {}",
                            splits.join(", ")
                        ),
                    );
                }
            }
        }
    }

    if !d.is_empty() {
        return Err(PipelineErrors(d.into_vec()));
    }

    // Everything is consistent: order the nodes topologically (stable by file order).
    let order = toposort(&graph, None).map_err(|_| PipelineErrors(Vec::new()))?;
    let mut position = vec![0usize; spec.nodes.len()];
    let order: Vec<usize> = order.into_iter().map(|n| graph[n]).collect();
    for (new, &old) in order.iter().enumerate() {
        position[old] = new;
    }
    let mut nodes: Vec<CheckedNode> = order
        .iter()
        .map(|&old| {
            let n = &spec.nodes[old];
            let entry = stages[n.id.as_str()].clone();
            let params = with_defaults(&entry.descriptor, &n.params);
            let cache = n.cache.unwrap_or_else(|| default_cache(&entry.descriptor));
            CheckedNode {
                id: n.id.clone(),
                stage: entry,
                fit: n.fit.as_ref().map(|f| f.0.clone()),
                params,
                inputs: Vec::new(),
                cache,
                fit_per_category: n.fit_scope.as_ref().is_none_or(|(scope, _)| scope == "category"),
            }
        })
        .collect();
    for (from, to, from_port, to_port) in edges {
        nodes[position[to]].inputs.push(Edge { from: position[from], from_port, to_port });
    }
    let source = nodes.iter().position(|n| n.kind() == StageKind::Source).unwrap_or(0);
    let calibration = calibration_plan::resolve(&spec, &nodes, &mut d);
    if !d.is_empty() {
        return Err(PipelineErrors(d.into_vec()));
    }
    Ok(CheckedPipeline { spec, nodes, source, calibration })
}

/// Map and fitted stages whose outputs are small (score maps, masks, scalars) are cached by
/// default; stages producing images or feature maps only when the node says `cache: true`.
fn default_cache(d: &anoflow_sdk::descriptor::StageDescriptor) -> bool {
    matches!(d.kind, StageKind::Map | StageKind::Fitted)
        && d.outputs
            .iter()
            .all(|o| matches!(o.kind, ValueKind::ScoreMap | ValueKind::Mask | ValueKind::Scalar | ValueKind::Text))
}

fn cycle_chain(graph: &DiGraph<usize, ()>, scc: &[NodeIndex], spec: &PipelineSpec) -> String {
    // Walk inside the component from its first member until we come back.
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *scc.iter().min_by_key(|n| graph[**n]).unwrap_or(&scc[0]);
    let mut chain = vec![start];
    let mut cur = start;
    let mut visited = BTreeSet::from([start]);
    loop {
        let next = graph
            .edges(cur)
            .map(|e| e.target())
            .filter(|t| members.contains(t))
            .min_by_key(|t| (usize::from(*t != start), visited.contains(t), graph[*t]));
        match next {
            Some(n) if n == start => {
                chain.push(start);
                break;
            }
            Some(n) if !visited.contains(&n) => {
                visited.insert(n);
                chain.push(n);
                cur = n;
            }
            _ => break,
        }
    }
    chain.iter().map(|n| spec.nodes[graph[*n]].id.as_str()).collect::<Vec<_>>().join(" -> ")
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
