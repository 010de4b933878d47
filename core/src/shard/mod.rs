//! Scale-out: a run split into work units for the array tasks of a cluster (Slurm job
//! arrays, Kubernetes Indexed Jobs), the run directory all tasks share, and the checks
//! `anoflow merge` makes that the tasks covered every unit exactly once.
//!
//! A unit is one category of the test split in one sweep variant (`--shard-by category`, the
//! default): the task that owns a category also fits its per-category models, so no task
//! waits for another's fit. Unit `u` (variants in order, each variant's categories sorted)
//! belongs to task `u % count`. `--shard-by sample` keeps test samples whose index is
//! `index % count` instead, every task fitting (or loading from the shared cache) everything.
//!
//! Every task writes into `<out>/shard-<index>/`; the first one records the plan in
//! `<out>/shards.json`, and a task whose plan disagrees with it (another count, pipeline or
//! split) is refused before it writes anything.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    str::FromStr,
};

use anoflow_sdk::value::SampleMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    check::CheckedPipeline,
    executor,
    run_record::{self, RUN_FILE},
    spec::Env,
};

mod merge_set;
#[cfg(test)]
mod tests;

pub use merge_set::*;

/// The plan of a sharded run, in the directory its tasks share.
pub const PLAN_FILE: &str = "shards.json";
/// Kubernetes gives an Indexed Job's pods their index but not the Job's completions count:
/// the manifest passes it in this variable.
pub const COUNT_ENV: &str = "ANOFLOW_SHARD_COUNT";

/// Why a task cannot run, or shards cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{origin}: `{text}` is not a task index and count: expected I/N, e.g. 0/4")]
    Syntax { origin: String, text: String },
    #[error(
        "{origin}: task index {index} is out of range for {count} tasks (0 to {last}); \
         number array tasks from 0 (Slurm: --array=0-{last})",
        last = .count.saturating_sub(1)
    )]
    OutOfRange { origin: String, index: usize, count: usize },
    #[error("{origin}: 0 tasks: the count must be at least 1")]
    NoTasks { origin: String },
    #[error("{set} is set but {missing} is not: {hint}")]
    IncompleteEnv { set: &'static str, missing: &'static str, hint: &'static str },
    #[error(
        "task {index} of {count} has no work: `{pipeline}` has {units} units (categories of the test split \
         x sweep variants); run at most {units} tasks, or split by sample (--shard-by sample)"
    )]
    NoWork { pipeline: String, index: usize, count: usize, units: usize },
    #[error("{}: {what}; use the plan it was started with, or another --out for a new run", .root.display())]
    Disagrees { root: PathBuf, what: String },
    #[error(
        "{}: holds files but no {PLAN_FILE}: it is not the directory of a sharded run; choose a new or empty --out",
        .0.display()
    )]
    NotShared(PathBuf),
    #[error("{}: cannot write there ({source}); the run directory must be writable by every task", .path.display())]
    NotWritable { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", .path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("merge: {0}")]
    Merge(String),
}

/// How a run is split between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardBy {
    /// One unit per category of the test split (and sweep variant), fits included.
    #[default]
    Category,
    /// Test samples by index; fits are shared through the cache.
    Sample,
}

impl FromStr for ShardBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "category" => Ok(Self::Category),
            "sample" => Ok(Self::Sample),
            other => Err(format!("`{other}`: expected `category` or `sample`")),
        }
    }
}

impl std::fmt::Display for ShardBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Category => "category",
            Self::Sample => "sample",
        })
    }
}

/// One array task: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub index: usize,
    pub count: usize,
}

impl Task {
    fn checked(origin: &str, index: usize, count: usize) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoTasks { origin: origin.into() });
        }
        if index >= count {
            return Err(ShardError::OutOfRange { origin: origin.into(), index, count });
        }
        Ok(Self { index, count })
    }

    /// `I/N`, e.g. `0/4`.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ShardError> {
        let syntax = || ShardError::Syntax { origin: origin.into(), text: text.into() };
        let (i, n) = text.split_once('/').ok_or_else(syntax)?;
        let (i, n) = (i.trim().parse().map_err(|_| syntax())?, n.trim().parse().map_err(|_| syntax())?);
        Self::checked(origin, i, n)
    }
}

