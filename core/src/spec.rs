//! The pipeline file as written: parsed from YAML with positions, variables substituted,
//! command-line overrides applied. Structural problems are collected, not thrown, so
//! `anoflow validate` can report all of them at once.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anoflow_sdk::params::did_you_mean;
use serde_json::{Map, Value as Json};

use crate::{
    diag::Diagnostics,
    yaml::{self, Node, Pos},
};

/// The keys a pipeline file may have at its top level, and in its `calibrate:` section.
pub const TOP_LEVEL_KEYS: &[&str] = &["name", "description", "vars", "nodes", "sweep", "calibrate"];
pub const CALIBRATE_KEYS: &[&str] =
    &["defects", "variants", "max_samples", "min_images", "max_good_fp_area", "tolerance", "search"];
const NODE_KEYS: &[&str] = &["plugin", "fit", "fit_scope", "with", "inputs", "cache", "doc"];

/// `node.port` (or `node.port[label]` is not accepted here: edges name whole ports).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRef {
    pub node: String,
    pub port: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub port: String,
    pub pos: Pos,
    pub edges: Vec<EdgeRef>,
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub pos: Pos,
    pub plugin: Option<(String, Pos)>,
    pub fit: Option<(String, Pos)>,
    pub params: Map<String, Json>,
    /// Position of each param key (top level of `with`).
    pub param_pos: BTreeMap<String, Pos>,
    pub with_pos: Option<Pos>,
    pub inputs: Vec<InputSpec>,
    /// `cache: true|false`: keep this node's per-sample outputs in the node-output cache
    /// (default: yes for stages whose outputs are score maps, masks or scalars).
    pub cache: Option<bool>,
    /// `fit_scope: category` (default: one model per category) or `all`.
    pub fit_scope: Option<(String, Pos)>,
}

/// One axis of a sweep: a `vars.NAME` or `NODE.PARAM` path and the values it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepAxis {
    pub path: String,
    pub values: Vec<Json>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub file: PathBuf,
    pub base_dir: PathBuf,
    pub name: String,
    pub description: String,
    pub vars: Map<String, Json>,
    pub nodes: Vec<NodeSpec>,
    pub sweep: Vec<SweepAxis>,
    pub calibrate: Option<CalibrateSpec>,
}

/// `calibrate:`: per category, binarizer params chosen on the clean validation images with
/// synthetic defects pasted into them (the executor's calibration phase).
#[derive(Debug, Clone)]
pub struct CalibrateSpec {
    pub pos: Pos,
    /// The node that makes defect images; what its `image` input reads is what they replace.
    pub defects: Option<(String, Pos)>,
    /// Defect images made from each clean validation image.
    pub variants: usize,
    /// At most this many defect images per category.
    pub max_samples: usize,
    /// Fewer clean validation images than this in a category: no calibration there (the
    /// params as written are used, and the results say so).
    pub min_images: usize,
    /// A candidate may mark at most this share of the clean validation images' pixels.
    pub max_good_fp_area: f64,
    /// Candidates whose F1 is within this fraction of the best count as ties; the earliest in
    /// grid order wins (synthetic defects tend to be easier than real ones: list the grid from
    /// the side to err on).
    pub tolerance: f64,
    /// Searched in the order written; each group scores the `mask` of its target node.
    pub groups: Vec<CalibrationGroup>,
}

/// One calibration: the node whose `mask` is scored and the params searched for it.
#[derive(Debug, Clone)]
pub struct CalibrationGroup {
    pub target: String,
    pub pos: Pos,
    pub axes: Vec<SweepAxis>,
    /// This group's own `tolerance`, in place of the section's.
    pub tolerance: Option<f64>,
}

impl CalibrateSpec {
    fn to_json(&self) -> Json {
        let search: Map<String, Json> = self
            .groups
            .iter()
            .map(|g| {
                let mut axes: Map<String, Json> =
                    g.axes.iter().map(|a| (a.path.clone(), Json::Array(a.values.clone()))).collect();
                if let Some(t) = g.tolerance {
                    axes.insert("tolerance".into(), t.into());
                }
                (g.target.clone(), Json::Object(axes))
            })
            .collect();
        serde_json::json!({
            "defects": self.defects.as_ref().map(|(d, _)| d.clone()),
            "variants": self.variants,
            "max_samples": self.max_samples,
            "min_images": self.min_images,
            "max_good_fp_area": self.max_good_fp_area,
            "tolerance": self.tolerance,
            "search": search,
        })
    }
}

