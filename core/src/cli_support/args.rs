//! The `anoflow` command line's arguments (clap), and what turns them into a registry and a
//! checked pipeline.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    check::{self, CheckedPipeline},
    diag::PipelineErrors,
    registry::{search_path, Registry},
    shard::ShardBy,
    spec::{self, Override, ProcessEnv},
};

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--plugins DIR` (repeatable, anywhere on the line): directories to load plugin
/// libraries from, besides the default (the directory of this executable) and
/// ANOFLOW_PLUGIN_PATH; `--no-default-plugins` leaves the default out.
pub struct PluginArgs {
    pub plugins: Vec<PathBuf>,
    pub no_default_plugins: bool,
    /// `--onnxruntime FILE`: ONNX Runtime's library, passed on as ORT_DYLIB_PATH.
    pub onnxruntime: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Override a variable or a node parameter: `vars.category=carpet`, `ttt.percentile=98`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<Override>,
}

#[derive(Subcommand)]
pub enum Command {
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
        export: ExportArgs,
    },
    /// Deployment bundles.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Predict masks for images with a bundle: per image a mask PNG at its own size, a JSON line,
    /// and the throughput at the end.
    Predict {
        #[command(flatten)]
        predict: PredictArgs,
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
pub enum BundleCommand {
    /// Check a bundle: every file present and unchanged, the same SDK, libraries and models.
    Verify { bundle: PathBuf },
}

#[derive(Subcommand)]
pub enum CacheCommand {
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
        #[arg(long, value_parser = crate::cache_store::parse_size)]
        max_size: Option<u64>,
        /// Remove entries last used longer ago than this (30d, 12h, 45m).
        #[arg(long, value_parser = crate::cache_store::parse_age)]
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
pub enum PluginsCommand {
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
pub const PLUGIN_PATH_HELP: &str = "Plugin libraries (libanoflow_plugin_*.so) are loaded from the directory of this \
                                executable, from each `--plugins DIR` and from ANOFLOW_PLUGIN_PATH (`:`-separated); \
                                `--no-default-plugins` leaves the executable's directory out. `anoflow doctor` lists \
                                what loaded, what did not and why.";

#[derive(Subcommand)]
pub enum NewCommand {
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
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// `anoflow run`'s arguments, less the cache (the `Run` command holds it).
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Run directory (default: <runs>/<pipeline name>/<UTC time>, <runs> being ANOFLOW_RUNS_DIR, the
    /// project's `runs/` or ~/.local/share/anoflow/runs; `anoflow doctor` says which); new or empty.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Clear `--out` first when it holds an earlier run (only then: other directories are refused).
    #[arg(long)]
    pub replace: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip samples that fail and report them, instead of stopping at the first failure.
    #[arg(long)]
    pub keep_going: bool,
    /// Run only task I of N (`--shard 0/4`); default: the Slurm array task
    /// (SLURM_ARRAY_TASK_ID/_COUNT) or Kubernetes indexed pod (JOB_COMPLETION_INDEX,
    /// ANOFLOW_SHARD_COUNT). Every task shares `--out`; `anoflow merge` joins them.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// What a task owns: whole categories, fits included (default), or test samples by index.
    #[arg(long, value_name = "category|sample")]
    pub shard_by: Option<ShardBy>,
    /// Samples in flight at once (bounds memory).
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Categories fitted at once, each holding its own fit state (default: 2, or 1 with one
    /// thread; 1 fits one category after the other, the least memory).
    #[arg(long, value_name = "N")]
    pub categories_in_flight: Option<usize>,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `anoflow export`'s arguments.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The bundle directory to create (new or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// The evaluation run of this pipeline (same file and --set): its metrics go into bundle.json.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// The mask to deploy, NODE.PORT (default: the last mask the metrics sink evaluates).
    #[arg(long, value_name = "NODE.PORT")]
    pub mask: Option<String>,
    /// The score map served with it (default: the first one the metrics sink evaluates).
    #[arg(long, value_name = "NODE.PORT")]
    pub score: Option<String>,
    /// The image score (default: the first one the metrics sink evaluates).
    #[arg(long, value_name = "NODE.PORT")]
    pub image_score: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Samples in flight at once while fitting and calibrating (bounds memory).
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Categories fitted at once (as for `run`).
    #[arg(long, value_name = "N")]
    pub categories_in_flight: Option<usize>,
    /// Cache directory (as for `run`): the fitted states of the evaluation run are loaded from it.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Fit and calibrate again instead of loading the run's states from the cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// `anoflow predict`'s arguments.
#[derive(Args)]
pub struct PredictArgs {
    /// The bundle directory (`anoflow export`).
    pub bundle: PathBuf,
    /// Images, directories (PNG/TIFF below them) or glob patterns (quote them).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output directory: `<id>.mask.png`, `<id>.score.png`, predictions.jsonl, throughput.json.
    #[arg(long)]
    pub out: PathBuf,
    /// The category of every image (default: the bundle's only one, or the first directory
    /// of the image's path below its input).
    #[arg(long)]
    pub category: Option<String>,
    /// Also write each image's score map (8-bit, its own min..max; both in the JSON line).
    #[arg(long)]
    pub scores: bool,
    /// Keep watching the inputs for new images until interrupted (Ctrl-C, SIGTERM).
    #[arg(long)]
    pub watch: bool,
    /// Poll interval of --watch, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Images mapped at once (1: per-image latency; more: throughput on a backlog).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No JSON lines on stdout (they still go to predictions.jsonl).
    #[arg(long, short)]
    pub quiet: bool,
}

impl PluginArgs {
    /// The libraries on the plugin path these arguments give.
    pub fn registry(&self) -> Registry {
        Registry::discover(&search_path(&self.plugins, !self.no_default_plugins))
    }
}

impl PipelineArgs {
    /// The pipeline file with its overrides, checked against `reg`.
    pub fn load_checked(&self, reg: &Registry) -> anyhow::Result<CheckedPipeline> {
        let spec = spec::load(&self.pipeline, &self.set, &ProcessEnv).map_err(|d| PipelineErrors(d.into_vec()))?;
        Ok(check::check(spec, reg)?)
    }
}

/// Warns about each library on the plugin path that did not load.
pub fn report_load_failures(reg: &Registry) {
    for f in &reg.failures {
        eprintln!("warning: plugin library {} did not load: {}", f.path.display(), f.reason);
    }
}
