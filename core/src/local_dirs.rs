//! Where runs and caches go when no flag names them. In a project, the project's own
//! directories; elsewhere the user's (XDG), never the installation's or whatever the current
//! directory happens to be:
//!
//! 1. `--out` / `--cache` (the commands' flags);
//! 2. `ANOFLOW_RUNS_DIR` / `ANOFLOW_CACHE_DIR`;
//! 3. a project: the nearest directory from the current one up that holds a `.anoflow.yaml`
//!    (its `runs:` and `cache:` keys, relative to it, default `runs` and `.cache/anoflow`) or
//!    is an anoflow checkout (`runs/`, `.cache/anoflow/`);
//! 4. otherwise `$XDG_DATA_HOME/anoflow/runs` and `$XDG_CACHE_HOME/anoflow` (by default
//!    `~/.local/share/anoflow/runs` and `~/.cache/anoflow`).
//!
//! The cache's size limit ([`CacheLimit`]) comes from `ANOFLOW_CACHE_MAX_SIZE`, else the
//! project file's `cache_max_size:`, else the default (20 GiB).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::cache_store::{CacheLimit, LIMIT_ENV};

pub const RUNS_ENV: &str = "ANOFLOW_RUNS_DIR";
pub const CACHE_ENV: &str = "ANOFLOW_CACHE_DIR";
/// The file that makes a directory a project, with its local settings.
pub const PROJECT_FILE: &str = ".anoflow.yaml";

/// The directories, and why each was chosen (for `anoflow doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDirs {
    pub runs: PathBuf,
    pub runs_from: String,
    pub cache: PathBuf,
    pub cache_from: String,
    /// The size the cache is pruned to after each run.
    pub cache_limit: CacheLimit,
    pub cache_limit_from: String,
}

impl LocalDirs {
    /// `<runs>/<pipeline>/<UTC time>`.
    pub fn run_dir(&self, pipeline: &str) -> PathBuf {
        self.runs.join(pipeline).join(crate::fsutil::utc_timestamp())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    runs: Option<PathBuf>,
    cache: Option<PathBuf>,
    cache_max_size: Option<String>,
}

/// Resolves the directories for a process in `cwd` with environment `env`.
pub fn resolve(cwd: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> Result<LocalDirs, String> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let project = project_of(cwd)?;
    let (runs, runs_from) = match (var(RUNS_ENV), &project) {
        (Some(dir), _) => (dir, RUNS_ENV.to_string()),
        (None, Some(p)) => (p.runs.clone(), p.describe()),
        (None, None) => xdg(&var, "XDG_DATA_HOME", ".local/share", "anoflow/runs"),
    };
    let (cache, cache_from) = match (var(CACHE_ENV), &project) {
        (Some(dir), _) => (dir, CACHE_ENV.to_string()),
        (None, Some(p)) => (p.cache.clone(), p.describe()),
        (None, None) => xdg(&var, "XDG_CACHE_HOME", ".cache", "anoflow"),
    };
    let (cache_limit, cache_limit_from) = match (env(LIMIT_ENV).filter(|v| !v.is_empty()), &project) {
        (Some(v), _) => {
            let v = v.to_string_lossy();
            (v.parse().map_err(|e| format!("{LIMIT_ENV}: {e}"))?, LIMIT_ENV.to_string())
        }
        (None, Some(Project { cache_max_size: Some(v), file: Some(file), .. })) => (
            v.parse().map_err(|e| format!("{}: `cache_max_size`: {e}", file.display()))?,
            format!("`cache_max_size` in {}", file.display()),
        ),
        _ => (CacheLimit::default(), "the default".to_string()),
    };
    Ok(LocalDirs { runs, runs_from, cache, cache_from, cache_limit, cache_limit_from })
}

/// The process's own directories.
pub fn current() -> Result<LocalDirs, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    resolve(&cwd, &|name| std::env::var_os(name))
}

struct Project {
    root: PathBuf,
    file: Option<PathBuf>,
    runs: PathBuf,
    cache: PathBuf,
    cache_max_size: Option<String>,
}

impl Project {
    fn describe(&self) -> String {
        match &self.file {
            Some(file) => format!("the project's {}", file.display()),
            None => format!("the anoflow checkout at {}", self.root.display()),
        }
    }
}

fn is_checkout(d: &Path) -> bool {
    d.join("sdk/Cargo.toml").is_file() && d.join("core/Cargo.toml").is_file()
}

fn project_of(cwd: &Path) -> Result<Option<Project>, String> {
    let Some(root) = cwd.ancestors().find(|d| d.join(PROJECT_FILE).is_file() || is_checkout(d)) else {
        return Ok(None);
    };
    let file = root.join(PROJECT_FILE);
    let settings = if file.is_file() {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let parsed: Option<ProjectFile> = serde_yaml::from_str(&text).map_err(|e| {
            format!(
                "{}: {e} (expected the keys `runs` and `cache`, directories, and `cache_max_size`, e.g. 20G)",
                file.display()
            )
        })?;
        parsed.unwrap_or_default()
    } else {
        ProjectFile::default()
    };
    Ok(Some(Project {
        runs: root.join(settings.runs.unwrap_or_else(|| PathBuf::from("runs"))),
        cache: root.join(settings.cache.unwrap_or_else(|| PathBuf::from(".cache/anoflow"))),
        cache_max_size: settings.cache_max_size,
        file: file.is_file().then_some(file),
        root: root.to_path_buf(),
    }))
}

