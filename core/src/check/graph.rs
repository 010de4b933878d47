//! The graph of the checked edges: its cycles, and the topological order the checked
//! pipeline's nodes take.

use std::collections::BTreeSet;

use anoflow_sdk::params::with_defaults;
use petgraph::{
    algo::{tarjan_scc, toposort},
    graph::{DiGraph, NodeIndex},
    visit::EdgeRef as _,
};

use super::{default_cache, edges::RawEdge, node::Stages, CheckedNode, Edge};
use crate::{diag::Diagnostics, spec::PipelineSpec};

/// The nodes of the file (by index) and the edges that checked.
pub(super) struct Graph(DiGraph<usize, ()>);

impl Graph {
    pub(super) fn new(spec: &PipelineSpec, edges: &[RawEdge]) -> Self {
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..spec.nodes.len()).map(|i| graph.add_node(i)).collect();
        for (from, to, _, _) in edges {
            graph.update_edge(idx[*from], idx[*to], ());
        }
        Graph(graph)
    }

    /// Every cycle, shown as its chain.
    pub(super) fn check_cycles(&self, spec: &PipelineSpec, d: &mut Diagnostics) {
        let graph = &self.0;
        for scc in tarjan_scc(graph) {
            let self_loop = scc.len() == 1 && graph.find_edge(scc[0], scc[0]).is_some();
            if scc.len() > 1 || self_loop {
                let chain = cycle_chain(graph, &scc, spec);
                let first = scc.iter().map(|n| graph[*n]).min().unwrap_or(0);
                d.error(Some(spec.nodes[first].pos), None, format!("cycle: {chain}"));
            }
        }
    }

    /// The checked nodes in a topological order (stable by file order), with their inputs;
    /// `None` when the graph has a cycle.
    pub(super) fn ordered_nodes(
        &self,
        spec: &PipelineSpec,
        stages: &Stages<'_>,
        edges: Vec<RawEdge>,
    ) -> Option<Vec<CheckedNode>> {
        let graph = &self.0;
        let order = toposort(graph, None).ok()?;
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
        Some(nodes)
    }
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
