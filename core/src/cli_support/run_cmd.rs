//! `anoflow run` and `anoflow merge`: runs, sweeps and the tasks of a sharded run into their
//! run directories, with their bookkeeping files, and what they print.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};

use super::{
    args::{report_load_failures, PipelineArgs, PluginArgs, RunArgs},
    failures,
};
use crate::{
    check::{self, CheckedPipeline},
    diag::PipelineErrors,
    executor::{self, RunOptions},
    local_dirs, provenance,
    registry::Registry,
    report,
    shard::{self, ShardBy},
    spec::{self, Override, ProcessEnv},
};

/// Runs one checked pipeline into `opts.out_dir` (already claimed), with its bookkeeping
/// files. `run.json` says `running` from the start and `completed` only at the end.
fn run_one(checked: &CheckedPipeline, reg: &Registry, opts: &RunOptions) -> Result<executor::RunSummary> {
    report::write_run_started(&checked.spec.name, &opts.out_dir)?;
    let result = report::write_run_inputs(checked, reg, &opts.out_dir)
        .map_err(|e| anyhow::Error::from(setup_error(format!("{e:#}"))))
        .and_then(|()| executor::run(checked, opts).map_err(anyhow::Error::from));
    finish_or_record(result, &checked.spec.name, &opts.out_dir)
}

fn setup_error(message: String) -> executor::RunError {
    executor::RunError { phase: "setup".into(), node: String::new(), stage: String::new(), sample: None, message }
}

/// Writes the `completed` run.json, or the `failed`/`interrupted` one with the error.
fn finish_or_record(
    result: Result<executor::RunSummary>,
    pipeline: &str,
    out_dir: &Path,
) -> Result<executor::RunSummary> {
    let run_json = out_dir.join(report::RUN_FILE);
    match result {
        Ok(summary) => {
            report::write_run_report(&summary)?;
            Ok(summary)
        }
        Err(e) => {
            let error = e.downcast::<executor::RunError>().unwrap_or_else(|other| setup_error(format!("{other:#}")));
            let interrupted = executor::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
            report::write_failed_run(pipeline, out_dir, &error, interrupted)?;
            bail!("{error}\nthe run stopped; {} says where", run_json.display());
        }
    }
}

/// Paths a run still reads: a run directory holding one of them is never cleared.
fn needed_paths(checked: &CheckedPipeline, reg: &Registry, cache: Option<&Path>) -> Vec<PathBuf> {
    let mut needed = vec![checked.spec.file.clone()];
    needed.extend(cache.map(Path::to_path_buf));
    needed.extend(reg.search_path.iter().cloned());
    for n in 0..checked.nodes.len() {
        needed.extend(provenance::named_paths(checked, n).into_iter().map(|np| np.path));
    }
    needed
}

/// Prints each run's sink summaries and the failures; exit 3 when samples were skipped.
fn finish_run(summaries: &[executor::RunSummary]) -> ExitCode {
    let mut failed = 0;
    for summary in summaries {
        if let Some(c) = &summary.calibration {
            println!(
                "{}\n",
                executor::calibration_markdown(c, false).trim_end().replacen("# Calibration", "## calibration", 1)
            );
        }
        for sink in &summary.sinks {
            if !sink.markdown.trim().is_empty() {
                println!("## {}\n\n{}\n", sink.node, sink.markdown.trim_end());
            }
        }
        let phases = executor::phases_summary_line(&summary.phases);
        println!(
            "ran `{}` on {} test samples in {:.1} s{}; results in {}",
            summary.pipeline,
            summary.test_samples,
            summary.seconds,
            if phases.is_empty() { String::new() } else { format!("; {phases}") },
            summary.run_dir.display()
        );
        if !summary.failures.is_empty() {
            eprint!("{}", failures::summary(&summary.failures));
            failed += summary.failures.len();
        }
    }
    if failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Every combination of the sweep axes' values, named `param=value,...`.
fn sweep_variants(axes: &[spec::SweepAxis]) -> Vec<(String, Vec<Override>)> {
    let mut variants: Vec<(Vec<String>, Vec<Override>)> = vec![(Vec::new(), Vec::new())];
    for axis in axes {
        let path: Vec<String> = axis.path.split('.').map(str::to_string).collect();
        let short = path.last().cloned().unwrap_or_default();
        let mut next = Vec::new();
        for (names, sets) in &variants {
            for v in &axis.values {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let mut names = names.clone();
                names.push(format!("{short}={text}"));
                let mut sets = sets.clone();
                sets.push(Override { path: path.clone(), value: v.clone() });
                next.push((names, sets));
            }
        }
        variants = next;
    }
    variants
        .into_iter()
        .map(|(names, sets)| {
            let name: String = names
                .join(",")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || "=,.-_".contains(c) { c } else { '_' })
                .collect();
            (name, sets)
        })
        .collect()
}