impl PipelineSpec {
    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The pipeline as a JSON value (what `anoflow run` stores as the expanded pipeline).
    pub fn to_json(&self) -> Json {
        let nodes: Map<String, Json> = self
            .nodes
            .iter()
            .map(|n| {
                let mut m = Map::new();
                if let Some((p, _)) = &n.plugin {
                    m.insert("plugin".into(), p.clone().into());
                }
                if let Some((f, _)) = &n.fit {
                    m.insert("fit".into(), f.clone().into());
                }
                if let Some((scope, _)) = &n.fit_scope {
                    m.insert("fit_scope".into(), scope.clone().into());
                }
                if let Some(c) = n.cache {
                    m.insert("cache".into(), c.into());
                }
                if !n.params.is_empty() {
                    m.insert("with".into(), Json::Object(n.params.clone()));
                }
                if !n.inputs.is_empty() {
                    let inputs: Map<String, Json> = n
                        .inputs
                        .iter()
                        .map(|i| {
                            let edges: Vec<Json> =
                                i.edges.iter().map(|e| Json::String(format!("{}.{}", e.node, e.port))).collect();
                            let v = if edges.len() == 1 { edges[0].clone() } else { Json::Array(edges) };
                            (i.port.clone(), v)
                        })
                        .collect();
                    m.insert("inputs".into(), Json::Object(inputs));
                }
                (n.id.clone(), Json::Object(m))
            })
            .collect();
        let mut out = serde_json::json!({ "name": self.name, "description": self.description, "vars": self.vars, "nodes": nodes });
        if let (Some(c), Json::Object(m)) = (&self.calibrate, &mut out) {
            m.insert("calibrate".into(), c.to_json());
        }
        out
    }
}

/// A `--set PATH=VALUE` override: `vars.NAME=...` or `NODE.PARAM[.SUB...]=...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub path: Vec<String>,
    pub value: Json,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, value) =
            s.split_once('=').ok_or_else(|| format!("`{s}`: expected PATH=VALUE, e.g. ttt.percentile=98"))?;
        let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(format!("`{s}`: the path must be `vars.NAME` or `NODE.PARAM`"));
        }
        let value = match yaml::parse(value) {
            Ok(Some(node)) => node.to_json(),
            Ok(None) => Json::Null,
            Err(e) => return Err(format!("`{s}`: value is not valid YAML: {}", e.message)),
        };
        Ok(Self { path, value })
    }
}

/// Where `${ENV}` values come from (a trait so tests need not touch the process env).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;
impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// Reads and parses a pipeline file.
pub fn load(path: &Path, overrides: &[Override], env: &dyn Env) -> Result<PipelineSpec, Diagnostics> {
    let mut diags = Diagnostics::new(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.error(None, None, format!("cannot read the pipeline file: {e}"));
            return Err(diags);
        }
    };
    parse(path, &text, overrides, env)
}

