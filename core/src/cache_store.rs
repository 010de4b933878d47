//! The cache directory as a bounded store. It holds fitted states (`fitted/*.state`) and node
//! outputs per sample (`outputs/<xx>/*.bin`); every entry can be recomputed, so evicting one
//! only costs time. A hit refreshes the entry's modification time ([`read_entry`]), so the oldest
//! modification time is the least recently used entry, whatever the file system's atime
//! settings. After a run the cache is pruned, least recently used first, to its size limit
//! ([`CacheLimit`]); entries the run itself used are never evicted.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, SystemTime},
};

/// The size the cache is pruned to after each run, unless set otherwise.
pub const DEFAULT_LIMIT_BYTES: u64 = 20 * GIB;
/// Environment variable that sets the limit (`20G`, `500M`, `unlimited`).
pub const LIMIT_ENV: &str = "ANOFLOW_CACHE_MAX_SIZE";
/// A writer's temporary file (see `fsutil::write_file_replace`) older than this was left by a
/// process that died mid-write.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// How large the cache may grow: a byte count, or no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLimit {
    Bytes(u64),
    Unlimited,
}

impl Default for CacheLimit {
    fn default() -> Self {
        CacheLimit::Bytes(DEFAULT_LIMIT_BYTES)
    }
}

impl FromStr for CacheLimit {
    type Err = String;

    /// `unlimited`, or a size: a number with an optional binary unit (`K`, `M`, `G`, `T`,
    /// optionally followed by `B` or `iB`), e.g. `20G`, `1.5T`, `800MiB`, `1000000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("none") {
            return Ok(CacheLimit::Unlimited);
        }
        parse_size(t).map(CacheLimit::Bytes)
    }
}

impl fmt::Display for CacheLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLimit::Bytes(b) => f.write_str(&human_bytes(*b)),
            CacheLimit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// Bytes from `20G`, `1.5T`, `800MiB`, `512k`, `1000000` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let expected = "expected a size such as 20G, 500M, 1.5T or a byte count, or `unlimited`";
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{s}`: {expected}"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.strip_suffix("IB").or_else(|| unit.strip_suffix('B')).unwrap_or(&unit);
    let scale = match unit {
        "" => 1,
        "K" => KIB,
        "M" => MIB,
        "G" => GIB,
        "T" => TIB,
        _ => return Err(format!("`{s}`: unknown unit; {expected}")),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}`: {expected}"));
    }
    Ok(bytes as u64)
}

/// `30d`, `12h`, `45m`, `90s` (a number and one unit).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let expected = "expected an age such as 30d, 12h, 45m or 90s";
    let t = s.trim();
    let (number, unit) = t.split_at(t.len().saturating_sub(1));
    let value: u64 = number.trim().parse().map_err(|_| format!("`{s}`: {expected}"))?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("`{s}`: {expected}")),
    };
    value.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("`{s}`: too large"))
}

/// `1.4 GiB`, `812.0 MiB`, `17 B`.
pub fn human_bytes(b: u64) -> String {
    let (scale, unit) = match b {
        b if b >= TIB => (TIB, "TiB"),
        b if b >= GIB => (GIB, "GiB"),
        b if b >= MIB => (MIB, "MiB"),
        b if b >= KIB => (KIB, "KiB"),
        _ => return format!("{b} B"),
    };
    format!("{:.1} {unit}", b as f64 / scale as f64)
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A fitted state (`fitted/`).
    Fitted,
    /// A node's outputs for one sample (`outputs/`).
    Outputs,
    /// A temporary file a writer left behind when it died.
    StaleTemp,
}

/// One file of the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    pub last_used: SystemTime,
    pub kind: EntryKind,
}

/// Reads a cache entry and refreshes its modification time through the same handle: the
/// entry was just used. A failure to refresh (a cache another user owns) only makes the
/// entry look older.
pub fn read_entry(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
    file.read_to_end(&mut bytes)?;
    let _ = file.set_modified(SystemTime::now());
    Ok(bytes)
}

