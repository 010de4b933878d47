//! The run directory's bookkeeping: the expanded pipeline and plugin versions (to reproduce
//! a run), `run.json` (per-node timings, counts, failures, sink results), and `compare`.

use std::{collections::BTreeMap, fmt::Write, path::Path};

use anyhow::{Context, Result};
use serde_json::{json, Value as Json};

use crate::{
    check::CheckedPipeline,
    executor::{RunError, RunSummary, SinkResult},
    fsutil::write_atomic,
    provenance,
    registry::Registry,
    run_record::{self, RunRecord},
};

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Files that let anyone reproduce the run: the pipeline with vars and overrides applied,
/// and the version and SHA-256 of every library and model it used.
pub fn write_run_inputs(p: &CheckedPipeline, reg: &Registry, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the run directory {}", out_dir.display()))?;
    let yaml = serde_yaml::to_string(&p.spec.to_json())?;
    write_atomic(&out_dir.join(EXPANDED_PIPELINE_FILE), yaml.as_bytes())
        .with_context(|| format!("cannot write into {}", out_dir.display()))?;
    let used: Vec<Json> = p
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.id,
                "stage": n.plugin(),
                "library": n.stage.library.name,
                "version": n.stage.library.version,
                "path": n.stage.library.path,
                "library_sha256": provenance::sha256_or_reason(&n.stage.library.path),
                "params": n.params,
            })
        })
        .collect();
    let libraries: Vec<Json> =
        reg.libraries.iter().map(|l| json!({"name": l.name, "version": l.version, "path": l.path})).collect();
    let files = referenced_files(p);
    let manifest = json!({
        "anoflow": env!("CARGO_PKG_VERSION"),
        "sdk_abi": anoflow_sdk::abi::SDK_ABI_VERSION,
        "data_contract": anoflow_sdk::abi::DATA_CONTRACT_VERSION,
        "pipeline_file": p.spec.file,
        "nodes": used,
        "libraries": libraries,
        "files": files,
    });
    write_json(&out_dir.join(PLUGINS_FILE), &manifest)
}

/// The run directory's file with the expanded pipeline.
pub const EXPANDED_PIPELINE_FILE: &str = "pipeline.expanded.yaml";
/// The run directory's file with the libraries, versions and file hashes used.
pub const PLUGINS_FILE: &str = "plugins.json";
pub use crate::run_record::RUN_FILE;

/// Every file a node's params name (models, datasets' single files, score maps...) with the
/// SHA-256 of its content, models named through `models/manifest.yaml` included, so a run
/// records exactly which weights it used (the same digests key the caches).
fn referenced_files(p: &CheckedPipeline) -> Vec<Json> {
    let mut out = Vec::new();
    for (n, node) in p.nodes.iter().enumerate() {
        for named in provenance::named_paths(p, n).into_iter().filter(|np| !np.is_dir) {
            let sha = provenance::sha256_or_reason(&named.path);
            out.push(match named.model {
                Some(model) => {
                    json!({"node": node.id, "param": named.param, "model": model, "path": named.path, "sha256": sha})
                }
                None => json!({"node": node.id, "param": named.param, "path": named.path, "sha256": sha}),
            });
        }
    }
    out
}

/// A run in progress: `run.json` says so from the start, so a run that dies never leaves
/// an earlier `completed` behind.
pub fn write_run_started(pipeline: &str, out_dir: &Path) -> Result<()> {
    let record = RunRecord::Running {
        pipeline: pipeline.to_string(),
        started: crate::fsutil::utc_timestamp(),
        pid: std::process::id(),
    };
    write_record(out_dir, &record)
}

pub fn write_run_report(summary: &RunSummary) -> Result<()> {
    write_record(&summary.run_dir, &RunRecord::Completed { run: summary.clone() })
}

/// A run that stopped: `run.json` says where and why, and whether it was interrupted
/// (Ctrl-C, SIGTERM) or failed.
pub fn write_failed_run(pipeline: &str, out_dir: &Path, error: &RunError, interrupted: bool) -> Result<()> {
    write_record(out_dir, &RunRecord::stopped(pipeline, error, interrupted))
}

