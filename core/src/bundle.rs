//! Deployment bundles: a directory holding what `anoflow predict` needs to map new images
//! with a fitted pipeline, and nothing of the data it was fitted on.
//!
//! ```text
//! BUNDLE/bundle.json                  what is inside, with the SHA-256 of every other file
//! BUNDLE/pipeline.yaml                the expanded pipeline, source replaced, sinks left out
//! BUNDLE/states/<node>.state          a state fitted over every category
//! BUNDLE/states/<node>/<cat>.state    a state fitted (or calibrated) for one category
//! BUNDLE/models/manifest.yaml + files the models the params name, with their manifest entries
//! BUNDLE/files/<node>/<param>/<file>  other files the params name
//! ```
//!
//! The bundle's pipeline keeps the nodes the deployed outputs depend on; its source becomes a
//! `folder` source (predict lists the images itself and the source only loads them). Fitted
//! states are the stages' own `save_state` bytes, loaded back through `load_state`, so predict
//! runs the same stages through the same executor. `bundle.json` carries a digest of itself,
//! so a hand edit is refused, and the libraries (name, version, SHA-256), models and SDK
//! versions it was made with: another build is refused with what differs.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anoflow_sdk::descriptor::StageKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::{
    check::{self, CheckedPipeline},
    executor::{CalibrationReport, CategoryInstance, FittedPipeline, NodeState},
    fsutil::write_atomic,
    provenance,
    registry::Registry,
    spec::{self, ProcessEnv},
};

pub const BUNDLE_FILE: &str = "bundle.json";
pub const PIPELINE_FILE: &str = "pipeline.yaml";
const FORMAT: &str = "anoflow-bundle-1";

/// Why a bundle cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Export(String),
    #[error("bundle {bundle}: refused: {reason}")]
    Refused { bundle: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A node's output the bundle serves, `node.port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    pub node: String,
    pub port: String,
}

impl OutputRef {
    pub fn parse(text: &str) -> Option<Self> {
        let (node, port) = text.split_once('.')?;
        (!node.is_empty() && !port.is_empty()).then(|| OutputRef { node: node.into(), port: port.into() })
    }
}

impl std::fmt::Display for OutputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.node, self.port)
    }
}

/// What predict serves: the mask, and optionally a score map and an image score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    pub mask: OutputRef,
    pub score: Option<OutputRef>,
    pub image_score: Option<OutputRef>,
}

/// How the pipeline's input geometry maps back to an image: the shorter side resized to
/// `resize` (0: kept), then a centre crop of `crop x crop` (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub resize: usize,
    pub crop: usize,
}

/// The input predict feeds: the source node's id, the channels images must have, and the
/// geometry of the node that resizes them (when one declares `resize` and `crop` params).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub node: String,
    pub channels: Option<usize>,
    pub geometry: Option<Geometry>,
}

/// A fitted state (or a per-category instance without one) in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    pub node: String,
    /// `None`: one state for every category.
    pub category: Option<String>,
    /// Relative to the bundle; `None` for a per-category instance that keeps no state.
    pub file: Option<String>,
    /// The params of a per-category instance (calibrated ones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Json>>,
}

/// A plugin library the bundle's nodes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEntry {
    pub library: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub stages: Vec<String>,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub anoflow: String,
    pub sdk_abi: u32,
    pub data_contract: u32,
    pub pipeline: String,
    pub name: String,
    pub input: Input,
    pub outputs: Outputs,
    pub categories: Vec<String>,
    /// Per category, what calibration chose (`node.param` -> value).
    pub category_settings: BTreeMap<String, Map<String, Json>>,
    pub states: Vec<StateEntry>,
    pub plugins: Vec<PluginEntry>,
    pub models: Vec<Json>,
    /// The evaluation run's sink results (metrics), when `export --run` named it.
    pub metrics: Option<Json>,
    /// The evaluation run directory the metrics come from.
    pub evaluated_by: Option<String>,
    /// SHA-256 of every other file of the bundle, by relative path.
    pub files: BTreeMap<String, String>,
    /// SHA-256 of this manifest with `digest` empty: a hand edit is seen.
    #[serde(default)]
    pub digest: String,
}