/// `merge --out` must not be one of the runs it reads, inside one, or hold one.
fn check_merge_out(out: &Path, runs: &[PathBuf]) -> Result<()> {
    let target = crate::rundir::resolve(out);
    for run in runs {
        let input = crate::rundir::resolve(run);
        if target.starts_with(&input) {
            bail!(
                "merge: --out {} is {} the run {} it merges; choose another directory",
                out.display(),
                if target == input { "the same directory as" } else { "inside" },
                run.display()
            );
        }
        if input.starts_with(&target) {
            bail!("merge: --out {} holds the run {} it merges; choose another directory", out.display(), run.display());
        }
    }
    Ok(())
}

/// Each combination of the sweep axes' values, checked, named `param=value,...`.
fn load_variants(
    args: &PipelineArgs,
    reg: &Registry,
    axes: &[spec::SweepAxis],
) -> Result<Vec<(String, CheckedPipeline)>> {
    let mut variants = Vec::new();
    for (name, extra) in sweep_variants(axes) {
        let mut set = args.set.clone();
        set.extend(extra);
        let args = PipelineArgs { pipeline: args.pipeline.clone(), set };
        let variant = args.load_checked(reg).with_context(|| format!("sweep variant {name}"))?;
        variants.push((name, variant));
    }
    Ok(variants)
}

/// One task of a sharded run: checks it against the run the shared directory `root` holds
/// (nothing is written when refused), then runs what it owns into `root/shard-<index>`.
#[allow(clippy::too_many_arguments)]
fn run_task(
    args: &PipelineArgs,
    checked: CheckedPipeline,
    reg: &Registry,
    task: shard::Task,
    by: ShardBy,
    root: &Path,
    replace: bool,
    opts: RunOptions,
) -> Result<ExitCode> {
    let sweep = !checked.spec.sweep.is_empty();
    let variants = if sweep { load_variants(args, reg, &checked.spec.sweep)? } else { vec![(String::new(), checked)] };
    let listed: Vec<shard::Variant> =
        variants.iter().map(|(name, p)| shard::Variant { name: name.as_str(), pipeline: p }).collect();
    let plan = shard::Plan::new(&listed, by, task.count)?;
    plan.check_task(task.index)?;
    shard::join(root, &plan)?;
    let dir = shard::shard_dir(root, task.index);
    crate::rundir::claim(&dir, replace, &needed_paths(&variants[0].1, reg, opts.cache_dir.as_deref()))?;
    let mut summaries = Vec::new();
    for (name, variant) in &variants {
        let Some(owned) = plan.shard(task.index, name) else { continue };
        if sweep {
            eprintln!("sweep variant {name}");
        }
        let out_dir = if sweep { dir.join(name) } else { dir.clone() };
        summaries.push(run_one(variant, reg, &RunOptions { out_dir, shard: Some(owned), ..opts.clone() })?);
    }
    Ok(finish_run(&summaries))
}