/// Every entry under `dir` (none when `dir` does not exist). Temporary files of writers
/// still at work are left out; anything else in the directory is not the cache's and is
/// ignored.
pub fn scan(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let now = SystemTime::now();
    for (sub, kind) in [("fitted", EntryKind::Fitted), ("outputs", EntryKind::Outputs)] {
        let root = dir.join(sub);
        if !root.is_dir() {
            continue;
        }
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            let list = match std::fs::read_dir(&d) {
                Ok(list) => list,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
            };
            for item in list {
                let item = item?;
                let Ok(meta) = item.metadata() else { continue };
                let path = item.path();
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = item.file_name().to_string_lossy().into_owned();
                let last_used = meta.modified().unwrap_or(now);
                let kind = match name.strip_prefix('.').and_then(|n| n.split_once(".tmp-")) {
                    Some((entry, _)) if is_entry_name(kind, &d, entry) => {
                        if now.duration_since(last_used).unwrap_or_default() < STALE_TEMP_AGE {
                            continue;
                        }
                        EntryKind::StaleTemp
                    }
                    None if is_entry_name(kind, &d, &name) => kind,
                    _ => continue,
                };
                entries.push(Entry { path, bytes: meta.len(), last_used, kind });
            }
        }
    }
    Ok(entries)
}

/// Whether `name` in directory `dir` is a cache entry's file name: `fitted/<sha-256>.state`
/// or `outputs/<first two hex digits>/<sha-256>.bin`. Nothing else is ever removed, so a
/// cache directory given by mistake (`--cache ~`) loses nothing but cache entries.
fn is_entry_name(kind: EntryKind, dir: &Path, name: &str) -> bool {
    let is_key = |k: &str| k.len() == 64 && k.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match kind {
        EntryKind::Fitted => name.strip_suffix(".state").is_some_and(is_key),
        EntryKind::Outputs => name
            .strip_suffix(".bin")
            .is_some_and(|k| is_key(k) && dir.file_name().is_some_and(|d| d.to_str() == Some(&k[..2]))),
        EntryKind::StaleTemp => false,
    }
}

/// Count and bytes per kind, and the range of last uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub fitted: (u64, u64),
    pub outputs: (u64, u64),
    pub stale_temp: (u64, u64),
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
}

impl Usage {
    pub fn of(entries: &[Entry]) -> Usage {
        let mut u = Usage::default();
        for e in entries {
            let slot = match e.kind {
                EntryKind::Fitted => &mut u.fitted,
                EntryKind::Outputs => &mut u.outputs,
                EntryKind::StaleTemp => &mut u.stale_temp,
            };
            slot.0 += 1;
            slot.1 += e.bytes;
            u.oldest = Some(u.oldest.map_or(e.last_used, |o| o.min(e.last_used)));
            u.newest = Some(u.newest.map_or(e.last_used, |n| n.max(e.last_used)));
        }
        u
    }

    pub fn bytes(&self) -> u64 {
        self.fitted.1 + self.outputs.1 + self.stale_temp.1
    }

    pub fn count(&self) -> u64 {
        self.fitted.0 + self.outputs.0 + self.stale_temp.0
    }
}

/// What to evict.
#[derive(Debug, Clone, Default)]
pub struct PruneRule {
    /// Keep the cache at or under this size.
    pub limit: Option<u64>,
    /// Evict every entry last used longer ago than this.
    pub older_than: Option<Duration>,
    /// Never evict an entry used at or after this time (the run that just ended).
    pub keep_used_since: Option<SystemTime>,
}

/// The entries to remove, and what stays.
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    pub remove: Vec<Entry>,
    pub freed: u64,
    pub kept: u64,
    /// The entries that `keep_used_since` protects already exceed the limit.
    pub protected_over_limit: bool,
}