/// Parses pipeline text; `file` is used for messages and as the base of relative paths.
pub fn parse(file: &Path, text: &str, overrides: &[Override], env: &dyn Env) -> Result<PipelineSpec, Diagnostics> {
    let mut d = Diagnostics::new(file);
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            d.error(None, None, "the pipeline file is empty; expected a mapping with `name` and `nodes`");
            return Err(d);
        }
        Err(e) => {
            d.error(Some(e.pos), None, format!("not valid YAML: {}", e.message));
            return Err(d);
        }
    };
    let Some(entries) = root.entries() else {
        d.error(
            Some(root.pos()),
            None,
            format!("expected a mapping with `name` and `nodes`, found {}", root.kind_name()),
        );
        return Err(d);
    };

    let base_dir = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut spec = PipelineSpec {
        file: file.to_path_buf(),
        base_dir,
        name: name_from_file(file),
        description: String::new(),
        vars: Map::new(),
        nodes: Vec::new(),
        sweep: Vec::new(),
        calibrate: None,
    };
    let mut nodes_node = None;
    // Where each var's value is written, for errors in it.
    let mut var_pos: BTreeMap<String, Pos> = BTreeMap::new();
    for (key, value) in entries {
        match key.text.as_str() {
            "name" => match value.as_str() {
                Some(s) => match run_name_problem(s) {
                    None => spec.name = s.to_string(),
                    Some(problem) => d.error(Some(value.pos()), None, problem),
                },
                None => {
                    d.error(Some(value.pos()), None, format!("`name` must be a string, found {}", value.kind_name()))
                }
            },
            "description" => spec.description = value.as_str().unwrap_or_default().to_string(),
            "vars" => match value.to_json() {
                Json::Object(m) => {
                    spec.vars = m;
                    var_pos =
                        value.entries().unwrap_or_default().iter().map(|(k, v)| (k.text.clone(), v.pos())).collect();
                }
                Json::Null => {}
                _ => d.error(Some(value.pos()), None, format!("`vars` must be a mapping, found {}", value.kind_name())),
            },
            "nodes" => nodes_node = Some(value),
            "sweep" => spec.sweep = parse_sweep(value, &mut d),
            "calibrate" => spec.calibrate = parse_calibrate(value, &mut d),
            other => {
                let hint = did_you_mean(other, TOP_LEVEL_KEYS.iter().copied())
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                d.error(
                    Some(key.pos),
                    None,
                    format!("unknown top-level key `{other}`{hint}; expected one of: {}", TOP_LEVEL_KEYS.join(", ")),
                );
            }
        }
    }

    // Overrides of vars apply before substitution; overrides of params after parsing nodes.
    for o in overrides.iter().filter(|o| o.path[0] == "vars") {
        set_path(&mut spec.vars, &o.path[1..], o.value.clone());
    }
    spec.vars = substitute_vars(&spec.vars, &var_pos, env, &mut d);

    match nodes_node {
        None => d.error(None, None, "missing `nodes`: a pipeline needs at least a source node"),
        Some(n) => match n.entries() {
            Some(entries) if !entries.is_empty() => {
                for (key, value) in entries {
                    if let Some(node) = parse_node(key, value, &mut d) {
                        spec.nodes.push(node);
                    }
                }
            }
            _ => d.error(Some(n.pos()), None, format!("`nodes` must be a non-empty mapping, found {}", n.kind_name())),
        },
    }

    for o in overrides.iter().filter(|o| o.path[0] != "vars") {
        match spec.nodes.iter_mut().find(|n| n.id == o.path[0]) {
            Some(node) => set_path(&mut node.params, &o.path[1..], o.value.clone()),
            None => {
                let hint = did_you_mean(&o.path[0], spec.nodes.iter().map(|n| n.id.as_str()))
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
                d.error(None, None, format!("--set {}: no node `{}`{hint}", o.path.join("."), o.path[0]));
            }
        }
    }

    let vars = spec.vars.clone();
    for node in &mut spec.nodes {
        // An error points at the param that uses the var (a `--set` param: at `with`).
        for (name, value) in node.params.iter_mut() {
            let pos = node.param_pos.get(name).copied().or(node.with_pos).or(Some(node.pos));
            substitute(value, &vars, env, &mut d, pos, &node.id);
        }
    }

    if d.is_empty() {
        Ok(spec)
    } else {
        Err(d)
    }
}

/// Longest pipeline `name`: it is one path component of the run directory.
const MAX_NAME_LEN: usize = 128;

/// Why `name` cannot name the run directory `runs/<name>/`, if it cannot: it must be one
/// path component of letters, digits, `_`, `-` and `.` (not `.` or `..`), like node ids and
/// sweep labels, so that a pipeline file cannot make a run write outside `runs/`.
fn run_name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    let problem = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is a relative directory"
    } else if name.len() > MAX_NAME_LEN {
        "is too long"
    } else if !name.chars().all(allowed) {
        "holds characters other than letters, digits, `_`, `-` and `.`"
    } else {
        return None;
    };
    let shown: String = name.chars().take(60).flat_map(char::escape_debug).collect();
    Some(format!(
        "`name` \"{shown}\" {problem}: it names the run directory runs/<name>/, so it must be one path component \
         of letters, digits, `_`, `-` and `.` (not `.` or `..`, at most {MAX_NAME_LEN} characters)"
    ))
}

