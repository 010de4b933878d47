//! The sections of a pipeline file: `sweep`, `calibrate` and each node.

use super::*;

pub(super) fn parse_sweep(value: &Node, d: &mut Diagnostics) -> Vec<SweepAxis> {
    let Some(entries) = value.entries() else {
        d.error(Some(value.pos()), None, "`sweep` must map `vars.NAME` or `NODE.PARAM` to a list of values");
        return Vec::new();
    };
    entries.iter().filter_map(|(key, v)| sweep_axis(key, v, d)).collect()
}

pub(super) fn sweep_axis(key: &yaml::Key, v: &Node, d: &mut Diagnostics) -> Option<SweepAxis> {
    match v.to_json() {
        Json::Array(values) if !values.is_empty() && key.text.contains('.') => {
            Some(SweepAxis { path: key.text.clone(), values, pos: key.pos })
        }
        _ => {
            d.error(
                Some(key.pos),
                None,
                format!("sweep `{}`: expected `vars.NAME` or `NODE.PARAM` with a non-empty list of values", key.text),
            );
            None
        }
    }
}

/// A `tolerance` value: a fraction in [0, 1).
pub(super) fn parse_tolerance(v: &Node, d: &mut Diagnostics) -> Option<f64> {
    match v.to_json().as_f64() {
        Some(x) if (0.0..1.0).contains(&x) => Some(x),
        found => {
            let found = if found.is_some() { v.to_json().to_string() } else { describe_node(v) };
            d.error(
                Some(v.pos()),
                None,
                format!("calibrate `tolerance`: expected a fraction in [0, 1), found {found}"),
            );
            None
        }
    }
}

/// One `search` group: `NODE.PARAM: [values]` axes, and optionally its own `tolerance`.
pub(super) fn parse_group(target: &yaml::Key, value: &Node, d: &mut Diagnostics) -> CalibrationGroup {
    let mut group =
        CalibrationGroup { target: target.text.clone(), pos: target.pos, axes: Vec::new(), tolerance: None };
    let Some(entries) = value.entries() else {
        d.error(
            Some(value.pos()),
            None,
            format!("calibrate `search.{}`: expected a mapping of `NODE.PARAM: [values]`", target.text),
        );
        return group;
    };
    for (key, v) in entries {
        if key.text == "tolerance" {
            group.tolerance = parse_tolerance(v, d);
        } else if let Some(axis) = sweep_axis(key, v, d) {
            group.axes.push(axis);
        }
    }
    group
}

/// Defaults of the `calibrate:` keys (docs/pipelines.md); the JSON Schema shows the same.
pub mod calibrate_defaults {
    pub const VARIANTS: usize = 4;
    pub const MAX_SAMPLES: usize = 160;
    pub const MIN_IMAGES: usize = 3;
    pub const MAX_GOOD_FP_AREA: f64 = 0.05;
    /// Chosen on the real-photo demo set and synthetic seed 1 (docs/results/calibration.md).
    pub const TOLERANCE: f64 = 0.05;
}

pub(super) fn parse_calibrate(value: &Node, d: &mut Diagnostics) -> Option<CalibrateSpec> {
    let Some(entries) = value.entries() else {
        d.error(Some(value.pos()), None, format!("`calibrate` must be a mapping, found {}", value.kind_name()));
        return None;
    };
    let mut spec = CalibrateSpec {
        pos: value.pos(),
        defects: None,
        variants: calibrate_defaults::VARIANTS,
        max_samples: calibrate_defaults::MAX_SAMPLES,
        min_images: calibrate_defaults::MIN_IMAGES,
        max_good_fp_area: calibrate_defaults::MAX_GOOD_FP_AREA,
        tolerance: calibrate_defaults::TOLERANCE,
        groups: Vec::new(),
    };
    let count = |v: &Node, key: &str, min: u64, d: &mut Diagnostics| match v.to_json().as_u64() {
        Some(n) if n >= min => Some(n as usize),
        _ => {
            d.error(
                Some(v.pos()),
                None,
                format!("calibrate `{key}`: expected a whole number >= {min}, found {}", describe_node(v)),
            );
            None
        }
    };
    for (key, v) in entries {
        match key.text.as_str() {
            "defects" => match v.as_str() {
                Some(id) => spec.defects = Some((id.to_string(), v.pos())),
                None => d.error(Some(v.pos()), None, "calibrate `defects`: expected the id of a node that makes defect images"),
            },
            "variants" => spec.variants = count(v, "variants", 1, d).unwrap_or(spec.variants),
            "max_samples" => spec.max_samples = count(v, "max_samples", 1, d).unwrap_or(spec.max_samples),
            "min_images" => spec.min_images = count(v, "min_images", 1, d).unwrap_or(spec.min_images),
            "max_good_fp_area" => match v.to_json().as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => spec.max_good_fp_area = x,
                _ => d.error(
                    Some(v.pos()),
                    None,
                    format!("calibrate `max_good_fp_area`: expected a share of pixels in [0, 1], found {}", describe_node(v)),
                ),
            },
            "tolerance" => {
                if let Some(t) = parse_tolerance(v, d) {
                    spec.tolerance = t;
                }
            }
            "search" => match v.entries() {
                Some(groups) if !groups.is_empty() => {
                    for (target, group) in groups {
                        spec.groups.push(parse_group(target, group, d));
                    }
                }
                _ => d.error(
                    Some(v.pos()),
                    None,
                    "calibrate `search`: expected a mapping from a node whose `mask` is scored to its searched params, \
                     e.g. `thr: { thr.k: [2, 3, 4] }`",
                ),
            },
            other => {
                let hint = crate::diag::did_you_mean(other, CALIBRATE_KEYS.iter().copied());
                d.error(
                    Some(key.pos),
                    None,
                    format!("unknown calibrate key `{other}`{hint}; expected one of: {}", CALIBRATE_KEYS.join(", ")),
                );
            }
        }
    }
    if spec.defects.is_none() {
        d.error(Some(spec.pos), None, "calibrate: missing `defects: <node>`, the node that pastes synthetic defects");
    }
    if spec.groups.is_empty() {
        d.error(Some(spec.pos), None, "calibrate: missing `search`: nothing to calibrate");
    }
    Some(spec)
}

