//! Writes the synthetic dataset to disk in the exact MVTec AD layout, or with `--xyz` in the
//! MVTec 3D-AD layout.
//!
//! ```text
//! make-synthetic --out DIR [--seed N] [--categories woven,pill|all] [--train N]
//!                [--validation-fraction F] [--test-good N] [--test-defective N] [--size N] [--xyz]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anoflow_scene::{Category, SynthConfig};

const USAGE: &str = "usage: make-synthetic --out DIR [--seed N] [--categories a,b|all] [--train N] \
[--validation-fraction F] [--test-good N] [--test-defective N] [--size N] [--xyz]";

fn parse(args: &[String]) -> Result<(PathBuf, SynthConfig), String> {
    let mut cfg = SynthConfig::default();
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--xyz" {
            cfg.xyz = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: `{v}` is not a count: {e}"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--seed" => cfg.seed = value.parse().map_err(|e| format!("--seed: `{value}`: {e}"))?,
            "--train" => cfg.train = num(value)?,
            "--test-good" => cfg.test_good = num(value)?,
            "--test-defective" => cfg.test_defective = num(value)?,
            "--size" => cfg.size = num(value)?,
            "--validation-fraction" => {
                cfg.validation_fraction = value.parse().map_err(|e| format!("--validation-fraction: `{value}`: {e}"))?
            }
            "--categories" => {
                cfg.categories = if value == "all" {
                    Category::ALL.to_vec()
                } else {
                    value
                        .split(',')
                        .map(|n| {
                            Category::parse(n.trim()).ok_or_else(|| {
                                format!("unknown category `{n}`; known: {}", Category::names().join(", "))
                            })
                        })
                        .collect::<Result<_, _>>()?
                }
            }
            other => return Err(format!("unknown flag `{other}`\n{USAGE}")),
        }
    }
    if cfg.size < 64 {
        return Err(format!("--size must be at least 64, got {}", cfg.size));
    }
    Ok((out.ok_or_else(|| format!("--out is required\n{USAGE}"))?, cfg))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, cfg) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let start = std::time::Instant::now();
    let result = if cfg.xyz {
        anoflow_plugin_datasets::write_mvtec_3d(&cfg, &out)
    } else {
        anoflow_plugin_datasets::write_mvtec_ad(&cfg, &out)
    };
    match result {
        Ok(n) => {
            let layout = if cfg.xyz { "MVTec 3D-AD" } else { "MVTec AD" };
            println!("wrote {n} samples ({layout} layout) to {} in {:.1?}", out.display(), start.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
