//! The edges: each input names a port of its node's stage and an output of an existing
//! node, of a kind the port accepts; every required input is connected.

use std::collections::BTreeSet;

use anoflow_sdk::descriptor::StageKind;

use super::node::Stages;
use crate::{
    diag::{did_you_mean, Diagnostics},
    spec::PipelineSpec,
};

/// An edge that checked: from node, to node (indices in the file), from port, to port.
pub(super) type RawEdge = (usize, usize, String, String);

/// Checks every edge and required input; returns the edges that checked.
pub(super) fn connect(spec: &PipelineSpec, stages: &Stages<'_>, d: &mut Diagnostics) -> Vec<RawEdge> {
    let ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
    let mut edges: Vec<RawEdge> = Vec::new();
    for (to_idx, node) in spec.nodes.iter().enumerate() {
        let Some(entry) = stages.get(node.id.as_str()) else { continue };
        let desc = &entry.descriptor;
        let mut connected = BTreeSet::new();
        for input in &node.inputs {
            let Some(port) = desc.input_port(&input.port) else {
                let hint = did_you_mean(&input.port, desc.inputs.iter().map(|p| p.name.as_str()));
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
                    let hint = did_you_mean(&edge.node, ids.iter().copied());
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
                    let hint = did_you_mean(&edge.port, from_desc.outputs.iter().map(|p| p.name.as_str()));
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
    edges
}
