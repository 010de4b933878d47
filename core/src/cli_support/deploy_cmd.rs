//! `anoflow export`, `anoflow bundle verify` and `anoflow predict`: deployment bundles made,
//! checked and run.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};

use super::{
    args::{report_load_failures, ExportArgs, PluginArgs, PredictArgs},
    run_cmd::init_threads,
};
use crate::{
    bundle::{self, OutputRef},
    executor::{self, RunOptions},
    local_dirs, predict,
};

/// `anoflow export`: fits (or loads) and calibrates, then writes the bundle.
pub fn export(plugin_args: &PluginArgs, args: ExportArgs) -> Result<ExitCode> {
    let ExportArgs {
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
    } = args;
    let reg = plugin_args.registry();
    report_load_failures(&reg);
    let checked = pipeline.load_checked(&reg)?;
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

/// `anoflow bundle verify`: every file, library and state of a bundle checked.
pub fn verify(plugin_args: &PluginArgs, dir: PathBuf) -> Result<ExitCode> {
    let reg = plugin_args.registry();
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

/// `anoflow predict`: a bundle's pipeline on new images.
pub fn predict(plugin_args: &PluginArgs, args: PredictArgs) -> Result<ExitCode> {
    let PredictArgs { bundle: dir, inputs, out, category, scores, watch, poll_ms, in_flight, threads, quiet } = args;
    let reg = plugin_args.registry();
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

/// A fresh private directory for the stages' work directories of a command that keeps none.
fn tempfile_dir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("anoflow-{what}-{}", crate::fsutil::unique_suffix()));
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
