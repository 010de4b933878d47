//! Real runs of real pipeline files through the `anoflow` binary: reports, sweeps, shards
//! merged exactly, graph drawing, interruption, unwritable outputs.

use std::path::Path;

use anoflow_e2e::{anoflow, files_below, small_quickstart_args, workspace_root, write_pipeline};
use serde_json::Value;

const LIGHT: &str = "name: light
vars: { seed: 5 }
nodes:
  data: { plugin: synthetic, with: { seed: \"{{seed}}\", categories: [woven, washer], train: 10, test_good: 4, test_defective: 8 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [grad.score] } }
";

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn run(dir: &Path, pipeline: &Path, out: &Path, extra: &[&str]) -> anoflow_e2e::Run {
    let mut args = vec!["run", pipeline.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    anoflow(dir, &args, &[])
}

#[test]
fn a_run_writes_its_report_and_reproducibility_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "light.yaml", LIGHT);
    let out = dir.path().join("run");
    let r = run(dir.path(), &p, &out, &["--set", "vars.seed=6"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("ran `light` on 24 test samples"), "{}", r.stdout);
    assert!(r.stdout.contains("| woven | grad |"), "the metrics table is printed:\n{}", r.stdout);
    let report = read_json(&out.join("run.json"));
    assert_eq!(report["status"], "completed");
    let nodes = report["run"]["nodes"].as_array().unwrap();
    let grad = nodes.iter().find(|n| n["id"] == "grad").unwrap();
    assert_eq!(grad["samples"], 24);
    assert_eq!(grad["library"], "anoflow-plugin-example");
    let expanded = std::fs::read_to_string(out.join("pipeline.expanded.yaml")).unwrap();
    assert!(expanded.contains("seed: 6"), "overrides are recorded:\n{expanded}");
    let plugins = read_json(&out.join("plugins.json"));
    assert!(plugins["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["stage"] == "synthetic" && n["version"] == env!("CARGO_PKG_VERSION")));
    assert!(out.join("eval/results.json").exists());
}

#[test]
fn shards_merge_to_exactly_the_unsharded_result() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "light.yaml", LIGHT);
    let full = dir.path().join("full");
    assert_eq!(run(dir.path(), &p, &full, &[]).code, 0);
    for i in 0..3 {
        let out = dir.path().join(format!("shard{i}"));
        let r = run(dir.path(), &p, &out, &["--shard", &format!("{i}/3"), "--shard-by", "sample"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let merged = dir.path().join("merged");
    let shards: Vec<String> = (0..3).map(|i| dir.path().join(format!("shard{i}")).display().to_string()).collect();
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    args.extend(shards.iter().map(String::as_str));
    let r = anoflow(dir.path(), &args, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let a = read_json(&full.join("eval/results.json"));
    let b = read_json(&merged.join("eval/results.json"));
    assert_eq!(a, b, "merged shards must equal the unsharded run");
    // A missing shard is refused.
    let r =
        anoflow(dir.path(), &["merge", "--out", dir.path().join("m2").to_str().unwrap(), &shards[0], &shards[2]], &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("1 of 3 tasks did not complete: task 1"), "{}", r.stderr);
}

#[test]
fn a_sweep_runs_every_variant_and_tabulates_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{LIGHT}sweep:\n  vars.seed: [1, 2]\n  grad.scale: [1.0, 0.5]\n");
    let p = write_pipeline(dir.path(), "sweep.yaml", &text);
    let out = dir.path().join("sweep");
    let r = run(dir.path(), &p, &out, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    for v in ["seed=1,scale=1.0", "seed=1,scale=0.5", "seed=2,scale=1.0", "seed=2,scale=0.5"] {
        assert!(out.join(v).join("run.json").exists(), "variant {v} missing");
    }
    let table = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(table.contains("seed=2,scale=0.5"), "{table}");
    // sweep.html: each figure against each swept param, one line per category and other value.
    let html = std::fs::read_to_string(out.join("sweep.html")).unwrap();
    let chart = "sweep-charts/eval_grad_score_pixel_auroc_scale.svg";
    assert!(html.contains(&format!("src=\"{chart}\"")), "{html}");
    let svg = std::fs::read_to_string(out.join(chart)).unwrap();
    for line in ["woven, seed=1", "washer, seed=2", "mean, seed=1"] {
        assert!(svg.contains(&format!(">\n{line}\n</text>")), "{chart} names {line}");
    }
}

#[test]
fn graph_draws_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "light.yaml", LIGHT);
    let r = anoflow(dir.path(), &["graph", p.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.starts_with("digraph \"light\""), "{}", r.stdout);
    assert!(r.stdout.contains("\"data\" -> \"grad\" [label=\"image (image)\"]"), "{}", r.stdout);
    let r = anoflow(dir.path(), &["graph", p.to_str().unwrap(), "--format", "mermaid"], &[]);
    assert!(r.stdout.contains("grad -->|\"score -> scores (score-map)\"| eval"), "{}", r.stdout);
}

#[test]
fn schema_lists_every_stage_and_its_params() {
    let dir = tempfile::tempdir().unwrap();
    let r = anoflow(dir.path(), &["schema"], &[]);
    assert_eq!(r.code, 0);
    let schema: Value = serde_json::from_str(&r.stdout).unwrap();
    let variants = schema["properties"]["nodes"]["additionalProperties"]["oneOf"].as_array().unwrap();
    let synth = variants.iter().find(|v| v["title"] == "synthetic").expect("synthetic in schema");
    assert_eq!(synth["properties"]["with"]["properties"]["seed"]["type"], "integer");
}

#[test]
fn an_unwritable_output_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "light.yaml", LIGHT);
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let r = run(dir.path(), &p, &blocker.join("run"), &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot create the run directory") && r.stderr.contains("file/run"), "{}", r.stderr);
}

#[test]
fn ctrl_c_stops_between_chunks_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let text = LIGHT.replace(
        "train: 10, test_good: 4, test_defective: 8",
        "train: 4, test_good: 200, test_defective: 200, size: 512",
    );
    let p = write_pipeline(dir.path(), "long.yaml", &text);
    let out = dir.path().join("run");
    let child = std::process::Command::new(anoflow_e2e::anoflow_bin())
        .current_dir(dir.path())
        .args(["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q", "--in-flight", "4", "--threads", "1"])
        .env("XDG_CACHE_HOME", dir.path().join(".cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run has started writing, then interrupt it.
    let start = std::time::Instant::now();
    while !out.join("plugins.json").exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted after"), "{stderr}");
    let report = read_json(&out.join("run.json"));
    assert_eq!(report["status"], "interrupted");
    assert!(report["message"].as_str().unwrap().contains("interrupted after"));
    let leftovers: Vec<_> = files_below(&out)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp-")))
        .collect();
    assert!(leftovers.is_empty(), "half-written files: {leftovers:?}");
}

#[test]
fn every_shipped_pipeline_validates() {
    let dir = workspace_root().join("pipelines");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let r = anoflow(
                &workspace_root(),
                &["validate", path.to_str().unwrap(), "--set", "vars.root=/nonexistent"],
                &[],
            );
            assert_eq!(r.code, 0, "{}: {}", path.display(), r.all());
            count += 1;
        }
    }
    assert!(count >= 1, "no pipelines found in {}", dir.display());
}

#[test]
fn node_outputs_are_cached_and_only_changed_nodes_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let text = "name: cached
nodes:
  data: { plugin: synthetic, with: { seed: 1, categories: [woven], train: 10, test_good: 4, test_defective: 8 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  blur: { plugin: gaussian-blur, with: { sigma: 2 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [blur.score] } }
";
    let p = write_pipeline(dir.path(), "cached.yaml", text);
    let cache = dir.path().join("cache");
    let stats = |run: &str| -> Vec<(String, u64, u64)> {
        read_json(&dir.path().join(run).join("run.json"))["run"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (n["id"].as_str().unwrap().to_string(), n["samples"].as_u64().unwrap(), n["cached"].as_u64().unwrap())
            })
            .collect()
    };
    let cache_arg = cache.to_str().unwrap();
    assert_eq!(run(dir.path(), &p, &dir.path().join("r1"), &["--cache", cache_arg]).code, 0);
    assert_eq!(run(dir.path(), &p, &dir.path().join("r2"), &["--cache", cache_arg]).code, 0);
    let s2 = stats("r2");
    assert_eq!(s2[1], ("grad".to_string(), 0, 0), "grad is not needed: blur comes from the cache");
    assert_eq!(s2[2], ("blur".to_string(), 0, 12));
    assert_eq!(
        read_json(&dir.path().join("r1/eval/results.json")),
        read_json(&dir.path().join("r2/eval/results.json"))
    );

    // Changing only the blur re-runs only the blur, on cached gradients.
    let r = run(dir.path(), &p, &dir.path().join("r3"), &["--cache", cache_arg, "--set", "blur.sigma=4"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let s3 = stats("r3");
    assert_eq!(s3[1], ("grad".to_string(), 0, 12));
    assert_eq!(s3[2], ("blur".to_string(), 12, 0));

    // A corrupt entry is detected and recomputed.
    let entries = files_below(&cache.join("outputs"));
    assert!(entries.len() >= 36, "{entries:?}");
    for e in &entries {
        std::fs::write(e, b"garbage").unwrap();
    }
    let r = run(dir.path(), &p, &dir.path().join("r4"), &["--cache", cache_arg]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("is corrupt; recomputing"), "{}", r.stderr);
    assert_eq!(stats("r4")[2], ("blur".to_string(), 12, 0));
    assert_eq!(
        read_json(&dir.path().join("r1/eval/results.json")),
        read_json(&dir.path().join("r4/eval/results.json"))
    );
}

#[test]
fn fitted_nodes_on_one_split_share_one_pass_over_it() {
    let dir = tempfile::tempdir().unwrap();
    // Two thresholds fitted on train, each per category, share a pass; the normalization
    // (validation) and the threshold fitted on its output (a level below) get passes of their own.
    let text = "name: passes
nodes:
  data: { plugin: synthetic, with: { seed: 2, categories: [woven, washer], train: 10, test_good: 2, test_defective: 4 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  thr_a: { plugin: threshold-mean-std, fit: train, inputs: { score: grad.score } }
  thr_b: { plugin: threshold-percentile, fit: train, inputs: { score: grad.score } }
  norm: { plugin: normalize-scores, fit: validation, inputs: { score: grad.score } }
  thr_n: { plugin: threshold-mean-std, fit: validation, inputs: { score: norm.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr_a.mask, thr_b.mask, thr_n.mask] } }
";
    let p = write_pipeline(dir.path(), "passes.yaml", text);
    let r = run(dir.path(), &p, &dir.path().join("r"), &["--no-cache"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let nodes = read_json(&dir.path().join("r/run.json"))["run"]["nodes"].as_array().unwrap().clone();
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap().clone();
    // 2 categories x (8 train + 2 validation for `norm` + 2 validation for `thr_n` + 6 test).
    // One pass per fitted node would stream train twice: 52.
    assert_eq!(node("grad")["samples"], 2 * (8 + 2 + 2 + 6), "{nodes:?}");
    for id in ["thr_a", "thr_b", "norm", "thr_n"] {
        assert_eq!(node(id)["fit_state"], "fitted", "{id}");
    }
}

#[test]
fn quickstart_compares_thr_and_ttt4as_and_caches_the_fitted_bank() {
    let dir = tempfile::tempdir().unwrap();
    let p = workspace_root().join("pipelines/quickstart.yaml");
    let cache = dir.path().join("cache");
    let small = small_quickstart_args(&["washer"], &cache);
    let small: Vec<&str> = small.iter().map(String::as_str).collect();
    let r = run(dir.path(), &p, &dir.path().join("q1"), &small);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_every_phase_reports_its_utilization(&read_json(&dir.path().join("q1/run.json")), &r.stdout);
    let results = read_json(&dir.path().join("q1/eval/results.json"));
    let get = |source: &str, metric: &str| {
        results["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| {
                x["category"] == "mean"
                    && x["source"] == source
                    && x["metric"] == metric
                    && x["subset"] == "anomalous"
                    && x["pooling"] == "pixels"
            })
            .and_then(|x| x["value"].as_f64())
    };
    let ttt_recall = get("ttt.mask", "recall").expect("ttt recall");
    assert!(ttt_recall > 0.0, "TTT4AS masks must not be all empty");
    assert!(get("thr.mask", "f1").is_some());
    let auroc = results["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["category"] == "mean" && x["source"] == "scorer.score" && x["metric"] == "pixel_auroc")
        .and_then(|x| x["value"].as_f64())
        .unwrap();
    assert!(auroc > 0.9, "PatchCore pixel AUROC {auroc}");
    assert!(dir.path().join("q1/report/index.html").exists());
    let plugins = read_json(&dir.path().join("q1/plugins.json"));
    let model = plugins["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["model"] == "mobilenet_v2")
        .expect("model hash recorded");
    assert_eq!(model["sha256"].as_str().unwrap().len(), 64);

    let r = run(dir.path(), &p, &dir.path().join("q2"), &small);
    assert_eq!(r.code, 0, "{}", r.all());
    let nodes = read_json(&dir.path().join("q2/run.json"))["run"]["nodes"].clone();
    let scorer = nodes.as_array().unwrap().iter().find(|n| n["id"] == "scorer").unwrap().clone();
    assert_eq!(scorer["fit_state"], "loaded from cache", "{scorer}");
    assert_eq!(
        read_json(&dir.path().join("q1/eval/results.json")),
        read_json(&dir.path().join("q2/eval/results.json"))
    );
}

/// `run.phases` of a run that fitted, calibrated and tested (nothing from the cache): each
/// phase's `busy / (wall x threads)` lies in (0, 1.05], and the summary line shows them.
fn assert_every_phase_reports_its_utilization(report: &Value, stdout: &str) {
    let phases = report["run"]["phases"].as_array().expect("run.phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["fit", "calibrate", "test", "finish"], "{report}");
    for phase in phases {
        let (busy, wall, threads) = (&phase["busy_seconds"], &phase["wall_seconds"], &phase["threads"]);
        let (busy, wall, threads) = (busy.as_f64().unwrap(), wall.as_f64().unwrap(), threads.as_f64().unwrap());
        let utilization = phase["utilization"].as_f64().unwrap();
        assert!(utilization > 0.0 && utilization <= 1.05, "{phase}");
        assert!((utilization - busy / (wall * threads)).abs() < 1e-9, "{phase}");
        assert!(phase["cpu_seconds"].as_f64().is_some_and(|c| c > 0.0), "{phase}");
    }
    let line = stdout.lines().find(|l| l.starts_with("ran `quickstart`")).expect("the summary line");
    assert!(line.contains("busy/(wall x ") && line.contains("calibrate ") && line.contains(", test "), "{line}");
}

/// Two binarizers side by side, one behind a stage that misbehaves (fixture `faulty`, mode
/// `{mode}`) on the good test images only.
fn two_binarizers(mode: &str) -> String {
    format!(
        "name: keep
nodes:
  data:  {{ plugin: synthetic, with: {{ seed: 2, categories: [tiles], train: 4, test_good: 3, test_defective: 5, size: 64 }} }}
  grad:  {{ plugin: gradient-magnitude, inputs: {{ image: data.image }} }}
  bad:   {{ plugin: faulty, with: {{ mode: {mode}, only: \"/test/good/\" }}, inputs: {{ score: grad.score }} }}
  steady: {{ plugin: threshold-fixed, with: {{ value: 40 }}, inputs: {{ score: grad.score }} }}
  flaky: {{ plugin: threshold-fixed, with: {{ value: 40 }}, inputs: {{ score: bad.score }} }}
  eval:  {{ plugin: segmentation-metrics, inputs: {{ gt: data.mask, masks: [steady.mask, flaky.mask], scores: [grad.score] }} }}
"
    )
}

fn run_two_binarizers(mode: &str, extra: &[&str]) -> (anoflow_e2e::Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = anoflow_e2e::fixture_plugin_dir(dir.path(), &["faulty"]);
    let p = write_pipeline(dir.path(), "p.yaml", &two_binarizers(mode));
    let out = dir.path().join("run");
    let mut args = vec!["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-cache", "-q"];
    args.extend_from_slice(extra);
    let build = anoflow_e2e::build_dir();
    (anoflow(dir.path(), &args, &[&build, &fixtures]), dir)
}

/// The images behind a mask source's pooled F1 on all test images of `tiles`.
fn images_of(results: &Value, source: &str) -> u64 {
    results["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["category"] == "tiles"
                && r["source"] == source
                && r["metric"] == "f1"
                && r["subset"] == "all"
                && r["pooling"] == "pixels"
        })
        .unwrap_or_else(|| panic!("no F1 of {source}: {results}"))["n"]
        .as_u64()
        .unwrap()
}

#[test]
fn keep_going_drops_a_failing_branch_only_and_the_metrics_count_it() {
    let (r, dir) = run_two_binarizers("error", &["--keep-going"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let report = read_json(&dir.path().join("run/run.json"));
    let failures = report["run"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "one per good test image, recorded once: {failures:#?}");
    assert!(failures.iter().all(|f| f["node"] == "bad" && f["sample"].as_str().unwrap().contains("/test/good/")));
    let nodes = report["run"]["nodes"].as_array().unwrap();
    let errors = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap()["errors"].as_u64().unwrap();
    assert_eq!((errors("bad"), errors("flaky"), errors("eval")), (3, 0, 0));
    let eval = nodes.iter().find(|n| n["id"] == "eval").unwrap();
    assert_eq!(eval["samples"], 8, "the sink still consumed every sample");

    let results = read_json(&dir.path().join("run/eval/results.json"));
    assert_eq!(results["mask_sources"], serde_json::json!(["steady.mask", "flaky.mask"]));
    assert_eq!(images_of(&results, "steady.mask"), 8, "the other binarizer keeps every sample");
    assert_eq!(images_of(&results, "flaky.mask"), 5);
    assert_eq!(results["missing"], serde_json::json!({"flaky.mask": {"tiles": 3}}));
    assert!(r.stdout.contains("| flaky.mask | tiles | 3 |"), "{}", r.stdout);
}

#[test]
fn a_value_only_a_sink_refuses_is_blamed_on_its_producer() {
    // `faulty` halves the good images' score maps; `flaky` binarizes them faithfully and only
    // the metrics sink, comparing with the ground truth, finds the size wrong.
    let (r, dir) = run_two_binarizers("wrong-size", &["--keep-going"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let report = read_json(&dir.path().join("run/run.json"));
    let failures = report["run"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{failures:#?}");
    for f in failures {
        assert_eq!(f["node"], "flaky", "{f}");
        let message = f["message"].as_str().unwrap();
        assert!(message.contains("node `eval` cannot use its value on `flaky.mask`"), "{message}");
        assert!(message.contains("is 32x32 (h x w) but its ground truth mask is 64x64"), "{message}");
    }
    let results = read_json(&dir.path().join("run/eval/results.json"));
    assert_eq!(images_of(&results, "steady.mask"), 8);
    assert_eq!(images_of(&results, "flaky.mask"), 5);
    assert_eq!(results["missing"]["flaky.mask"]["tiles"], 3);

    // Without --keep-going the run stops at the first one, naming the producer.
    let (r, _dir) = run_two_binarizers("wrong-size", &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("test: node `flaky` (stage `threshold-fixed`), sample `tiles/test/good/"),
        "{}",
        r.stderr
    );
}

/// Every file below `dir` (but `run.json`, which holds timings) with its bytes, by relative path.
fn result_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "run.json"))
        .map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn categories_fitted_side_by_side_give_the_same_bytes_as_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let p = workspace_root().join("pipelines/quickstart.yaml");
    let mut fitted = Vec::new();
    let mut results = Vec::new();
    for in_flight in ["1", "3"] {
        let cache = dir.path().join(format!("cache-{in_flight}"));
        let out = dir.path().join(format!("run-{in_flight}"));
        let mut args = small_quickstart_args(&["pill", "tiles", "woven"], &cache);
        args.extend(["--threads", "2", "--categories-in-flight", in_flight].map(String::from));
        let r = run(dir.path(), &p, &out, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(r.code, 0, "{}", r.all());
        let report = read_json(&out.join("run.json"));
        let scorer = report["run"]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "scorer").unwrap();
        assert_eq!(scorer["fit_state"], "fitted", "{scorer}");
        fitted.push(result_files(&cache.join("fitted")));
        results.push(result_files(&out));
    }
    // PatchCore, THR, the normalization and the defects node: one state per category each,
    // under the same content address, the same bytes.
    assert_eq!(fitted[0].len(), 3 * 4, "{:?}", fitted[0].iter().map(|(p, _)| p).collect::<Vec<_>>());
    assert!(fitted[0] == fitted[1], "the fitted states differ");
    let names = |files: &[(std::path::PathBuf, Vec<u8>)]| files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&results[0]), names(&results[1]));
    assert!(results[0].iter().any(|(p, _)| p.ends_with("eval/results.json")));
    assert!(results[0].iter().any(|(p, _)| p.ends_with("calibration.md")));
    for ((path, a), (_, b)) in results[0].iter().zip(&results[1]) {
        assert!(a == b, "{} differs", path.display());
    }
}

/// Three categories whose fit fails on most of their train images (`/train/good/00*`).
const FIT_FAILURES: &str = "name: fitfail
nodes:
  data: { plugin: synthetic, with: { seed: 2, categories: [woven, washer, tiles], train: 12, test_good: 2, test_defective: 2, size: 64 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  bad: { plugin: faulty, with: { mode: error, only: /train/good/00 }, inputs: { score: grad.score } }
  thr: { plugin: threshold-mean-std, fit: train, inputs: { score: bad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }
";

#[test]
fn fit_failures_are_reported_in_category_order_however_many_categories_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = anoflow_e2e::fixture_plugin_dir(dir.path(), &["faulty"]);
    let build = anoflow_e2e::build_dir();
    let p = write_pipeline(dir.path(), "p.yaml", FIT_FAILURES);
    let attempt = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-cache", "-q"];
        args.extend(["--threads", "2", "--in-flight", "2"]);
        args.extend_from_slice(extra);
        (anoflow(dir.path(), &args, &[&build, &fixtures]), out)
    };
    // Stopping at the first failure: the first category's first failing sample, always.
    for in_flight in ["1", "3"] {
        let (r, _) = attempt(&format!("stop-{in_flight}"), &["--categories-in-flight", in_flight]);
        assert_eq!(r.code, 1, "{}", r.all());
        let expected = "fit thr on train [tiles]: node `bad` (stage `faulty`), sample `tiles/train/good/000`";
        assert!(r.stderr.contains(expected), "in flight {in_flight}: {}", r.stderr);
    }
    // Going on: every failure, listed in category order, the same list both ways.
    let mut listed = Vec::new();
    for in_flight in ["1", "3"] {
        let (r, out) = attempt(&format!("keep-{in_flight}"), &["--categories-in-flight", in_flight, "--keep-going"]);
        assert_eq!(r.code, 3, "{}", r.all());
        let report = read_json(&out.join("run.json"));
        let failures: Vec<(String, String)> = report["run"]["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["phase"].as_str().unwrap().to_string(), f["sample"].as_str().unwrap().to_string()))
            .collect();
        // Nine of each category's ids 000-009 are train images (the source holds one out).
        assert_eq!(failures.len(), 27, "nine per category: {failures:#?}");
        let categories: Vec<&str> = failures.iter().map(|(_, s)| s.split('/').next().unwrap()).collect();
        let mut sorted = categories.clone();
        sorted.sort_unstable();
        assert_eq!(categories, sorted, "in category order");
        listed.push(failures);
    }
    assert_eq!(listed[0], listed[1]);
}

#[test]
fn a_stage_error_names_the_node_and_sample_once() {
    // `score-maps` names its node and sample in its own message (it also runs in harnesses);
    // the run's error already starts with both, so they are not said twice.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("maps")).unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.yaml",
        "name: once
nodes:
  data: { plugin: synthetic, with: { seed: 2, categories: [tiles], train: 2, test_good: 1, test_defective: 1, size: 64 } }
  maps: { plugin: score-maps, with: { root: maps }, inputs: { like: data.image } }
  thr: { plugin: threshold-fixed, with: { value: 0.5 }, inputs: { score: maps.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask] } }
",
    );
    let out = dir.path().join("run");
    let r = anoflow(
        dir.path(),
        &["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-cache", "-q"],
        &[&anoflow_e2e::build_dir()],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("node `maps` (stage `score-maps`), sample `tiles/test/"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("node `maps`").count(), 1, "{}", r.stderr);
}
