//! Small file-system helpers: atomic writes and timestamps.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// Atomic, durable writes (temporary file, fsync, rename, fsync of the directory) and the
/// unique temporary-name suffix: one copy, in the imaging library, shared with the plugins.
pub use anoflow_imaging::atomic::{unique_suffix, write_file_atomic as write_atomic, write_file_replace};

/// The first directory, going up from each start in turn, for which `found(dir)` holds.
pub fn find_upward(starts: impl IntoIterator<Item = PathBuf>, found: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    starts.into_iter().find_map(|start| start.ancestors().find(|d| found(d)).map(Path::to_path_buf))
}

/// The directory of the running executable.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn utc_timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn find_upward_tries_each_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let deep = dir.join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(dir.join("a/marker"), b"").unwrap();
        let found = find_upward([PathBuf::from("/nonexistent-start"), deep], |d| d.join("marker").is_file());
        assert_eq!(found, Some(dir.join("a")));
    }

    #[test]
    fn atomic_write_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: write_atomic creates it.
        let dir = tmp.path().join("out");
        let p = dir.join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1);
    }
}
