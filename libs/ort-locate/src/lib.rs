//! Finds ONNX Runtime's shared library for the `load-dynamic` build of `ort`, in this order:
//!
//! 1. the file named by `ORT_DYLIB_PATH` (`anoflow --onnxruntime PATH` sets it);
//! 2. the installation's own directories, relative to the executable, never to the working
//!    directory: the executable's directory, its `../lib`, and when the executable lies in a
//!    checkout's `target/` (`target/release`, `target/release/deps`,
//!    `target/<triple>/release`), that checkout's `.cache/onnxruntime/` (what
//!    `tools/fetch_onnxruntime.sh` prepares);
//! 3. the library inside an installed `onnxruntime` Python package (`onnxruntime/capi/`),
//!    asked of the first `python3` on an absolute `PATH` entry, run outside the working
//!    directory so that a package planted there is not found.
//!
//! Loading a library runs its constructors, so the search never looks at the working
//! directory or its ancestors: a downloaded bundle or a shared `/tmp` carrying a
//! `.cache/onnxruntime/libonnxruntime.so.*` must not get its code run by a pipeline started
//! inside it.
//!
//! The version is read from the versioned file name (`libonnxruntime.so.1.32.0`) and checked
//! against [`MIN_VERSION`], the oldest runtime the `ort` build's API level supports. Every error
//! says how to fix it. `anoflow doctor` and the onnx plugin call [`locate`].

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

/// Oldest ONNX Runtime the onnx plugin works with (it is built with `ort`'s `api-20`).
pub const MIN_VERSION: Version = Version { major: 1, minor: 20, patch: 0 };

/// The environment variable that names the library file explicitly.
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

/// What to do when no usable library is found.
pub const HOW_TO_FIX: &str = "run `tools/fetch_onnxruntime.sh` in the project (it unpacks libonnxruntime from the \
     onnxruntime wheel into .cache/onnxruntime/), or `pip install onnxruntime`, or set ORT_DYLIB_PATH to a \
     libonnxruntime.so.1.X.Y file";

/// A runtime version, from the library's file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Where a library was found: the rule that chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    EnvVar,
    /// `libonnxruntime.so*` next to the executable.
    ExeDir,
    /// The executable's `../lib`.
    ExeLibDir,
    /// `<checkout>/.cache/onnxruntime`, the executable being in `<checkout>/target/...`.
    CheckoutCache,
    PythonPackage,
}

impl fmt::Display for FoundBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FoundBy::EnvVar => "ORT_DYLIB_PATH (or --onnxruntime)",
            FoundBy::ExeDir => "the executable's directory",
            FoundBy::ExeLibDir => "the executable's ../lib directory",
            FoundBy::CheckoutCache => "the .cache/onnxruntime of the checkout the executable was built in",
            FoundBy::PythonPackage => "the installed onnxruntime Python package",
        })
    }
}

/// A runtime library that exists and is recent enough (or whose version cannot be told from
/// its name, e.g. an unversioned `libonnxruntime.so` named by ORT_DYLIB_PATH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLibrary {
    pub path: PathBuf,
    pub version: Option<Version>,
    pub found_by: FoundBy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("ORT_DYLIB_PATH is set to {path}, which is not a file; point it at libonnxruntime.so.1.X.Y or unset it")]
    EnvPathMissing { path: PathBuf },
    #[error(
        "ONNX Runtime {found} at {path} (found through {found_by}) is too old: version {MIN_VERSION} or newer \
         is needed; {HOW_TO_FIX}"
    )]
    TooOld { path: PathBuf, found: Version, found_by: FoundBy },
    #[error("ONNX Runtime's library was not found (looked at: {}); {HOW_TO_FIX}", searched.join("; "))]
    NotFound { searched: Vec<String> },
}

/// Parses the version from `libonnxruntime.so.1.32.0` (or `libonnxruntime.1.32.0.dylib`).
pub fn version_from_file_name(path: &Path) -> Option<Version> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("libonnxruntime.")?;
    let rest = rest.strip_prefix("so.").unwrap_or(rest);
    let rest = rest.strip_suffix(".dylib").unwrap_or(rest);
    let mut parts = rest.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(Version { major, minor, patch })
}

