//! Resolves a pipeline's `calibrate:` section against its checked graph: which node pastes
//! the defects and what its images replace, and for each search group the nodes that are
//! re-created per candidate. Every problem is reported with its position, like the rest of
//! `check`.

use std::collections::BTreeSet;

use anoflow_sdk::{descriptor::StageKind, params::check_params, value::ValueKind};
use serde_json::Value as Json;

use crate::{
    check::CheckedNode,
    diag::Diagnostics,
    spec::{CalibrateSpec, PipelineSpec},
};

/// A checked `calibrate:` section.
#[derive(Debug, Clone)]
pub struct CalibrationPlan {
    /// The node pasting synthetic defects (outputs `image` and `mask`).
    pub defects: usize,
    /// The output its images stand in for on calibration samples: (node, port).
    pub replaces: (usize, String),
    /// The split of clean images calibration starts from (the defects node's fit split).
    pub split: String,
    pub variants: usize,
    pub max_samples: usize,
    pub min_images: usize,
    pub max_good_fp_area: f64,
    pub tolerance: f64,
    pub groups: Vec<SearchGroup>,
}

/// One searched calibration.
#[derive(Debug, Clone)]
pub struct SearchGroup {
    /// The node whose `mask` output is scored against the defects' masks.
    pub target: usize,
    /// Searched params: (node, param, values), in the order written.
    pub axes: Vec<(usize, String, Vec<Json>)>,
    /// Nodes re-created for each candidate: the searched nodes and everything between them
    /// and the target, in topological order.
    pub nodes: Vec<usize>,
    /// Candidates within this fraction of the best F1 tie; the earliest wins (the group's own
    /// `tolerance`, else the section's).
    pub tolerance: f64,
}

