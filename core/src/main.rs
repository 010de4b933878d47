//! The `anoflow` command line.

use std::{path::PathBuf, process::ExitCode};

use anoflow_core::{
    cli_support::{
        args::{
            report_load_failures, BundleCommand, CacheCommand, Cli, Command, GraphFormat, NewCommand, PluginArgs,
            PluginsCommand,
        },
        cache_cmd, deploy_cmd, doctor, graph, inspect, new_plugin, run_cmd, schema,
    },
    diag::PipelineErrors,
    local_dirs,
    registry::search_path_origins,
    report,
};
use anyhow::Result;
use clap::Parser;

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

fn dispatch(cli: Cli, plugin_args: &PluginArgs) -> Result<ExitCode> {
    match cli.command {
        Command::Run { run, cache, no_cache } => {
            let started = std::time::SystemTime::now();
            let local = local_dirs::current().map_err(anyhow::Error::msg)?;
            let cache_dir = (!no_cache).then(|| cache.unwrap_or_else(|| local.cache.clone()));
            let result = run_cmd::run_command(plugin_args, run, &local, cache_dir.clone());
            if let Some(dir) = &cache_dir {
                cache_cmd::prune_after_run(dir, local.cache_limit, started);
            }
            result
        }
        Command::Export { export } => deploy_cmd::export(plugin_args, export),
        Command::Bundle { command: BundleCommand::Verify { bundle } } => deploy_cmd::verify(plugin_args, bundle),
        Command::Predict { predict } => deploy_cmd::predict(plugin_args, predict),
        Command::Merge { runs, out, replace } => {
            let reg = plugin_args.registry();
            report_load_failures(&reg);
            run_cmd::merge_runs(&runs, out, replace, &reg)
        }
        Command::Validate { pipeline } => {
            let reg = plugin_args.registry();
            report_load_failures(&reg);
            let checked = pipeline.load_checked(&reg)?;
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
            let reg = plugin_args.registry();
            let checked = pipeline.load_checked(&reg)?;
            let text = match format {
                GraphFormat::Dot => graph::dot(&checked),
                GraphFormat::Mermaid => graph::mermaid(&checked),
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { command } => {
            let reg = plugin_args.registry();
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
            let reg = plugin_args.registry();
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
            let reg = plugin_args.registry();
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
