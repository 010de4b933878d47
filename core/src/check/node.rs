//! Each node on its own: its params, its settings (`cache`, `fit_scope`, `fit`), and the
//! pipeline's one source and the splits it provides.

use std::collections::HashMap;

use anoflow_sdk::{descriptor::StageKind, params::check_params};

use crate::{diag::Diagnostics, registry::StageEntry, spec::PipelineSpec};

/// The stages resolved so far, by node id.
pub(super) type Stages<'r> = HashMap<String, &'r StageEntry>;

/// Checks each node with a known stage: params, `cache`, `fit_scope` and `fit`.
pub(super) fn check_nodes(spec: &PipelineSpec, stages: &Stages<'_>, d: &mut Diagnostics) {
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
}

/// Checks that there is exactly one source; returns the ids of the sources found. The error
/// points at the second source (the first one too many), or at the first node when there is none.
pub(super) fn check_sources<'s>(spec: &'s PipelineSpec, stages: &Stages<'_>, d: &mut Diagnostics) -> Vec<&'s str> {
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
    sources
}

/// Fit splits must be provided by the source `source_id`.
pub(super) fn check_fit_splits(spec: &PipelineSpec, stages: &Stages<'_>, source_id: &str, d: &mut Diagnostics) {
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
