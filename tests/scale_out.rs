//! Scale-out: a run split into array tasks by category (fits included) and by sample, the
//! task index taken from Slurm's or Kubernetes' env, a killed task re-run by index, the
//! checks on the shared run directory and at merge (each refusal changes nothing), a sweep
//! split into variant x category units, and many processes on one cache directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anoflow_e2e::{anoflow_bin, files_below, small_quickstart_args, workspace_root, write_pipeline, Run};
use serde_json::Value;

/// Variables a cluster sets; removed from every command unless a test sets them.
const CLUSTER_VARS: [&str; 4] =
    ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "ANOFLOW_SHARD_COUNT"];

fn command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(cwd).args(args).env_remove("ANOFLOW_PLUGIN_PATH");
    for var in CLUSTER_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn anoflow(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    command(cwd, args, env).output().expect("run anoflow").into()
}

fn run(dir: &Path, pipeline: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec!["run", pipeline.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    anoflow(dir, &args, env)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every file below `dir` with its bytes, paths relative to `dir`.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Every file of the given sinks' directories is the same bytes in both runs.
fn assert_same_sink_files(whole: &Path, merged: &Path, sinks: &[&str]) -> usize {
    let mut compared = 0;
    for sink in sinks {
        let (a, b) = (snapshot(&whole.join(sink)), snapshot(&merged.join(sink)));
        assert!(!a.is_empty(), "{sink} wrote nothing");
        let names = |s: &[(PathBuf, Vec<u8>)]| s.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b), "{sink}: the same files");
        for ((path, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y, "{sink}/{} differs between {} and {}", path.display(), whole.display(), merged.display());
            compared += 1;
        }
    }
    compared
}

fn merge(dir: &Path, inputs: &[&Path], out: Option<&Path>) -> Run {
    let mut args = vec!["merge"];
    if let Some(out) = out {
        args.extend(["--out", out.to_str().unwrap()]);
    }
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    anoflow(dir, &args, &[])
}

fn count_files(dir: &Path) -> usize {
    files_below(dir).len()
}