impl SearchGroup {
    /// Every combination of the axes' values, the first axis varying slowest.
    pub fn candidates(&self) -> Vec<Vec<(usize, String, Json)>> {
        let mut out: Vec<Vec<(usize, String, Json)>> = vec![Vec::new()];
        for (node, param, values) in &self.axes {
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut c = prefix.clone();
                        c.push((*node, param.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        out
    }
}

/// Resolves `spec.calibrate` against `nodes` (checked, in topological order).
pub fn resolve(spec: &PipelineSpec, nodes: &[CheckedNode], d: &mut Diagnostics) -> Option<CalibrationPlan> {
    let c: &CalibrateSpec = spec.calibrate.as_ref()?;
    let index = |id: &str| nodes.iter().position(|n| n.id == id);
    let descendants = |from: usize| -> BTreeSet<usize> {
        let mut out = BTreeSet::from([from]);
        for (n, node) in nodes.iter().enumerate().skip(from + 1) {
            if node.inputs.iter().any(|e| out.contains(&e.from)) {
                out.insert(n);
            }
        }
        out
    };
    let errors_before = d.len();

    let (defects_id, defects_pos) = c.defects.clone()?;
    let Some(defects) = index(&defects_id) else {
        d.error(Some(defects_pos), None, format!("calibrate `defects`: no node `{defects_id}`"));
        return None;
    };
    let dnode = &nodes[defects];
    let has_output = |n: &CheckedNode, port: &str, kind: ValueKind| {
        n.stage.descriptor.output_port(port).is_some_and(|o| o.kind == kind)
    };
    if dnode.kind() != StageKind::Fitted
        || !has_output(dnode, "image", ValueKind::Image)
        || !has_output(dnode, "mask", ValueKind::Mask)
    {
        d.error(
            Some(defects_pos),
            Some(&defects_id),
            format!(
                "calibrate `defects`: node `{defects_id}` (stage `{}`) must be a fitted stage with outputs `image` and \
                 `mask`, such as `synthetic-defects`",
                dnode.plugin()
            ),
        );
        return None;
    }
    if !dnode.fit_per_category {
        d.error(
            Some(defects_pos),
            Some(&defects_id),
            "calibrate `defects`: the node must be fitted per category (`fit_scope: category`)",
        );
    }
    let Some(edge) = dnode.inputs.iter().find(|e| e.to_port == "image") else {
        d.error(Some(defects_pos), Some(&defects_id), "calibrate `defects`: the node's `image` input is not connected");
        return None;
    };
    let replaces = (edge.from, edge.from_port.clone());
    let split = dnode.fit.clone().unwrap_or_else(|| "train".into());
    let after_replace = descendants(replaces.0);

    let mut groups = Vec::new();
    let mut claimed: BTreeSet<usize> = BTreeSet::new();
    for g in &c.groups {
        let Some(target) = index(&g.target) else {
            d.error(Some(g.pos), None, format!("calibrate `search`: no node `{}`", g.target));
            continue;
        };
        if !has_output(&nodes[target], "mask", ValueKind::Mask) {
            d.error(
                Some(g.pos),
                Some(&g.target),
                format!("calibrate `search`: node `{}` has no `mask` output to score", g.target),
            );
            continue;
        }
        let mut axes = Vec::new();
        let mut members: BTreeSet<usize> = BTreeSet::new();
        for axis in &g.axes {
            let Some((node_id, param)) = axis.path.split_once('.') else { continue };
            let Some(n) = index(node_id) else {
                d.error(Some(axis.pos), None, format!("calibrate `{}`: no node `{node_id}`", axis.path));
                continue;
            };
            let node = &nodes[n];
            // `node.param` or, for a setting of a nested option, `node.param.setting`.
            let top = param.split('.').next().unwrap_or(param);
            if node.stage.descriptor.param_spec(top).is_none() {
                d.error(
                    Some(axis.pos),
                    Some(node_id),
                    format!("calibrate `{}`: stage `{}` has no param `{param}`", axis.path, node.plugin()),
                );
                continue;
            }
            for v in &axis.values {
                let mut params = node.params.clone();
                set_param(&mut params, param, v.clone());
                for problem in check_params(&node.stage.descriptor, &params) {
                    d.error(Some(axis.pos), Some(node_id), format!("calibrate `{}`: {problem}", axis.path));
                }
            }
            let below = descendants(n);
            if !below.contains(&target) {
                d.error(
                    Some(axis.pos),
                    Some(node_id),
                    format!(
                        "calibrate `{}`: `{}` does not depend on `{node_id}`, so the search cannot change it",
                        axis.path, g.target
                    ),
                );
                continue;
            }
            if !after_replace.contains(&n) || n == replaces.0 {
                d.error(
                    Some(axis.pos),
                    Some(node_id),
                    format!(
                        "calibrate `{}`: `{node_id}` must be downstream of `{}`, where the defect images enter",
                        axis.path, nodes[replaces.0].id
                    ),
                );
                continue;
            }
            let target_ancestors: BTreeSet<usize> = ancestors_with(nodes, target);
            members.extend(below.intersection(&target_ancestors));
            axes.push((n, param.to_string(), axis.values.clone()));
        }
        // Nodes between an earlier group's nodes and this target (say, a refinement of an
        // earlier group's mask that this group selects from) run with this group's candidates.
        let target_ancestors = ancestors_with(nodes, target);
        for &m in &claimed {
            members.extend(descendants(m).intersection(&target_ancestors).filter(|n| !claimed.contains(n)));
        }
        for &m in &members {
            let node = &nodes[m];
            if node.kind() == StageKind::Fitted && !node.fit_per_category {
                d.error(
                    Some(g.pos),
                    Some(&node.id),
                    format!("calibrate: fitted node `{}` is re-fitted per candidate and category, so it needs `fit_scope: category`", node.id),
                );
            }
            if !claimed.insert(m) {
                d.error(
                    Some(g.pos),
                    Some(&node.id),
                    format!("calibrate: node `{}` is searched by two groups", node.id),
                );
            }
        }
        if !axes.is_empty() {
            let tolerance = g.tolerance.unwrap_or(c.tolerance);
            groups.push(SearchGroup { target, axes, nodes: members.into_iter().collect(), tolerance });
        }
    }
    // A fitted node below a calibrated one would be fitted on masks calibration then replaces.
    for (n, node) in nodes.iter().enumerate() {
        if node.kind() == StageKind::Fitted
            && !claimed.contains(&n)
            && claimed.iter().any(|&m| descendants(m).contains(&n))
        {
            d.error(
                None,
                Some(&node.id),
                format!(
                    "calibrate: fitted node `{}` depends on a calibrated node; search one of its params too, so that it is \
                     re-fitted with each candidate",
                    node.id
                ),
            );
        }
    }
    if d.len() > errors_before {
        return None;
    }
    Some(CalibrationPlan {
        defects,
        replaces,
        split,
        variants: c.variants,
        max_samples: c.max_samples,
        min_images: c.min_images,
        max_good_fp_area: c.max_good_fp_area,
        tolerance: c.tolerance,
        groups,
    })
}

/// `target` and every node it depends on.
fn ancestors_with(nodes: &[CheckedNode], target: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::from([target]);
    let mut stack = vec![target];
    while let Some(n) = stack.pop() {
        for e in &nodes[n].inputs {
            if out.insert(e.from) {
                stack.push(e.from);
            }
        }
    }
    out
}

/// Sets a param by its dotted path (`k` or, in a nested option, `labeler.level`).
pub fn set_param(params: &mut serde_json::Map<String, serde_json::Value>, path: &str, value: serde_json::Value) {
    let mut map = params;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        let entry = map.entry(part.to_string()).or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !entry.is_object() {
            *entry = serde_json::Value::Object(Default::default());
        }
        let serde_json::Value::Object(next) = entry else { return };
        map = next;
    }
}

/// A param by its dotted path.
pub fn get_param<'a>(
    params: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    let mut parts = path.split('.');
    let first = params.get(parts.next()?)?;
    parts.try_fold(first, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_are_set_and_read_by_dotted_path() {
        let mut p = json!({"k": 3, "labeler": {"kind": "level", "level": 1.2}}).as_object().cloned().unwrap();
        set_param(&mut p, "labeler.level", json!(1.4));
        set_param(&mut p, "k", json!(5));
        assert_eq!(p, json!({"k": 5, "labeler": {"kind": "level", "level": 1.4}}).as_object().cloned().unwrap());
        assert_eq!(get_param(&p, "labeler.level"), Some(&json!(1.4)));
        assert_eq!(get_param(&p, "labeler.kind"), Some(&json!("level")));
        assert_eq!(get_param(&p, "labeler.nothing"), None);
    }
}