impl Manifest {
    fn computed_digest(&self) -> String {
        let mut copy = self.clone();
        copy.digest = String::new();
        // Through a `Value`, so the text does not depend on the struct's field order.
        let text = serde_json::to_value(&copy).map(|v| v.to_string()).unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// What `export` needs besides the pipeline.
pub struct ExportRequest<'a> {
    pub out: &'a Path,
    pub run: Option<&'a Path>,
}

/// The outputs to serve: the ones asked for, or those the pipeline's metrics sink evaluates
/// (its last `masks` edge, first `scores` and first `image_scores`).
pub fn choose_outputs(
    p: &CheckedPipeline,
    mask: Option<OutputRef>,
    score: Option<OutputRef>,
    image_score: Option<OutputRef>,
) -> Result<Outputs, BundleError> {
    let edges = |port: &str| -> Vec<OutputRef> {
        p.nodes
            .iter()
            .filter(|n| n.kind() == StageKind::Sink)
            .flat_map(|n| n.inputs.iter().filter(|e| e.to_port == port))
            .map(|e| OutputRef { node: p.nodes[e.from].id.clone(), port: e.from_port.clone() })
            .collect()
    };
    let mask = mask.or_else(|| edges("masks").last().cloned()).ok_or_else(|| {
        BundleError::Export("no mask to deploy: name one with --mask NODE.PORT (no sink reads `masks`)".into())
    })?;
    let score = score.or_else(|| edges("scores").first().cloned());
    let image_score = image_score.or_else(|| edges("image_scores").first().cloned());
    let outputs = Outputs { mask, score, image_score };
    for (what, o) in [
        ("mask", Some(&outputs.mask)),
        ("score", outputs.score.as_ref()),
        ("image score", outputs.image_score.as_ref()),
    ] {
        let Some(o) = o else { continue };
        let n =
            p.index_of(&o.node).ok_or_else(|| BundleError::Export(format!("{what} `{o}`: no node `{}`", o.node)))?;
        if p.nodes[n].stage.descriptor.output_port(&o.port).is_none() {
            return Err(BundleError::Export(format!("{what} `{o}`: node `{}` has no output `{}`", o.node, o.port)));
        }
    }
    Ok(outputs)
}

/// The nodes the outputs depend on (the source included), in the pipeline's order.
fn kept_nodes(p: &CheckedPipeline, outputs: &Outputs) -> BTreeSet<usize> {
    let targets = [Some(&outputs.mask), outputs.score.as_ref(), outputs.image_score.as_ref()];
    let mut keep = BTreeSet::new();
    for o in targets.into_iter().flatten() {
        if let Some(n) = p.index_of(&o.node) {
            keep.insert(n);
            keep.extend(p.ancestors(n));
        }
    }
    keep.insert(p.source);
    keep
}

/// The node reading the source's image with `resize` and `crop` params: its geometry.
fn input_geometry(p: &CheckedPipeline, keep: &BTreeSet<usize>) -> Option<Geometry> {
    let reader = keep.iter().map(|&n| &p.nodes[n]).find(|node| {
        node.inputs.iter().any(|e| e.from == p.source && e.from_port == "image")
            && node.params.contains_key("resize")
            && node.params.contains_key("crop")
    })?;
    Some(Geometry {
        resize: reader.params.get("resize")?.as_u64()? as usize,
        crop: reader.params.get("crop")?.as_u64()? as usize,
    })
}

fn sha256_file(path: &Path) -> Result<String, BundleError> {
    provenance::file_digest(path)
        .map(|d| d.sha256)
        .map_err(|e| BundleError::Export(format!("cannot read {}: {e}", path.display())))
}

/// Writes `bytes` to `rel` in the bundle being built and records its digest.
struct Writer {
    dir: PathBuf,
    files: BTreeMap<String, String>,
}

impl Writer {
    fn put(&mut self, rel: &str, bytes: &[u8]) -> Result<(), BundleError> {
        let path = self.dir.join(rel);
        write_atomic(&path, bytes).map_err(|source| BundleError::Write { path, source })?;
        self.files.insert(rel.to_string(), hex::encode(Sha256::digest(bytes)));
        Ok(())
    }

