//! Plugin discovery and loading. Every library on the search path is loaded; one that
//! fails is recorded with its path and the reason, never skipped silently.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::library::{lib_header_from_path, RootModule};
use anoflow_sdk::{
    abi::{AbiVersions, PluginModuleRef, StageFactory, DATA_CONTRACT_VERSION, SDK_ABI_VERSION, VERSIONS_SYMBOL},
    descriptor::StageDescriptor,
};

/// Environment variable holding extra plugin directories (`:`-separated).
pub const PLUGIN_PATH_ENV: &str = "ANOFLOW_PLUGIN_PATH";

/// A library that could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub path: PathBuf,
    pub reason: String,
}

/// An entry of a plugin directory that was not loaded, and why (a FIFO named like a plugin,
/// a library whose name does not follow the plugin naming rule). `anoflow doctor` lists them.
#[derive(Debug, Clone)]
pub struct SkippedEntry {
    pub path: PathBuf,
    pub reason: String,
}

/// A loaded plugin library.
#[derive(Debug, Clone)]
pub struct Library {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub stages: Vec<String>,
}

/// One stage type, as found in a library.
#[derive(Clone)]
pub struct StageEntry {
    pub descriptor: StageDescriptor,
    pub factory: StageFactory,
    pub library: Arc<Library>,
}

impl std::fmt::Debug for StageEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageEntry").field("name", &self.descriptor.name).field("library", &self.library.name).finish()
    }
}

/// Everything found on the plugin search path.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub search_path: Vec<PathBuf>,
    pub libraries: Vec<Arc<Library>>,
    pub failures: Vec<LoadFailure>,
    pub skipped: Vec<SkippedEntry>,
    pub stages: BTreeMap<String, StageEntry>,
    /// Stage names exported by more than one library: (stage, the libraries' paths).
    pub conflicts: Vec<(String, Vec<PathBuf>)>,
}

/// Whether a file name looks like a plugin library.
fn is_plugin_file(name: &str) -> bool {
    let (prefix, ext) = if cfg!(target_os = "windows") {
        ("anoflow_plugin_", ".dll")
    } else if cfg!(target_os = "macos") {
        ("libanoflow_plugin_", ".dylib")
    } else {
        ("libanoflow_plugin_", ".so")
    };
    name.starts_with(prefix) && name.ends_with(ext)
}

/// The plugin naming rule, for messages.
fn plugin_naming_rule() -> &'static str {
    if cfg!(target_os = "windows") {
        "anoflow_plugin_*.dll"
    } else if cfg!(target_os = "macos") {
        "libanoflow_plugin_*.dylib"
    } else {
        "libanoflow_plugin_*.so"
    }
}