/// The run name when the file gives none: its file stem, cleaned as sweep labels are.
fn name_from_file(file: &Path) -> String {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let cleaned: String = stem
        .chars()
        .take(MAX_NAME_LEN)
        .map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' })
        .collect();
    if run_name_problem(&cleaned).is_some() {
        "pipeline".to_string()
    } else {
        cleaned
    }
}

fn parse_sweep(value: &Node, d: &mut Diagnostics) -> Vec<SweepAxis> {
    let Some(entries) = value.entries() else {
        d.error(Some(value.pos()), None, "`sweep` must map `vars.NAME` or `NODE.PARAM` to a list of values");
        return Vec::new();
    };
    entries.iter().filter_map(|(key, v)| sweep_axis(key, v, d)).collect()
}

fn sweep_axis(key: &yaml::Key, v: &Node, d: &mut Diagnostics) -> Option<SweepAxis> {
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
fn parse_tolerance(v: &Node, d: &mut Diagnostics) -> Option<f64> {
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
fn parse_group(target: &yaml::Key, value: &Node, d: &mut Diagnostics) -> CalibrationGroup {
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

fn parse_calibrate(value: &Node, d: &mut Diagnostics) -> Option<CalibrateSpec> {
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
                let hint = did_you_mean(other, CALIBRATE_KEYS.iter().copied())
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
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

fn parse_node(key: &yaml::Key, value: &Node, d: &mut Diagnostics) -> Option<NodeSpec> {
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
                let hint = did_you_mean(other, NODE_KEYS.iter().copied())
                    .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
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

fn describe_node(n: &Node) -> String {
    match n.as_str() {
        Some(s) => format!("\"{s}\""),
        None => n.kind_name().to_string(),
    }
}

fn set_path(map: &mut Map<String, Json>, path: &[String], value: Json) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = map.entry(first.clone()).or_insert_with(|| Json::Object(Map::new()));
            if !entry.is_object() {
                *entry = Json::Object(Map::new());
            }
            if let Json::Object(m) = entry {
                set_path(m, rest, value);
            }
        }
    }
}

fn substitute_vars(
    vars: &Map<String, Json>,
    positions: &BTreeMap<String, Pos>,
    env: &dyn Env,
    d: &mut Diagnostics,
) -> Map<String, Json> {
    let mut out = Map::new();
    for (k, v) in vars {
        let mut v = v.clone();
        // Vars may use ${ENV} and vars defined before them.
        substitute(&mut v, &out, env, d, positions.get(k).copied(), "");
        out.insert(k.clone(), v);
    }
    out
}

/// Replaces `${ENV}`, `${ENV:-default}` and `{{var}}` in every string of `v`. A string that
/// is exactly one `{{var}}` takes the var's value with its type (so numbers stay numbers).
fn substitute(
    v: &mut Json,
    vars: &Map<String, Json>,
    env: &dyn Env,
    d: &mut Diagnostics,
    pos: Option<Pos>,
    node: &str,
) {
    let node_ref = (!node.is_empty()).then_some(node);
    match v {
        Json::String(s) => {
            let trimmed = s.trim();
            if let Some(name) = trimmed.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
                if !name.contains("{{") {
                    match vars.get(name.trim()) {
                        Some(val) => *v = val.clone(),
                        None => d.error(pos, node_ref, unknown_var(name.trim(), vars)),
                    }
                    return;
                }
            }
            match expand(s, vars, env) {
                Ok(e) => *s = e,
                Err(msg) => d.error(pos, node_ref, msg),
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|i| substitute(i, vars, env, d, pos, node)),
        Json::Object(m) => m.values_mut().for_each(|i| substitute(i, vars, env, d, pos, node)),
        _ => {}
    }
}

fn unknown_var(name: &str, vars: &Map<String, Json>) -> String {
    let hint = did_you_mean(name, vars.keys().map(String::as_str))
        .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"));
    format!("unknown variable `{{{{{name}}}}}`{hint}; define it under `vars:` or with --set vars.{name}=...")
}

fn expand(s: &str, vars: &Map<String, Json>, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let next_env = rest.find("${");
        let next_var = rest.find("{{");
        let (start, is_env) = match (next_env, next_var) {
            (None, None) => break,
            (Some(e), Some(v)) if v < e => (v, false),
            (Some(e), _) => (e, true),
            (None, Some(v)) => (v, false),
        };
        out.push_str(&rest[..start]);
        if is_env {
            let body_start = start + 2;
            let end = rest[body_start..].find('}').ok_or_else(|| format!("unclosed `${{` in \"{s}\""))? + body_start;
            let body = &rest[body_start..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, dflt)) => (n, Some(dflt)),
                None => (body, None),
            };
            match (env.get(name), default) {
                (Some(val), _) => out.push_str(&val),
                (None, Some(dflt)) => out.push_str(dflt),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (used in \"{s}\"); set it, or write `${{{name}:-default}}`"
                    ))
                }
            }
            rest = &rest[end + 1..];
        } else {
            let body_start = start + 2;
            let end = rest[body_start..].find("}}").ok_or_else(|| format!("unclosed `{{{{` in \"{s}\""))? + body_start;
            let name = rest[body_start..end].trim();
            match vars.get(name) {
                Some(Json::String(v)) => out.push_str(v),
                Some(other) => out.push_str(&other.to_string()),
                None => return Err(unknown_var(name, vars)),
            }
            rest = &rest[end + 2..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("ROOT".to_string(), "/data/mvtec".to_string())])
    }

    fn parse_ok(text: &str, overrides: &[Override]) -> PipelineSpec {
        match parse(Path::new("p.yaml"), text, overrides, &env()) {
            Ok(s) => s,
            Err(d) => panic!("{:?}", d.into_vec()),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("p.yaml"), text, &[], &env()) {
            Ok(_) => panic!("expected errors"),
            Err(d) => d.into_vec().iter().map(ToString::to_string).collect(),
        }
    }

    const PIPE: &str = "name: t