    fn copy(&mut self, rel: &str, from: &Path) -> Result<(), BundleError> {
        let bytes =
            std::fs::read(from).map_err(|e| BundleError::Export(format!("cannot read {}: {e}", from.display())))?;
        self.put(rel, &bytes)
    }
}

/// A file-name-safe form of a node id or category.
fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// The model manifest entry of a node's `model` file: by name, or the entry listing the file
/// in a manifest beside it.
fn model_entry(p: &CheckedPipeline, named: &provenance::NamedPath) -> Option<Json> {
    let (dir, manifest) = match &named.model {
        Some(_) => provenance::find_manifest(&p.spec.base_dir)?,
        None => {
            let dir = named.path.parent()?.to_path_buf();
            let text = std::fs::read_to_string(dir.join("manifest.yaml")).ok()?;
            (dir, serde_yaml::from_str(&text).ok()?)
        }
    };
    manifest["models"]
        .as_array()?
        .iter()
        .find(|m| {
            m["file"].as_str().is_some_and(|f| dir.join(f) == named.path)
                || named.model.as_deref().is_some_and(|name| m["name"] == name)
        })
        .cloned()
}

/// Exports `p` (checked with the run's overrides): fits (or loads from the cache) and
/// calibrates, then writes the bundle into a new directory, renamed into place at the end so
/// that a failed export leaves no bundle behind.
pub fn export(
    p: &CheckedPipeline,
    fitted: &FittedPipeline,
    outputs: Outputs,
    request: &ExportRequest<'_>,
) -> Result<Manifest, BundleError> {
    let keep = kept_nodes(p, &outputs);
    let source = &p.nodes[p.source];
    for n in &keep {
        for e in p.nodes[*n].inputs.iter().filter(|e| e.from == p.source) {
            if !matches!(e.from_port.as_str(), "image" | "mask") {
                return Err(BundleError::Export(format!(
                    "node `{}` reads `{}.{}`: predict feeds images only (a source's `image` and an empty `mask`)",
                    p.nodes[*n].id, source.id, e.from_port
                )));
            }
        }
    }
    let out = request.out;
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(BundleError::Export(format!(
            "--out {} exists and is not empty; choose a new directory",
            out.display()
        )));
    }
    let parent = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = parent.join(format!(
        ".{}.partial-{}",
        out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        crate::fsutil::unique_suffix()
    ));
    let result = write_bundle(p, fitted, outputs, request, &keep, &staging).and_then(|manifest| {
        if out.exists() {
            std::fs::remove_dir(out).map_err(|source| BundleError::Write { path: out.to_path_buf(), source })?;
        }
        std::fs::rename(&staging, out).map_err(|source| BundleError::Write { path: out.to_path_buf(), source })?;
        Ok(manifest)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn write_bundle(
    p: &CheckedPipeline,
    fitted: &FittedPipeline,
    outputs: Outputs,
    request: &ExportRequest<'_>,
    keep: &BTreeSet<usize>,
    dir: &Path,
) -> Result<Manifest, BundleError> {
    let mut w = Writer { dir: dir.to_path_buf(), files: BTreeMap::new() };
    // Models and files the kept nodes' params name, copied in; params rewritten to the copies.
    let mut params: BTreeMap<usize, Map<String, Json>> = BTreeMap::new();
    let mut model_entries: Vec<Json> = Vec::new();
    let mut models = Vec::new();
    for &n in keep.iter().filter(|&&n| n != p.source) {
        let node = &p.nodes[n];
        let mut node_params = node.params.clone();
        for named in provenance::named_paths(p, n) {
            if named.is_dir {
                return Err(BundleError::Export(format!(
                    "node `{}`: param `{}` names the directory {}; a bundle holds files only",
                    node.id,
                    named.param,
                    named.path.display()
                )));
            }
            let file_name = named.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let sha = sha256_file(&named.path)?;
            let replacement = match (named.param == "model").then(|| model_entry(p, &named)).flatten() {
                Some(mut entry) => {
                    let name = entry["name"].as_str().unwrap_or(&file_name).to_string();
                    if !model_entries.iter().any(|e| e["name"] == name.as_str()) {
                        w.copy(&format!("models/{file_name}"), &named.path)?;
                        entry["file"] = Json::from(file_name.clone());
                        entry["sha256"] = Json::from(sha.clone());
                        model_entries.push(entry);
                    }
                    models.push(json!({"node": node.id, "param": named.param, "model": name, "file": format!("models/{file_name}"), "sha256": sha}));
                    name
                }
                None => {
                    let rel = format!("files/{}/{}/{file_name}", safe(&node.id), safe(&named.param));
                    w.copy(&rel, &named.path)?;
                    models.push(json!({"node": node.id, "param": named.param, "file": rel, "sha256": sha}));
                    rel
                }
            };
            rewrite_param(&mut node_params, &named, &p.spec.base_dir, &replacement);
        }
        params.insert(n, node_params);
    }
    if !model_entries.is_empty() {
        let manifest = serde_yaml::to_string(&json!({ "models": model_entries }))
            .map_err(|e| BundleError::Export(format!("cannot write the model manifest: {e}")))?;
        w.put("models/manifest.yaml", manifest.as_bytes())?;
    }

    // The pipeline: kept nodes, the source as a `folder` source, no calibration section.
    let mut pipeline = p.spec.to_json();
    if let Json::Object(top) = &mut pipeline {
        top.remove("calibrate");
        if let Some(Json::Object(nodes)) = top.get_mut("nodes") {
            nodes.retain(|id, _| keep.iter().any(|&n| p.nodes[n].id == *id));
            // Only the params that named files change; the rest stays as written.
            for (&n, node_params) in &params {
                let Some(Json::Object(node)) = nodes.get_mut(&p.nodes[n].id) else { continue };
                let with = node.entry("with").or_insert_with(|| Json::Object(Map::new()));
                for (key, value) in node_params.iter().filter(|(k, v)| p.nodes[n].params.get(*k) != Some(*v)) {
                    if let Json::Object(with) = with {
                        with.insert(key.clone(), value.clone());
                    }
                }
            }
            nodes.insert(
                p.nodes[p.source].id.clone(),
                json!({"plugin": "folder", "with": {"train": ["."], "test": ["."], "category": "input"}}),
            );
        }
    }
    let yaml =
        serde_yaml::to_string(&pipeline).map_err(|e| BundleError::Export(format!("cannot write the pipeline: {e}")))?;
    w.put(PIPELINE_FILE, yaml.as_bytes())?;

    // Fitted states.
    let mut states = Vec::new();
    let mut categories = BTreeSet::new();
    for &n in keep {
        let id = &p.nodes[n].id;
        match &fitted.nodes[n] {
            NodeState::Plain => {}
            NodeState::Global(state) => {
                let rel = format!("states/{}.state", safe(id));
                w.put(&rel, state)?;
                states.push(StateEntry { node: id.clone(), category: None, file: Some(rel), params: None });
            }
            NodeState::PerCategory(instances) => {
                for (category, CategoryInstance { params, state }) in instances {
                    categories.insert(category.clone());
                    let file = match state {
                        Some(state) => {
                            let rel = format!("states/{}/{}.state", safe(id), safe(category));
                            w.put(&rel, state)?;
                            Some(rel)
                        }
                        None => None,
                    };
                    states.push(StateEntry {
                        node: id.clone(),
                        category: Some(category.clone()),
                        file,
                        params: Some(params.clone()),
                    });
                }
            }
        }
    }

    let mut plugins: Vec<PluginEntry> = Vec::new();
    for &n in keep.iter().filter(|&&n| n != p.source) {
        let lib = &p.nodes[n].stage.library;
        let stage = p.nodes[n].plugin().to_string();
        match plugins.iter_mut().find(|e| e.library == lib.name) {
            Some(e) if !e.stages.contains(&stage) => e.stages.push(stage),
            Some(_) => {}
            None => plugins.push(PluginEntry {
                library: lib.name.clone(),
                version: lib.version.clone(),
                file: lib.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                sha256: sha256_file(&lib.path)?,
                stages: vec![stage],
            }),
        }
    }

    let (metrics, evaluated_by) = match request.run {
        Some(run) => (Some(run_metrics(p, run, fitted.calibration.as_ref())?), Some(run.display().to_string())),
        None => (None, None),
    };
    let category_settings = fitted.calibration.iter().flat_map(|c| &c.groups).flat_map(|g| &g.categories).fold(
        BTreeMap::<String, Map<String, Json>>::new(),
        |mut acc, c| {
            acc.entry(c.category.clone()).or_default().extend(c.chosen.clone());
            acc
        },
    );
    let mut manifest = Manifest {
        format: FORMAT.into(),
        anoflow: env!("CARGO_PKG_VERSION").into(),
        sdk_abi: anoflow_sdk::abi::SDK_ABI_VERSION,
        data_contract: anoflow_sdk::abi::DATA_CONTRACT_VERSION,
        pipeline: PIPELINE_FILE.into(),
        name: p.spec.name.clone(),
        input: Input {
            node: p.nodes[p.source].id.clone(),
            channels: fitted.image_channels,
            geometry: input_geometry(p, keep),
        },
        outputs,
        categories: categories.into_iter().collect(),
        category_settings,
        states,
        plugins,
        models,
        metrics,
        evaluated_by,
        files: w.files.clone(),
        digest: String::new(),
    };
    manifest.digest = manifest.computed_digest();
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| BundleError::Export(e.to_string()))?;
    w.put(BUNDLE_FILE, text.as_bytes())?;
    Ok(manifest)
}

/// Replaces the param's value (or the list item) that named `path` with `replacement`.
fn rewrite_param(params: &mut Map<String, Json>, named: &provenance::NamedPath, base: &Path, replacement: &str) {
    let names = |text: &str| base.join(text) == named.path || named.model.as_deref() == Some(text);
    let param = named.param.as_str();
    match params.get_mut(param) {
        Some(Json::String(s)) if names(s) => *s = replacement.to_string(),
        Some(Json::Array(items)) => {
            for item in items.iter_mut() {
                if item.as_str().is_some_and(names) {
                    *item = Json::from(replacement);
                }
            }
        }
        _ => {}
    }
}

/// The sink results of the evaluation run `run`, after checking it ran this pipeline and
/// calibrated to the same choices.
fn run_metrics(p: &CheckedPipeline, run: &Path, calibration: Option<&CalibrationReport>) -> Result<Json, BundleError> {
    let fail = |m: String| BundleError::Export(format!("--run {}: {m}", run.display()));
    let read = |name: &str| -> Result<String, BundleError> {
        std::fs::read_to_string(run.join(name)).map_err(|e| fail(format!("cannot read {name}: {e}")))
    };
    let expanded: Json = serde_yaml::from_str(&read(crate::report::EXPANDED_PIPELINE_FILE)?)
        .map_err(|e| fail(format!("{} is not YAML: {e}", crate::report::EXPANDED_PIPELINE_FILE)))?;
    let ours: Json =
        serde_yaml::from_str(&serde_yaml::to_string(&p.spec.to_json()).unwrap_or_default()).unwrap_or_default();
    if expanded != ours {
        return Err(fail("it ran another pipeline (its pipeline.expanded.yaml differs: same file and --set?)".into()));
    }
    let run_json: Json = serde_json::from_str(&read(crate::report::RUN_FILE)?)
        .map_err(|e| fail(format!("run.json is not JSON: {e}")))?;
    if run_json.pointer("/status").and_then(Json::as_str).is_some_and(|s| s != "completed") {
        return Err(fail("the run did not complete".into()));
    }
    let theirs: Option<CalibrationReport> =
        run_json.pointer("/run/calibration").cloned().and_then(|c| serde_json::from_value(c).ok());
    let choices = |c: Option<&CalibrationReport>| -> Vec<(String, String, Map<String, Json>)> {
        c.into_iter()
            .flat_map(|c| &c.groups)
            .flat_map(|g| g.categories.iter().map(move |c| (g.target.clone(), c.category.clone(), c.chosen.clone())))
            .collect()
    };
    if choices(theirs.as_ref()) != choices(calibration) {
        return Err(fail("its calibration chose other params than the export's".into()));
    }
    let mut metrics = Map::new();
    for sink in run_json.pointer("/run/sinks").and_then(Json::as_array).into_iter().flatten() {
        if let (Some(node), Some(json)) = (sink["node"].as_str(), sink.get("json")) {
            metrics.insert(node.to_string(), json.clone());
        }
    }
    Ok(Json::Object(metrics))
}

/// A bundle checked and ready to run.
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub pipeline: CheckedPipeline,
    /// Per node of `pipeline`.
    pub states: Vec<NodeState>,
}

/// Opens a bundle: every file present and unchanged, `bundle.json` not edited, the same SDK
/// versions, every library present with the version and SHA-256 it was made with, every
/// state loaded back. Any difference refuses it with the reason.
pub fn open(dir: &Path, reg: &Registry) -> Result<Bundle, BundleError> {
    let refuse = |reason: String| BundleError::Refused { bundle: dir.to_path_buf(), reason };
    let manifest_path = dir.join(BUNDLE_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| refuse(format!("cannot read {}: {e} (not a bundle?)", manifest_path.display())))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| refuse(format!("{BUNDLE_FILE} is not a bundle manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refuse(format!("format `{}`, expected `{FORMAT}`", manifest.format)));
    }
    if manifest.digest != manifest.computed_digest() {
        return Err(refuse(format!("{BUNDLE_FILE} was edited after export (its digest does not match its content)")));
    }
    let (abi, contract) = (anoflow_sdk::abi::SDK_ABI_VERSION, anoflow_sdk::abi::DATA_CONTRACT_VERSION);
    if (manifest.sdk_abi, manifest.data_contract) != (abi, contract) {
        return Err(refuse(format!(
            "made with SDK ABI {} / data contract {} (anoflow {}); this anoflow {} speaks ABI {abi} / contract {contract}: export it again",
            manifest.sdk_abi,
            manifest.data_contract,
            manifest.anoflow,
            env!("CARGO_PKG_VERSION")
        )));
    }
    let named = manifest.files.keys().chain(manifest.states.iter().filter_map(|s| s.file.as_ref()));
    if let Some(outside) = named.into_iter().find(|rel| !inside_bundle(rel)) {
        return Err(refuse(format!("{BUNDLE_FILE} names `{outside}`, a path outside the bundle")));
    }
    for (rel, expected) in &manifest.files {
        let path = dir.join(rel);
        let found = provenance::file_digest(&path).map_err(|e| refuse(format!("missing file {rel}: {e}")))?.sha256;
        if &found != expected {
            return Err(refuse(format!("{rel} was changed after export (SHA-256 {found}, expected {expected})")));
        }
    }
    for entry in &manifest.plugins {
        let lib = reg.libraries.iter().find(|l| l.name == entry.library).ok_or_else(|| {
            refuse(format!(
                "plugin library `{}` {} ({}) is not on the plugin path ({})",
                entry.library,
                entry.version,
                entry.file,
                reg.search_path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if lib.version != entry.version {
            return Err(refuse(format!(
                "plugin library `{}` is version {} at {}, the bundle was made with {}",
                entry.library,
                lib.version,
                lib.path.display(),
                entry.version
            )));
        }
        let sha = provenance::sha256_or_reason(&lib.path);
        if sha != entry.sha256 {
            return Err(refuse(format!(
                "plugin library `{}` {} at {} is another build (SHA-256 {sha}, the bundle was made with {})",
                entry.library,
                entry.version,
                lib.path.display(),
                entry.sha256
            )));
        }
    }
    let spec = spec::load(&dir.join(&manifest.pipeline), &[], &ProcessEnv)
        .map_err(|d| refuse(format!("{}: {}", manifest.pipeline, crate::diag::PipelineErrors(d.into_vec()))))?;
    let pipeline = check::check(spec, reg).map_err(|e| refuse(format!("{}: {e}", manifest.pipeline)))?;
    let states = node_states(dir, &manifest, &pipeline).map_err(refuse)?;
    Ok(Bundle { dir: dir.to_path_buf(), manifest, pipeline, states })
}

/// A relative path that stays inside the bundle (no root, no `..`).
fn inside_bundle(rel: &str) -> bool {
    Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn node_states(dir: &Path, manifest: &Manifest, p: &CheckedPipeline) -> Result<Vec<NodeState>, String> {
    let mut states = vec![NodeState::Plain; p.nodes.len()];
    for entry in &manifest.states {
        let n = p
            .index_of(&entry.node)
            .ok_or_else(|| format!("a state names node `{}`, not in the pipeline", entry.node))?;
        let bytes = match &entry.file {
            Some(rel) => Some(std::fs::read(dir.join(rel)).map_err(|e| format!("cannot read {rel}: {e}"))?),
            None => None,
        };
        match (&entry.category, &mut states[n]) {
            (None, slot) => {
                *slot = NodeState::Global(bytes.ok_or_else(|| format!("node `{}`: no state file", entry.node))?)
            }
            (Some(category), slot) => {
                if !matches!(slot, NodeState::PerCategory(_)) {
                    *slot = NodeState::PerCategory(BTreeMap::new());
                }
                if let NodeState::PerCategory(map) = slot {
                    let params = entry.params.clone().unwrap_or_else(|| p.nodes[n].params.clone());
                    map.insert(category.clone(), CategoryInstance { params, state: bytes });
                }
            }
        }
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            anoflow: "0".into(),
            sdk_abi: 1,
            data_contract: 1,
            pipeline: PIPELINE_FILE.into(),
            name: "p".into(),
            input: Input {
                node: "data".into(),
                channels: Some(3),
                geometry: Some(Geometry { resize: 256, crop: 224 }),
            },
            outputs: Outputs {
                mask: OutputRef { node: "thr".into(), port: "mask".into() },
                score: None,
                image_score: None,
            },
            categories: vec!["a".into()],
            category_settings: BTreeMap::new(),
            states: Vec::new(),
            plugins: Vec::new(),
            models: Vec::new(),
            metrics: Some(json!({"eval": {"f1": 0.5}})),
            evaluated_by: None,
            files: BTreeMap::new(),
            digest: String::new(),
        }
    }

    #[test]
    fn the_digest_sees_any_edit_of_the_manifest() {
        let mut m = manifest();
        m.digest = m.computed_digest();
        let text = serde_json::to_string_pretty(&m).unwrap();
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back.digest, back.computed_digest(), "a round trip keeps the digest");
        let edited: Manifest = serde_json::from_str(&text.replace("0.5", "0.9")).unwrap();
        assert_ne!(edited.digest, edited.computed_digest());
    }

    #[test]
    fn bundle_paths_stay_inside_the_bundle() {
        assert!(inside_bundle("states/scorer/pill.state"));
        assert!(!inside_bundle("../outside.state"));
        assert!(!inside_bundle("states/../../x"));
        assert!(!inside_bundle("/etc/passwd"));
    }

    #[test]
    fn only_the_value_naming_the_file_is_rewritten() {
        let base = Path::new("/p");
        let named = |param: &str, path: &str, model: Option<&str>| provenance::NamedPath {
            param: param.into(),
            model: model.map(str::to_string),
            path: PathBuf::from(path),
            is_dir: false,
        };
        let mut params: Map<String, Json> = serde_json::from_value(json!({
            "model": "mobilenet_v2", "maps": ["a.bin", "b.bin"], "file": "x/y.bin", "k": 3
        }))
        .unwrap();
        rewrite_param(&mut params, &named("model", "/m/net.onnx", Some("mobilenet_v2")), base, "mobilenet_v2");
        rewrite_param(&mut params, &named("maps", "/p/b.bin", None), base, "files/n/maps/b.bin");
        rewrite_param(&mut params, &named("file", "/p/x/y.bin", None), base, "files/n/file/y.bin");
        rewrite_param(&mut params, &named("file", "/p/other.bin", None), base, "never");
        assert_eq!(
            Json::Object(params),
            json!({"model": "mobilenet_v2", "maps": ["a.bin", "files/n/maps/b.bin"], "file": "files/n/file/y.bin", "k": 3})
        );
    }

    #[test]
    fn output_refs_parse_node_and_port() {
        assert_eq!(OutputRef::parse("best.mask"), Some(OutputRef { node: "best".into(), port: "mask".into() }));
        assert_eq!(OutputRef::parse("best"), None);
        assert_eq!(OutputRef::parse(".mask"), None);
    }
}