fn write_record(out_dir: &Path, record: &RunRecord) -> Result<()> {
    let path = out_dir.join(RUN_FILE);
    let text = record.to_json_text()?;
    write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn flatten(prefix: &str, v: &Json, out: &mut BTreeMap<String, f64>) {
    match v {
        Json::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix.to_string(), f);
            }
        }
        Json::Object(m) => m.iter().for_each(|(k, v)| flatten(&format!("{prefix}/{k}"), v, out)),
        Json::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
            // Prefer a stable name over an index when the element names itself.
            let key = v
                .get("name")
                .or_else(|| v.get("method"))
                .or_else(|| v.get("category"))
                .and_then(Json::as_str)
                .map_or_else(|| i.to_string(), str::to_string);
            flatten(&format!("{prefix}/{key}"), v, out)
        }),
        _ => {}
    }
}

fn run_metrics(run: &Path) -> Result<BTreeMap<String, f64>> {
    let summary = run_record::read_completed(run).map_err(anyhow::Error::msg)?;
    let mut out = BTreeMap::new();
    for s in &summary.sinks {
        flatten(&s.node, &s.json, &mut out);
    }
    Ok(out)
}

/// The differences between two runs' sink results, metric by metric.
pub fn compare(a: &Path, b: &Path) -> Result<String> {
    let ma = run_metrics(a)?;
    let mb = run_metrics(b)?;
    let mut s = String::new();
    let _ = writeln!(s, "| metric | A | B | B - A |\n|---|---:|---:|---:|");
    let mut same = 0usize;
    for (k, va) in &ma {
        if let Some(vb) = mb.get(k) {
            if (vb - va).abs() > 1e-12 {
                let _ = writeln!(s, "| {k} | {va:.4} | {vb:.4} | {:+.4} |", vb - va);
            } else {
                same += 1;
            }
        }
    }
    let only_a = ma.keys().filter(|k| !mb.contains_key(*k)).count();
    let only_b = mb.keys().filter(|k| !ma.contains_key(*k)).count();
    let _ = writeln!(
        s,
        "\n{same} metrics equal; {only_a} only in A ({}), {only_b} only in B ({})",
        a.display(),
        b.display()
    );
    Ok(s)
}

/// A sink's headline figures (name to number), as the sink declared them in its report
/// (`SinkReport::headline`); `None` for a sink without any.
pub fn sink_headline(sink: &SinkResult) -> Option<&serde_json::Map<String, Json>> {
    Some(&sink.headline).filter(|h| !h.is_empty())
}

/// The side-by-side table of a sweep: one row per variant, one column per headline figure
/// of each sink (its declared headline figures).
pub fn sweep_table(variants: &[(String, RunSummary)]) -> String {
    let mut s = String::new();
    let mut sinks: Vec<String> = Vec::new();
    for (_, run) in variants {
        for sink in &run.sinks {
            if !sinks.contains(&sink.node) {
                sinks.push(sink.node.clone());
            }
        }
    }
    for sink in sinks {
        let mut columns: Vec<String> = Vec::new();
        for (_, run) in variants {
            if let Some(h) = run.sinks.iter().find(|x| x.node == sink).and_then(sink_headline) {
                for k in h.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
        }
        let _ = writeln!(s, "## {sink}\n");
        if columns.is_empty() {
            for (name, run) in variants {
                if let Some(x) = run.sinks.iter().find(|x| x.node == sink) {
                    let _ = writeln!(s, "### {name}\n\n{}\n", x.markdown.trim_end());
                }
            }
            continue;
        }
        let _ = writeln!(s, "| variant | {} |", columns.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(columns.len()));
        for (name, run) in variants {
            let h = run.sinks.iter().find(|x| x.node == sink).and_then(sink_headline);
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    h.and_then(|h| h.get(c.as_str()))
                        .and_then(Json::as_f64)
                        .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
                })
                .collect();
            let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_names_array_elements() {
        let mut out = BTreeMap::new();
        flatten("m", &json!({"rows": [{"method": "ttt.mask", "f1": 0.5}, {"x": 1}]}), &mut out);
        assert_eq!(out["m/rows/ttt.mask/f1"], 0.5);
        assert_eq!(out["m/rows/1/x"], 1.0);
    }
}