/// The shipped quickstart (small settings, two categories) run whole and as two tasks split
/// by category: each task fits only its category's models; task 1 is killed mid-way, merge
/// names it, and after it is re-run by index (from Slurm's env, with --replace) the merged
/// results.json and every file of every sink are the bytes of the single run.
#[test]
fn the_quickstart_split_by_category_merges_into_one_run_even_after_a_killed_task() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = workspace_root().join("pipelines/quickstart.yaml");
    let with_cache = |cache: &Path| small_quickstart_args(&["pill", "tiles"], cache);
    let whole = dir.join("whole");
    let args = with_cache(&dir.join("cache-whole"));
    let r = run(dir, &p, &whole, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(r.code, 0, "{}", r.all());

    let root = dir.join("sharded");
    let task_args = |i: usize| -> Vec<String> {
        let mut a = with_cache(&dir.join(format!("cache-{i}")));
        a.extend(["--shard".into(), format!("{i}/2")]);
        a
    };
    let a0 = task_args(0);
    let r = run(dir, &p, &root, &a0.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report = read_json(&root.join("shard-0/run.json"));
    assert_eq!(report["run"]["shard"], "0/2");
    assert_eq!(report["run"]["shard_categories"], serde_json::json!(["pill"]));
    assert_eq!(report["run"]["test_samples"], 9, "one category's 3 + 6 test samples");

    // Task 1, killed while it works.
    let a1 = task_args(1);
    let mut args = vec!["run", p.to_str().unwrap(), "--out", root.to_str().unwrap(), "-q"];
    args.extend(a1.iter().map(String::as_str));
    let mut child = command(dir, &args, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !root.join("shard-1/plugins.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "task 1 never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(read_json(&root.join("shard-1/run.json"))["status"], "running", "killed before it finished");

    let r = merge(dir, &[&root], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("1 of 2 tasks did not complete: task 1") && r.stderr.contains("--array=1"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("says `running`"), "{}", r.stderr);
    assert!(!root.join("merged").exists(), "a refused merge writes nothing");

    // Re-run by index, as a resubmitted Slurm array task: the index comes from the env.
    let mut again = with_cache(&dir.join("cache-1"));
    again.push("--replace".into());
    let env = [("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "2")];
    let r = run(dir, &p, &root, &again.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(read_json(&root.join("shard-1/run.json"))["run"]["shard_categories"], serde_json::json!(["tiles"]));

    // Each task fitted (and cached) only its own category's states: together, the single run's.
    // Whole entries only: a task killed while writing one leaves its temporary file (pruned
    // a day later), never a partial entry under an entry's name.
    let fitted = |cache: &str| -> Vec<String> {
        files_below(&dir.join(cache).join("fitted"))
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|name| !(name.starts_with('.') && name.contains(".tmp-")))
            .collect()
    };
    let (f0, f1, whole_fits) = (fitted("cache-0"), fitted("cache-1"), fitted("cache-whole"));
    assert!(!f0.is_empty() && !f1.is_empty());
    // As many fits as the single run (the re-run loaded what the killed task had cached). The
    // names differ: a node downstream of fits per category hashes the upstream node's keys of
    // every category its run fitted.
    assert_eq!(
        f0.len() + f1.len(),
        whole_fits.len(),
        "no fit is done twice: task 0 {f0:?}, task 1 {f1:?}, whole {whole_fits:?}"
    );

    let r = merge(dir, &[&root], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let merged = root.join("merged");
    assert_eq!(read_json(&merged.join("run.json"))["status"], "completed");
    let compared = assert_same_sink_files(&whole, &merged, &["eval", "report"]);
    assert!(compared > 20, "{compared} files compared");
    // Each task calibrated its own category; the merge lists both, as the whole run does.
    let calibration = |run: &Path| std::fs::read_to_string(run.join("calibration.md")).unwrap();
    assert!(calibration(&merged).contains("| pill |") && calibration(&merged).contains("| tiles |"));
    assert_eq!(calibration(&whole), calibration(&merged));
    let groups = |run: &Path| read_json(&run.join("run.json"))["run"]["calibration"]["groups"].clone();
    assert_eq!(groups(&whole), groups(&merged));
}

const LIGHT: &str = "name: light
vars: { seed: 5 }
nodes:
  data: { plugin: synthetic, with: { seed: \"{{seed}}\", categories: [woven, washer], train: 8, test_good: 3, test_defective: 5 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  thr: { plugin: threshold-mean-std, fit: train, with: { k: 3 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }
  report: { plugin: report, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }
";

#[test]
fn tasks_take_their_index_from_slurm_or_kubernetes_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = write_pipeline(dir, "light.yaml", LIGHT);
    let whole = dir.join("whole");
    assert_eq!(run(dir, &p, &whole, &["--no-cache"], &[]).code, 0);

    let root = dir.join("run");
    let k8s = [("JOB_COMPLETION_INDEX", "0"), ("ANOFLOW_SHARD_COUNT", "2")];
    let r = run(dir, &p, &root, &["--no-cache"], &k8s);
    assert_eq!(r.code, 0, "{}", r.all());
    let slurm = [("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "2")];
    let r = run(dir, &p, &root, &["--no-cache"], &slurm);
    assert_eq!(r.code, 0, "{}", r.all());
    for (i, category) in [(0, "washer"), (1, "woven")] {
        let report = read_json(&root.join(format!("shard-{i}/run.json")));
        assert_eq!(report["run"]["shard"], format!("{i}/2"));
        assert_eq!(report["run"]["shard_categories"], serde_json::json!([category]));
    }
    let plan = read_json(&root.join("shards.json"));
    assert_eq!((plan["count"].as_u64(), plan["by"].as_str()), (Some(2), Some("category")), "{plan}");

    let merged = dir.join("merged");
    let r = merge(dir, &[&root], Some(&merged));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_same_sink_files(&whole, &merged, &["eval", "report"]);

    // An explicit --shard wins over the env.
    let solo = dir.join("solo");
    let env = [("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_COUNT", "9")];
    let r = run(dir, &p, &solo, &["--no-cache", "--shard", "0/1"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(read_json(&solo.join("shard-0/run.json"))["run"]["shard"], "0/1");
    assert!(!solo.join("shard-7").exists());
}

#[test]
fn bad_task_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = write_pipeline(dir, "light.yaml", LIGHT);
    let root = dir.join("run");

    // Index out of range, from the flag or the env; more tasks than units; no --out.
    let refused = |r: &Run, message: &str| {
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains(message), "expected `{message}`:\n{}", r.stderr);
    };
    refused(&run(dir, &p, &root, &["--shard", "2/2"], &[]), "task index 2 is out of range for 2 tasks (0 to 1)");
    let env = [("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "2")];
    refused(&run(dir, &p, &root, &[], &env), "SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_COUNT=2: task index 2 is out");
    refused(&run(dir, &p, &root, &[], &[("JOB_COMPLETION_INDEX", "0")]), "ANOFLOW_SHARD_COUNT is not");
    refused(&run(dir, &p, &root, &["--shard", "2/3"], &[]), "task 2 of 3 has no work: `light` has 2 units");
    refused(&anoflow(dir, &["run", p.to_str().unwrap(), "--shard", "0/2"], &[]), "needs --out");
    assert!(!root.exists(), "nothing is written for a refused task");

    // A count, or overrides, that disagree with the partial run in the shared directory.
    assert_eq!(run(dir, &p, &root, &["--shard", "0/2", "--no-cache"], &[]).code, 0);
    let before = snapshot(&root);
    refused(&run(dir, &p, &root, &["--shard", "1/3", "--no-cache"], &[]), "split into 2 tasks, and this task says 3");
    refused(
        &run(dir, &p, &root, &["--shard", "1/2", "--no-cache", "--set", "vars.seed=6"], &[]),
        "another pipeline or other overrides",
    );
    refused(&run(dir, &p, &root, &["--shard", "1/2", "--shard-by", "sample"], &[]), "split by category");
    // A task already done is not overwritten without --replace.
    refused(&run(dir, &p, &root, &["--shard", "0/2", "--no-cache"], &[]), "--replace");
    assert!(before == snapshot(&root), "the shared directory is left as it was");

    // A missing task, named so that it can be resubmitted; nothing is written.
    let r = merge(dir, &[&root], None);
    refused(&r, "1 of 2 tasks did not complete: task 1");
    assert!(r.stderr.contains("task 1: never started") && r.stderr.contains("--array=1 "), "{}", r.stderr);
    assert!(before == snapshot(&root));

    // A shared directory that cannot be written.
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    refused(&run(dir, &p, &blocker.join("run"), &["--shard", "0/2"], &[]), "writable by every task");
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    let mut perms = std::fs::metadata(&locked).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&locked, perms).unwrap();
    // (root may write anywhere: the check is skipped when the test runs as root.)
    if std::fs::write(locked.join("probe"), b"").is_err() {
        refused(&run(dir, &p, &locked.join("run"), &["--shard", "0/2"], &[]), "writable by every task");
        assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0);
    }
    // A directory of other files is not taken over.
    let notes = dir.join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), b"mine").unwrap();
    refused(&run(dir, &p, &notes, &["--shard", "0/2"], &[]), "not the directory of a sharded run");
    assert_eq!(std::fs::read_dir(&notes).unwrap().count(), 1);
}

/// A sweep of 2 values over 2 categories is 4 units: as a 4-task array each task runs one
/// category of one variant, and the merge equals the single sweep run, sweep.md included.
#[test]
fn a_sweep_splits_into_variant_by_category_units() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = write_pipeline(dir, "sweep.yaml", &format!("{LIGHT}sweep:\n  thr.k: [2, 4]\n"));
    let whole = dir.join("whole");
    let r = run(dir, &p, &whole, &["--no-cache"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let root = dir.join("run");
    for i in 0..4 {
        let r = run(dir, &p, &root, &["--no-cache", "--shard", &format!("{i}/4")], &[]);
        assert_eq!(r.code, 0, "{}", r.all());
        let variants: Vec<_> = std::fs::read_dir(root.join(format!("shard-{i}"))).unwrap().flatten().collect();
        assert_eq!(variants.len(), 1, "task {i} runs one unit");
    }
    assert!(root.join("shard-1/k=2/run.json").is_file() && root.join("shard-2/k=4/run.json").is_file());
    let r = merge(dir, &[&root], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let merged = root.join("merged");
    for variant in ["k=2", "k=4"] {
        assert_same_sink_files(&whole.join(variant), &merged.join(variant), &["eval", "report"]);
    }
    // The table names each variant's report by its path: the one difference.
    let table = std::fs::read_to_string(whole.join("sweep.md")).unwrap();
    let expected = table.replace(whole.to_str().unwrap(), merged.to_str().unwrap());
    assert!(table.contains("| k=4 |"), "{table}");
    assert_eq!(std::fs::read_to_string(merged.join("sweep.md")).unwrap(), expected);
}

/// Four processes run the same pipeline on one cache directory at once; one is killed while
/// it writes. No reader ever sees a partial entry (a corrupt entry would be reported and
/// recomputed), every surviving run gives the same results, and a last run takes every
/// cached output from the cache.
#[test]
fn many_processes_share_one_cache_and_none_sees_a_partial_entry() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let text = LIGHT
        .replace("train: 8, test_good: 3, test_defective: 5", "train: 8, test_good: 60, test_defective: 60")
        .replace(
            "  report: { plugin: report, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }\n",
            "",
        );
    let p = write_pipeline(dir, "light.yaml", &text);
    let cache = dir.join("cache");
    let spawn = |i: usize| {
        let out = dir.join(format!("run{i}"));
        let args =
            ["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q", "--cache", cache.to_str().unwrap()];
        let child = command(dir, &args, &[])
            .args(["--threads", "1", "--in-flight", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (out, child)
    };
    let mut runs: Vec<_> = (0..4).map(spawn).collect();
    let outputs = cache.join("outputs");
    let start = Instant::now();
    while count_files(&outputs) < 20 {
        assert!(start.elapsed() < Duration::from_secs(120), "nothing was cached");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, mut victim) = runs.remove(0);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let mut results = Vec::new();
    for (out, child) in runs {
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("corrupt"), "a reader saw a partial entry:\n{stderr}");
        results.push(std::fs::read(out.join("eval/results.json")).unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "every run gives the same results");
    // Every entry under its final name is whole; a killed writer leaves only hidden temporaries.
    for file in files_below(&cache) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            let bytes = std::fs::read(&file).unwrap();
            assert!(bytes.starts_with(b"ANOFLOW-STATE-2\n") && bytes.len() >= 32, "{} is partial", file.display());
        }
    }
    let last = dir.join("last");
    let r = run(dir, &p, &last, &["--cache", cache.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stderr.contains("corrupt"), "{}", r.stderr);
    let report = read_json(&last.join("run.json"));
    for id in ["grad", "thr"] {
        let node = report["run"]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap().clone();
        assert_eq!(node["samples"], 0, "every output comes from the cache: {node}");
        assert!(node["cached"].as_u64() >= Some(120), "{node}");
    }
    assert_eq!(std::fs::read(last.join("eval/results.json")).unwrap(), results[0]);
}
