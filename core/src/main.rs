//! The `anoflow` command line.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anoflow_core::{
    check::{self, CheckedPipeline},
    cli_support::{doctor, graph, inspect, new_plugin, schema},
    diag::PipelineErrors,
    executor::{self, RunOptions},
    registry::{search_path, Registry},
    report,
    spec::{self, Override, ProcessEnv},
};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "anoflow",
    version,
    about = "Anomaly detection & segmentation pipelines as DAGs of plugin stages",
    after_help = "Every command takes `--plugins DIR` (repeatable) to choose where plugin libraries are loaded from."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--plugins DIR` (repeatable, anywhere on the line): directories to load plugin
/// libraries from, replacing the default (the directory of this executable);
/// ANOFLOW_PLUGIN_PATH is always added.
struct PluginArgs {
    plugins: Vec<PathBuf>,
}

#[derive(Args)]
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
        pipeline: PipelineArgs,
        /// Run directory (default: runs/<pipeline name>/<UTC time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Skip samples that fail and report them, instead of stopping at the first failure.
        #[arg(long)]
        keep_going: bool,
        /// Process only shard I of N of the test split (`--shard 0/4`).
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Samples in flight at once (bounds memory).
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// Cache directory for fitted states (default: .cache/anoflow, or ANOFLOW_CACHE_DIR).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Do not read or write the fitted-state cache.
        #[arg(long)]
        no_cache: bool,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
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
    /// Print a JSON Schema of pipeline files, with every loaded stage's params.
    Schema,
    /// Compare the metrics of two runs.
    Compare { run_a: PathBuf, run_b: PathBuf },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List every stage on the plugin path.
    List,
    /// Show a stage (or every stage of a library): ports, params with defaults and docs, versions.
    Inspect { name: String },
}

#[derive(Subcommand)]
enum NewCommand {
    /// Create a plugin crate that builds and loads.
    Plugin {
        name: String,
        /// Parent directory (default: plugins/).
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let (cli, plugin_args) = parse_cli();
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

/// `--plugins` may appear anywhere; take it out before clap sees the subcommands.
fn parse_cli() -> (Cli, PluginArgs) {
    let mut plugins = Vec::new();
    let mut rest = Vec::new();
    let mut args = std::env::args_os();
    while let Some(a) = args.next() {
        if a == "--plugins" {
            if let Some(dir) = args.next() {
                plugins.push(PathBuf::from(dir));
            }
        } else if let Some(dir) = a.to_str().and_then(|s| s.strip_prefix("--plugins=")) {
            plugins.push(PathBuf::from(dir));
        } else {
            rest.push(a);
        }
    }
    (Cli::parse_from(rest), PluginArgs { plugins })
}

fn registry(args: &PluginArgs) -> Registry {
    Registry::discover(&search_path(&args.plugins))
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

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s.split_once('/').context("--shard: expected I/N, e.g. 0/4")?;
    let (i, n): (usize, usize) = (i.trim().parse().context("--shard: I")?, n.trim().parse().context("--shard: N")?);
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= I < N");
    }
    Ok((i, n))
}

fn dispatch(cli: Cli, plugin_args: &PluginArgs) -> Result<ExitCode> {
    match cli.command {
        Command::Run { pipeline, out, threads, keep_going, shard, in_flight, cache, no_cache, quiet } => {
            let reg = registry(plugin_args);
            report_load_failures(&reg);
            let checked = load_checked(&pipeline, &reg)?;
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
            let out_dir = out.unwrap_or_else(|| executor::default_run_dir(Path::new("."), &checked.spec.name));
            let cache_dir = (!no_cache).then(|| {
                cache
                    .or_else(|| std::env::var_os("ANOFLOW_CACHE_DIR").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from(".cache/anoflow"))
            });
            let opts = RunOptions {
                out_dir: out_dir.clone(),
                threads,
                keep_going,
                shard: shard.as_deref().map(parse_shard).transpose()?,
                in_flight,
                cache_dir,
                progress: !quiet && std::io::stderr().is_terminal(),
            };
            report::write_run_inputs(&checked, &reg, &out_dir)?;
            let summary = match executor::run(&checked, &opts) {
                Ok(s) => s,
                Err(e) => {
                    report::write_failed_run(&checked, &out_dir, &e)?;
                    bail!("{e}\nthe run stopped; {} says where", out_dir.join("run.json").display());
                }
            };
            report::write_run_report(&summary)?;
            for sink in &summary.sinks {
                if !sink.markdown.trim().is_empty() {
                    println!("## {}\n\n{}\n", sink.node, sink.markdown.trim_end());
                }
            }
            println!(
                "ran `{}` on {} test samples in {:.1} s; results in {}",
                summary.pipeline,
                summary.test_samples,
                summary.seconds,
                summary.run_dir.display()
            );
            if !summary.failures.is_empty() {
                eprintln!("{} samples failed and were skipped:", summary.failures.len());
                for f in summary.failures.iter().take(20) {
                    eprintln!("  {f}");
                }
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
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
            let path = new_plugin::create(&dir, &name)?;
            println!("created {}; build it with `cargo build -p anoflow-plugin-{name}`", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let reg = registry(plugin_args);
            let (text, healthy) = doctor::report(&reg);
            print!("{text}");
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Schema => {
            let reg = registry(plugin_args);
            let schema = schema::pipeline_schema(&reg);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { run_a, run_b } => {
            print!("{}", report::compare(&run_a, &run_b)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
