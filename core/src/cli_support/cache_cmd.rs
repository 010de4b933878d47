//! `anoflow cache info|prune`, and the pruning after each run that keeps the cache under its
//! limit (see [`crate::cache_store`]).

use std::{fmt::Write, path::Path, time::SystemTime};

use anyhow::{Context, Result};

use crate::cache_store::{self, human_bytes, CacheLimit, PruneRule, Usage};

/// What the cache holds, and its limit.
pub fn info(dir: &Path, limit: CacheLimit, limit_from: &str) -> Result<String> {
    let u = Usage::of(&cache_store::scan(dir).with_context(|| format!("cannot read the cache {}", dir.display()))?);
    let mut s = String::new();
    let _ = writeln!(s, "cache {}", dir.display());
    let _ = writeln!(s, "  fitted states   {:>8} files  {:>10}", u.fitted.0, human_bytes(u.fitted.1));
    let _ = writeln!(s, "  node outputs    {:>8} files  {:>10}", u.outputs.0, human_bytes(u.outputs.1));
    if u.stale_temp.0 > 0 {
        let _ = writeln!(s, "  dead writes     {:>8} files  {:>10}", u.stale_temp.0, human_bytes(u.stale_temp.1));
    }
    let _ = writeln!(s, "  total           {:>8} files  {:>10}", u.count(), human_bytes(u.bytes()));
    if let (Some(oldest), Some(newest)) = (u.oldest, u.newest) {
        let _ = writeln!(s, "  last used       {} to {} ago", ago(oldest), ago(newest));
    }
    let _ = writeln!(s, "  limit           {limit} ({limit_from}); pruned after each run, least recently used first");
    Ok(s)
}

/// Prunes by `rule` (or only says what would go, with `dry_run`).
pub fn prune(dir: &Path, rule: &PruneRule, dry_run: bool) -> Result<String> {
    let entries = cache_store::scan(dir).with_context(|| format!("cannot read the cache {}", dir.display()))?;
    let count = entries.len();
    let plan = cache_store::plan_prune(entries, rule, SystemTime::now());
    let verb = if dry_run { "would remove" } else { "removed" };
    let freed = if dry_run {
        plan.freed
    } else {
        cache_store::apply(dir, &plan).with_context(|| format!("pruning the cache {}", dir.display()))?
    };
    Ok(format!(
        "cache {}: {verb} {} of {count} entries ({}); {} kept\n",
        dir.display(),
        plan.remove.len(),
        human_bytes(freed),
        human_bytes(plan.kept)
    ))
}

/// After a run that started at `started`: evicts the least recently used entries until the
/// cache fits `limit`, keeping every entry the run used. Says what it did when it did
/// something; a failure to prune is a warning, never the run's failure.
pub fn prune_after_run(dir: &Path, limit: CacheLimit, started: SystemTime) {
    let CacheLimit::Bytes(limit) = limit else { return };
    let entries = match cache_store::scan(dir) {
        Ok(entries) => entries,
        Err(e) => return eprintln!("warning: cannot read the cache {} to prune it: {e}", dir.display()),
    };
    // File times come from the kernel's coarse clock, which can lag the process's clock by a
    // tick: an entry written just after the start must still count as the run's.
    let since = started.checked_sub(std::time::Duration::from_secs(2)).unwrap_or(started);
    let rule = PruneRule { limit: Some(limit), older_than: None, keep_used_since: Some(since) };
    let plan = cache_store::plan_prune(entries, &rule, SystemTime::now());
    if !plan.remove.is_empty() {
        match cache_store::apply(dir, &plan) {
            Ok(freed) => eprintln!(
                "cache: removed {} least recently used entries ({}) to stay under {}",
                plan.remove.len(),
                human_bytes(freed),
                human_bytes(limit)
            ),
            Err(e) => eprintln!("warning: pruning the cache {}: {e}", dir.display()),
        }
    }
    if plan.protected_over_limit {
        eprintln!(
            "warning: this run alone keeps {} in the cache {}, over its limit of {}; raise it \
             (ANOFLOW_CACHE_MAX_SIZE, `cache_max_size` in .anoflow.yaml) or run with --no-cache",
            human_bytes(plan.kept),
            dir.display(),
            human_bytes(limit)
        );
    }
}

fn ago(t: SystemTime) -> String {
    let s = SystemTime::now().duration_since(t).unwrap_or_default().as_secs();
    match s {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}