/// The task this process is: `--shard I/N` when given, else the array task a cluster started
/// (Slurm's `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT`, or Kubernetes'
/// `JOB_COMPLETION_INDEX` with [`COUNT_ENV`]), else none.
pub fn task(flag: Option<&str>, env: &dyn Env) -> Result<Option<Task>, ShardError> {
    if let Some(text) = flag {
        return Task::parse("--shard", text).map(Some);
    }
    let pairs = [
        (
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_COUNT",
            "this Slurm is too old to say its array's size; pass --shard I/N",
        ),
        ("JOB_COMPLETION_INDEX", COUNT_ENV, "pass the Job's `completions` in the pod's env (see deploy/k8s/)"),
    ];
    for (index_var, count_var, hint) in pairs {
        let Some(index) = env.get(index_var) else { continue };
        let count = env.get(count_var).ok_or(ShardError::IncompleteEnv { set: index_var, missing: count_var, hint })?;
        let origin = format!("{index_var}={index}, {count_var}={count}");
        let number = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| ShardError::Syntax { origin: origin.clone(), text: s.into() })
        };
        return Task::checked(&origin, number(&index)?, number(&count)?).map(Some);
    }
    Ok(None)
}

/// What one task runs of one (variant of a) pipeline, as the executor applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// The categories this task owns (split by category); `None`: split by sample.
    pub categories: Option<BTreeSet<String>>,
}

impl Shard {
    pub fn by_sample(index: usize, count: usize) -> Self {
        Self { index, count, categories: None }
    }

    /// `I/N`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    /// Whether a sample of a per-category phase (a fit per category, calibration, test)
    /// belongs to this task by its category. Always true when splitting by sample.
    pub fn owns_category(&self, meta: &SampleMeta) -> bool {
        self.categories.as_ref().is_none_or(|owned| owned.contains(meta.category.as_str()))
    }

    /// Whether a test sample belongs to this task.
    pub fn owns_test_sample(&self, meta: &SampleMeta) -> bool {
        match &self.categories {
            Some(owned) => owned.contains(meta.category.as_str()),
            None => meta.index as usize % self.count == self.index,
        }
    }
}

/// One work unit: a category of the test split in one sweep variant (`""` without a sweep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub variant: String,
    pub category: String,
}

/// A sweep variant (or the whole pipeline, named `""`), as the plan sees it.
pub struct Variant<'a> {
    pub name: &'a str,
    pub pipeline: &'a CheckedPipeline,
}

/// The split of one run between its tasks: what every task must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub pipeline: String,
    /// SHA-256 of the expanded pipeline of every variant: tasks ran the same thing.
    pub pipeline_sha256: String,
    pub by: ShardBy,
    pub count: usize,
    /// Sweep variants in order; empty without a `sweep:` section.
    pub variants: Vec<String>,
    /// The units in order (split by category); unit `u` belongs to task `u % count`.
    pub units: Vec<Unit>,
}

