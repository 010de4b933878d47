//! The pipeline file as written: parsed from YAML with positions, variables substituted,
//! command-line overrides applied. Structural problems are collected, not thrown, so
//! `anoflow validate` can report all of them at once.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value as Json};

use crate::{
    diag::Diagnostics,
    yaml::{self, Node, Pos},
};

mod sections;
#[cfg(test)]
mod tests;
mod vars;

pub use sections::calibrate_defaults;
use sections::*;
use vars::*;

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
                let hint = crate::diag::did_you_mean(other, TOP_LEVEL_KEYS.iter().copied());
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
                let hint = crate::diag::did_you_mean(&o.path[0], spec.nodes.iter().map(|n| n.id.as_str()));
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