/// `$<var>/<sub>`, else `$HOME/<home_default>/<sub>`; with neither, relative to the
/// current directory.
fn xdg(var: &dyn Fn(&str) -> Option<PathBuf>, name: &str, home_default: &str, sub: &str) -> (PathBuf, String) {
    match (var(name), var("HOME")) {
        (Some(base), _) => (base.join(sub), format!("${name}")),
        (None, Some(home)) => (home.join(home_default).join(sub), format!("not in a project: ${name} unset")),
        (None, None) => (PathBuf::from(sub), "no project, no $HOME: the current directory".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn outside_a_project_the_user_dirs_are_used_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = resolve(dir.path(), &env_of(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(dirs.runs, PathBuf::from("/home/u/.local/share/anoflow/runs"));
        assert_eq!(dirs.cache, PathBuf::from("/home/u/.cache/anoflow"));
        let dirs = resolve(dir.path(), &env_of(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/xc"), ("XDG_DATA_HOME", "/xd")]));
        let dirs = dirs.unwrap();
        assert_eq!((dirs.runs, dirs.cache), (PathBuf::from("/xd/anoflow/runs"), PathBuf::from("/xc/anoflow")));
        let dirs = resolve(dir.path(), &env_of(&[("HOME", "/h"), (RUNS_ENV, "/r"), (CACHE_ENV, "/c")])).unwrap();
        assert_eq!((dirs.runs, dirs.cache), (PathBuf::from("/r"), PathBuf::from("/c")));
        assert_eq!(dirs.cache_from, CACHE_ENV);
    }

    #[test]
    fn a_project_file_or_a_checkout_keeps_runs_in_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join(PROJECT_FILE), "cache: /fast/cache\n").unwrap();
        let dirs = resolve(&deep, &env_of(&[("HOME", "/h")])).unwrap();
        assert_eq!(dirs.runs, dir.path().join("runs"));
        assert_eq!(dirs.cache, PathBuf::from("/fast/cache"));
        assert!(dirs.runs_from.contains(PROJECT_FILE), "{}", dirs.runs_from);
        std::fs::write(dir.path().join(PROJECT_FILE), "run: x\n").unwrap();
        let err = resolve(&deep, &env_of(&[])).unwrap_err();
        assert!(err.contains(".anoflow.yaml") && err.contains("unknown field `run`"), "{err}");
        // An empty project file is a project with the default directories.
        std::fs::write(dir.path().join(PROJECT_FILE), "").unwrap();
        let dirs = resolve(&deep, &env_of(&[])).unwrap();
        assert_eq!(dirs.cache, dir.path().join(".cache/anoflow"));
        // This crate's checkout is a project.
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dirs = resolve(&checkout.join("docs"), &env_of(&[("HOME", "/h")])).unwrap();
        assert_eq!(dirs.runs, checkout.join("runs"));
        assert!(dirs.runs_from.starts_with("the anoflow checkout"), "{}", dirs.runs_from);
    }

    #[test]
    fn the_cache_limit_comes_from_the_environment_then_the_project_file() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = resolve(dir.path(), &env_of(&[("HOME", "/h")])).unwrap();
        assert_eq!((dirs.cache_limit, dirs.cache_limit_from.as_str()), (CacheLimit::default(), "the default"));
        std::fs::write(dir.path().join(PROJECT_FILE), "cache_max_size: 5G\n").unwrap();
        let dirs = resolve(dir.path(), &env_of(&[])).unwrap();
        assert_eq!(dirs.cache_limit, CacheLimit::Bytes(5 << 30));
        assert!(dirs.cache_limit_from.contains(PROJECT_FILE), "{}", dirs.cache_limit_from);
        let dirs = resolve(dir.path(), &env_of(&[(LIMIT_ENV, "unlimited")])).unwrap();
        assert_eq!((dirs.cache_limit, dirs.cache_limit_from.as_str()), (CacheLimit::Unlimited, LIMIT_ENV));
        let err = resolve(dir.path(), &env_of(&[(LIMIT_ENV, "lots")])).unwrap_err();
        assert!(err.starts_with(LIMIT_ENV) && err.contains("expected a size"), "{err}");
        std::fs::write(dir.path().join(PROJECT_FILE), "cache_max_size: 5Q\n").unwrap();
        let err = resolve(dir.path(), &env_of(&[])).unwrap_err();
        assert!(err.contains("cache_max_size") && err.contains("unknown unit"), "{err}");
    }
}
