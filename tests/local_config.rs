//! Where runs and caches go without `--out` and `--cache`: the project's directories inside
//! a project (a `.anoflow.yaml` or an anoflow checkout), the user's (XDG) elsewhere, never
//! the current directory; `anoflow doctor` says where.

use std::{path::Path, process::Command};

use anoflow_e2e::{anoflow_bin, write_pipeline, Run};

const SMALL: &str = "name: small
nodes:
  data: { plugin: synthetic, with: { categories: [tiles], train: 6, test_good: 1, test_defective: 1, size: 64 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  thr:  { plugin: threshold-mean-std, fit: validation, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask] } }
";

/// `anoflow ARGS` in `cwd` with `HOME` set to `home` and no other say on the directories.
fn anoflow_at(cwd: &Path, home: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(cwd).args(args).env("HOME", home);
    for var in ["XDG_DATA_HOME", "XDG_CACHE_HOME", "ANOFLOW_RUNS_DIR", "ANOFLOW_CACHE_DIR", "ANOFLOW_PLUGIN_PATH"] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run anoflow").into()
}

/// The run directories below `runs/<pipeline>/`.
fn runs_of(runs: &Path, pipeline: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(runs.join(pipeline)).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

#[test]
fn outside_a_project_runs_and_caches_go_to_the_user_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let (work, home) = (dir.path().join("work"), dir.path().join("home"));
    std::fs::create_dir_all(&work).unwrap();
    let p = write_pipeline(&work, "p.yaml", SMALL);
    let r = anoflow_at(&work, &home, &["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let runs = runs_of(&home.join(".local/share/anoflow/runs"), "small");
    assert_eq!(runs.len(), 1, "{}", r.all());
    assert!(runs[0].join("run.json").is_file());
    assert!(home.join(".cache/anoflow/fitted").is_dir(), "the fitted state is cached in the user's cache");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["p.yaml"], "nothing is written into the current directory");
    let r = anoflow_at(&work, &home, &["doctor"]);
    let expected = format!("  runs   {}  (not in a project", home.join(".local/share/anoflow/runs").display());
    assert!(r.stdout.contains(&expected), "{}", r.stdout);
}

#[test]
fn inside_a_project_runs_and_caches_go_to_its_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let (project, home) = (dir.path().join("project"), dir.path().join("home"));
    let sub = project.join("pipelines");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(project.join(".anoflow.yaml"), "runs: results\n").unwrap();
    let p = write_pipeline(&sub, "p.yaml", SMALL);
    let r = anoflow_at(&sub, &home, &["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(runs_of(&project.join("results"), "small").len(), 1, "{}", r.all());
    assert!(project.join(".cache/anoflow/fitted").is_dir());
    assert!(!home.exists() && !sub.join("runs").exists());
    let r = anoflow_at(&sub, &home, &["doctor"]);
    let expected = format!(
        "  cache  {}  (the project's {}",
        project.join(".cache/anoflow").display(),
        project.join(".anoflow.yaml").display()
    );
    assert!(r.stdout.contains(&expected), "{}", r.stdout);
    // The environment overrides the project; the flag overrides both.
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(&sub)
        .args(["run", p.to_str().unwrap(), "-q", "--no-cache"])
        .env("ANOFLOW_RUNS_DIR", dir.path().join("elsewhere"));
    let r: Run = cmd.env_remove("ANOFLOW_PLUGIN_PATH").output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(runs_of(&dir.path().join("elsewhere"), "small").len(), 1);
    // A project file with an unknown key is an error naming it.
    std::fs::write(project.join(".anoflow.yaml"), "run: results\n").unwrap();
    let r = anoflow_at(&sub, &home, &["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(".anoflow.yaml") && r.stderr.contains("unknown field `run`"), "{}", r.stderr);
}

/// Files below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_cache_is_pruned_to_its_limit_after_a_run_keeping_what_the_run_used() {
    let dir = tempfile::tempdir().unwrap();
    let (project, home) = (dir.path().join("project"), dir.path().join("home"));
    std::fs::create_dir_all(&project).unwrap();
    let cache = project.join(".cache/anoflow");
    let cached = SMALL.replace("inputs: { image: data.image } }", "inputs: { image: data.image }, cache: true }");
    let a = write_pipeline(&project, "a.yaml", &cached);
    let b = write_pipeline(&project, "b.yaml", &cached.replace("categories: [tiles]", "categories: [carpet]"));

    // Unlimited: run a's entries (a fitted state and one output per sample) stay.
    std::fs::write(project.join(".anoflow.yaml"), "cache_max_size: unlimited\n").unwrap();
    let r = anoflow_at(&project, &home, &["run", a.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let after_a = files_below(&cache);
    assert!(after_a.iter().any(|f| f.starts_with(cache.join("fitted"))), "{after_a:?}");
    assert!(after_a.iter().any(|f| f.starts_with(cache.join("outputs"))), "{after_a:?}");
    // Run a was an hour ago.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in &after_a {
        std::fs::File::options().append(true).open(f).unwrap().set_modified(hour_ago).unwrap();
    }

    // A limit below what run b needs: every entry of a goes, b's own stay, and it says so.
    std::fs::write(project.join(".anoflow.yaml"), "cache_max_size: 1K\n").unwrap();
    let r = anoflow_at(&project, &home, &["run", b.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let after_b = files_below(&cache);
    assert!(after_a.iter().all(|f| !f.exists()), "run a's entries are evicted: {after_b:?}");
    assert!(after_b.len() >= 2, "run b's entries stay: {after_b:?}");
    assert!(r.stderr.contains("least recently used entries"), "{}", r.stderr);
    assert!(
        r.stderr.contains("this run alone keeps") && r.stderr.contains("over its limit of 1.0 KiB"),
        "{}",
        r.stderr
    );

    // A hit refreshes an entry: b again loads everything from the cache, and nothing of it goes.
    let r = anoflow_at(&project, &home, &["run", b.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(files_below(&cache), after_b);

    let r = anoflow_at(&project, &home, &["cache", "info"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(&format!("cache {}", cache.display())), "{}", r.stdout);
    assert!(r.stdout.contains("limit           1.0 KiB (`cache_max_size` in"), "{}", r.stdout);
    let r = anoflow_at(&project, &home, &["cache", "prune", "--all", "--dry-run"]);
    assert!(r.stdout.contains(&format!("would remove {} of {} entries", after_b.len(), after_b.len())), "{}", r.stdout);
    assert_eq!(files_below(&cache), after_b, "a dry run removes nothing");
    let r = anoflow_at(&project, &home, &["cache", "prune", "--all"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(files_below(&cache).is_empty(), "{}", r.stdout);
    let r = anoflow_at(&project, &home, &["cache", "prune", "--max-size", "lots"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("expected a size"), "{}", r.stderr);
}