/// Whether a file name looks like a shared library of any kind (`libx.so`, `libx.so.1`,
/// `x.dylib`, `x.dll`).
fn looks_like_library(name: &str) -> bool {
    let versioned_so = name
        .split_once(".so.")
        .is_some_and(|(_, v)| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    [".so", ".dylib", ".dll"].iter().any(|ext| name.ends_with(ext)) || versioned_so
}

/// Why an entry that is not a regular file is skipped. Opening a FIFO would block until
/// something writes to it, so every command would hang: the type is checked (following
/// symlinks) before a library is opened.
fn not_regular_reason(ty: &std::fs::FileType) -> String {
    let what = if ty.is_dir() { "a directory" } else { special_file_kind(ty) };
    format!("{what}, not a regular file; not opened")
}

#[cfg(unix)]
fn special_file_kind(ty: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ty.is_fifo() {
        "a FIFO (named pipe)"
    } else if ty.is_socket() {
        "a socket"
    } else if ty.is_block_device() || ty.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_file_kind(_ty: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// Where a directory on the plugin search path comes from. One rule, the same in code,
/// `--help`, `anoflow doctor` and the plugin guide: `--plugins DIR` and
/// `ANOFLOW_PLUGIN_PATH` add to the default, the directory of the `anoflow` executable (where
/// its standard libraries are); `--no-default-plugins` leaves the default out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOrigin {
    Flag,
    Env,
    Default,
}

impl PathOrigin {
    pub fn describe(self) -> &'static str {
        match self {
            PathOrigin::Flag => "--plugins",
            PathOrigin::Env => PLUGIN_PATH_ENV,
            PathOrigin::Default => "default: the anoflow executable's directory",
        }
    }
}

/// The search path, each directory once, with where it comes from: `--plugins` dirs, then
/// `ANOFLOW_PLUGIN_PATH`, then (unless `with_default` is false) the running executable's
/// directory.
pub fn search_path_origins(explicit: &[PathBuf], with_default: bool) -> Vec<(PathBuf, PathOrigin)> {
    let mut dirs: Vec<(PathBuf, PathOrigin)> = explicit.iter().map(|d| (d.clone(), PathOrigin::Flag)).collect();
    if let Some(p) = std::env::var_os(PLUGIN_PATH_ENV) {
        dirs.extend(std::env::split_paths(&p).filter(|p| !p.as_os_str().is_empty()).map(|d| (d, PathOrigin::Env)));
    }
    if with_default {
        dirs.extend(crate::fsutil::exe_dir().map(|d| (d, PathOrigin::Default)));
    }
    let mut seen = Vec::new();
    dirs.retain(|(d, _)| {
        let key = d.canonicalize().unwrap_or_else(|_| d.clone());
        let fresh = !seen.contains(&key);
        seen.push(key);
        fresh
    });
    dirs
}

/// The search path (see [`search_path_origins`]).
pub fn search_path(explicit: &[PathBuf], with_default: bool) -> Vec<PathBuf> {
    search_path_origins(explicit, with_default).into_iter().map(|(d, _)| d).collect()
}

impl Registry {
    /// Loads every plugin library found in `dirs`.
    pub fn discover(dirs: &[PathBuf]) -> Self {
        let mut reg = Registry { search_path: dirs.to_vec(), ..Default::default() };
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) => {
                    reg.failures
                        .push(LoadFailure { path: dir.clone(), reason: format!("cannot read plugin directory: {e}") });
                    continue;
                }
            };
            let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
                if !is_plugin_file(name) {
                    if looks_like_library(name) && path.is_file() {
                        let reason =
                            format!(
                            "does not match the plugin naming rule {} (a crate named `anoflow-plugin-<name>` builds one); not loaded",
                            plugin_naming_rule()
                        );
                        reg.skipped.push(SkippedEntry { path, reason });
                    }
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => reg.load_library(&path),
                    Ok(meta) => {
                        let reason = not_regular_reason(&meta.file_type());
                        reg.skipped.push(SkippedEntry { path, reason });
                    }
                    Err(e) => reg.failures.push(LoadFailure { path, reason: format!("cannot read it: {e}") }),
                }
            }
        }
        reg
    }

    /// Loads one library, recording it or the reason it failed.
    pub fn load_library(&mut self, path: &Path) {
        match load(path) {
            Ok((library, entries)) => {
                let library = Arc::new(library);
                for (descriptor, factory) in entries {
                    let name = descriptor.name.to_string();
                    if let Some(existing) = self.stages.get(&name) {
                        let paths = vec![existing.library.path.clone(), library.path.clone()];
                        match self.conflicts.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, ps)) => ps.push(library.path.clone()),
                            None => self.conflicts.push((name, paths)),
                        }
                        continue;
                    }
                    self.stages.insert(name, StageEntry { descriptor, factory, library: library.clone() });
                }
                self.libraries.push(library);
            }
            Err(reason) => self.failures.push(LoadFailure { path: path.to_path_buf(), reason }),
        }
    }

    pub fn stage(&self, name: &str) -> Option<&StageEntry> {
        self.stages.get(name)
    }
}

fn load(path: &Path) -> Result<(Library, Vec<(StageDescriptor, StageFactory)>), String> {
    let versions = read_versions(path)?;
    if versions.sdk_abi != SDK_ABI_VERSION {
        return Err(format!(
            "built against anoflow SDK ABI version {}, but this host speaks version {SDK_ABI_VERSION}: rebuild the plugin against this anoflow-sdk",
            versions.sdk_abi
        ));
    }
    if versions.data_contract != DATA_CONTRACT_VERSION {
        return Err(format!(
            "built against data-contract version {}, but this host uses version {DATA_CONTRACT_VERSION}: rebuild the plugin against this anoflow-sdk",
            versions.data_contract
        ));
    }
    let module = lib_header_from_path(path)
        .and_then(|h| h.init_root_module::<PluginModuleRef>())
        .map_err(|e| first_lines(&e.to_string(), 6))?;
    let name = module.library_name().to_string();
    let version = module.library_version().to_string();
    let mut entries = Vec::new();
    for factory in (module.stages())().into_iter() {
        match (factory.descriptor)().into_result() {
            Ok(d) => {
                check_defaults(&d)?;
                anoflow_sdk::checks::check_descriptor(&d)?;
                entries.push((d, factory));
            }
            Err(e) => return Err(format!("a stage descriptor failed: {e}")),
        }
    }
    let stages = entries.iter().map(|(d, _)| d.name.to_string()).collect();
    Ok((Library { path: path.to_path_buf(), name, version, stages }, entries))
}

/// A default outside its own declared range or choices is a bug of the plugin: refuse the
/// library rather than run a node with a value `validate` would reject if it were written.
fn check_defaults(d: &StageDescriptor) -> Result<(), String> {
    use anoflow_sdk::params::{check_params, with_defaults, ParamProblem};
    let defaults = with_defaults(d, &serde_json::Map::new());
    // Required params have no default to check.
    match check_params(d, &defaults).into_iter().find(|p| !matches!(p, ParamProblem::Missing { .. })) {
        Some(problem) => Err(format!("stage `{}`: the default of {problem}", d.name)),
        None => Ok(()),
    }
}

