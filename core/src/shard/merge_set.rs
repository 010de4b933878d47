//! What `anoflow merge` is given: a shared directory expanded into its tasks' runs, checked to
//! cover every unit once, each task completed.

use super::*;

/// What `anoflow merge` merges: run directories grouped by sweep variant.
#[derive(Debug)]
pub struct MergeSet {
    /// Sweep variants in order (`""` alone without a sweep), each with its runs in task order.
    pub groups: Vec<(String, Vec<PathBuf>)>,
    /// Where the merge goes unless `--out` says: `<root>/merged` for one shared directory.
    pub default_out: Option<PathBuf>,
}

impl MergeSet {
    pub fn runs(&self) -> Vec<PathBuf> {
        self.groups.iter().flat_map(|(_, runs)| runs.iter().cloned()).collect()
    }

    pub fn is_sweep(&self) -> bool {
        self.groups.iter().any(|(name, _)| !name.is_empty())
    }
}

/// The runs to merge from `inputs`: the shared directories of sharded runs (holding
/// [`PLAN_FILE`]), whose tasks must together cover every unit exactly once, or plain run
/// directories (each completed).
pub fn merge_set(inputs: &[PathBuf]) -> Result<MergeSet, ShardError> {
    let shared: Vec<&PathBuf> = inputs.iter().filter(|d| d.join(PLAN_FILE).is_file()).collect();
    if shared.is_empty() {
        for run in inputs {
            check_completed(run, None).map_err(|why| ShardError::Merge(format!("{}: {why}", run.display())))?;
        }
        return Ok(MergeSet { groups: vec![(String::new(), inputs.to_vec())], default_out: None });
    }
    if shared.len() != inputs.len() {
        let plain = inputs.iter().find(|d| !d.join(PLAN_FILE).is_file()).map(|d| d.display().to_string());
        return Err(ShardError::Merge(format!(
            "{} is not the directory of a sharded run (no {PLAN_FILE}), unlike {}: merge either shared run \
             directories or plain runs",
            plain.unwrap_or_default(),
            shared[0].display()
        )));
    }
    let plan = read_plan(&shared[0].join(PLAN_FILE))?;
    // Each task's directory, found in any of the shared directories given.
    let mut tasks: Vec<Option<PathBuf>> = vec![None; plan.count];
    for root in &shared {
        let other = read_plan(&root.join(PLAN_FILE))?;
        if let Some(what) = plan.difference(&other, false) {
            return Err(ShardError::Merge(format!(
                "{} and {} are not parts of one run: {what}",
                shared[0].display(),
                root.display()
            )));
        }
        for entry in std::fs::read_dir(root).map_err(|e| ShardError::Merge(format!("{}: {e}", root.display())))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(index) = name.strip_prefix("shard-").and_then(|i| i.parse::<usize>().ok()) else { continue };
            let dir = entry.path();
            match tasks.get_mut(index) {
                None => {
                    return Err(ShardError::Merge(format!(
                        "{}: task {index} does not exist in a run of {} tasks",
                        dir.display(),
                        plan.count
                    )))
                }
                Some(Some(seen)) => {
                    return Err(ShardError::Merge(format!(
                        "task {index} is given more than once: {} and {}",
                        seen.display(),
                        dir.display()
                    )))
                }
                Some(slot) => *slot = Some(dir),
            }
        }
    }
    // Every task ran every run it owns, to the end.
    let mut missing = Vec::new();
    for (index, dir) in tasks.iter().enumerate() {
        let problem = match dir {
            None => Some("never started".to_string()),
            Some(dir) => plan.task_runs(index).iter().find_map(|rel| {
                let run = if rel.is_empty() { dir.clone() } else { dir.join(rel) };
                check_completed(&run, Some(&format!("{index}/{}", plan.count))).err()
            }),
        };
        if let Some(problem) = problem {
            missing.push((index, problem));
        }
    }
    if !missing.is_empty() {
        let indices: Vec<String> = missing.iter().map(|(i, _)| i.to_string()).collect();
        let mut text = format!(
            "{} of {} tasks did not complete: task {} (run them again with the same --out and \
             `--shard I/{} --replace`; Slurm: sbatch --array={} ...; Kubernetes: a Job for those indices)",
            missing.len(),
            plan.count,
            indices.join(", task "),
            plan.count,
            indices.join(",")
        );
        for (index, problem) in &missing {
            let _ = write!(text, "\n  task {index}: {problem}");
        }
        return Err(ShardError::Merge(text));
    }
    let names = if plan.variants.is_empty() { vec![String::new()] } else { plan.variants.clone() };
    let groups = names
        .into_iter()
        .map(|variant| {
            let runs = tasks
                .iter()
                .enumerate()
                .filter(|(index, _)| plan.task_runs(*index).contains(&variant))
                .filter_map(|(_, dir)| {
                    dir.as_ref().map(|d| if variant.is_empty() { d.clone() } else { d.join(&variant) })
                })
                .collect();
            (variant, runs)
        })
        .filter(|(_, runs): &(String, Vec<PathBuf>)| !runs.is_empty())
        .collect();
    let default_out = (shared.len() == 1).then(|| shared[0].join("merged"));
    Ok(MergeSet { groups, default_out })
}

/// Whether `run` holds a completed run (of task `label` when given).
pub(super) fn check_completed(run: &Path, label: Option<&str>) -> Result<(), String> {
    let record = run_record::read(run)?;
    let Some(summary) = record.completed() else {
        return Err(format!("{} says `{}`: that run did not complete", run.join(RUN_FILE).display(), record.status()));
    };
    if let Some(label) = label {
        if summary.shard.as_deref() != Some(label) {
            return Err(format!("{} is not the run of task {label}", run.join(RUN_FILE).display()));
        }
    }
    Ok(())
}
