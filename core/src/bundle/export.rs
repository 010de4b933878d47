//! Writing a bundle: the pruned pipeline, the fitted states, the models and files, `bundle.json`.

use super::*;

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

pub(super) fn write_bundle(
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
            let replacement = match named.is_model.then(|| model_entry(p, &named)).flatten() {
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
pub(super) fn rewrite_param(
    params: &mut Map<String, Json>,
    named: &provenance::NamedPath,
    base: &Path,
    replacement: &str,
) {
    let names = |text: &str| base.join(text) == named.path || named.model.as_deref() == Some(text);
    // A dotted path reaches a setting of a nested option (`labeler.model`).
    let mut parts = named.param.split('.');
    let Some(first) = parts.next() else { return };
    let target = parts.try_fold(params.get_mut(first), |v, part| Some(v?.get_mut(part)));
    match target.flatten() {
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
pub(super) fn run_metrics(
    p: &CheckedPipeline,
    run: &Path,
    calibration: Option<&CalibrationReport>,
) -> Result<Json, BundleError> {
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
    let summary = match crate::run_record::read(run).map_err(fail)? {
        crate::run_record::RunRecord::Completed { run } => run,
        _ => return Err(fail("the run did not complete".into())),
    };
    let theirs = summary.calibration.as_ref();
    let choices = |c: Option<&CalibrationReport>| -> Vec<(String, String, Map<String, Json>)> {
        c.into_iter()
            .flat_map(|c| &c.groups)
            .flat_map(|g| g.categories.iter().map(move |c| (g.target.clone(), c.category.clone(), c.chosen.clone())))
            .collect()
    };
    if choices(theirs) != choices(calibration) {
        return Err(fail("its calibration chose other params than the export's".into()));
    }
    let mut metrics = Map::new();
    for sink in summary.sinks {
        metrics.insert(sink.node, sink.json);
    }
    Ok(Json::Object(metrics))
}
