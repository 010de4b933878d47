//! Each node's stage, looked up in the registry.

use std::collections::HashMap;

use crate::{
    diag::{did_you_mean, Diagnostics},
    registry::{Registry, StageEntry},
    spec::PipelineSpec,
};

/// The stage of every node whose stage the registry holds, by node id.
pub(super) fn stages<'r>(
    spec: &PipelineSpec,
    registry: &'r Registry,
    d: &mut Diagnostics,
) -> HashMap<String, &'r StageEntry> {
    let mut stages = HashMap::new();
    for node in &spec.nodes {
        let Some((plugin, ppos)) = &node.plugin else { continue };
        match registry.stage(plugin) {
            Some(entry) => {
                stages.insert(node.id.clone(), entry);
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
                let hint = did_you_mean(plugin, registry.stages.keys().map(String::as_str));
                let known = if registry.stages.is_empty() {
                    " No plugin library was found: run `anoflow doctor`.".to_string()
                } else {
                    String::new()
                };
                d.error(Some(*ppos), Some(&node.id), format!("unknown plugin stage `{plugin}`{hint}.{known}"));
            }
        }
    }
    stages
}
