//! Helpers for the end-to-end tests: find the built `anoflow` binary and plugin libraries,
//! write pipeline files, run commands.
//!
//! The tests expect `cargo build --workspace` (same profile) to have run first, as
//! `tools/test.sh` does: they drive the real binary and the real plugin libraries.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The directory holding the built binary and plugin libraries (`target/<profile>`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

pub fn anoflow_bin() -> PathBuf {
    let bin = build_dir().join(if cfg!(windows) { "anoflow.exe" } else { "anoflow" });
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace` with the same profile first", bin.display());
    bin
}

/// The file name of a library built from crate `name` (dashes become underscores).
pub fn library_file(name: &str) -> String {
    let stem = name.replace('-', "_");
    if cfg!(target_os = "macos") {
        format!("lib{stem}.dylib")
    } else if cfg!(windows) {
        format!("{stem}.dll")
    } else {
        format!("lib{stem}.so")
    }
}

/// Copies fixture libraries (crates `anoflow-fixture-<name>`) into a fresh directory under
/// plugin file names, so they load only when a test asks for them.
pub fn fixture_plugin_dir(dir: &Path, names: &[&str]) -> PathBuf {
    let out = dir.join("fixture-plugins");
    std::fs::create_dir_all(&out).expect("create fixture dir");
    for name in names {
        let src = build_dir().join(library_file(&format!("anoflow-fixture-{name}")));
        assert!(src.exists(), "{} is missing: run `cargo build --workspace` first", src.display());
        let dst = out.join(library_file(&format!("anoflow-plugin-fixture-{name}")));
        std::fs::copy(&src, &dst).expect("copy fixture library");
    }
    out
}

/// Result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Keeps a command's default runs and caches under `cwd` (the user's directories outside a
/// project: see `core/src/local_dirs.rs`), so tests never share them or write to `$HOME`.
pub fn local_user_dirs(cmd: &mut Command, cwd: &Path) {
    cmd.env("XDG_CACHE_HOME", cwd.join(".cache"))
        .env("XDG_DATA_HOME", cwd.join(".local/share"))
        .env_remove("ANOFLOW_RUNS_DIR")
        .env_remove("ANOFLOW_CACHE_DIR");
}

/// Runs `anoflow ARGS` in `cwd` with the default plugin path and the given plugin dirs.
pub fn anoflow(cwd: &Path, args: &[&str], plugin_dirs: &[&Path]) -> Run {
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(cwd).args(args).env_remove("ANOFLOW_PLUGIN_PATH");
    local_user_dirs(&mut cmd, cwd);
    for d in plugin_dirs {
        cmd.arg("--plugins").arg(d);
    }
    cmd.output().expect("run anoflow").into()
}

/// Writes a pipeline file into `dir` and returns its path.
pub fn write_pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// Every file below `dir`, recursively, sorted (none when `dir` does not exist).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `anoflow run` arguments for a small quickstart (the given categories, 15 train, 3 good and
/// 6 defective test images each) with its cache in `cache`.
pub fn small_quickstart_args(categories: &[&str], cache: &Path) -> Vec<String> {
    let sets =
        [format!("data.categories=[{}]", categories.join(",")), "data.train=15".into(), "data.test_good=3".into()];
    let sets = sets.into_iter().chain(["data.test_defective=6".to_string()]);
    sets.flat_map(|s| ["--set".to_string(), s]).chain(["--cache".into(), cache.display().to_string()]).collect()
}
