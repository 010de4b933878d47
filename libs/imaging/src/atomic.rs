//! Atomic file writes, the one copy the host and every plugin use.

use std::{io::Write, path::Path, time::SystemTime};

/// Writes `bytes` to `path` atomically and durably: a uniquely named temporary file in the
/// same directory (`.NAME.tmp-PID-SUFFIX`), written and fsynced, renamed over the target, then
/// the directory fsynced so the rename itself survives a crash. A reader sees the old file or
/// the new one, never a partial one. Creates the parent directory if needed.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = replace(path, bytes, true)?;
    sync_dir(&dir)
}

/// Writes `bytes` to `path` atomically for readers (they see the old file or the new one,
/// never a partial one) but not durably: nothing is fsynced, so a crash may leave the old
/// file, no file, or a damaged one. For cache entries, which carry their own checksum and
/// are recomputed when missing or damaged: two fsyncs per entry made a first run with the
/// cache on about a fifth slower than one without it.
pub fn write_file_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, false).map(|_| ())
}

/// Writes a temporary file beside `path` and renames it over `path`; returns the directory.
fn replace(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<std::path::PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique across threads, processes and hosts sharing the directory (NFS: pids repeat
    // between hosts), so concurrent writers of one entry never write into the same file.
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), unique_suffix()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(dir.to_path_buf())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened for syncing; the rename is as durable as the OS makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A suffix no other call, in this process or another (on any host), returns: a per-process
/// random number and a counter.
pub fn unique_suffix() -> String {
    use std::{
        hash::{BuildHasher, RandomState},
        sync::{atomic::AtomicU64, OnceLock},
    };
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| RandomState::new().hash_one(SystemTime::now()));
    format!("{process:016x}-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_creates_the_directory_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let p = dir.join("a.json");
        write_file_atomic(&p, b"one").unwrap();
        write_file_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // A target that is a directory: the error comes back and the temporary file is gone.
        assert!(write_file_atomic(&dir, b"x").is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_replacing_write_leaves_only_the_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("cache/entry.state");
        write_file_replace(&p, b"one").unwrap();
        write_file_replace(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        assert!(write_file_replace(tmp.path(), b"x").is_err(), "a directory is not replaced");
    }

    #[test]
    fn suffixes_are_unique() {
        assert_ne!(unique_suffix(), unique_suffix());
    }
}
