//! The `anoflow` command line.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anoflow_core::{
    bundle::{self, OutputRef},
    check::{self, CheckedPipeline},
    cli_support::{cache_cmd, doctor, failures, graph, inspect, new_plugin, schema},
    diag::PipelineErrors,
    executor::{self, RunOptions},
    local_dirs, predict, provenance,
    registry::{search_path, search_path_origins, Registry},
    report,
    shard::{self, ShardBy},
    spec::{self, Override, ProcessEnv},
};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "anoflow",
    version,
    about = "Anomaly detection & segmentation pipelines as DAGs of plugin stages",
    after_help = "Every command takes `--plugins DIR` (repeatable): a directory of plugin libraries to load besides \
                  the default (the directory of this executable, where the standard libraries are) and \
                  ANOFLOW_PLUGIN_PATH; `--no-default-plugins` leaves the default out. `--onnxruntime FILE` names \
                  ONNX Runtime's library (as ORT_DYLIB_PATH does)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--plugins DIR` (repeatable, anywhere on the line): directories to load plugin
/// libraries from, besides the default (the directory of this executable) and
/// ANOFLOW_PLUGIN_PATH; `--no-default-plugins` leaves the default out.
struct PluginArgs {
    plugins: Vec<PathBuf>,
    no_default_plugins: bool,
    /// `--onnxruntime FILE`: ONNX Runtime's library, passed on as ORT_DYLIB_PATH.
    onnxruntime: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct PipelineArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Override a variable or a node parameter: `vars.category=carpet`, `ttt.percentile=98`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<Override>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline.
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// Cache directory for fitted states and node outputs (default: ANOFLOW_CACHE_DIR, the project's
        /// `.cache/anoflow` or ~/.cache/anoflow; `anoflow doctor` says which).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Do not read or write the cache (fitted states and node outputs).
        #[arg(long)]
        no_cache: bool,
    },
    /// Check a pipeline file and report every problem at once.
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Draw a pipeline's graph.
    Graph {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// List or inspect plugin stages.
    #[command(after_help = PLUGIN_PATH_HELP)]
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Create new things.
    New {
        #[command(subcommand)]
        command: NewCommand,
    },
    /// Check the installation: plugin path, what loaded and what did not, ONNX Runtime, models.
    Doctor,
    /// What the cache holds; prune it. After each run it is pruned to its limit (default 20G;
    /// ANOFLOW_CACHE_MAX_SIZE or `cache_max_size` in a project's .anoflow.yaml; `unlimited`),
    /// least recently used entries first, never an entry the run used.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print a JSON Schema of pipeline files, with every loaded stage's params.
    Schema,
    /// Merge the sink results of several runs of one pipeline (the tasks of a sharded run).
    Merge {
        /// The `--out` of a sharded run (checked to cover every unit once), or run directories.
        runs: Vec<PathBuf>,
        /// Where the merged results go (new or empty; not inside one of the runs; default:
        /// `merged` in the one sharded run given).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Clear `--out` first when it holds an earlier run.
        #[arg(long)]
        replace: bool,
    },
    /// Export a fitted pipeline as a self-contained bundle for `anoflow predict` (fits and
    /// calibration load from the cache the run filled; no test image is read).
    Export {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The bundle directory to create (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// The evaluation run of this pipeline (same file and --set): its metrics go into bundle.json.
        #[arg(long)]
        run: Option<PathBuf>,
        /// The mask to deploy, NODE.PORT (default: the last mask the metrics sink evaluates).
        #[arg(long, value_name = "NODE.PORT")]
        mask: Option<String>,
        /// The score map served with it (default: the first one the metrics sink evaluates).
        #[arg(long, value_name = "NODE.PORT")]
        score: Option<String>,
        /// The image score (default: the first one the metrics sink evaluates).
        #[arg(long, value_name = "NODE.PORT")]
        image_score: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Samples in flight at once while fitting and calibrating (bounds memory).
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// Categories fitted at once (as for `run`).
        #[arg(long, value_name = "N")]
        categories_in_flight: Option<usize>,
        /// Cache directory (as for `run`): the fitted states of the evaluation run are loaded from it.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Fit and calibrate again instead of loading the run's states from the cache.
        #[arg(long)]
        no_cache: bool,
    },
    /// Deployment bundles.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Predict masks for images with a bundle: per image a mask PNG at its own size, a JSON line,
    /// and the throughput at the end.
    Predict {
        /// The bundle directory (`anoflow export`).
        bundle: PathBuf,
        /// Images, directories (PNG/TIFF below them) or glob patterns (quote them).
        #[arg(required = true)]
        inputs: Vec<String>,
        /// Output directory: `<id>.mask.png`, `<id>.score.png`, predictions.jsonl, throughput.json.
        #[arg(long)]
        out: PathBuf,
        /// The category of every image (default: the bundle's only one, or the first directory
        /// of the image's path below its input).
        #[arg(long)]
        category: Option<String>,
        /// Also write each image's score map (8-bit, its own min..max; both in the JSON line).
        #[arg(long)]
        scores: bool,
        /// Keep watching the inputs for new images until interrupted (Ctrl-C, SIGTERM).
        #[arg(long)]
        watch: bool,
        /// Poll interval of --watch, milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// Images mapped at once (1: per-image latency; more: throughput on a backlog).
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// No JSON lines on stdout (they still go to predictions.jsonl).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Compare the metrics of two runs (a table of what differs; with --out, an HTML page too).
    Compare {
        run_a: PathBuf,
        run_b: PathBuf,
        /// Also write DIR/compare.html: both runs side by side, differences highlighted, charts paired.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Check a bundle: every file present and unchanged, the same SDK, libraries and models.
    Verify { bundle: PathBuf },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Size, entries and last use of the cache, and its limit.
    Info {
        /// The cache directory (default: as `anoflow run` chooses it; `anoflow doctor` says which).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Remove least recently used entries: down to `--max-size` (default: the cache's limit),
    /// those unused for `--older-than`, or everything with `--all`. Entries are recomputed
    /// when next needed.
    Prune {
        /// The cache directory (default: as `anoflow run` chooses it).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Keep the cache at or under this size (20G, 500M, ...).
        #[arg(long, value_parser = anoflow_core::cache_store::parse_size)]
        max_size: Option<u64>,
        /// Remove entries last used longer ago than this (30d, 12h, 45m).
        #[arg(long, value_parser = anoflow_core::cache_store::parse_age)]
        older_than: Option<std::time::Duration>,
        /// Remove every entry.
        #[arg(long, conflicts_with_all = ["max_size", "older_than"])]
        all: bool,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List every stage on the plugin path.
    #[command(after_help = PLUGIN_PATH_HELP)]
    List,
    /// Show a stage (or every stage of a library): ports, params with defaults and docs, versions.
    #[command(after_help = PLUGIN_PATH_HELP)]
    Inspect {
        /// A stage name (`ttt4as`) or a library name (`anoflow-plugin-ttt4as`).
        name: String,
    },
}

/// The plugin path rule, for the `--help` of the commands that list plugins.
const PLUGIN_PATH_HELP: &str = "Plugin libraries (libanoflow_plugin_*.so) are loaded from the directory of this \
                                executable, from each `--plugins DIR` and from ANOFLOW_PLUGIN_PATH (`:`-separated); \
                                `--no-default-plugins` leaves the executable's directory out. `anoflow doctor` lists \
                                what loaded, what did not and why.";

#[derive(Subcommand)]
enum NewCommand {
    /// Create a plugin crate that builds and loads, with only this binary: outside an anoflow
    /// checkout the crate carries its own copy of the SDK at this binary's exact version.
    Plugin {
        /// The stage name, lowercase letters, digits and `-` (e.g. `otsu-binarize`); the crate
        /// is `anoflow-plugin-NAME` and its library `libanoflow_plugin_NAME.so` (`-` as `_`).
        name: String,
        /// Parent directory of the new crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let (cli, plugin_args) = parse_cli();
    if let Some(file) = &plugin_args.onnxruntime {
        if !file.is_file() {
            eprintln!("error: --onnxruntime {}: not a file; name a libonnxruntime.so.1.X.Y", file.display());
            return ExitCode::from(2);
        }
        // Plugins run in this process and find the runtime through ORT_DYLIB_PATH; no other
        // thread exists yet.
        std::env::set_var(anoflow_ort_locate::ENV_VAR, file);
    }
    match dispatch(cli, &plugin_args) {
        Ok(code) => code,
        Err(e) => {
            if let Some(errs) = e.downcast_ref::<PipelineErrors>() {
                eprintln!("{errs}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Lets a closed standard output (`anoflow schema | head`) end the process quietly, as it
/// does other command-line tools, instead of every `println!` panicking with "Broken pipe":
/// the Rust runtime ignores SIGPIPE, this puts the default action back.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `--plugins` may appear anywhere; take it out before clap sees the subcommands.
fn parse_cli() -> (Cli, PluginArgs) {
    let mut plugins = Vec::new();
    let mut no_default_plugins = false;
    let mut onnxruntime = None;
    let mut rest = Vec::new();
    let mut args = std::env::args_os();
    while let Some(a) = args.next() {
        if a == "--onnxruntime" {
            onnxruntime = args.next().map(PathBuf::from);
        } else if let Some(file) = a.to_str().and_then(|s| s.strip_prefix("--onnxruntime=")) {
            onnxruntime = Some(PathBuf::from(file));
        } else if a == "--no-default-plugins" {
            no_default_plugins = true;
        } else if a == "--plugins" {
            if let Some(dir) = args.next() {
                plugins.push(PathBuf::from(dir));
            }
        } else if let Some(dir) = a.to_str().and_then(|s| s.strip_prefix("--plugins=")) {
            plugins.push(PathBuf::from(dir));
        } else {
            rest.push(a);
        }
    }
    (Cli::parse_from(rest), PluginArgs { plugins, no_default_plugins, onnxruntime })
}

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
    let target = anoflow_core::rundir::resolve(out);
    for run in runs {
        let input = anoflow_core::rundir::resolve(run);
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
        let variant = load_checked(&args, reg).with_context(|| format!("sweep variant {name}"))?;
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
    anoflow_core::rundir::claim(&dir, replace, &needed_paths(&variants[0].1, reg, opts.cache_dir.as_deref()))?;
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
fn merge_runs(inputs: &[PathBuf], out: Option<PathBuf>, replace: bool, reg: &Registry) -> Result<ExitCode> {
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
    anoflow_core::rundir::claim(&out, replace, &all_runs)?;
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

/// The global rayon pool with `threads` workers (default: all cores); returns the count.
/// A sweep's table of its variants side by side (`sweep.md`, also printed) and its charts.
fn write_sweep(out: &Path, runs: &[(String, executor::RunSummary)]) -> Result<()> {
    let table = report::sweep_table(runs);
    let path = out.join("sweep.md");
    anoflow_core::fsutil::write_atomic(&path, table.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("# sweep over {} variants\n\n{table}", runs.len());
    anoflow_core::cli_support::sweep_charts::write_for_runs(out, runs)?;
    Ok(())
}

fn init_threads(threads: Option<usize>) -> usize {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    threads
}

/// A fresh private directory for the stages' work directories of a command that keeps none.
fn tempfile_dir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("anoflow-{what}-{}", anoflow_core::fsutil::unique_suffix()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// How predict runs a bundle's pipeline: failures are per image, nothing is cached.
fn predict_options(work: PathBuf, threads: usize, in_flight: usize) -> RunOptions {
    RunOptions {
        out_dir: work,
        threads,
        keep_going: true,
        shard: None,
        in_flight,
        categories_in_flight: 1,
        cache_dir: None,
        progress: false,
    }
}

fn registry(args: &PluginArgs) -> Registry {
    Registry::discover(&search_path(&args.plugins, !args.no_default_plugins))
}

fn load_checked(args: &PipelineArgs, reg: &Registry) -> Result<CheckedPipeline> {
    let spec = spec::load(&args.pipeline, &args.set, &ProcessEnv).map_err(|d| PipelineErrors(d.into_vec()))?;
    let checked = check::check(spec, reg)?;
    Ok(checked)
}

fn report_load_failures(reg: &Registry) {
    for f in &reg.failures {
        eprintln!("warning: plugin library {} did not load: {}", f.path.display(), f.reason);
    }
}

/// `anoflow run`'s arguments, less the cache (see [`dispatch`]).
#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Run directory (default: <runs>/<pipeline name>/<UTC time>, <runs> being ANOFLOW_RUNS_DIR, the
    /// project's `runs/` or ~/.local/share/anoflow/runs; `anoflow doctor` says which); new or empty.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Clear `--out` first when it holds an earlier run (only then: other directories are refused).
    #[arg(long)]
    replace: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Skip samples that fail and report them, instead of stopping at the first failure.
    #[arg(long)]
    keep_going: bool,
    /// Run only task I of N (`--shard 0/4`); default: the Slurm array task
    /// (SLURM_ARRAY_TASK_ID/_COUNT) or Kubernetes indexed pod (JOB_COMPLETION_INDEX,
    /// ANOFLOW_SHARD_COUNT). Every task shares `--out`; `anoflow merge` joins them.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// What a task owns: whole categories, fits included (default), or test samples by index.
    #[arg(long, value_name = "category|sample")]
    shard_by: Option<ShardBy>,
    /// Samples in flight at once (bounds memory).
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Categories fitted at once, each holding its own fit state (default: 2, or 1 with one
    /// thread; 1 fits one category after the other, the least memory).
    #[arg(long, value_name = "N")]
    categories_in_flight: Option<usize>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

fn run_command(
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
    let reg = registry(plugin_args);
    report_load_failures(&reg);
    let checked = load_checked(&pipeline, &reg)?;
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
    let out_dir = out.unwrap_or_else(|| anoflow_core::rundir::unused(&local.run_dir(&checked.spec.name)));
    anoflow_core::rundir::claim(&out_dir, replace, &needed_paths(&checked, &reg, opts.cache_dir.as_deref()))?;
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

fn dispatch(cli: Cli, plugin_args: &PluginArgs) -> Result<ExitCode> {
    match cli.command {
        Command::Run { run, cache, no_cache } => {
            let started = std::time::SystemTime::now();
            let local = local_dirs::current().map_err(anyhow::Error::msg)?;
            let cache_dir = (!no_cache).then(|| cache.unwrap_or_else(|| local.cache.clone()));
            let result = run_command(plugin_args, run, &local, cache_dir.clone());
            if let Some(dir) = &cache_dir {
                cache_cmd::prune_after_run(dir, local.cache_limit, started);
            }
            result
        }
        Command::Export {
            pipeline,
            out,
            run,
            mask,
            score,
            image_score,
            threads,
            in_flight,
            categories_in_flight,
            cache,
            no_cache,
        } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            let checked = load_checked(&pipeline, &reg)?;
            let threads = init_threads(threads);
            let parse = |flag: &str, v: Option<String>| -> Result<Option<OutputRef>> {
                v.map(|t| OutputRef::parse(&t).with_context(|| format!("{flag} {t}: expected NODE.PORT"))).transpose()
            };
            let outputs = bundle::choose_outputs(
                &checked,
                parse("--mask", mask)?,
                parse("--score", score)?,
                parse("--image-score", image_score)?,
            )?;
            let local = local_dirs::current().map_err(anyhow::Error::msg)?;
            let work = tempfile_dir("export")?;
            let opts = RunOptions {
                out_dir: work.clone(),
                threads,
                keep_going: false,
                shard: None,
                in_flight,
                categories_in_flight: categories_in_flight
                    .unwrap_or_else(|| executor::default_categories_in_flight(threads))
                    .max(1),
                cache_dir: (!no_cache).then(|| cache.unwrap_or_else(|| local.cache.clone())),
                progress: std::io::stderr().is_terminal(),
            };
            let fitted = executor::fit_for_export(&checked, &opts);
            let _ = std::fs::remove_dir_all(&work);
            let request = bundle::ExportRequest { out: &out, run: run.as_deref() };
            let manifest = bundle::export(&checked, &fitted?, outputs, &request)?;
            println!(
                "exported `{}` to {}: mask {}, categories: {}, {} states, {} files",
                manifest.name,
                out.display(),
                manifest.outputs.mask,
                manifest.categories.join(", "),
                manifest.states.len(),
                manifest.files.len() + 1
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle { command: BundleCommand::Verify { bundle: dir } } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            let b = bundle::open(&dir, &reg)?;
            // Restoring every state is part of the check.
            let work = tempfile_dir("verify")?;
            let opts = predict_options(work.clone(), 1, 1);
            let restored = executor::Predictor::new(&b.pipeline, &opts, &b.states, Vec::new()).map(|_| ());
            let _ = std::fs::remove_dir_all(&work);
            restored.with_context(|| format!("bundle {}: refused", dir.display()))?;
            println!(
                "{}: ok: `{}`, mask {}, categories: {}, {} files checked, {} libraries",
                dir.display(),
                b.manifest.name,
                b.manifest.outputs.mask,
                b.manifest.categories.join(", "),
                b.manifest.files.len(),
                b.manifest.plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Predict { bundle: dir, inputs, out, category, scores, watch, poll_ms, in_flight, threads, quiet } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            let b = bundle::open(&dir, &reg)?;
            let threads = init_threads(threads);
            let _ = ctrlc::set_handler(|| {
                if executor::INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::process::exit(130);
                }
            });
            let work = tempfile_dir("predict")?;
            let opts = predict_options(work.clone(), threads, in_flight);
            let outputs = predict::output_nodes(&b);
            let predictor = executor::Predictor::new(&b.pipeline, &opts, &b.states, outputs)
                .with_context(|| format!("bundle {}: refused", dir.display()));
            let popts = predict::PredictOptions {
                inputs,
                out,
                category,
                scores,
                in_flight,
                watch,
                poll: std::time::Duration::from_millis(poll_ms),
                echo: !quiet,
            };
            let result = predictor.and_then(|p| predict::run(&b, &p, &popts).map_err(anyhow::Error::from));
            let _ = std::fs::remove_dir_all(&work);
            let t = result?;
            eprintln!(
                "predicted {} images ({} errors) in {:.2} s: {:.2} images/s, latency p50 {:.1} ms, p99 {:.1} ms",
                t.images, t.errors, t.seconds, t.images_per_second, t.latency_p50_ms, t.latency_p99_ms
            );
            for s in &t.stages {
                eprintln!(
                    "  {:<16} {:<20} {:>8} ms/image",
                    s["node"].as_str().unwrap_or(""),
                    s["stage"].as_str().unwrap_or(""),
                    s["ms_per_sample"]
                );
            }
            Ok(if t.errors > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        Command::Merge { runs, out, replace } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            merge_runs(&runs, out, replace, &reg)
        }
        Command::Validate { pipeline } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            let checked = load_checked(&pipeline, &reg)?;
            println!(
                "{}: ok ({} nodes, source `{}`, splits: {})",
                pipeline.pipeline.display(),
                checked.nodes.len(),
                checked.nodes[checked.source].id,
                checked.splits().join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { pipeline, format } => {
            let reg = registry(plugin_args);
            let checked = load_checked(&pipeline, &reg)?;
            let text = match format {
                GraphFormat::Dot => graph::dot(&checked),
                GraphFormat::Mermaid => graph::mermaid(&checked),
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { command } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            match command {
                PluginsCommand::List => print!("{}", inspect::list(&reg)),
                PluginsCommand::Inspect { name } => print!("{}", inspect::inspect(&reg, &name)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::New { command: NewCommand::Plugin { name, dir } } => {
            let created = new_plugin::create(&dir, &name)?;
            print!("{}", created.next_steps());
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let reg = registry(plugin_args);
            let origins = search_path_origins(&plugin_args.plugins, !plugin_args.no_default_plugins);
            let (mut text, healthy) = doctor::report(&reg, &origins);
            text.push_str(&doctor::local_dirs_section(&local_dirs::current()));
            print!("{text}");
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Cache { command } => {
            let local = local_dirs::current().map_err(anyhow::Error::msg)?;
            match command {
                CacheCommand::Info { cache } => {
                    let dir = cache.unwrap_or(local.cache);
                    print!("{}", cache_cmd::info(&dir, local.cache_limit, &local.cache_limit_from)?);
                }
                CacheCommand::Prune { cache, max_size, older_than, all, dry_run } => {
                    let dir = cache.unwrap_or(local.cache);
                    let limit = match (all, max_size, older_than, local.cache_limit) {
                        (true, ..) => Some(0),
                        (false, Some(max), ..) => Some(max),
                        (false, None, None, anoflow_core::cache_store::CacheLimit::Bytes(max)) => Some(max),
                        _ => None,
                    };
                    let rule = anoflow_core::cache_store::PruneRule { limit, older_than, keep_used_since: None };
                    print!("{}", cache_cmd::prune(&dir, &rule, dry_run)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let reg = registry(plugin_args);
            let schema = schema::pipeline_schema(&reg);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { run_a, run_b, out } => {
            print!("{}", report::compare(&run_a, &run_b)?);
            if let Some(out) = out {
                let page = anoflow_core::cli_support::compare::write_html(&run_a, &run_b, &out)?;
                println!("side by side: {}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