/// What [`locate_with`] looks at; [`Probe::from_environment`] fills it from the process.
/// There is deliberately no working directory in it.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub env_path: Option<OsString>,
    /// The directory of the running executable (plugins run inside `anoflow`, so it is
    /// `anoflow`'s).
    pub exe_dir: Option<PathBuf>,
    /// The Python interpreter to ask for an installed onnxruntime package (None: do not ask).
    pub python: Option<PathBuf>,
}

impl Probe {
    pub fn from_environment() -> Self {
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        Self { env_path: std::env::var_os(ENV_VAR), exe_dir, python: find_on_path("python3") }
    }
}

/// Finds the runtime library as this process sees it.
pub fn locate() -> Result<RuntimeLibrary, LocateError> {
    locate_with(&Probe::from_environment())
}

/// The installation's own directories for an executable in `exe_dir`, with the rule of each,
/// in the order they are searched.
pub fn installation_dirs(exe_dir: &Path) -> Vec<(PathBuf, FoundBy)> {
    let mut dirs = vec![(exe_dir.to_path_buf(), FoundBy::ExeDir)];
    if let Some(parent) = exe_dir.parent() {
        dirs.push((parent.join("lib"), FoundBy::ExeLibDir));
    }
    // target/release, target/release/deps (test binaries), target/<triple>/release.
    let checkout = exe_dir
        .ancestors()
        .skip(1)
        .take(3)
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent);
    if let Some(root) = checkout {
        dirs.push((root.join(".cache").join("onnxruntime"), FoundBy::CheckoutCache));
    }
    dirs
}

/// Finds the runtime library from an explicit probe (tests build their own).
pub fn locate_with(probe: &Probe) -> Result<RuntimeLibrary, LocateError> {
    if let Some(env) = probe.env_path.as_ref().filter(|p| !p.is_empty()) {
        let path = PathBuf::from(env);
        if !path.is_file() {
            return Err(LocateError::EnvPathMissing { path });
        }
        return checked(path, FoundBy::EnvVar);
    }
    let mut searched = vec![format!("{ENV_VAR} (not set)")];
    for (dir, rule) in probe.exe_dir.as_deref().map(installation_dirs).unwrap_or_default() {
        if let Some(lib) = newest_library_in(&dir) {
            return checked(lib, rule);
        }
        searched.push(dir.display().to_string());
    }
    match &probe.python {
        Some(python) => match python_package_dir(python) {
            Some(dir) => {
                let capi = dir.join("capi");
                if let Some(lib) = newest_library_in(&capi) {
                    return checked(lib, FoundBy::PythonPackage);
                }
                searched.push(format!("{}", capi.display()));
            }
            None => searched.push(format!("`{}`: no onnxruntime package", python.display())),
        },
        None => searched.push("no python3 on PATH".to_string()),
    }
    Err(LocateError::NotFound { searched })
}

fn checked(path: PathBuf, found_by: FoundBy) -> Result<RuntimeLibrary, LocateError> {
    // A symlink such as libonnxruntime.so -> libonnxruntime.so.1.32.0 carries its version in the target.
    let version = version_from_file_name(&path)
        .or_else(|| std::fs::canonicalize(&path).ok().and_then(|p| version_from_file_name(&p)));
    match version {
        Some(found) if found < MIN_VERSION => Err(LocateError::TooOld { path, found, found_by }),
        _ => Ok(RuntimeLibrary { path, version, found_by }),
    }
}

/// The `libonnxruntime.so*` file with the highest version in `dir`, if any.
fn newest_library_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("libonnxruntime.so") || (n.starts_with("libonnxruntime.") && n.ends_with(".dylib"))
                })
        })
        .max_by_key(|p| version_from_file_name(p))
}

/// The first `program` in an absolute `PATH` entry (an empty or relative entry would mean
/// the working directory).
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).filter(|d| d.is_absolute()).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The directory of the `onnxruntime` Python package, found without importing it. Python
/// puts the working directory first on `sys.path` for `-c`: it is removed, and the
/// interpreter runs in `/`, so a package in the working directory is never the one found.
fn python_package_dir(python: &Path) -> Option<PathBuf> {
    python_package_dir_from(python, Path::new("/"))
}

