//! The model manifest (`models/manifest.yaml`): pipelines name a model, the manifest says which
//! file it is, its sha256, its outputs and its preprocessing. Written by the tools/ scripts.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::OnnxError;

pub const MANIFEST_FILE: &str = "manifest.yaml";
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, Deserialize)]
struct ManifestFile {
    #[serde(default)]
    models: Vec<ModelEntry>,
}

/// One model of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    /// Relative to the manifest's directory.
    pub file: PathBuf,
    pub sha256: Option<String>,
    #[serde(default)]
    pub input: InputSpec,
    pub normalization: Option<Normalization>,
    #[serde(default)]
    pub default_outputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputSpec {
    pub name: Option<String>,
    pub size: Option<Size>,
    #[serde(default)]
    pub dynamic_size: bool,
}

/// An image size: one number (square) or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Square(usize),
    HeightWidth([usize; 2]),
}

impl Size {
    pub fn hw(self) -> (usize, usize) {
        match self {
            Size::Square(s) => (s, s),
            Size::HeightWidth([h, w]) => (h, w),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Normalization {
    #[serde(default = "default_scale")]
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn default_scale() -> f32 {
    255.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub channels: Option<usize>,
    pub stride: Option<f32>,
}

/// A model parameter resolved to a file, with its manifest entry when it has one.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub path: PathBuf,
    /// The entry and the manifest file it came from.
    pub entry: Option<(ModelEntry, PathBuf)>,
}

impl ResolvedModel {
    /// How errors name the model: its manifest name, or its file.
    pub fn label(&self) -> String {
        match &self.entry {
            Some((e, _)) => format!("`{}` ({})", e.name, self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

fn read_manifest(path: &Path) -> Result<Vec<ModelEntry>, OnnxError> {
    let text = std::fs::read_to_string(path).map_err(|source| OnnxError::Io { path: path.into(), source })?;
    let file: ManifestFile = serde_yaml::from_str(&text)
        .map_err(|e| OnnxError::Manifest { path: path.into(), reason: format!("not a valid model manifest: {e}") })?;
    Ok(file.models)
}

/// The command that (re)creates a model file, for error messages.
fn how_to_make(name: &str) -> String {
    if name == "mobilenet_v2" {
        "run `python3 tools/prepare_default_model.py` in the project (needs `pip install numpy onnx`)".into()
    } else if name.contains("point_mae") {
        "export it with `python3 tools/export_point_mae.py --checkpoint <Point-MAE pretrain.pth>` (needs torch), \
         or give a path to an .onnx file"
            .into()
    } else {
        "export it with `python3 tools/export_torch_models.py` (needs torch and internet), or fix the manifest".into()
    }
}

/// Resolves the `model` parameter: a path (it ends in `.onnx` or contains a `/`) or a manifest
/// name, looked up by the manifest rule ([`search_starts`]) from `base_dir`, then each of
/// `search_from`. Checks that the file exists and that its sha256 matches the manifest.
pub fn resolve(spec: &str, base_dir: &Path, search_from: &[PathBuf]) -> Result<ResolvedModel, OnnxError> {
    let resolved = if spec.ends_with(".onnx") || spec.contains('/') || spec.contains('\\') {
        let path = if Path::new(spec).is_absolute() { PathBuf::from(spec) } else { base_dir.join(spec) };
        // A file listed in the manifest beside it gets that entry (defaults and hash check).
        let manifest = path.parent().map(|d| d.join(MANIFEST_FILE));
        let entry = match manifest.filter(|m| m.is_file()) {
            Some(m) => read_manifest(&m)?
                .into_iter()
                .find(|e| {
                    path.file_name() == e.file.file_name()
                        && path.parent().map(|d| d.join(&e.file)) == Some(path.clone())
                })
                .map(|e| (e, m)),
            None => None,
        };
        if !path.is_file() {
            return Err(OnnxError::ModelNotFound(format!("model file {} does not exist", path.display())));
        }
        ResolvedModel { path, entry }
    } else {
        find_by_name(spec, base_dir, search_from)?
    };
    if let Some((entry, manifest)) = &resolved.entry {
        if let Some(expected) = &entry.sha256 {
            let found = sha256_of(&resolved.path)?;
            if !found.eq_ignore_ascii_case(expected) {
                return Err(OnnxError::HashMismatch {
                    path: resolved.path.clone(),
                    manifest: manifest.clone(),
                    found,
                    expected: expected.clone(),
                    fix: how_to_make(&entry.name),
                });
            }
        }
    }
    Ok(resolved)
}

/// The directory, below each directory searched, that holds a manifest.
pub const MODELS_DIR: &str = "models";

/// Where model manifests are looked for: the one rule, used by the ONNX plugins, by the host
/// (the files a run records and its cache keys, bundles) and by `anoflow doctor`.
///
/// The starts are the pipeline's directory (when there is one), the working directory, then
/// the directory of the running executable (so an installation finds its own `models/`).
/// From each start in turn, `models/manifest.yaml` in that directory and in each of its
/// ancestors, nearest first. A model name is taken from the first manifest that lists it.
pub fn search_starts(pipeline_dir: Option<&Path>) -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    pipeline_dir.map(Path::to_path_buf).into_iter().chain(std::env::current_dir().ok()).chain(exe_dir).collect()
}

/// Every manifest file [`search_starts`]'s rule finds from `starts`, in search order, each once.
pub fn manifest_files(starts: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for start in starts {
        for dir in start.ancestors() {
            let manifest = dir.join(MODELS_DIR).join(MANIFEST_FILE);
            if manifest.is_file() && !out.contains(&manifest) {
                out.push(manifest);
            }
        }
    }
    out
}

/// Model `name`'s entry and the manifest listing it: the first of [`manifest_files`] that
/// does, or `Ok(None)`. An unreadable manifest met on the way is an error.
pub fn find_model(name: &str, starts: &[PathBuf]) -> Result<Option<(ModelEntry, PathBuf)>, OnnxError> {
    for manifest in manifest_files(starts) {
        if let Some(entry) = read_manifest(&manifest)?.into_iter().find(|e| e.name == name) {
            return Ok(Some((entry, manifest)));
        }
    }
    Ok(None)
}

/// The file of a manifest entry (relative to the manifest's directory).
pub fn entry_file(entry: &ModelEntry, manifest: &Path) -> PathBuf {
    manifest.parent().unwrap_or(Path::new(".")).join(&entry.file)
}

fn find_by_name(name: &str, base_dir: &Path, search_from: &[PathBuf]) -> Result<ResolvedModel, OnnxError> {
    let starts: Vec<PathBuf> = std::iter::once(base_dir.to_path_buf()).chain(search_from.iter().cloned()).collect();
    if let Some((entry, manifest)) = find_model(name, &starts)? {
        let path = entry_file(&entry, &manifest);
        if !path.is_file() {
            return Err(OnnxError::ModelNotFound(format!(
                "model `{name}` (listed in {}) has no file: {} does not exist; {}",
                manifest.display(),
                path.display(),
                how_to_make(name)
            )));
        }
        return Ok(ResolvedModel { path, entry: Some((entry, manifest)) });
    }
    let mut seen = Vec::new();
    for manifest in manifest_files(&starts) {
        let names: Vec<String> = read_manifest(&manifest)?.into_iter().map(|e| e.name).collect();
        seen.push(format!("{} has: {}", manifest.display(), names.join(", ")));
    }
    let looked = if seen.is_empty() {
        format!("no {MODELS_DIR}/{MANIFEST_FILE} found in {} or its ancestors", base_dir.display())
    } else {
        seen.join("; ")
    };
    Err(OnnxError::ModelNotFound(format!(
        "model `{name}` is not in any model manifest ({looked}); give a path to an .onnx file or {}",
        how_to_make(name)
    )))
}

/// What the models of the manifests the rule finds from `starts` look like: this library's
/// doctor entry. A listed model whose file is missing or differs from its SHA-256 fails, with
/// the command that makes it.
pub fn health(starts: &[PathBuf]) -> anoflow_ort_locate::Health {
    use anoflow_ort_locate::Status;
    let mut lines = Vec::new();
    let manifests = manifest_files(starts);
    if manifests.is_empty() {
        lines.push((
            Status::Fail,
            format!(
                "no {MODELS_DIR}/{MANIFEST_FILE} in the working directory, the executable's directory or above \
                 them; run tools/setup.sh in the project"
            ),
        ));
    }
    for manifest in &manifests {
        let entries = match read_manifest(manifest) {
            Ok(entries) => entries,
            Err(e) => {
                lines.push((Status::Fail, e.to_string()));
                continue;
            }
        };
        lines.push((Status::Note, format!("manifest {}: {} models", manifest.display(), entries.len())));
        for entry in entries {
            let file = entry_file(&entry, manifest);
            let name = &entry.name;
            let line = match (sha256_of(&file), &entry.sha256) {
                (Err(_), _) if !file.exists() => {
                    (Status::Fail, format!("{name}: {} does not exist; {}", file.display(), how_to_make(name)))
                }
                (Err(e), _) => (Status::Fail, format!("{name}: {e}")),
                (Ok(found), Some(expected)) if !found.eq_ignore_ascii_case(expected) => (
                    Status::Fail,
                    format!("{name}: {} has sha256 {found}, the manifest expects {expected}", file.display()),
                ),
                (Ok(_), _) => (Status::Ok, format!("{name}: {}", file.display())),
            };
            lines.push(line);
        }
    }
    anoflow_ort_locate::Health { title: "models (anoflow-ort-session)".into(), lines }
}

/// Whether ONNX Runtime loads in this process: this library's doctor entry for the runtime.
pub fn runtime_health() -> anoflow_ort_locate::Health {
    use anoflow_ort_locate::Status;
    // A broken library must not take the caller down with it.
    let loaded = std::panic::catch_unwind(crate::runtime::environment);
    let line = match loaded {
        Ok(Ok((lib, _))) => (Status::Ok, format!("loads {}", lib.path.display())),
        Ok(Err(e)) => (Status::Fail, e.to_string()),
        Err(_) => (Status::Fail, "loading ONNX Runtime panicked".to_string()),
    };
    anoflow_ort_locate::Health { title: "ONNX Runtime sessions (anoflow-ort-session)".into(), lines: vec![line] }
}

/// The sha256 of a file, hex; remembered per (path, size, modification time) in this process,
/// so several nodes naming one big model hash it once.
pub fn sha256_of(path: &Path) -> Result<String, OnnxError> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: Mutex<Option<HashMap<Key, String>>> = Mutex::new(None);
    let io = |source| OnnxError::Io { path: path.into(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some(hit) = CACHE.lock().ok().and_then(|c| c.as_ref().and_then(|m| m.get(&key).cloned())) {
        return Ok(hit);
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hex::encode(hasher.finalize());
    if let Ok(mut cache) = CACHE.lock() {
        cache.get_or_insert_with(HashMap::new).insert(key, digest.clone());
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "models:\n  - name: tiny\n    file: tiny.onnx\n    sha256: SHA\n    \
        input: {name: image, size: [32, 48], dynamic_size: false}\n    \
        normalization: {scale: 255.0, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n    \
        default_outputs: [a]\n    outputs:\n      - {name: a, channels: 4, stride: 8}\n";

    fn project(content: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("models")).unwrap();
        std::fs::create_dir_all(root.path().join("pipelines/deep")).unwrap();
        std::fs::write(root.path().join("models/tiny.onnx"), content).unwrap();
        let sha = hex::encode(Sha256::digest(b"model bytes"));
        std::fs::write(root.path().join("models/manifest.yaml"), MANIFEST.replace("SHA", &sha)).unwrap();
        root
    }

    #[test]
    fn a_name_is_found_from_the_pipeline_dir_upward() {
        let root = project(b"model bytes");
        let r = resolve("tiny", &root.path().join("pipelines/deep"), &[]).unwrap();
        assert_eq!(r.path, root.path().join("models/tiny.onnx"));
        let (entry, _) = r.entry.unwrap();
        assert_eq!(entry.input.size.unwrap().hw(), (32, 48));
        assert_eq!(entry.normalization.unwrap().std, [0.25; 3]);
        assert_eq!(entry.outputs[0].stride, Some(8.0));
    }

    #[test]
    fn a_path_gets_its_manifest_entry_and_is_hash_checked() {
        let root = project(b"model bytes");
        let r = resolve("../models/tiny.onnx", &root.path().join("pipelines"), &[]).unwrap();
        assert_eq!(r.entry.unwrap().0.name, "tiny");

        let root = project(b"other bytes");
        let err = resolve("tiny", root.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("tiny.onnx has sha256"), "{err}");
        assert!(err.contains("corrupted"), "{err}");
    }

    #[test]
    fn unknown_names_and_missing_files_say_what_exists() {
        let root = project(b"model bytes");
        let err = resolve("wide_resnet50", root.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("model `wide_resnet50` is not in any model manifest"), "{err}");
        assert!(err.contains("has: tiny"), "{err}");
        assert!(err.contains("tools/export_torch_models.py"), "{err}");

        std::fs::remove_file(root.path().join("models/tiny.onnx")).unwrap();
        let err = resolve("tiny", root.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("tiny.onnx does not exist"), "{err}");
        let err = resolve("nowhere/x.onnx", root.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("x.onnx does not exist"), "{err}");
    }
}
