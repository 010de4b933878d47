//! The workspace's layout rules, checked on the manifests and on what the libraries declare:
//! plain libraries live in `libs/`, plugins in `plugins/`; no plugin crate depends on another
//! (two plugin libraries in one binary clash on their exported root-module symbols); every
//! crate takes the workspace's lints; a stage's code is one file named as the stage.

use std::path::{Path, PathBuf};

use anoflow_e2e::anoflow;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `(crate dir, manifest text)` of every crate directly under `dir`.
fn crates_in(dir: &str) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| {
            let text = std::fs::read_to_string(p.join("Cargo.toml")).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

fn package_name(manifest: &str) -> String {
    manifest.lines().find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"'))).unwrap().to_string()
}

/// The dependency names of a manifest's `[dependencies]` table.
fn dependencies(manifest: &str) -> Vec<String> {
    let Some(deps) = manifest.split("\n[dependencies]\n").nth(1) else { return Vec::new() };
    deps.lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn plugins_depend_on_libraries_never_on_each_other() {
    let plugins = crates_in("plugins");
    let libs = crates_in("libs");
    assert!(plugins.len() >= 10 && libs.len() >= 4, "{} plugins, {} libs", plugins.len(), libs.len());
    let plugin_names: Vec<String> = plugins.iter().map(|(_, m)| package_name(m)).collect();
    for (dir, manifest) in &plugins {
        assert!(manifest.contains("\"cdylib\""), "{}: a plugin crate builds a cdylib", dir.display());
        for dep in dependencies(manifest) {
            assert!(!plugin_names.contains(&dep), "{} depends on the plugin crate {dep}", dir.display());
        }
    }
    for (dir, manifest) in &libs {
        assert!(!manifest.contains("cdylib"), "{}: a library in libs/ is not a plugin", dir.display());
        for dep in dependencies(manifest) {
            assert!(!plugin_names.contains(&dep), "{} depends on the plugin crate {dep}", dir.display());
        }
    }
    // The check itself can fail: a manifest with a plugin dependency is caught.
    let bad = "[package]\nname = \"x\"\n\n[dependencies]\nanoflow-plugin-ttt4as = { path = \"../ttt4as\" }\n";
    assert!(dependencies(bad).iter().any(|d| plugin_names.contains(d)));
}

#[test]
fn every_crate_takes_the_workspace_lints() {
    let mut all = crates_in("plugins");
    all.extend(crates_in("libs"));
    all.extend(["sdk", "core", "tests"].iter().map(|d| {
        let p = root().join(d);
        let text = std::fs::read_to_string(p.join("Cargo.toml")).unwrap();
        (p, text)
    }));
    for (dir, manifest) in all {
        assert!(manifest.contains("\n[lints]\nworkspace = true"), "{}: add `[lints] workspace = true`", dir.display());
    }
}

#[test]
fn a_stage_is_one_file_named_as_in_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let run = anoflow(dir.path(), &["plugins", "list"], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let stages: Vec<&str> = run.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(stages.len() >= 30, "{}", run.stdout);
    for stage in stages {
        let run = anoflow(dir.path(), &["plugins", "inspect", stage], &[]);
        let code =
            run.stdout.lines().find_map(|l| l.strip_prefix("code: ")).unwrap_or_else(|| panic!("{}", run.stdout));
        let file = root().join(code);
        assert!(file.is_file(), "stage `{stage}`: {} does not exist", file.display());
        let expected = format!("src/stages/{}.rs", stage.replace('-', "_"));
        assert!(code.ends_with(&expected), "stage `{stage}` lives in {code}, not in .../{expected}");
    }
}