fn python_package_dir_from(python: &Path, run_dir: &Path) -> Option<PathBuf> {
    let script = "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; \
                  import importlib.util as u; s = u.find_spec('onnxruntime'); \
                  print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let out = Command::new(python).args(["-c", script]).current_dir(run_dir).output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// How one thing a library checks stands, in a [`Health`] report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Something a pipeline needs is missing or wrong.
    Fail,
    /// Worth knowing, not a problem.
    Note,
}

/// A plain library's answer to `anoflow doctor`: a title and one line per thing it checked.
/// The shape is shared by the libraries that report (this one and `anoflow-ort-session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub title: String,
    pub lines: Vec<(Status, String)>,
}

impl Health {
    /// Whether no line fails.
    pub fn healthy(&self) -> bool {
        self.lines.iter().all(|(status, _)| *status != Status::Fail)
    }
}

/// Which runtime library [`locate`] finds, and its version: this library's doctor entry.
pub fn health() -> Health {
    let line = match locate() {
        Ok(lib) => {
            let version = lib.version.map_or_else(|| "version unknown".to_string(), |v| format!("version {v}"));
            (Status::Ok, format!("{} ({version}, found through {})", lib.path.display(), lib.found_by))
        }
        Err(e) => (Status::Fail, e.to_string()),
    };
    Health { title: "ONNX Runtime's library (anoflow-ort-locate)".into(), lines: vec![line] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really a library").unwrap();
    }

    #[test]
    fn parses_versions_from_file_names() {
        let v = |s: &str| version_from_file_name(Path::new(s));
        assert_eq!(v("/x/libonnxruntime.so.1.32.0"), Some(Version { major: 1, minor: 32, patch: 0 }));
        assert_eq!(v("libonnxruntime.1.20.1.dylib"), Some(Version { major: 1, minor: 20, patch: 1 }));
        assert_eq!(v("libonnxruntime.so"), None);
        assert_eq!(v("libother.so.1.2.3"), None);
    }

    /// A checkout with the binary in target/release and its own runtime in .cache/onnxruntime.
    fn checkout(root: &Path, version: &str) -> PathBuf {
        touch(&root.join(format!(".cache/onnxruntime/libonnxruntime.so.{version}")));
        let exe_dir = root.join("target/release");
        std::fs::create_dir_all(&exe_dir).unwrap();
        exe_dir
    }

    fn probe(exe_dir: &Path) -> Probe {
        Probe { env_path: None, exe_dir: Some(exe_dir.to_path_buf()), python: None }
    }

    #[test]
    fn finds_the_newest_library_in_the_checkouts_cache() {
        let root = tempfile::tempdir().unwrap();
        let exe_dir = checkout(root.path(), "1.32.0");
        touch(&root.path().join(".cache/onnxruntime/libonnxruntime.so.1.22.0"));
        let lib = locate_with(&probe(&exe_dir)).unwrap();
        assert_eq!(lib.found_by, FoundBy::CheckoutCache);
        assert_eq!(lib.path, root.path().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
        assert_eq!(lib.version.unwrap().to_string(), "1.32.0");
        // Test binaries live one level deeper, in target/release/deps.
        let deps = exe_dir.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        assert_eq!(locate_with(&probe(&deps)).unwrap().found_by, FoundBy::CheckoutCache);
    }

    #[test]
    fn next_to_the_executable_and_its_lib_directory_come_first() {
        let root = tempfile::tempdir().unwrap();
        let exe_dir = checkout(root.path(), "1.32.0");
        touch(&root.path().join("target/lib/libonnxruntime.so.1.21.0"));
        let lib = locate_with(&probe(&exe_dir)).unwrap();
        assert_eq!((lib.found_by, lib.version.unwrap().to_string()), (FoundBy::ExeLibDir, "1.21.0".into()));
        touch(&exe_dir.join("libonnxruntime.so.1.20.0"));
        let lib = locate_with(&probe(&exe_dir)).unwrap();
        assert_eq!((lib.found_by, lib.version.unwrap().to_string()), (FoundBy::ExeDir, "1.20.0".into()));
    }

    /// A library planted in `.cache/onnxruntime` of the working directory or of any of its
    /// ancestors (a downloaded bundle, a shared /tmp) is never chosen: the search starts from
    /// the executable, and an executable outside a checkout has no cache at all.
    #[test]
    fn a_library_planted_above_the_working_directory_is_never_chosen() {
        let shared = tempfile::tempdir().unwrap();
        touch(&shared.path().join(".cache/onnxruntime/libonnxruntime.so.1.99.0"));
        let cwd = shared.path().join("bundle/work");
        std::fs::create_dir_all(&cwd).unwrap();
        touch(&cwd.join(".cache/onnxruntime/libonnxruntime.so.1.99.0"));

        // The installed binary has its own runtime: that one is chosen.
        let install = tempfile::tempdir().unwrap();
        let exe_dir = checkout(install.path(), "1.32.0");
        let lib = locate_with(&probe(&exe_dir)).unwrap();
        assert_eq!(lib.path, install.path().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));

        // An executable installed under the shared directory, outside any target/: nothing.
        let bin = shared.path().join("bundle/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let err = locate_with(&probe(&bin)).unwrap_err();
        assert!(matches!(err, LocateError::NotFound { .. }), "{err}");
    }

    #[test]
    fn env_var_wins_and_must_exist() {
        let root = tempfile::tempdir().unwrap();
        let exe_dir = checkout(root.path(), "1.32.0");
        let explicit = root.path().join("elsewhere/libonnxruntime.so.1.21.0");
        touch(&explicit);
        let mut probe = Probe { env_path: Some(explicit.clone().into()), ..probe(&exe_dir) };
        let lib = locate_with(&probe).unwrap();
        assert_eq!((lib.path, lib.found_by), (explicit, FoundBy::EnvVar));

        probe.env_path = Some(root.path().join("missing.so").into());
        let err = locate_with(&probe).unwrap_err();
        assert!(matches!(err, LocateError::EnvPathMissing { .. }), "{err}");
        assert!(err.to_string().contains("missing.so, which is not a file"), "{err}");
    }

    #[test]
    fn too_old_says_which_version_is_needed() {
        let root = tempfile::tempdir().unwrap();
        let exe_dir = checkout(root.path(), "1.16.3");
        let err = locate_with(&probe(&exe_dir)).unwrap_err().to_string();
        assert!(err.contains("ONNX Runtime 1.16.3"), "{err}");
        assert!(err.contains("version 1.20.0 or newer is needed"), "{err}");
        assert!(err.contains("tools/fetch_onnxruntime.sh"), "{err}");
    }

    #[test]
    fn nothing_found_lists_where_it_looked_and_how_to_fix() {
        let root = tempfile::tempdir().unwrap();
        let exe_dir = root.path().join("target/release");
        std::fs::create_dir_all(&exe_dir).unwrap();
        let probe = Probe { python: Some(PathBuf::from("/nonexistent/python3")), ..probe(&exe_dir) };
        let err = locate_with(&probe).unwrap_err().to_string();
        assert!(err.contains("was not found"), "{err}");
        assert!(err.contains(&format!("{}/.cache/onnxruntime", root.path().display())), "{err}");
        assert!(err.contains(&format!("{}", exe_dir.display())), "{err}");
        assert!(err.contains("no onnxruntime package"), "{err}");
        assert!(err.contains("pip install onnxruntime"), "{err}");
    }

    /// `python3 -c` puts the working directory first on sys.path: a fake `onnxruntime`
    /// package there must not be what the search finds.
    #[test]
    fn the_python_probe_ignores_a_package_in_the_working_directory() {
        let Some(python) = find_on_path("python3") else { return };
        let planted = tempfile::tempdir().unwrap();
        touch(&planted.path().join("onnxruntime/__init__.py"));
        touch(&planted.path().join("onnxruntime/capi/libonnxruntime.so.1.99.0"));
        let found = python_package_dir_from(&python, planted.path());
        assert!(found.as_deref().is_none_or(|d| !d.starts_with(planted.path())), "{found:?}");
    }
}
