//! Plugin libraries that cannot load are reported with their path and reason; a stage that
//! panics or misbehaves becomes an error that names node, stage and sample; the host never aborts.

use anoflow_e2e::{anoflow, build_dir, fixture_plugin_dir, write_pipeline};

#[test]
fn wrong_abi_and_contract_versions_are_reported_with_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixture_plugin_dir(dir.path(), &["wrong-abi", "wrong-contract"]);
    let run = anoflow(dir.path(), &["doctor"], &[&fixtures]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("libanoflow_plugin_fixture_wrong_abi.so: built against anoflow SDK ABI version 99, but this host speaks version 4"), "{}", run.stdout);
    assert!(run.stdout.contains("libanoflow_plugin_fixture_wrong_contract.so: built against data-contract version 99, but this host uses version 1"), "{}", run.stdout);
    // The stages of a refused library are not offered.
    let run = anoflow(dir.path(), &["plugins", "list"], &[&fixtures]);
    assert!(!run.stdout.contains("identity-wrong-abi"), "{}", run.stdout);
    assert!(run.stderr.contains("did not load"), "{}", run.stderr);
}

#[test]
fn corrupt_and_missing_libraries_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("libanoflow_plugin_corrupt.so"), b"this is not an ELF file").unwrap();
    std::fs::write(plugins.join("libanoflow_plugin_empty.so"), b"").unwrap();
    let missing = dir.path().join("no-such-dir");
    let run = anoflow(dir.path(), &["doctor"], &[&plugins, &missing]);
    assert_eq!(run.code, 1);
    let out = run.stdout;
    assert!(out.contains("FAIL") && out.contains("libanoflow_plugin_corrupt.so: cannot load library"), "{out}");
    assert!(out.contains("libanoflow_plugin_empty.so: cannot load library"), "{out}");
    assert!(out.contains("no-such-dir: cannot read plugin directory"), "{out}");
}