/// `anoflow merge`: checks the runs are the complete parts of one run, then merges each
/// sweep variant's parts (a sweep also gets its `sweep.md`).
pub fn merge_runs(inputs: &[PathBuf], out: Option<PathBuf>, replace: bool, reg: &Registry) -> Result<ExitCode> {
    if inputs.is_empty() {
        bail!("merge: name the run directories to merge");
    }
    let set = shard::merge_set(inputs)?;
    let out = out.or_else(|| set.default_out.clone()).context("merge: name the directory to write with --out")?;
    let all_runs = set.runs();
    check_merge_out(&out, &all_runs)?;
    let mut groups = Vec::new();
    for (variant, runs) in &set.groups {
        let first = &runs[0];
        for run in &runs[1..] {
            if let Some(difference) = provenance::run_difference(first, run) {
                bail!("merge: {} and {} are not shards of one run: {difference}", first.display(), run.display());
            }
        }
        let expanded = first.join(report::EXPANDED_PIPELINE_FILE);
        let spec = spec::load(&expanded, &[], &ProcessEnv).map_err(|d| PipelineErrors(d.into_vec()))?;
        groups.push((variant, runs, check::check(spec, reg)?));
    }
    crate::rundir::claim(&out, replace, &all_runs)?;
    let mut summaries = Vec::new();
    for (variant, runs, checked) in groups {
        let dir = if variant.is_empty() { out.clone() } else { out.join(variant) };
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        report::write_run_started(&checked.spec.name, &dir)?;
        let merged = executor::merge(&checked, runs, &dir, 1).map_err(anyhow::Error::from);
        let summary = finish_or_record(merged, &checked.spec.name, &dir)?;
        for sink in &summary.sinks {
            if !sink.markdown.trim().is_empty() {
                println!("## {}\n\n{}\n", sink.node, sink.markdown.trim_end());
            }
        }
        summaries.push((variant.clone(), summary));
    }
    if set.is_sweep() {
        write_sweep(&out, &summaries)?;
    }
    println!("merged {} runs into {}", all_runs.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// A sweep's table of its variants side by side (`sweep.md`, also printed) and its charts.
fn write_sweep(out: &Path, runs: &[(String, executor::RunSummary)]) -> Result<()> {
    let table = report::sweep_table(runs);
    let path = out.join("sweep.md");
    crate::fsutil::write_atomic(&path, table.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    println!("# sweep over {} variants\n\n{table}", runs.len());
    crate::cli_support::sweep_charts::write_for_runs(out, runs)?;
    Ok(())
}

/// The global rayon pool with `threads` workers (default: all cores); returns the count.
pub fn init_threads(threads: Option<usize>) -> usize {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    threads
}

/// `anoflow run`: one run, a sweep's runs, or a task of a sharded run.
pub fn run_command(
    plugin_args: &PluginArgs,
    args: RunArgs,
    local: &local_dirs::LocalDirs,
    cache_dir: Option<PathBuf>,
) -> Result<ExitCode> {
    let RunArgs {
        pipeline,
        out,
        replace,
        threads,
        keep_going,
        shard,
        shard_by,
        in_flight,
        categories_in_flight,
        quiet,
    } = args;
    let task = shard::task(shard.as_deref(), &ProcessEnv)?;
    let reg = plugin_args.registry();
    report_load_failures(&reg);
    let checked = pipeline.load_checked(&reg)?;
    let threads = init_threads(threads);
    // First Ctrl-C (or SIGTERM, SIGHUP): stop between chunks and report; a second one
    // exits at once.
    let _ = ctrlc::set_handler(|| {
        if executor::INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after the samples in flight");
    });
    let opts = RunOptions {
        out_dir: PathBuf::new(),
        threads,
        keep_going,
        shard: None,
        in_flight,
        categories_in_flight: categories_in_flight
            .unwrap_or_else(|| executor::default_categories_in_flight(threads))
            .max(1),
        cache_dir,
        progress: !quiet && std::io::stderr().is_terminal(),
    };
    if let Some(task) = task {
        let root = out.context("a task of a sharded run needs --out: the run directory every task shares")?;
        return run_task(&pipeline, checked, &reg, task, shard_by.unwrap_or_default(), &root, replace, opts);
    }
    let out_dir = out.unwrap_or_else(|| crate::rundir::unused(&local.run_dir(&checked.spec.name)));
    crate::rundir::claim(&out_dir, replace, &needed_paths(&checked, &reg, opts.cache_dir.as_deref()))?;
    let opts = RunOptions { out_dir: out_dir.clone(), ..opts };
    if checked.spec.sweep.is_empty() {
        let summary = run_one(&checked, &reg, &opts)?;
        return Ok(finish_run(&[summary]));
    }
    // A sweep: one run per combination of the axes' values, side by side.
    let mut runs = Vec::new();
    for (name, variant) in load_variants(&pipeline, &reg, &checked.spec.sweep)? {
        let opts = RunOptions { out_dir: out_dir.join(&name), ..opts.clone() };
        eprintln!("sweep variant {name}");
        runs.push((name, run_one(&variant, &reg, &opts)?));
    }
    write_sweep(&out_dir, &runs)?;
    let summaries: Vec<_> = runs.into_iter().map(|(_, s)| s).collect();
    Ok(finish_run(&summaries))
}