vars: { root: \"${ROOT}\", category: bottle, k: 3 }
nodes:
  data: { plugin: mvtec-ad, with: { root: \"{{root}}/x\", category: \"{{category}}\" } }
  thr: { plugin: threshold-mean-std, fit: validation, with: { k: \"{{k}}\" }, inputs: { score: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { masks: [thr.mask, data.mask] } }
";

    #[test]
    fn vars_env_and_types() {
        let s = parse_ok(PIPE, &[]);
        assert_eq!(s.name, "t");
        assert_eq!(s.node("data").unwrap().params["root"], "/data/mvtec/x");
        assert_eq!(s.node("thr").unwrap().params["k"], 3, "a whole-string var keeps its type");
        assert_eq!(s.node("thr").unwrap().fit.as_ref().unwrap().0, "validation");
        let eval = s.node("eval").unwrap();
        assert_eq!(eval.inputs[0].edges.len(), 2);
        assert_eq!(
            eval.inputs[0].edges[1],
            EdgeRef { node: "data".into(), port: "mask".into(), pos: Pos { line: 6, col: 69 } }
        );
    }

    #[test]
    fn overrides_apply_to_vars_and_params() {
        let o: Vec<Override> = vec![
            "vars.category=carpet".parse().unwrap(),
            "thr.k=2.5".parse().unwrap(),
            "thr.extra.c=1".parse().unwrap(),
        ];
        let s = parse_ok(PIPE, &o);
        assert_eq!(s.node("data").unwrap().params["category"], "carpet");
        assert_eq!(s.node("thr").unwrap().params["k"], 2.5);
        assert_eq!(s.node("thr").unwrap().params["extra"]["c"], 1);
        assert!("nodot=1".parse::<Override>().is_err());
    }

    #[test]
    fn structural_errors_reported_together() {
        let errs = errors(
            "name: t\nnodez: {}\nnodes:\n  a: { plugn: x }\n  b: { plugin: y, inputs: { i: nodot } }\n  c: { plugin: z, with: { p: \"{{nope}}\" } }\n",
        );
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0].starts_with("p.yaml:2:1: error: unknown top-level key `nodez` (did you mean `nodes`?)"),
            "{errs:#?}"
        );
        assert!(errs.iter().any(|e| e.contains("node `a`: unknown key `plugn` (did you mean `plugin`?)")));
        assert!(errs.iter().any(|e| e.contains("node `a`: missing `plugin")));
        assert!(errs.iter().any(|e| e.contains("node `b`: input `i`: expected an edge `node.port`")));
        assert!(errs.iter().any(|e| e.contains("node `c`: unknown variable `{{nope}}`")));
    }

    #[test]
    fn variable_errors_point_at_the_var_or_the_param_using_it() {
        let errs =
            errors("vars:\n  root: \"${NOPE}/x\"\nnodes:\n  a: { plugin: x, with: { q: 1, p: \"{{nope}}/y\" } }\n");
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("p.yaml:2:9: error: environment variable `NOPE` is not set"), "{errs:#?}");
        assert!(errs[1].starts_with("p.yaml:4:33: error: node `a`: unknown variable `{{nope}}`"), "{errs:#?}");
    }

    #[test]
    fn missing_env_is_an_error_unless_defaulted() {
        let errs = errors("nodes:\n  a: { plugin: x, with: { p: \"${NOPE}\" } }\n");
        assert!(errs[0].contains("environment variable `NOPE` is not set"), "{errs:?}");
        let s = parse_ok("nodes:\n  a: { plugin: x, with: { p: \"${NOPE:-d}/x\" } }\n", &[]);
        assert_eq!(s.nodes[0].params["p"], "d/x");
    }

    #[test]
    fn names_that_leave_the_runs_directory_are_refused_at_their_position() {
        for bad in ["/tmp/x", "../..", "..", ".", "a/b", "", "a\\b", "tab\there"] {
            let text = format!("name: \"{}\"\nnodes:\n  a: {{ plugin: x }}\n", bad.escape_default());
            let errs = errors(&text);
            assert_eq!(errs.len(), 1, "{bad:?}: {errs:#?}");
            assert!(errs[0].starts_with("p.yaml:1:7: error: `name`"), "{bad:?}: {errs:#?}");
            assert!(errs[0].contains("one path component"), "{bad:?}: {errs:#?}");
        }
        let errs = errors("name: ../../etc\nnodes:\n  a: { plugin: x }\n");
        assert!(errs[0].starts_with("p.yaml:1:7: error: `name` \"../../etc\""), "{errs:#?}");
        assert_eq!(parse_ok("name: run-1.v2_x\nnodes:\n  a: { plugin: x }\n", &[]).name, "run-1.v2_x");
    }

    #[test]
    fn a_name_from_the_file_stem_is_cleaned() {
        assert_eq!(name_from_file(Path::new("dir/my pipeline.yaml")), "my_pipeline");
        assert_eq!(name_from_file(Path::new("..yaml")), "pipeline");
        assert_eq!(name_from_file(Path::new("/")), "pipeline");
        assert_eq!(name_from_file(Path::new("a/qc-v2.yaml")), "qc-v2");
    }

    #[test]
    fn empty_and_non_yaml_files() {
        assert!(errors("")[0].contains("the pipeline file is empty"));
        assert!(errors("nodes: [unclosed\n")[0].contains("not valid YAML"));
        assert!(errors("just a string")[0].contains("expected a mapping"));
    }

    #[test]
    fn a_calibration_group_may_set_its_own_tolerance() {
        let text = format!(
            "{PIPE}calibrate:\n  defects: data\n  tolerance: 0.05\n  search:\n    thr: {{ thr.k: [2, 3], tolerance: 0.15 }}\n    eval: {{ thr.k: [4] }}\n"
        );
        let s = parse_ok(&text, &[]);
        let c = s.calibrate.as_ref().unwrap();
        assert_eq!(c.tolerance, 0.05);
        assert_eq!(c.groups[0].tolerance, Some(0.15));
        assert_eq!(c.groups[0].axes.len(), 1, "`tolerance` is not an axis");
        assert_eq!(c.groups[1].tolerance, None);
        assert_eq!(s.to_json()["calibrate"]["search"]["thr"]["tolerance"], 0.15);

        let bad =
            format!("{PIPE}calibrate:\n  defects: data\n  search:\n    thr: {{ thr.k: [2, 3], tolerance: 1.5 }}\n");
        let e = errors(&bad);
        assert!(e.iter().any(|m| m.contains("`tolerance`: expected a fraction in [0, 1), found 1.5")), "{e:?}");
    }
}
