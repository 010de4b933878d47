//! `anoflow doctor`: what the host can see, and how to fix what is missing.

use std::{
    fmt::Write,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::fsutil::{exe_dir, find_upward};

use crate::local_dirs::LocalDirs;
use crate::registry::{PathOrigin, Registry, PLUGIN_PATH_ENV};

/// The report text and whether everything needed was found. `origins` says where each
/// directory of the search path comes from.
pub fn report(reg: &Registry, origins: &[(PathBuf, PathOrigin)]) -> (String, bool) {
    let mut s = String::new();
    let mut healthy = true;
    let _ = writeln!(
        s,
        "anoflow {} (SDK ABI {}, data contract {})",
        env!("CARGO_PKG_VERSION"),
        anoflow_sdk::abi::SDK_ABI_VERSION,
        anoflow_sdk::abi::DATA_CONTRACT_VERSION
    );
    let _ = writeln!(
        s,
        "\nplugin search path (--plugins DIR and {PLUGIN_PATH_ENV} add to the anoflow executable's directory; \
         --no-default-plugins leaves that out):"
    );
    for d in &reg.search_path {
        let origin = origins.iter().find(|(o, _)| o == d).map_or("", |(_, o)| o.describe());
        let _ = writeln!(s, "  {}  ({origin}){}", d.display(), if d.is_dir() { "" } else { "  (missing)" });
    }
    let _ = writeln!(s, "\nloaded libraries:");
    if reg.libraries.is_empty() {
        healthy = false;
        let _ = writeln!(s, "  none: build them with `cargo build --release` (they land next to the anoflow binary)");
    }
    for l in &reg.libraries {
        let _ = writeln!(s, "  ok   {} {}  {}  stages: {}", l.name, l.version, l.path.display(), l.stages.join(", "));
    }
    if !reg.failures.is_empty() {
        healthy = false;
        let _ = writeln!(s, "\nlibraries that did not load:");
        for f in &reg.failures {
            let _ = writeln!(s, "  FAIL {}: {}", f.path.display(), f.reason);
        }
    }
    for (stage, paths) in &reg.conflicts {
        healthy = false;
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(s, "  CONFLICT stage `{stage}` exported by: {}", list.join(", "));
    }
    if !reg.skipped.is_empty() {
        let _ = writeln!(s, "\nskipped on the plugin path (files that look like libraries but are not loaded):");
        for entry in &reg.skipped {
            let _ = writeln!(s, "  SKIP {}: {}", entry.path.display(), entry.reason);
        }
    }
    healthy &= runtime_section(&mut s);
    healthy &= models_section(&mut s);
    (s, healthy)
}

fn runtime_section(s: &mut String) -> bool {
    let _ = writeln!(s, "\nONNX Runtime (for onnx-features and onnx-scorer):");
    match anoflow_ort_locate::locate() {
        Ok(lib) => {
            let version = lib.version.map_or_else(|| "version unknown".to_string(), |v| format!("version {v}"));
            let _ = writeln!(s, "  ok   {} ({version}, found through {})", lib.path.display(), lib.found_by);
            true
        }
        Err(e) => {
            let _ = writeln!(s, "  FAIL {e}");
            false
        }
    }
}

/// The first `models/manifest.yaml` above the current directory or the executable.
fn find_manifest() -> Option<PathBuf> {
    let starts = [std::env::current_dir().ok(), exe_dir()].into_iter().flatten();
    find_upward(starts, |d| d.join("models/manifest.yaml").is_file()).map(|d| d.join("models/manifest.yaml"))
}

fn models_section(s: &mut String) -> bool {
    let _ = writeln!(s, "\nmodels:");
    let Some(manifest) = find_manifest() else {
        let _ = writeln!(s, "  no models/manifest.yaml above the current directory; run tools/setup.sh in the project");
        return false;
    };
    let dir = manifest.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let parsed: Result<serde_json::Value, String> = std::fs::read_to_string(&manifest)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_yaml::from_str(&t).map_err(|e| e.to_string()));
    let value = match parsed {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(s, "  FAIL {}: {e}", manifest.display());
            return false;
        }
    };
    let mut healthy = true;
    for m in value["models"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("?");
        let file = dir.join(m["file"].as_str().unwrap_or_default());
        let expected = m["sha256"].as_str().unwrap_or_default();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let found = hex::encode(Sha256::digest(&bytes));
                if found == expected {
                    let _ = writeln!(s, "  ok   {name}: {}", file.display());
                } else {
                    healthy = false;
                    let _ = writeln!(
                        s,
                        "  FAIL {name}: {} has sha256 {found}, the manifest expects {expected}",
                        file.display()
                    );
                }
            }
            // Optional models (exported by users with internet) are reported, not required.
            Err(_) if name != "mobilenet_v2" => {
                let _ = writeln!(s, "  --   {name}: {} not present (optional)", file.display());
            }
            Err(e) => {
                healthy = false;
                let _ = writeln!(s, "  FAIL {name}: {}: {e}; run tools/setup.sh", file.display());
            }
        }
    }
    healthy
}

/// Where runs and caches go when `--out` and `--cache` are not given, and why.
pub fn local_dirs_section(dirs: &Result<LocalDirs, String>) -> String {
    let mut s = String::from("\nruns and caches (when --out and --cache are not given):\n");
    match dirs {
        Ok(d) => {
            let _ = writeln!(s, "  runs   {}  ({})", d.runs.display(), d.runs_from);
            let _ = writeln!(s, "  cache  {}  ({})", d.cache.display(), d.cache_from);
            let _ = writeln!(s, "  cache limit {}  ({}; `anoflow cache info`)", d.cache_limit, d.cache_limit_from);
            let _ = writeln!(
                s,
                "  set them with ANOFLOW_RUNS_DIR / ANOFLOW_CACHE_DIR, or `runs:` / `cache:` in a project's {}",
                crate::local_dirs::PROJECT_FILE
            );
        }
        Err(e) => {
            let _ = writeln!(s, "  FAIL {e}");
        }
    }
    s
}
