//! Finds ONNX Runtime's shared library for the `load-dynamic` build of `ort`, in this order:
//!
//! 1. the file named by `ORT_DYLIB_PATH`;
//! 2. `<project>/.cache/onnxruntime/libonnxruntime.so*`, where `<project>` is the current
//!    directory, the executable's directory, or any of their ancestors (what
//!    `tools/fetch_onnxruntime.sh` prepares);
//! 3. the library inside an installed `onnxruntime` Python package (`onnxruntime/capi/`).
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

/// Where a library was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBy {
    EnvVar,
    ProjectCache,
    PythonPackage,
}

impl fmt::Display for FoundBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FoundBy::EnvVar => "ORT_DYLIB_PATH",
            FoundBy::ProjectCache => "the project's .cache/onnxruntime",
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
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub env_path: Option<OsString>,
    /// Directories whose ancestors are searched for `.cache/onnxruntime/`.
    pub start_dirs: Vec<PathBuf>,
    /// The Python interpreter to ask for an installed onnxruntime package (None: do not ask).
    pub python: Option<PathBuf>,
}

impl Probe {
    pub fn from_environment() -> Self {
        let mut start_dirs = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            start_dirs.push(cwd);
        }
        if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
            start_dirs.push(dir);
        }
        Self { env_path: std::env::var_os(ENV_VAR), start_dirs, python: Some(PathBuf::from("python3")) }
    }
}

/// Finds the runtime library as this process sees it.
pub fn locate() -> Result<RuntimeLibrary, LocateError> {
    locate_with(&Probe::from_environment())
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
    for start in &probe.start_dirs {
        for dir in start.ancestors() {
            let cache = dir.join(".cache").join("onnxruntime");
            if let Some(lib) = newest_library_in(&cache) {
                return checked(lib, FoundBy::ProjectCache);
            }
        }
        searched.push(format!("{}/.cache/onnxruntime and its ancestors'", start.display()));
    }
    if let Some(python) = &probe.python {
        match python_package_dir(python) {
            Some(dir) => {
                let capi = dir.join("capi");
                if let Some(lib) = newest_library_in(&capi) {
                    return checked(lib, FoundBy::PythonPackage);
                }
                searched.push(format!("{}", capi.display()));
            }
            None => searched.push(format!("`{}`: no onnxruntime package", python.display())),
        }
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

/// The directory of the `onnxruntime` Python package, found without importing it.
fn python_package_dir(python: &Path) -> Option<PathBuf> {
    let script = "import importlib.util as u; s = u.find_spec('onnxruntime'); \
                  print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let out = Command::new(python).args(["-c", script]).output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
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

    #[test]
    fn finds_the_newest_library_in_an_ancestors_cache() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join(".cache/onnxruntime/libonnxruntime.so.1.22.0"));
        touch(&root.path().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
        let deep = root.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        let probe = Probe { env_path: None, start_dirs: vec![deep], python: None };
        let lib = locate_with(&probe).unwrap();
        assert_eq!(lib.found_by, FoundBy::ProjectCache);
        assert_eq!(lib.path, root.path().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
        assert_eq!(lib.version.unwrap().to_string(), "1.32.0");
    }

    #[test]
    fn env_var_wins_and_must_exist() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
        let explicit = root.path().join("elsewhere/libonnxruntime.so.1.21.0");
        touch(&explicit);
        let mut probe =
            Probe { env_path: Some(explicit.clone().into()), start_dirs: vec![root.path().into()], python: None };
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
        touch(&root.path().join(".cache/onnxruntime/libonnxruntime.so.1.16.3"));
        let probe = Probe { env_path: None, start_dirs: vec![root.path().into()], python: None };
        let err = locate_with(&probe).unwrap_err().to_string();
        assert!(err.contains("ONNX Runtime 1.16.3"), "{err}");
        assert!(err.contains("version 1.20.0 or newer is needed"), "{err}");
        assert!(err.contains("tools/fetch_onnxruntime.sh"), "{err}");
    }

    #[test]
    fn nothing_found_lists_where_it_looked_and_how_to_fix() {
        let root = tempfile::tempdir().unwrap();
        let probe = Probe {
            env_path: None,
            start_dirs: vec![root.path().into()],
            python: Some(PathBuf::from("/nonexistent/python3")),
        };
        let err = locate_with(&probe).unwrap_err().to_string();
        assert!(err.contains("was not found"), "{err}");
        assert!(err.contains(&format!("{}/.cache/onnxruntime", root.path().display())), "{err}");
        assert!(err.contains("no onnxruntime package"), "{err}");
        assert!(err.contains("pip install onnxruntime"), "{err}");
    }
}
