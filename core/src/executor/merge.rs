//! Merging the sink states of several runs of one pipeline (the shards of one run): each sink
//! is created, loads every run's state in turn, and finishes as if one run had seen every sample.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use super::{
    cache::{decode_state, SINK_STATE_FILE},
    calibrate, create_stage_with,
    sinks::{finish_sink, save_sink_state, sink_nodes},
    write_atomic, CalibrationReport, CheckedPipeline, RunError, RunSummary,
};

/// Merges the sink states of several runs of the same pipeline (typically the shards of
/// one run) into `out_dir`, as if one run had seen every sample.
pub fn merge(p: &CheckedPipeline, runs: &[PathBuf], out_dir: &Path, threads: usize) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    // Only sinks are created: merging needs no data.
    let mut sinks = Vec::new();
    for s in sink_nodes(p) {
        let node = &p.nodes[s];
        let mut stage = create_stage_with(p, s, &node.params, out_dir, threads)?;
        let fail = |message: String| RunError {
            phase: "merge".into(),
            node: node.id.clone(),
            stage: node.plugin().to_string(),
            sample: None,
            message,
        };
        for run in runs {
            let path = run.join(&node.id).join(SINK_STATE_FILE);
            let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            let state = decode_state(&bytes).ok_or_else(|| fail(format!("{} is corrupt", path.display())))?;
            stage.load_state(state.into()).into_result().map_err(|e| fail(format!("{}: {e}", path.display())))?;
        }
        sinks.push((s, stage));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| RunError {
        phase: "merge".into(),
        node: String::new(),
        stage: String::new(),
        sample: None,
        message: format!("cannot create {}: {e}", out_dir.display()),
    })?;
    for (s, stage) in &sinks {
        save_sink_state(p, *s, stage, out_dir)?;
    }
    let mut results = Vec::with_capacity(sinks.len());
    for (s, stage) in &mut sinks {
        results.push(finish_sink(p, *s, stage, out_dir)?.0);
    }
    let calibration = merge_calibration(runs, out_dir)?;
    Ok(RunSummary {
        pipeline: p.spec.name.clone(),
        run_dir: out_dir.to_path_buf(),
        seconds: started.elapsed().as_secs_f64(),
        test_samples: 0,
        shard: None,
        shard_categories: None,
        nodes: Vec::new(),
        phases: Vec::new(),
        failures: Vec::new(),
        sinks: results,
        calibration,
    })
}

/// The shards' calibration reports (from their `run.json`) merged, and written as the merged
/// run's `calibration.md`; `None` when the pipeline calibrates nothing.
fn merge_calibration(runs: &[PathBuf], out_dir: &Path) -> Result<Option<CalibrationReport>, RunError> {
    let fail = |message: String| RunError {
        phase: "merge".into(),
        node: String::new(),
        stage: String::new(),
        sample: None,
        message,
    };
    let mut reports = Vec::new();
    for run in runs {
        let path = run.join(crate::report::RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("{} is not valid JSON: {e}", path.display())))?;
        match json.pointer("/run/calibration") {
            None | Some(serde_json::Value::Null) => {}
            Some(c) => reports.push(
                serde_json::from_value::<CalibrationReport>(c.clone())
                    .map_err(|e| fail(format!("{}: unreadable `run.calibration`: {e}", path.display())))?,
            ),
        }
    }
    if !reports.is_empty() && reports.len() != runs.len() {
        return Err(fail("some shards hold a calibration and others none: they are not shards of one run".into()));
    }
    let merged = calibrate::merge_reports(&reports).map_err(fail)?;
    if let Some(report) = &merged {
        let path = out_dir.join("calibration.md");
        write_atomic(&path, calibrate::markdown(report, true).as_bytes())
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(merged)
}