impl Plan {
    /// Lists each variant's test categories (split by category) and numbers the units.
    pub fn new(variants: &[Variant<'_>], by: ShardBy, count: usize) -> Result<Self, executor::RunError> {
        let mut h = Sha256::new();
        let mut units = Vec::new();
        for v in variants {
            h.update(v.name.as_bytes());
            h.update([0]);
            h.update(v.pipeline.spec.to_json().to_string().as_bytes());
            h.update([0]);
            if by == ShardBy::Category {
                for category in executor::test_categories(v.pipeline)? {
                    units.push(Unit { variant: v.name.to_string(), category });
                }
            }
        }
        Ok(Self {
            pipeline: variants.first().map(|v| v.pipeline.spec.name.clone()).unwrap_or_default(),
            pipeline_sha256: hex::encode(h.finalize()),
            by,
            count,
            variants: variants.iter().map(|v| v.name.to_string()).filter(|n| !n.is_empty()).collect(),
            units,
        })
    }

    /// Refuses a task that would have nothing to do.
    pub fn check_task(&self, index: usize) -> Result<(), ShardError> {
        if self.by == ShardBy::Category && index >= self.units.len() {
            return Err(ShardError::NoWork {
                pipeline: self.pipeline.clone(),
                index,
                count: self.count,
                units: self.units.len(),
            });
        }
        Ok(())
    }

    /// What task `index` runs of `variant` (`""` without a sweep), or `None` when it owns
    /// none of its units.
    pub fn shard(&self, index: usize, variant: &str) -> Option<Shard> {
        if self.by == ShardBy::Sample {
            return Some(Shard::by_sample(index, self.count));
        }
        let owned: BTreeSet<String> = self
            .units
            .iter()
            .enumerate()
            .filter(|(u, unit)| u % self.count == index && unit.variant == variant)
            .map(|(_, unit)| unit.category.clone())
            .collect();
        (!owned.is_empty()).then_some(Shard { index, count: self.count, categories: Some(owned) })
    }

    /// The run directories task `index` writes, relative to its shard directory (`""`: the
    /// shard directory itself).
    pub fn task_runs(&self, index: usize) -> Vec<String> {
        if self.variants.is_empty() {
            return vec![String::new()];
        }
        self.variants.iter().filter(|v| self.shard(index, v).is_some()).cloned().collect()
    }

    /// How this plan differs from `other`, the one a shared directory was started with.
    /// `same_pipeline`: the pipelines must be the same too (merge compares them later, file by
    /// file, naming the difference).
    fn difference(&self, other: &Plan, same_pipeline: bool) -> Option<String> {
        let what = if self.count != other.count {
            format!("it holds a run split into {} tasks, and this task says {}", other.count, self.count)
        } else if self.by != other.by {
            format!("it holds a run split by {}, and this task splits by {}", other.by, self.by)
        } else if (same_pipeline && self.pipeline_sha256 != other.pipeline_sha256) || self.variants != other.variants {
            format!(
                "it holds a run of another pipeline or other overrides (`{}` there, `{}` here)",
                other.pipeline, self.pipeline
            )
        } else if self.units != other.units {
            let names = |p: &Plan| p.units.iter().map(|u| u.category.as_str()).collect::<Vec<_>>().join(", ");
            format!("its tasks split the categories [{}], and this task sees [{}]", names(other), names(self))
        } else {
            return None;
        };
        Some(what)
    }
}

/// Task `index`'s directory inside the shared run directory.
pub fn shard_dir(root: &Path, index: usize) -> PathBuf {
    root.join(format!("shard-{index}"))
}

fn read_plan(path: &Path) -> Result<Plan, ShardError> {
    let bad = |message: String| ShardError::BadFile { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("not a plan of sharded run: {e}")))
}

/// Makes `root` the shared directory of `plan`'s run for one more task: creates it and
/// records the plan when this task is the first, or checks that the recorded plan is this
/// one. Writes nothing when refusing. Several tasks may start at once: the plan is published
/// with a hard link, which fails for all but one of them (also on NFS).
pub fn join(root: &Path, plan: &Plan) -> Result<(), ShardError> {
    let path = root.join(PLAN_FILE);
    let agree = |recorded: &Plan| match plan.difference(recorded, true) {
        Some(what) => Err(ShardError::Disagrees { root: root.to_path_buf(), what }),
        None => Ok(()),
    };
    if path.exists() {
        return agree(&read_plan(&path)?);
    }
    // Another task may be publishing the plan right now: its temporary files do not count.
    let publishing = |name: &str| name.trim_start_matches('.').starts_with(PLAN_FILE);
    let mut entries = std::fs::read_dir(root).into_iter().flatten().flatten();
    if entries.any(|e| !publishing(&e.file_name().to_string_lossy())) {
        return Err(ShardError::NotShared(root.to_path_buf()));
    }
    let not_writable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ShardError::NotWritable { path, source }
    };
    std::fs::create_dir_all(root).map_err(not_writable(root))?;
    let text = serde_json::to_string_pretty(plan).map_err(|e| ShardError::Merge(e.to_string()))?;
    let tmp = root.join(format!(".{PLAN_FILE}.tmp-{}-{}", std::process::id(), crate::fsutil::unique_suffix()));
    crate::fsutil::write_atomic(&tmp, text.as_bytes()).map_err(not_writable(&tmp))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => agree(&read_plan(&path)?),
        Err(e) => Err(not_writable(&path)(e)),
    }
}