pub(super) fn parse_node(key: &yaml::Key, value: &Node, d: &mut Diagnostics) -> Option<NodeSpec> {
    let id = key.text.clone();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        d.error(Some(key.pos), Some(&id), "node ids may hold only letters, digits, `_` and `-`");
        return None;
    }
    let Some(entries) = value.entries() else {
        d.error(Some(value.pos()), Some(&id), format!("expected a mapping with `plugin`, found {}", value.kind_name()));
        return None;
    };
    let mut node = NodeSpec {
        id: id.clone(),
        pos: key.pos,
        plugin: None,
        fit: None,
        params: Map::new(),
        param_pos: BTreeMap::new(),
        with_pos: None,
        inputs: Vec::new(),
        cache: None,
        fit_scope: None,
    };
    for (k, v) in entries {
        match k.text.as_str() {
            "plugin" => match v.as_str() {
                Some(s) => node.plugin = Some((s.to_string(), v.pos())),
                None => {
                    d.error(Some(v.pos()), Some(&id), format!("`plugin` must be a stage name, found {}", v.kind_name()))
                }
            },
            "fit" => match v.as_str() {
                Some(s) => node.fit = Some((s.to_string(), v.pos())),
                None => {
                    d.error(Some(v.pos()), Some(&id), format!("`fit` must be a split name, found {}", v.kind_name()))
                }
            },
            "doc" => {}
            "fit_scope" => match v.as_str() {
                Some(scope) => node.fit_scope = Some((scope.to_string(), v.pos())),
                None => d.error(
                    Some(v.pos()),
                    Some(&id),
                    format!("`fit_scope` must be `category` or `all`, found {}", v.kind_name()),
                ),
            },
            "cache" => match v {
                Node::Scalar { value: Json::Bool(b), .. } => node.cache = Some(*b),
                other => d.error(
                    Some(other.pos()),
                    Some(&id),
                    format!("`cache` must be true or false, found {}", other.kind_name()),
                ),
            },
            "with" => {
                node.with_pos = Some(k.pos);
                match v {
                    Node::Map { entries, .. } => {
                        for (pk, pv) in entries {
                            node.param_pos.insert(pk.text.clone(), pk.pos);
                            node.params.insert(pk.text.clone(), pv.to_json());
                        }
                    }
                    Node::Scalar { value: Json::Null, .. } => {}
                    other => d.error(
                        Some(other.pos()),
                        Some(&id),
                        format!("`with` must be a mapping of params, found {}", other.kind_name()),
                    ),
                }
            }
            "inputs" => match v.entries() {
                Some(inputs) => {
                    for (port, src) in inputs {
                        let mut edges = Vec::new();
                        let items: Vec<&Node> = match src {
                            Node::Seq { items, .. } => items.iter().collect(),
                            other => vec![other],
                        };
                        for item in items {
                            match item.as_str().and_then(|s| s.split_once('.')) {
                                Some((n, p)) if !n.is_empty() && !p.is_empty() && !p.contains('.') => {
                                    edges.push(EdgeRef { node: n.to_string(), port: p.to_string(), pos: item.pos() })
                                }
                                _ => d.error(
                                    Some(item.pos()),
                                    Some(&id),
                                    format!(
                                        "input `{}`: expected an edge `node.port` (e.g. `data.image`), found {}",
                                        port.text,
                                        describe_node(item)
                                    ),
                                ),
                            }
                        }
                        node.inputs.push(InputSpec { port: port.text.clone(), pos: port.pos, edges });
                    }
                }
                None => d.error(
                    Some(v.pos()),
                    Some(&id),
                    format!("`inputs` must map ports to edges `node.port`, found {}", v.kind_name()),
                ),
            },
            other => {
                let hint = crate::diag::did_you_mean(other, NODE_KEYS.iter().copied());
                d.error(
                    Some(k.pos),
                    Some(&id),
                    format!("unknown key `{other}`{hint}; a node has: {}", NODE_KEYS.join(", ")),
                );
            }
        }
    }
    if node.plugin.is_none() {
        d.error(Some(key.pos), Some(&id), "missing `plugin: <stage name>`");
    }
    Some(node)
}

pub(super) fn describe_node(n: &Node) -> String {
    match n.as_str() {
        Some(s) => format!("\"{s}\""),
        None => n.kind_name().to_string(),
    }
}
