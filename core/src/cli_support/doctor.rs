//! `anoflow doctor`: what the host can see, and how to fix what is missing.

use std::fmt::Write;

use crate::registry::{Registry, PLUGIN_PATH_ENV};

/// The report text and whether everything needed was found.
pub fn report(reg: &Registry) -> (String, bool) {
    let mut s = String::new();
    let mut healthy = true;
    let _ = writeln!(s, "anoflow {} (SDK ABI {}, data contract {})", env!("CARGO_PKG_VERSION"),
        anoflow_sdk::abi::SDK_ABI_VERSION, anoflow_sdk::abi::DATA_CONTRACT_VERSION);
    let _ = writeln!(s, "\nplugin search path ({PLUGIN_PATH_ENV} and --plugins add to it):");
    for d in &reg.search_path {
        let _ = writeln!(s, "  {}{}", d.display(), if d.is_dir() { "" } else { "  (missing)" });
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
    (s, healthy)
}
