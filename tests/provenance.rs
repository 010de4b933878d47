//! Never a silently wrong result: the caches are keyed on content (images edited in place,
//! a replaced model, a rebuilt plugin library, a training image added), `anoflow merge`
//! refuses shards of different runs, every shipped sink merges bit for bit, and a run owns
//! its directory (refused when not empty, `--replace` clears it, a killed run never says
//! `completed`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anoflow_e2e::{
    anoflow, anoflow_bin, build_dir, files_below, library_file, small_quickstart_args, workspace_root, write_pipeline,
    Run,
};
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn run(dir: &Path, pipeline: &Path, out: &Path, extra: &[&str], plugins: &[&Path]) -> Run {
    let mut args = vec!["run", pipeline.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    anoflow(dir, &args, plugins)
}

fn node(run_dir: &Path, id: &str) -> Value {
    let report = read_json(&run_dir.join("run.json"));
    assert_eq!(report["status"], "completed", "{report}");
    report["run"]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap().clone()
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

/// Sets a file's modification time back, so that only its content tells an edit apart.
fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

// ---- Tiny PNG files whose size depends only on their dimensions ---------------------------

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// An 8-bit PNG (`channels` 1 = grey, 3 = RGB) with its pixels in one stored (uncompressed)
/// deflate block: the file size depends on the dimensions only, so an edit keeps it.
fn png(w: usize, h: usize, channels: usize, pixels: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(h * (w * channels + 1));
    for row in pixels.chunks(w * channels) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    assert!(raw.len() < 65_536);
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    zlib.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, if channels == 1 { 0 } else { 2 }, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    out
}

const SIDE: usize = 32;

/// A textured 32x32 RGB image; `spot` paints a bright square at (8..16, 8..16).
fn image(seed: u64, spot: bool) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut px = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..SIDE {
        for x in 0..SIDE {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = if spot && (8..16).contains(&y) && (8..16).contains(&x) {
                250
            } else {
                (100 + (x + y) * 2) as u8 + (state % 12) as u8
            };
            px.extend_from_slice(&[v, v, v]);
        }
    }
    png(SIDE, SIDE, 3, &px)
}

fn spot_mask() -> Vec<u8> {
    let px: Vec<u8> = (0..SIDE * SIDE)
        .map(|i| if (8..16).contains(&(i / SIDE)) && (8..16).contains(&(i % SIDE)) { 255 } else { 0 })
        .collect();
    png(SIDE, SIDE, 1, &px)
}

/// An MVTec AD tree: `disc/train/good` (8 images), `disc/test/good` (3) and `disc/test/spot`
/// (3, with masks).
fn write_dataset(root: &Path) {
    let cat = root.join("disc");
    for dir in ["train/good", "test/good", "test/spot", "ground_truth/spot"] {
        std::fs::create_dir_all(cat.join(dir)).unwrap();
    }
    for i in 0..8 {
        std::fs::write(cat.join(format!("train/good/{i:03}.png")), image(i, false)).unwrap();
    }
    for i in 0..3 {
        std::fs::write(cat.join(format!("test/good/{i:03}.png")), image(100 + i, false)).unwrap();
        std::fs::write(cat.join(format!("test/spot/{i:03}.png")), image(200 + i, true)).unwrap();
        std::fs::write(cat.join(format!("ground_truth/spot/{i:03}_mask.png")), spot_mask()).unwrap();
    }
}

const ON_DISK: &str = "name: on-disk
nodes:
  data: { plugin: mvtec-ad, with: { root: data, validation_fraction: 0.25 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  thr: { plugin: threshold-mean-std, fit: train, with: { k: 2 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }
";

/// Runs `pipeline` with the cache and with `--no-cache`; both must give the same results.
fn cached_and_uncached(dir: &Path, pipeline: &Path, name: &str, extra: &[&str], plugins: &[&Path]) -> PathBuf {
    let cache = dir.join("cache");
    let cached = dir.join(name);
    let mut args = vec!["--cache", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = run(dir, pipeline, &cached, &args, plugins);
    assert_eq!(r.code, 0, "{}", r.all());
    let fresh = dir.join(format!("{name}-nocache"));
    let mut args = vec!["--no-cache"];
    args.extend_from_slice(extra);
    let r = run(dir, pipeline, &fresh, &args, plugins);
    assert_eq!(r.code, 0, "{}", r.all());
    same_file(&cached.join("eval/results.json"), &fresh.join("eval/results.json"));
    same_file(&cached.join("eval/samples.csv"), &fresh.join("eval/samples.csv"));
    cached
}

#[test]
fn images_edited_in_place_and_added_are_never_served_from_the_caches() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_dataset(&dir.join("data"));
    let p = write_pipeline(dir, "on-disk.yaml", ON_DISK);
    let first = cached_and_uncached(dir, &p, "r1", &[], &[]);
    assert_eq!(node(&first, "thr")["fit_state"], "fitted");
    let again = cached_and_uncached(dir, &p, "r2", &[], &[]);
    assert_eq!(node(&again, "thr")["fit_state"], "loaded from cache", "the cache works when nothing changed");
    assert_eq!(node(&again, "grad")["cached"], 6);

    // A training image and a test image rewritten in place: same size, same time stamp.
    let cat = dir.join("data/disc");
    for (file, edited) in [("train/good/000.png", image(999, true)), ("test/good/001.png", image(998, true))] {
        let path = cat.join(file);
        let (before, t) = (std::fs::read(&path).unwrap(), mtime(&path));
        assert_eq!(before.len(), edited.len());
        std::fs::write(&path, &edited).unwrap();
        set_mtime(&path, t);
    }
    let edited = cached_and_uncached(dir, &p, "r3", &[], &[]);
    assert_eq!(node(&edited, "thr")["fit_state"], "fitted", "a training image changed: the threshold is fitted again");
    // Gradients: the edited training image (the refit reads the other 5 from the cache) and
    // the edited test image are computed; the other 5 test images come from the cache.
    let grad = node(&edited, "grad");
    assert_eq!((grad["samples"].as_u64(), grad["cached"].as_u64()), (Some(2), Some(10)), "{grad}");

    // A training image added.
    std::fs::write(cat.join("train/good/008.png"), image(8, false)).unwrap();
    let added = cached_and_uncached(dir, &p, "r4", &[], &[]);
    assert_eq!(node(&added, "thr")["fit_state"], "fitted");
}

/// `block_energy.onnx` with its ReduceMean made a ReduceProd: the same size, another map.
fn other_model(model: &[u8]) -> Vec<u8> {
    let at = model.windows(10).position(|w| w == b"ReduceMean").expect("ReduceMean in the test model");
    let mut other = model.to_vec();
    other[at..at + 10].copy_from_slice(b"ReduceProd");
    other
}

#[test]
fn a_replaced_model_file_changes_every_key_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let model = std::fs::read(workspace_root().join("plugins/onnx/test-data/block_energy.onnx")).unwrap();
    std::fs::write(dir.join("model.onnx"), &model).unwrap();
    let text = "name: model
nodes:
  data: { plugin: synthetic, with: { seed: 3, categories: [woven], train: 8, test_good: 2, test_defective: 4, size: 64 } }
  prep: { plugin: resize-crop, with: { resize: 32, crop: 32 }, inputs: { image: data.image, mask: data.mask } }
  scorer: { plugin: onnx-scorer, with: { model: model.onnx }, inputs: { image: prep.image } }
  thr: { plugin: threshold-mean-std, fit: train, inputs: { score: scorer.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: prep.mask, masks: [thr.mask], scores: [scorer.score] } }
";
    let p = write_pipeline(dir, "model.yaml", text);
    cached_and_uncached(dir, &p, "r1", &[], &[]);
    let again = cached_and_uncached(dir, &p, "r2", &[], &[]);
    assert_eq!(node(&again, "scorer")["cached"], 6);

    let path = dir.join("model.onnx");
    let t = mtime(&path);
    std::fs::write(&path, other_model(&model)).unwrap();
    set_mtime(&path, t);
    let replaced = cached_and_uncached(dir, &p, "r3", &[], &[]);
    assert_eq!(node(&replaced, "scorer")["cached"], 0, "no output of the old model is served");
    assert_eq!(node(&replaced, "thr")["fit_state"], "fitted", "the threshold is fitted on the new model's maps");
    let model_sha = |run: &str| {
        let plugins = read_json(&dir.join(run).join("plugins.json"));
        plugins["files"].as_array().unwrap().iter().find(|f| f["param"] == "model").unwrap()["sha256"].clone()
    };
    assert_ne!(model_sha("r1"), model_sha("r3"), "plugins.json records the file's content");
}

#[test]
fn a_rebuilt_plugin_library_is_not_served_from_the_caches() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["datasets", "example", "metrics"] {
        let file = library_file(&format!("anoflow-plugin-{name}"));
        std::fs::copy(build_dir().join(&file), plugins.join(&file)).unwrap();
    }
    let text = "name: rebuilt
nodes:
  data: { plugin: synthetic, with: { seed: 4, categories: [woven], train: 4, test_good: 2, test_defective: 4 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [grad.score] } }
";
    let p = write_pipeline(dir, "rebuilt.yaml", text);
    cached_and_uncached(dir, &p, "r1", &["--no-default-plugins"], &[&plugins]);
    assert_eq!(node(&dir.join("r1"), "grad")["samples"], 6);
    cached_and_uncached(dir, &p, "r2", &["--no-default-plugins"], &[&plugins]);
    assert_eq!(node(&dir.join("r2"), "grad")["cached"], 6);

    // The library file changes (same name, same version, other bytes) and still loads.
    let lib = plugins.join(library_file("anoflow-plugin-example"));
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&lib, bytes).unwrap();
    cached_and_uncached(dir, &p, "r3", &["--no-default-plugins"], &[&plugins]);
    let grad = node(&dir.join("r3"), "grad");
    assert_eq!((grad["samples"].as_u64(), grad["cached"].as_u64()), (Some(6), Some(0)), "{grad}");
    assert_eq!(grad["library_version"], env!("CARGO_PKG_VERSION"));
}

// ---- merge ----------------------------------------------------------------------------

const THR: &str = "name: thr
vars: { seed: 5 }
nodes:
  data: { plugin: synthetic, with: { seed: \"{{seed}}\", categories: [woven], train: 8, test_good: 2, test_defective: 4 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  thr: { plugin: threshold-mean-std, fit: train, with: { k: 3 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask] } }
";

fn merge(dir: &Path, out: &Path, runs: &[&Path]) -> Run {
    let mut args = vec!["merge", "--out", out.to_str().unwrap()];
    args.extend(runs.iter().map(|r| r.to_str().unwrap()));
    anoflow(dir, &args, &[])
}

#[test]
fn merge_refuses_shards_of_different_runs_and_names_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = write_pipeline(dir, "thr.yaml", THR);
    let other =
        write_pipeline(dir, "other.yaml", &THR.replace("masks: [thr.mask]", "masks: [thr.mask], scores: [grad.score]"));
    let shard = |name: &str, pipeline: &Path, i: usize, extra: &[&str]| {
        let out = dir.join(name);
        let shard = format!("{i}/2");
        let mut args = vec!["--shard", shard.as_str(), "--shard-by", "sample", "--no-cache"];
        args.extend_from_slice(extra);
        let r = run(dir, pipeline, &out, &args, &[]);
        assert_eq!(r.code, 0, "{}", r.all());
        out
    };
    let s0 = shard("s0", &p, 0, &[]);
    let s1 = shard("s1", &p, 1, &[]);
    let cases = [
        (shard("k4", &p, 1, &["--set", "thr.k=4"]), "`nodes.thr.with.k` is `3`", "`4`"),
        (shard("seed6", &p, 1, &["--set", "vars.seed=6"]), "seed", "`6`"),
        (shard("other", &other, 1, &[]), "nodes.eval.inputs.scores", "absent"),
    ];
    for (run_dir, key, value) in &cases {
        let r = merge(dir, &dir.join("m"), &[&s0, run_dir]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("are not shards of one run: pipeline.expanded.yaml:"), "{}", r.stderr);
        assert!(r.stderr.contains(key) && r.stderr.contains(value), "{key} / {value}: {}", r.stderr);
        assert!(!dir.join("m").exists(), "nothing is written for a refused merge");
    }

    // --out at a shard, or inside one, is refused and the shard is left as it was.
    let before = std::fs::read(s1.join("shard-1/eval/results.json")).unwrap();
    for out in [s1.clone(), s1.join("shard-1"), s1.join("shard-1/merged")] {
        let r = merge(dir, &out, &[&s0, &s1]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("choose another directory"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read(s1.join("shard-1/eval/results.json")).unwrap(), before);
    assert_eq!(read_json(&s1.join("shard-1/run.json"))["status"], "completed");

    let r = merge(dir, &dir.join("m"), &[&s0, &s1]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(read_json(&dir.join("m/run.json"))["status"], "completed");
}

/// The shipped quickstart (small settings) run whole and as 3 shards merged: results.json,
/// and every file of every sink (the report's index.html and images included), are the same
/// bytes.
#[test]
fn the_quickstart_merges_into_exactly_the_files_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = workspace_root().join("pipelines/quickstart.yaml");
    let cache = dir.join("cache");
    let small = small_quickstart_args(&["pill", "tiles"], &cache);
    let small: Vec<&str> = small.iter().map(String::as_str).collect();
    let whole = dir.join("whole");
    let r = run(dir, &p, &whole, &small, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut shards = Vec::new();
    for i in 0..3 {
        let out = dir.join(format!("shard{i}"));
        let shard = format!("{i}/3");
        let mut args = small.to_vec();
        args.extend(["--shard", shard.as_str(), "--shard-by", "sample"]);
        let r = run(dir, &p, &out, &args, &[]);
        assert_eq!(r.code, 0, "{}", r.all());
        shards.push(out);
    }
    let merged = dir.join("merged");
    let refs: Vec<&Path> = shards.iter().map(PathBuf::as_path).collect();
    let r = merge(dir, &merged, &refs);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut compared = 0;
    for sink in ["eval", "report"] {
        let files = files_below(&whole.join(sink));
        assert!(!files.is_empty(), "{sink} wrote nothing");
        for file in files {
            let rel = file.strip_prefix(&whole).unwrap();
            same_file(&file, &merged.join(rel));
            compared += 1;
        }
        assert_eq!(
            files_below(&whole.join(sink)).len(),
            files_below(&merged.join(sink)).len(),
            "{sink}: the same files"
        );
    }
    assert!(compared > 20, "{compared} files compared");
}

// ---- run directories ------------------------------------------------------------------

const LIGHT: &str = "name: light
nodes:
  data: { plugin: synthetic, with: { seed: 5, categories: [woven], train: 6, test_good: 2, test_defective: 4 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [grad.score] } }
  report: { plugin: report, inputs: { gt: data.mask, scores: [grad.score] } }
";

#[test]
fn a_run_owns_its_directory_and_replace_clears_only_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = write_pipeline(dir, "light.yaml", LIGHT);
    let out = dir.join("run");
    assert_eq!(run(dir, &p, &out, &["--no-cache"], &[]).code, 0);
    let stale = out.join("report/panels/999_stale.png");
    std::fs::write(&stale, b"from an earlier run").unwrap();

    let r = run(dir, &p, &out, &["--no-cache"], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("not empty (it holds an earlier run)") && r.stderr.contains("--replace"), "{}", r.stderr);
    assert!(stale.is_file(), "a refused run touches nothing");

    let r = run(dir, &p, &out, &["--no-cache", "--replace"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!stale.exists(), "--replace clears the earlier run's files");
    assert_eq!(read_json(&out.join("run.json"))["status"], "completed");

    // A directory that is not a run is never cleared.
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), b"keep").unwrap();
    let r = run(dir, &p, &mine, &["--no-cache", "--replace"], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("refusing to delete its contents"), "{}", r.stderr);
    assert!(mine.join("notes.txt").is_file());
}

#[test]
fn a_terminated_run_says_interrupted_and_leaves_nothing_of_the_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let quick = write_pipeline(dir, "light.yaml", LIGHT);
    let out = dir.join("run");
    assert_eq!(run(dir, &quick, &out, &["--no-cache"], &[]).code, 0);
    assert!(out.join("eval/results.json").is_file());

    let long = write_pipeline(
        dir,
        "long.yaml",
        &LIGHT.replace(
            "train: 6, test_good: 2, test_defective: 4",
            "train: 4, test_good: 200, test_defective: 200, size: 512",
        ),
    );
    let child = std::process::Command::new(anoflow_bin())
        .current_dir(dir)
        .args(["run", long.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q", "--replace", "--no-cache"])
        .args(["--in-flight", "4", "--threads", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs, run.json says so.
    let start = Instant::now();
    let status =
        || std::fs::read_to_string(out.join("run.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
    while !status().is_some_and(|s| s["status"] == "running") || !out.join("plugins.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never said `running`");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!out.join("eval/results.json").exists(), "the earlier run's results are gone at the start");
    std::thread::sleep(Duration::from_millis(500));
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let report = read_json(&out.join("run.json"));
    assert_eq!(report["status"], "interrupted", "{report}");
    assert!(report["message"].as_str().unwrap().contains("interrupted after"), "{report}");
    assert!(!out.join("eval/results.json").exists() && !out.join("report/index.html").exists());
}
