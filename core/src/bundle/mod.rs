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

mod export;
mod open;
#[cfg(test)]
mod tests;

pub use export::*;
pub use open::*;

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
        Some(name) => provenance::model_manifest(&p.spec.base_dir, name)?,
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
