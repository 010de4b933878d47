//! Opening a bundle: every file, library, model and SDK version checked before it runs.

use super::*;

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
pub(super) fn inside_bundle(rel: &str) -> bool {
    Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

pub(super) fn node_states(dir: &Path, manifest: &Manifest, p: &CheckedPipeline) -> Result<Vec<NodeState>, String> {
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
