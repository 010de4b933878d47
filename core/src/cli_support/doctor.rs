//! `anoflow doctor`: what the host can see, and how to fix what is missing.

use std::{fmt::Write, path::PathBuf};

use anoflow_ort_locate::Status;

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
    healthy &= library_sections(&mut s);
    (s, healthy)
}

/// Each plain library's own report ([`anoflow_ort_locate::Health`]): where ONNX Runtime is and whether it loads,
/// which model manifests the manifest rule finds and whether their models are intact.
fn library_sections(s: &mut String) -> bool {
    let entries = [
        anoflow_ort_locate::health(),
        anoflow_ort_session::manifest::runtime_health(),
        anoflow_ort_session::manifest::health(&anoflow_ort_session::manifest::search_starts(None)),
    ];
    let mut healthy = true;
    for entry in &entries {
        let _ = writeln!(s, "\n{}:", entry.title);
        for (status, text) in &entry.lines {
            let tag = match status {
                Status::Ok => "ok  ",
                Status::Fail => "FAIL",
                Status::Note => "--  ",
            };
            let _ = writeln!(s, "  {tag} {text}");
        }
        healthy &= entry.healthy();
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