#[test]
fn the_default_path_loads_every_standard_library() {
    let dir = tempfile::tempdir().unwrap();
    let run = anoflow(dir.path(), &["doctor"], &[]);
    assert!(run.stdout.contains(&build_dir().display().to_string()), "{}", run.stdout);
    for lib in [
        "anoflow-plugin-example",
        "anoflow-plugin-datasets",
        "anoflow-plugin-ttt4as",
        "anoflow-plugin-metrics",
        "anoflow-plugin-report",
    ] {
        assert!(run.stdout.contains(&format!("ok   {lib} ")), "{lib} missing:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}

fn faulty_pipeline(mode: &str) -> String {
    format!(
        "name: faulty
nodes:
  data: {{ plugin: synthetic, with: {{ seed: 3 }} }}
  grad: {{ plugin: gradient-magnitude, inputs: {{ image: data.image }} }}
  bad:  {{ plugin: faulty, with: {{ mode: {mode}, only: \"/test/\" }}, inputs: {{ score: grad.score }} }}
  thr:  {{ plugin: threshold-mean-std, fit: validation, inputs: {{ score: bad.score }} }}
  eval: {{ plugin: segmentation-metrics, inputs: {{ gt: data.mask, masks: [thr.mask] }} }}
"
    )
}

fn run_faulty(mode: &str, extra: &[&str]) -> (anoflow_e2e::Run, tempfile::TempDir) {
    run_faulty_stage("faulty", mode, extra)
}

/// `stage` is `faulty` or `faulty-sized` (which declares its output the size of its input).
fn run_faulty_stage(stage: &str, mode: &str, extra: &[&str]) -> (anoflow_e2e::Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixture_plugin_dir(dir.path(), &["faulty"]);
    let text = faulty_pipeline(mode).replace("plugin: faulty,", &format!("plugin: {stage},"));
    let p = write_pipeline(dir.path(), "p.yaml", &text);
    let out = dir.path().join("run");
    let mut args = vec!["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-cache", "-q"];
    args.extend_from_slice(extra);
    let build = build_dir();
    (anoflow(dir.path(), &args, &[&build, &fixtures]), dir)
}

#[test]
fn a_panicking_stage_is_an_error_naming_node_stage_and_sample() {
    let (run, dir) = run_faulty("panic", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("test: node `bad` (stage `faulty`), sample `"), "{}", run.stderr);
    assert!(run.stderr.contains("stage `faulty` panicked: deliberate panic on sample"), "{}", run.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["error"]["node"], "bad");
}

#[test]
fn with_rust_backtrace_a_panic_gives_one_backtrace_in_the_error_and_no_raw_lines() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixture_plugin_dir(dir.path(), &["faulty"]);
    let p = write_pipeline(dir.path(), "p.yaml", &faulty_pipeline("panic"));
    let out = dir.path().join("run");
    let mut cmd = std::process::Command::new(anoflow_e2e::anoflow_bin());
    cmd.current_dir(dir.path()).args(["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-cache", "-q"]);
    cmd.arg("--plugins").arg(&fixtures).env_remove("ANOFLOW_PLUGIN_PATH").env("RUST_BACKTRACE", "1");
    let run: anoflow_e2e::Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(!run.stderr.contains("thread '") && !run.stderr.contains("panicked at"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("stack backtrace (RUST_BACKTRACE is set):").count(), 1, "{}", run.stderr);
}

#[test]
fn keep_going_skips_failing_samples_and_reports_them() {
    let (run, dir) = run_faulty("error", &["--keep-going"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stderr.contains("samples failed and were skipped"), "{}", run.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/run.json")).unwrap()).unwrap();
    let failures = report["run"]["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    assert!(failures.iter().all(|f| f["node"] == "bad" && f["message"].as_str().unwrap().contains("deliberate error")));
}

#[test]
fn undeclared_outputs_and_wrong_sizes_are_caught() {
    let (run, _dir) = run_faulty("undeclared-output", &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("node `bad` (stage `faulty`)") && run.stderr.contains("undeclared output `surprise`"),
        "{}",
        run.stderr
    );
    // The score map comes out at half size. `faulty-sized` declares it the size of its input,
    // so the error is raised at the node that made it, naming the sample and both sizes.
    let (run, _dir) = run_faulty_stage("faulty-sized", "wrong-size", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("node `bad` (stage `faulty-sized`), sample `"), "{}", run.stderr);
    assert!(
        run.stderr.contains("output `score` is 128x128 (height x width), but the stage declares it the same size as input `score`, which is 256x256"),
        "{}",
        run.stderr
    );
}

#[test]
fn nan_from_a_stage_is_blamed_on_that_stage() {
    let (run, _dir) = run_faulty("nan", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("test: node `bad` (stage `faulty`), sample `"), "{}", run.stderr);
    assert!(run.stderr.contains("output `score` holds NaN at (y 0, x 0)"), "{}", run.stderr);
}

#[test]
fn a_pipeline_names_stages_never_library_files() {
    // Whatever a pipeline writes in `plugin:`, the host only looks it up among the stages of
    // the libraries on its plugin path: a file path is just an unknown stage.
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("libanoflow_plugin_evil.so");
    std::fs::copy(build_dir().join(anoflow_e2e::library_file("anoflow-fixture-faulty")), &evil).unwrap();
    let text = format!(
        "nodes:\n  data: {{ plugin: synthetic }}\n  bad: {{ plugin: \"{}\", inputs: {{ score: data.image }} }}\n",
        evil.display()
    );
    let p = write_pipeline(dir.path(), "p.yaml", &text);
    let run = anoflow(dir.path(), &["validate", p.to_str().unwrap()], &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("unknown plugin stage"), "{}", run.stderr);
    assert!(!run.all().contains("faulty"), "the library must not have been loaded: {}", run.all());
}

#[test]
fn outputs_go_under_the_run_directory_only() {
    // Sinks write into the directory the host gives them; no stage has a param for an output path.
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    let text = format!(
        "nodes:\n  data: {{ plugin: synthetic }}\n  out: {{ plugin: write-png, with: {{ out_dir: \"{}\" }}, inputs: {{ gt: data.mask }} }}\n",
        outside.display()
    );
    let p = write_pipeline(dir.path(), "p.yaml", &text);
    let run = anoflow(dir.path(), &["validate", p.to_str().unwrap()], &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("unknown param `out_dir`"), "{}", run.stderr);
    assert!(!outside.exists());
}

#[test]
fn a_failing_write_stops_the_run_and_names_the_path() {
    // The sink's output directory cannot be created: its name (the node id) is longer than a
    // file name may be. (A run directory must be new or empty, so nothing can stand in the way.)
    let dir = tempfile::tempdir().unwrap();
    let id = "e".repeat(300);
    let text = format!(
        "nodes:
  data: {{ plugin: synthetic, with: {{ categories: [washer], train: 5, test_good: 2, test_defective: 2 }} }}
  {id}: {{ plugin: segmentation-metrics, inputs: {{ gt: data.mask }} }}
"
    );
    let p = write_pipeline(dir.path(), "p.yaml", &text);
    let out = dir.path().join("run");
    let run =
        anoflow(dir.path(), &["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q", "--no-cache"], &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains(&format!("node `{id}`")) && run.stderr.contains(&format!("run/{id}")),
        "{}",
        run.stderr
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "failed");
}

/// Two branches from one score map: `plain` thresholds it directly, `thr` after the faulty node.
fn two_branch_pipeline(mode: &str) -> String {
    format!(
        "name: two-branches
nodes:
  data: {{ plugin: synthetic, with: {{ seed: 3, categories: [washer, pill], train: 8, test_good: 3, test_defective: 3 }} }}
  grad: {{ plugin: gradient-magnitude, inputs: {{ image: data.image }} }}
  bad:  {{ plugin: faulty, with: {{ mode: {mode}, only: \"/test/\" }}, inputs: {{ score: grad.score }} }}
  thr:  {{ plugin: threshold-mean-std, fit: validation, inputs: {{ score: bad.score }} }}
  plain: {{ plugin: threshold-mean-std, fit: validation, inputs: {{ score: grad.score }} }}
  eval: {{ plugin: segmentation-metrics, inputs: {{ gt: data.mask, masks: [plain.mask, thr.mask] }} }}
"
    )
}

#[test]
fn a_panic_prints_one_line_per_node_and_other_sources_keep_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixture_plugin_dir(dir.path(), &["faulty"]);
    let p = write_pipeline(dir.path(), "p.yaml", &two_branch_pipeline("panic"));
    let out = dir.path().join("run");
    let args = ["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-cache", "-q", "--keep-going"];
    let run = anoflow(dir.path(), &args, &[&fixtures]);
    assert_eq!(run.code, 3, "{}", run.all());
    // No raw panic output from the plugin: the SDK's hook keeps it quiet and records where.
    assert!(!run.stderr.contains("thread '") && !run.stderr.contains("panicked at"), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains("node `bad`")).collect();
    assert_eq!(lines.len(), 1, "one line for the failing node:\n{}", run.stderr);
    assert!(lines[0].contains("node `bad` (stage `faulty`): 12 samples; first (test, sample `"), "{}", lines[0]);
    assert!(
        lines[0].contains("deliberate panic on sample")
            && lines[0].contains("(at tests/fixture-plugins/faulty/src/lib.rs:"),
        "{}",
        lines[0]
    );
    // The other branch's metrics are still there, with figures, and the failures counted per source.
    assert!(run.stdout.contains("| category | plain | thr |"), "{}", run.stdout);
    let washer = run.stdout.lines().find(|l| l.starts_with("| washer |")).unwrap_or_default();
    assert!(washer.starts_with("| washer | 0.") && washer.ends_with("| n/a |"), "{}", run.stdout);
    assert!(run.stdout.contains("| thr.mask | washer | 6 |"), "{}", run.stdout);
}

#[test]
fn plugin_dirs_add_to_the_default_and_no_default_plugins_leaves_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixture_plugin_dir(dir.path(), &["faulty"]);
    let run = anoflow(dir.path(), &["plugins", "list"], &[&fixtures]);
    assert!(run.stdout.contains("faulty") && run.stdout.contains("synthetic"), "{}", run.stdout);
    let run = anoflow(dir.path(), &["plugins", "list", "--no-default-plugins"], &[&fixtures]);
    assert!(run.stdout.contains("faulty") && !run.stdout.contains("synthetic"), "{}", run.stdout);
    // doctor says where each directory comes from, and the rule.
    let run = anoflow(dir.path(), &["doctor"], &[&fixtures]);
    assert!(run.stdout.contains(&format!("{}  (--plugins)", fixtures.display())), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{}  (default: the anoflow executable's directory)", build_dir().display())),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--plugins DIR and ANOFLOW_PLUGIN_PATH add to"), "{}", run.stdout);
}

#[test]
fn doctor_lists_libraries_that_miss_the_naming_rule() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let built = build_dir().join(anoflow_e2e::library_file("anoflow-plugin-example"));
    std::fs::copy(built, plugins.join("libmy_binarizer.so")).unwrap();
    let run = anoflow(dir.path(), &["doctor"], &[&plugins]);
    let line = run.stdout.lines().find(|l| l.contains("libmy_binarizer.so")).unwrap_or_default();
    assert!(
        line.starts_with("  SKIP ") && line.contains("does not match the plugin naming rule libanoflow_plugin_*.so"),
        "{}",
        run.stdout
    );
}

#[test]
fn help_texts_give_the_plugin_path_rule_and_the_name() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["plugins", "list", "--help"][..], &["plugins", "--help"], &["--help"]] {
        let run = anoflow(dir.path(), args, &[]);
        assert!(run.stdout.contains("--plugins DIR") && run.stdout.contains("--no-default-plugins"), "{}", run.stdout);
    }
    let run = anoflow(dir.path(), &["new", "plugin", "--help"], &[]);
    assert!(run.stdout.contains("The stage name, lowercase letters"), "{}", run.stdout);
}

#[test]
fn inspect_shows_a_declared_size_relation() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixture_plugin_dir(dir.path(), &["faulty"]);
    let run = anoflow(dir.path(), &["plugins", "inspect", "faulty-sized"], &[&fixtures]);
    assert!(
        run.stdout.contains("- `score` (score-map, same height and width as input `score`): the misbehaving output"),
        "{}",
        run.stdout
    );
}