/// Least recently used first: stale temporary files and entries older than `older_than`
/// always go, then the oldest entries until the rest fits under `limit`; entries used since
/// `keep_used_since` always stay.
pub fn plan_prune(mut entries: Vec<Entry>, rule: &PruneRule, now: SystemTime) -> PrunePlan {
    entries.sort_by(|a, b| a.last_used.cmp(&b.last_used).then_with(|| a.path.cmp(&b.path)));
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut plan = PrunePlan { kept: total, ..PrunePlan::default() };
    let protected = |e: &Entry| rule.keep_used_since.is_some_and(|t| e.last_used >= t);
    for e in entries {
        let expired = rule.older_than.is_some_and(|age| now.duration_since(e.last_used).unwrap_or_default() > age);
        let over = rule.limit.is_some_and(|limit| plan.kept > limit);
        if e.kind == EntryKind::StaleTemp || ((expired || over) && !protected(&e)) {
            plan.kept -= e.bytes;
            plan.freed += e.bytes;
            plan.remove.push(e);
        }
    }
    plan.protected_over_limit = rule.limit.is_some_and(|limit| plan.kept > limit);
    plan
}

/// Removes the plan's files (one another process removed already counts as removed), then
/// the directories left empty under `outputs/`. Returns the bytes actually freed.
pub fn apply(dir: &Path, plan: &PrunePlan) -> std::io::Result<u64> {
    let mut freed = 0;
    for e in &plan.remove {
        match std::fs::remove_file(&e.path) {
            Ok(()) => freed += e.bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(std::io::Error::new(err.kind(), format!("{}: {err}", e.path.display()))),
        }
    }
    if let Ok(list) = std::fs::read_dir(dir.join("outputs")) {
        for item in list.flatten() {
            let name = item.file_name();
            let is_shard = name.len() == 2 && name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_shard {
                // Fails unless empty, which is what is wanted: a writer may be filling it.
                let _ = std::fs::remove_dir(item.path());
            }
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, bytes: u64, age_s: u64, now: SystemTime, kind: EntryKind) -> Entry {
        Entry { path: PathBuf::from(name), bytes, last_used: now - Duration::from_secs(age_s), kind }
    }

    fn names(plan: &PrunePlan) -> Vec<String> {
        plan.remove.iter().map(|e| e.path.display().to_string()).collect()
    }

    #[test]
    fn sizes_and_ages_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(parse_size("20G"), Ok(20 * GIB));
        assert_eq!(parse_size("1.5T"), Ok(3 * TIB / 2));
        assert_eq!(parse_size("800MiB"), Ok(800 * MIB));
        assert_eq!(parse_size("512kb"), Ok(512 * KIB));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!("unlimited".parse::<CacheLimit>(), Ok(CacheLimit::Unlimited));
        assert_eq!(" 2g ".parse::<CacheLimit>(), Ok(CacheLimit::Bytes(2 * GIB)));
        for bad in ["", "G", "20X", "-1G", "1e400", "twenty"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("expected a size"), "{bad}: {err}");
        }
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("45m"), Ok(Duration::from_secs(45 * 60)));
        assert!(parse_age("30").unwrap_err().contains("expected an age"));
        assert!(parse_age("d").is_err());
        assert_eq!(human_bytes(3 * GIB / 2), "1.5 GiB");
        assert_eq!(human_bytes(17), "17 B");
    }

    #[test]
    fn prune_evicts_least_recently_used_first_down_to_the_limit() {
        let now = SystemTime::now();
        let entries = vec![
            entry("new", 40, 10, now, EntryKind::Outputs),
            entry("old", 40, 1000, now, EntryKind::Outputs),
            entry("mid", 40, 500, now, EntryKind::Fitted),
        ];
        let plan = plan_prune(entries.clone(), &PruneRule { limit: Some(80), ..Default::default() }, now);
        assert_eq!(names(&plan), ["old"]);
        assert_eq!((plan.freed, plan.kept, plan.protected_over_limit), (40, 80, false));
        let plan = plan_prune(entries.clone(), &PruneRule { limit: Some(79), ..Default::default() }, now);
        assert_eq!(names(&plan), ["old", "mid"]);
        let plan = plan_prune(entries.clone(), &PruneRule { limit: Some(1000), ..Default::default() }, now);
        assert!(plan.remove.is_empty());
        let plan =
            plan_prune(entries, &PruneRule { older_than: Some(Duration::from_secs(100)), ..Default::default() }, now);
        assert_eq!(names(&plan), ["old", "mid"]);
    }

    #[test]
    fn prune_keeps_what_the_run_used_and_always_removes_stale_temporaries() {
        let now = SystemTime::now();
        let entries = vec![
            entry("run-a", 60, 5, now, EntryKind::Outputs),
            entry("run-b", 60, 1, now, EntryKind::Fitted),
            entry("before", 10, 100, now, EntryKind::Outputs),
            entry("temp", 7, 200_000, now, EntryKind::StaleTemp),
        ];
        let rule =
            PruneRule { limit: Some(100), keep_used_since: Some(now - Duration::from_secs(50)), ..Default::default() };
        let plan = plan_prune(entries, &rule, now);
        assert_eq!(names(&plan), ["temp", "before"]);
        assert_eq!(plan.kept, 120);
        assert!(plan.protected_over_limit, "the run's own entries exceed the limit: say so");
    }

    #[test]
    fn scan_apply_and_read_entry_on_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = SystemTime::now() - Duration::from_secs(3 * 86_400);
        let write = |rel: &str, bytes: usize, mtime: SystemTime| {
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, vec![7u8; bytes]).unwrap();
            std::fs::File::options().append(true).open(&p).unwrap().set_modified(mtime).unwrap();
            p
        };
        let key = |c: char| c.to_string().repeat(64);
        let (ka, kb, ks) = (key('a'), key('c'), key('e'));
        let a = write(&format!("outputs/aa/{ka}.bin"), 100, old);
        let b = write(&format!("outputs/cc/{kb}.bin"), 100, old + Duration::from_secs(60));
        let s = write(&format!("fitted/{ks}.state"), 50, old + Duration::from_secs(120));
        let dead = write(&format!("outputs/aa/.{ka}.bin.tmp-1-2"), 30, old); // a dead writer's leftover
        let busy = write(&format!("outputs/cc/.{kb}.bin.tmp-3-4"), 30, SystemTime::now()); // a writer at work
                                                                                           // Not the cache's: kept whatever their age (a cache directory given by mistake).
        let foreign = [
            write("outputs/README", 5, old),
            write("outputs/aa/holiday.bin", 5, old),
            write(&format!("outputs/ab/{ka}.bin"), 5, old),
            write("fitted/notes.state", 5, old),
            write("fitted/.notes.state.tmp-1-2", 5, old),
        ];
        let u = Usage::of(&scan(d).unwrap());
        assert_eq!((u.fitted, u.outputs, u.stale_temp), ((1, 50), (2, 200), (1, 30)));

        assert_eq!(read_entry(&a).unwrap().len(), 100); // a hit: `a` becomes the most recently used
        let entries = scan(d).unwrap();
        let plan = plan_prune(entries, &PruneRule { limit: Some(120), ..Default::default() }, SystemTime::now());
        assert_eq!(apply(d, &plan).unwrap(), 180);
        assert!(a.is_file() && !b.exists() && !s.exists());
        assert!(!dead.exists());
        assert!(busy.exists(), "a writer's file in use stays");
        assert!(foreign.iter().all(|f| f.exists()), "only cache entries are removed");
        let plan = plan_prune(scan(d).unwrap(), &PruneRule { limit: Some(0), ..Default::default() }, SystemTime::now());
        apply(d, &plan).unwrap();
        assert!(!a.exists() && foreign.iter().all(|f| f.exists()));
        assert!(scan(&d.join("missing")).unwrap().is_empty());
    }
}