/// Reads the plain C version symbol before abi_stable looks at the library, so a version
/// mismatch is reported as such rather than as a type-layout error.
fn read_versions(path: &Path) -> Result<AbiVersions, String> {
    // SAFETY: loading a library runs its initializers; plugin libraries are trusted code
    // found on the user's plugin path. The symbol has the signature the SDK's export macro
    // gives it.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| format!("cannot load library: {e}"))?;
        let f: libloading::Symbol<extern "C" fn() -> AbiVersions> = lib.get(VERSIONS_SYMBOL).map_err(|_| {
            "not an anoflow plugin: it exports no `anoflow_plugin_versions` (was it built with anoflow_sdk::export_plugin!?)"
                .to_string()
        })?;
        Ok(f())
    }
}

fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().take(n).collect();
    lines.join("\n")
}

/// The root-module name abi_stable uses, for messages.
pub fn root_module_name() -> &'static str {
    PluginModuleRef::NAME
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    #[test]
    fn a_default_outside_its_own_range_is_refused() {
        use anoflow_sdk::descriptor::ParamSpec;
        let with_schema = |spec: ParamSpec| {
            let mut d = StageDescriptor::new("t", "t");
            let schema = serde_json::json!({
                "type": "object", "additionalProperties": false,
                "properties": { spec.name.as_str(): spec.json_schema() },
            });
            d.config_schema = schema.to_string().into();
            d.params.push(spec);
            d
        };
        let ok = with_schema(ParamSpec::float("sigma", 0.0, "s").min(0.0));
        assert_eq!(check_defaults(&ok), Ok(()));
        let bad = with_schema(ParamSpec::float("sigma", -1.0, "s").min(0.0));
        assert_eq!(
            check_defaults(&bad),
            Err("stage `t`: the default of param `sigma`: -1.0 is out of range: expected a value >= 0".to_string())
        );
        let choice = with_schema(ParamSpec::string("mode", "c", "m").one_of(&["a", "b"]));
        assert!(check_defaults(&choice).is_err());
    }

    /// Discovery on another thread, so a test fails instead of hanging when it blocks.
    fn discover_within(dir: &Path, limit: Duration) -> Registry {
        let (tx, rx) = mpsc::channel();
        let dirs = vec![dir.to_path_buf()];
        std::thread::spawn(move || {
            let _ = tx.send(Registry::discover(&dirs));
        });
        rx.recv_timeout(limit).expect("plugin discovery blocked (did it open a FIFO?)")
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_named_like_a_plugin_is_skipped_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libanoflow_plugin_fifo.so");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        std::fs::create_dir(dir.path().join("libanoflow_plugin_dir.so")).unwrap();
        let reg = discover_within(dir.path(), Duration::from_secs(10));
        let reasons: Vec<(String, String)> = reg
            .skipped
            .iter()
            .map(|s| (s.path.file_name().unwrap().to_string_lossy().into_owned(), s.reason.clone()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0].0, "libanoflow_plugin_dir.so");
        assert!(reasons[0].1.starts_with("a directory, not a regular file"), "{reasons:?}");
        assert_eq!(reasons[1].0, "libanoflow_plugin_fifo.so");
        assert!(reasons[1].1.starts_with("a FIFO (named pipe), not a regular file"), "{reasons:?}");
        assert!(reg.failures.is_empty() && reg.libraries.is_empty(), "{:?}", reg.failures);
    }

    #[test]
    fn plugin_dirs_add_to_the_default_unless_it_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let exe = crate::fsutil::exe_dir().unwrap();
        let with = search_path_origins(&[dir.path().to_path_buf()], true);
        let origins: Vec<PathOrigin> = with.iter().map(|(_, o)| *o).collect();
        assert_eq!(with.first(), Some(&(dir.path().to_path_buf(), PathOrigin::Flag)));
        assert_eq!(with.last(), Some(&(exe.clone(), PathOrigin::Default)), "{with:?}");
        assert!(origins.contains(&PathOrigin::Default));
        let without = search_path(&[dir.path().to_path_buf()], false);
        assert!(!without.contains(&exe), "{without:?}");
        assert_eq!(without.first(), Some(&dir.path().to_path_buf()));
        // Named twice, loaded once.
        assert_eq!(search_path(std::slice::from_ref(&exe), true).iter().filter(|d| **d == exe).count(), 1);
    }

    #[test]
    fn libraries_outside_the_naming_rule_are_listed_as_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libhelper.so", "libmy_binarizer.so", "libonnxruntime.so.1.32.0", "notes.txt", "plugin.so.d"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let reg = discover_within(dir.path(), Duration::from_secs(10));
        let names: Vec<String> =
            reg.skipped.iter().map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["libhelper.so", "libmy_binarizer.so", "libonnxruntime.so.1.32.0"]);
        assert!(reg.skipped[0].reason.contains("does not match the plugin naming rule"), "{:?}", reg.skipped);
        assert!(reg.failures.is_empty(), "{:?}", reg.failures);
    }

    #[cfg(unix)]
    #[test]
    fn a_broken_plugin_symlink_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("libanoflow_plugin_gone.so")).unwrap();
        let reg = discover_within(dir.path(), Duration::from_secs(10));
        assert_eq!(reg.failures.len(), 1, "{:?}", reg.failures);
        assert!(reg.failures[0].reason.starts_with("cannot read it"), "{:?}", reg.failures);
    }
}
