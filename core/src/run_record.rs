//! `run.json`, a run directory's status and results: one type, [`RunRecord`], writes it and
//! reads it back (compare, merge, export, sweeps).
//!
//! The file is written through a `serde_json::Value`, whose maps keep their keys sorted, so
//! its bytes do not depend on the order of the fields below.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::executor::{RunError, RunSummary};

/// The run directory's status and results.
pub const RUN_FILE: &str = "run.json";

/// What `run.json` holds, by `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunRecord {
    /// Written first, so a run that dies never leaves an earlier `completed` behind.
    Running { pipeline: String, started: String, pid: u32 },
    /// The run's summary: per-node counts and times, failures, sink results, phases.
    Completed { run: RunSummary },
    /// A run that stopped on an error.
    Failed { pipeline: String, error: RunError, message: String },
    /// A run stopped by Ctrl-C, SIGTERM or SIGHUP.
    Interrupted { pipeline: String, error: RunError, message: String },
}

impl RunRecord {
    /// A run that stopped with `error`; `interrupted` when a signal stopped it.
    pub fn stopped(pipeline: &str, error: &RunError, interrupted: bool) -> Self {
        let (pipeline, error, message) = (pipeline.to_string(), error.clone(), error.to_string());
        if interrupted {
            RunRecord::Interrupted { pipeline, error, message }
        } else {
            RunRecord::Failed { pipeline, error, message }
        }
    }

    /// The `status` value: `running`, `completed`, `failed` or `interrupted`.
    pub fn status(&self) -> &'static str {
        match self {
            RunRecord::Running { .. } => "running",
            RunRecord::Completed { .. } => "completed",
            RunRecord::Failed { .. } => "failed",
            RunRecord::Interrupted { .. } => "interrupted",
        }
    }

    /// The summary of a completed run.
    pub fn completed(&self) -> Option<&RunSummary> {
        match self {
            RunRecord::Completed { run } => Some(run),
            _ => None,
        }
    }

    /// The record as written: pretty JSON with sorted keys.
    pub fn to_json_text(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&serde_json::to_value(self)?)
    }
}

/// The `run.json` of `run`: a run directory, or the file itself.
pub fn record_path(run: &Path) -> PathBuf {
    if run.is_dir() {
        run.join(RUN_FILE)
    } else {
        run.to_path_buf()
    }
}

/// Reads the record of `run` (a run directory or its `run.json`); the error names the file.
pub fn read(run: &Path) -> Result<RunRecord, String> {
    let path = record_path(run);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a run record: {e}", path.display()))
}

/// The summary of `run`'s completed run; else an error naming the file and its status.
pub fn read_completed(run: &Path) -> Result<RunSummary, String> {
    match read(run)? {
        RunRecord::Completed { run } => Ok(run),
        other => Err(format!("{} says `{}`: the run did not complete", record_path(run).display(), other.status())),
    }
}

/// A completed run's summary for tests: the given shard label and sinks, nothing else.
#[cfg(test)]
pub(crate) fn test_summary(shard: Option<&str>, sinks: Vec<crate::executor::SinkResult>) -> RunSummary {
    RunSummary {
        pipeline: "q".into(),
        run_dir: PathBuf::from("run"),
        seconds: 1.0,
        test_samples: 2,
        shard: shard.map(str::to_string),
        shard_categories: None,
        nodes: Vec::new(),
        phases: Vec::new(),
        failures: Vec::new(),
        sinks,
        calibration: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The bytes the host wrote with `json!` before the record was typed.
    #[test]
    fn records_are_written_as_before() {
        let running = RunRecord::Running { pipeline: "p".into(), started: "20260101-000000".into(), pid: 7 };
        let before = json!({"status": "running", "pipeline": "p", "started": "20260101-000000", "pid": 7});
        assert_eq!(running.to_json_text().unwrap(), serde_json::to_string_pretty(&before).unwrap());

        let summary = test_summary(Some("1/4"), Vec::new());
        let before = json!({"status": "completed", "run": serde_json::to_value(&summary).unwrap()});
        let completed = RunRecord::Completed { run: summary };
        assert_eq!(completed.to_json_text().unwrap(), serde_json::to_string_pretty(&before).unwrap());

        let error = RunError {
            phase: "test".into(),
            node: "n".into(),
            stage: "s".into(),
            sample: Some("x".into()),
            message: "bad".into(),
        };
        let before = json!({"status": "failed", "pipeline": "p", "error": error, "message": error.to_string()});
        let failed = RunRecord::stopped("p", &error, false);
        assert_eq!(failed.to_json_text().unwrap(), serde_json::to_string_pretty(&before).unwrap());
        assert_eq!(RunRecord::stopped("p", &error, true).status(), "interrupted");
    }

    #[test]
    fn a_record_reads_back_and_other_statuses_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let record = RunRecord::Completed { run: test_summary(Some("0/2"), Vec::new()) };
        std::fs::write(tmp.path().join(RUN_FILE), record.to_json_text().unwrap()).unwrap();
        assert_eq!(read_completed(tmp.path()).unwrap().shard.as_deref(), Some("0/2"));
        let running = RunRecord::Running { pipeline: "p".into(), started: "t".into(), pid: 1 };
        std::fs::write(tmp.path().join(RUN_FILE), running.to_json_text().unwrap()).unwrap();
        let e = read_completed(tmp.path()).unwrap_err();
        assert!(e.contains("run.json says `running`: the run did not complete"), "{e}");
        std::fs::write(tmp.path().join(RUN_FILE), b"{\"status\": \"done\"}").unwrap();
        assert!(read(tmp.path()).unwrap_err().contains("is not a run record"));
    }
}
