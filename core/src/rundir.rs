//! A run owns its directory. `--out` must be new or empty; `--replace` clears it first, but
//! only when it holds an anoflow run (so a mistyped `--out ~` is refused, not emptied), and
//! never when it holds the working directory or a file the run needs.

use std::path::{Path, PathBuf};

use crate::report::RUN_FILE;

/// Why a directory cannot become a run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{}: exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot create the run directory {}: {source}", .dir.display())]
    Create { dir: PathBuf, source: std::io::Error },
    #[error(
        "{}: the directory is not empty{}; choose another --out, or pass --replace to clear it first",
        .dir.display(),
        if *.holds_run { " (it holds an earlier run)" } else { "" }
    )]
    NotEmpty { dir: PathBuf, holds_run: bool },
    #[error(
        "{}: --replace clears only anoflow run directories (with a {RUN_FILE}), and this one has none; \
         refusing to delete its contents",
        .0.display()
    )]
    NotARunDirectory(PathBuf),
    #[error("{}: refusing to clear it: it holds {}", .dir.display(), .inside.display())]
    HoldsNeeded { dir: PathBuf, inside: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io { path: path.to_path_buf(), source }
}

/// Whether `dir` holds an anoflow run: a `run.json`, a sweep's `sweep.md`, or only
/// sub-directories that are runs themselves (a sweep stopped before its table).
pub fn looks_like_run_dir(dir: &Path) -> bool {
    if dir.join(RUN_FILE).is_file() || dir.join("sweep.md").is_file() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut any = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_real_dir || !looks_like_run_dir(&path) {
            return false;
        }
        any = true;
    }
    any
}

/// Makes `dir` this run's directory: creates it, accepts it empty, or (with `replace`)
/// clears an earlier run out of it. `needed` are paths the run still reads (the pipeline
/// file, the cache, plugin directories): a directory holding one is never cleared.
pub fn claim(dir: &Path, replace: bool, needed: &[PathBuf]) -> Result<(), RunDirError> {
    if !dir.exists() {
        return std::fs::create_dir_all(dir).map_err(|source| RunDirError::Create { dir: dir.to_path_buf(), source });
    }
    if !dir.is_dir() {
        return Err(RunDirError::NotADirectory(dir.to_path_buf()));
    }
    let mut entries = std::fs::read_dir(dir).map_err(io(dir))?.peekable();
    if entries.peek().is_none() {
        return Ok(());
    }
    let holds_run = looks_like_run_dir(dir);
    if !replace {
        return Err(RunDirError::NotEmpty { dir: dir.to_path_buf(), holds_run });
    }
    if !holds_run {
        return Err(RunDirError::NotARunDirectory(dir.to_path_buf()));
    }
    let canonical = dir.canonicalize().map_err(io(dir))?;
    let cwd = std::env::current_dir().ok();
    for path in needed.iter().chain(cwd.iter()) {
        if path.canonicalize().is_ok_and(|p| p.starts_with(&canonical)) {
            return Err(RunDirError::HoldsNeeded { dir: dir.to_path_buf(), inside: path.clone() });
        }
    }
    // The directory itself stays (its permissions, or a link to it); what is in it goes.
    // `remove_dir_all` does not follow symbolic links, so nothing outside is touched.
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let path = entry.path();
        let is_real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_real_dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(io(&path))?;
    }
    Ok(())
}

/// `path` made absolute and free of `.`/`..` and links where it exists (the part that does
/// not exist yet is appended as given).
pub fn resolve(path: &Path) -> PathBuf {
    let joined =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut absolute = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                absolute.pop();
            }
            other => absolute.push(other),
        }
    }
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The default run directory `base`, or `base-2`, `base-3`... when a run started in the same
/// second already took it.
pub fn unused(base: &Path) -> PathBuf {
    if !base.exists() {
        return base.to_path_buf();
    }
    let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (2..)
        .map(|i| base.with_file_name(format!("{name}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| base.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_empty_directory_is_claimed() {
        let tmp = tempfile::tempdir().unwrap();
        claim(&tmp.path().join("a/b"), false, &[]).unwrap();
        assert!(tmp.path().join("a/b").is_dir());
        claim(&tmp.path().join("a/b"), false, &[]).unwrap();
    }

    #[test]
    fn an_earlier_run_is_refused_or_cleared_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir_all(run.join("report/samples")).unwrap();
        std::fs::write(run.join(RUN_FILE), b"{}").unwrap();
        std::fs::write(run.join("report/samples/old.png"), b"x").unwrap();
        let err = claim(&run, false, &[]).unwrap_err().to_string();
        assert!(err.contains("not empty (it holds an earlier run)") && err.contains("--replace"), "{err}");
        claim(&run, true, &[]).unwrap();
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    }

    #[test]
    fn replace_refuses_what_is_not_a_run_or_holds_what_the_run_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join("photos")).unwrap();
        std::fs::write(home.join("notes.txt"), b"keep me").unwrap();
        let err = claim(&home, true, &[]).unwrap_err().to_string();
        assert!(err.contains("refusing to delete"), "{err}");
        assert!(home.join("notes.txt").is_file());

        let run = tmp.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join(RUN_FILE), b"{}").unwrap();
        std::fs::write(run.join("pipeline.yaml"), b"name: x").unwrap();
        let err = claim(&run, true, &[run.join("pipeline.yaml")]).unwrap_err().to_string();
        assert!(err.contains("refusing to clear it: it holds"), "{err}");
        assert!(run.join("pipeline.yaml").is_file());
    }

    #[test]
    fn a_sweep_is_a_run_directory_and_a_link_inside_is_removed_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let sweep = tmp.path().join("sweep");
        std::fs::create_dir_all(sweep.join("seed=1")).unwrap();
        std::fs::write(sweep.join("seed=1").join(RUN_FILE), b"{}").unwrap();
        assert!(looks_like_run_dir(&sweep));
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        std::fs::write(sweep.join(RUN_FILE), b"{}").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, sweep.join("link")).unwrap();
        claim(&sweep, true, &[]).unwrap();
        assert!(outside.join("keep").is_file());
        assert_eq!(std::fs::read_dir(&sweep).unwrap().count(), 0);
    }

    #[test]
    fn paths_resolve_through_parts_that_do_not_exist_yet() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        assert_eq!(resolve(&tmp.path().join("a/../b/c")), base.join("b/c"));
        std::fs::create_dir_all(base.join("x")).unwrap();
        assert_eq!(resolve(&base.join("x/./y")), base.join("x/y"));
        assert_eq!(unused(&base.join("x")), base.join("x-2"));
    }
}
