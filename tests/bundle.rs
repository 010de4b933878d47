//! Deployment bundles end to end: a small two-category quickstart is run, exported, and the
//! bundle predicts from a copy in another directory with a copy of the binary and the plugin
//! libraries, the cache moved away and neither the checkout nor the dataset in reach. The
//! masks must equal the run's, bit for bit. Each bad input has its own test.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anoflow_e2e::{anoflow_bin, build_dir, files_below, local_user_dirs, small_quickstart_args, workspace_root, Run};
use serde_json::Value;

/// The quickstart with a `write-png` sink of the source images and the deployed mask.
fn quickstart_with_pngs(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("pipelines/quickstart.yaml")).unwrap();
    let png = "nodes:\n  png:\n    plugin: write-png\n    inputs: { image: data.image, masks: [best.mask] }\n";
    let text = text.replacen("nodes:\n", png, 1);
    assert!(text.contains("plugin: write-png"), "the quickstart has a `nodes:` line");
    let path = dir.join("quickstart-png.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `anoflow ARGS` from `cwd`, with the user's directories under `cwd`.
fn anoflow_in(bin: &Path, cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd).args(args).env_remove("ANOFLOW_PLUGIN_PATH");
    local_user_dirs(&mut cmd, cwd);
    cmd.output().expect("run anoflow").into()
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files_below(from) {
        let dest = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap();
    }
}

/// ONNX Runtime's library as the tests' environment gives it, or the checkout's copy.
fn onnxruntime() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).filter(|p| p.is_file()) {
        return p;
    }
    let dir = workspace_root().join(".cache/onnxruntime");
    let mut libs: Vec<PathBuf> = files_below(&dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
        .collect();
    libs.sort();
    libs.pop().expect("ONNX Runtime: set ORT_DYLIB_PATH or run tools/setup.sh")
}

fn decode_png(path: &Path) -> (usize, usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.height as usize, info.width as usize, info.color_type.samples(), buf)
}

fn write_png(path: &Path, h: usize, w: usize, color: png::ColorType, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut enc = png::Encoder::new(std::fs::File::create(path).unwrap(), w as u32, h as u32);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

/// A run, its bundle, and an installation elsewhere: `bin/` with the binary, the plugin
/// libraries and ONNX Runtime; `bundle/`, a copy of the export; `images/<id>.png`, the run's
/// test images.
struct Fixture {
    root: PathBuf,
    run: PathBuf,
    bin: PathBuf,
    bundle: PathBuf,
    images: PathBuf,
    ids: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // One directory per checkout, cleared at each start: never in the checkout (predict
        // must not find its models there), never left behind more than once.
        let checkout =
            workspace_root().display().to_string().bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let root = std::env::temp_dir().join(format!("anoflow-e2e-bundle-{checkout:016x}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let pipeline = quickstart_with_pngs(&root);
        let cache = root.join("cache");
        let small = small_quickstart_args(&["pill", "tiles"], &cache);
        let small: Vec<&str> = small.iter().map(String::as_str).collect();
        let run = root.join("run");
        let cwd = workspace_root();
        let p = pipeline.to_str().unwrap();
        let mut args = vec!["run", p, "--out", run.to_str().unwrap(), "--quiet"];
        args.extend(&small);
        let r = anoflow_in(&anoflow_bin(), &cwd, &args);
        assert_eq!(r.code, 0, "run: {}", r.all());
        let exported = root.join("exported");
        let mut args = vec!["export", p, "--out", exported.to_str().unwrap(), "--run", run.to_str().unwrap()];
        args.extend(["--mask", "best.mask"]);
        args.extend(&small);
        let r = anoflow_in(&anoflow_bin(), &cwd, &args);
        assert_eq!(r.code, 0, "export: {}", r.all());

        // Another place: the binary, the libraries, ONNX Runtime, the bundle and the images.
        let install = root.join("elsewhere");
        let bin = install.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(anoflow_bin(), bin.join("anoflow")).unwrap();
        for lib in std::fs::read_dir(build_dir()).unwrap().flatten().map(|e| e.path()) {
            let name = lib.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("libanoflow_plugin_") && name.ends_with(".so") {
                std::fs::copy(&lib, bin.join(&name)).unwrap();
            }
        }
        let ort = onnxruntime();
        std::fs::copy(&ort, bin.join(ort.file_name().unwrap())).unwrap();
        let bundle = install.join("bundle");
        copy_dir(&exported, &bundle);
        std::fs::remove_dir_all(&exported).unwrap();
        std::fs::rename(&cache, root.join("cache-out-of-reach")).unwrap();
        let images = install.join("images");
        let mut ids = Vec::new();
        let pngs = run.join("png");
        for file in files_below(&pngs).into_iter().filter(|f| f.ends_with("image.png")) {
            let id = file.parent().unwrap().strip_prefix(&pngs).unwrap().to_string_lossy().into_owned();
            let dest = images.join(format!("{id}.png"));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&file, &dest).unwrap();
            ids.push(id);
        }
        assert_eq!(ids.len(), 2 * (3 + 6), "{ids:?}");
        Fixture { root, run, bin: bin.join("anoflow"), bundle, images, ids }
    })
}

/// `anoflow` from the installation elsewhere, run from there, ONNX Runtime found beside it.
fn deployed(f: &Fixture, args: &[&str]) -> Run {
    let cwd = f.bin.parent().unwrap().parent().unwrap();
    let mut cmd = Command::new(&f.bin);
    cmd.current_dir(cwd).args(args).env_remove("ANOFLOW_PLUGIN_PATH").env_remove("ORT_DYLIB_PATH");
    local_user_dirs(&mut cmd, cwd);
    cmd.output().expect("run the deployed anoflow").into()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn new_dir(f: &Fixture, name: &str) -> PathBuf {
    let dir = f.root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn deployed_masks_equal_the_evaluation_runs_masks() {
    let f = fixture();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(f.bundle.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(manifest["categories"], serde_json::json!(["pill", "tiles"]));
    assert!(manifest["metrics"]["eval"]["records"].is_array(), "the evaluation run's metrics: {}", manifest["metrics"]);
    assert!(!manifest["category_settings"]["pill"].as_object().unwrap().is_empty(), "calibrated settings per category");
    let pipeline = std::fs::read_to_string(f.bundle.join("pipeline.yaml")).unwrap();
    for gone in ["plugin: synthetic\n", "segmentation-metrics", "write-png", "calibrate:", "synthetic-defects"] {
        assert!(!pipeline.contains(gone), "the bundle's pipeline still has `{gone}`:\n{pipeline}");
    }

    let verify = deployed(f, &["bundle", "verify", f.bundle.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{}", verify.all());
    let out = new_dir(f, "predicted");
    let r = deployed(
        f,
        &[
            "predict",
            f.bundle.to_str().unwrap(),
            f.images.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--in-flight",
            "4",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("images/s"), "{}", r.stderr);
    let predictions = lines(&out.join("predictions.jsonl"));
    assert_eq!(predictions.len(), f.ids.len());
    let mut marked = 0;
    for id in &f.ids {
        let line = predictions.iter().find(|l| l["id"] == id.as_str()).unwrap_or_else(|| panic!("no line for {id}"));
        let (h, w, _, deployed_mask) = decode_png(&out.join(format!("{id}.mask.png")));
        let (_, _, _, image) = decode_png(&f.images.join(format!("{id}.png")));
        assert_eq!(h * w * 3, image.len(), "{id}: the mask has the input's own size");
        let (rh, rw, _, run_mask) = decode_png(&f.run.join("png").join(id).join("mask_best.mask.png"));
        let (top, left) = ((h - rh) / 2, (w - rw) / 2);
        for y in 0..h {
            for x in 0..w {
                let inside = (top..top + rh).contains(&y) && (left..left + rw).contains(&x);
                let expected = if inside { run_mask[(y - top) * rw + (x - left)] } else { 0 };
                assert_eq!(deployed_mask[y * w + x], expected, "{id}: pixel ({y}, {x})");
            }
        }
        let area = deployed_mask.iter().filter(|&&v| v > 0).count();
        assert_eq!(line["mask_area"], area, "{id}");
        assert_eq!(line["anomalous"], area > 0, "{id}");
        let components: usize =
            line["components"].as_array().unwrap().iter().map(|c| c["area"].as_u64().unwrap() as usize).sum();
        assert_eq!(components, area, "{id}");
        assert!(line["image_score"].is_number() && line["timings_ms"]["total"].is_number(), "{line}");
        marked += usize::from(area > 0);
    }
    assert!(marked >= 6, "only {marked} images got a mask: the comparison would prove little");
    let throughput: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("throughput.json")).unwrap()).unwrap();
    assert_eq!(throughput["images"], f.ids.len());
    assert!(throughput["stages"].as_array().unwrap().iter().any(|s| s["node"] == "backbone"));
}

/// A directory with one good image and the given extra files.
fn inputs_with(f: &Fixture, name: &str, extra: impl FnOnce(&Path)) -> PathBuf {
    let dir = new_dir(f, name);
    let good = &f.ids[0];
    std::fs::copy(f.images.join(format!("{good}.png")), dir.join("good.png")).unwrap();
    extra(&dir);
    dir
}

#[test]
fn unreadable_and_wrong_channel_images_get_an_error_line_and_the_rest_goes_on() {
    let f = fixture();
    let dir = inputs_with(f, "bad-inputs", |dir| {
        std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nnot a png at all").unwrap();
        write_png(&dir.join("grey.png"), 256, 256, png::ColorType::Grayscale, &vec![128; 256 * 256]);
        // Another size (288 x 320): the good image on a wider, taller canvas.
        let (h, w, c, good) = decode_png(&dir.join("good.png"));
        let (bh, bw) = (288, 320);
        let mut bigger = vec![40u8; bh * bw * c];
        for y in 0..h {
            bigger[((y + 10) * bw + 20) * c..((y + 10) * bw + 20 + w) * c]
                .copy_from_slice(&good[y * w * c..(y + 1) * w * c]);
        }
        write_png(&dir.join("bigger.png"), bh, bw, png::ColorType::Rgb, &bigger);
    });
    let out = new_dir(f, "bad-inputs-out");
    let args = [
        "predict",
        f.bundle.to_str().unwrap(),
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--category",
        "pill",
    ];
    let r = deployed(f, &args);
    assert_eq!(r.code, 3, "images failed: exit code 3\n{}", r.all());
    let predictions = lines(&out.join("predictions.jsonl"));
    let by_id =
        |id: &str| predictions.iter().find(|l| l["id"] == id).unwrap_or_else(|| panic!("{id}: {predictions:?}"));
    assert!(by_id("broken")["error"].as_str().unwrap().contains("unreadable image"), "{}", by_id("broken"));
    assert!(by_id("grey")["error"].as_str().unwrap().contains("1 channel(s)"), "{}", by_id("grey"));
    assert!(by_id("good")["mask_area"].is_number(), "{}", by_id("good"));
    assert!(out.join("good.mask.png").is_file() && !out.join("grey.mask.png").exists());
    let (h, w, _, _) = decode_png(&out.join("bigger.mask.png"));
    assert_eq!((h, w), (288, 320), "the mask comes back at the image's own size");
    assert_eq!((by_id("bigger")["height"].as_u64(), by_id("bigger")["width"].as_u64()), (Some(288), Some(320)));
}

fn refused(f: &Fixture, bundle: &Path) -> String {
    let verify = deployed(f, &["bundle", "verify", bundle.to_str().unwrap()]);
    assert_ne!(verify.code, 0, "{}", verify.all());
    let out = f.root.join("never-written");
    let r =
        deployed(f, &["predict", bundle.to_str().unwrap(), f.images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(!out.exists(), "a refused bundle predicts nothing");
    assert!(verify.stderr.contains("refused"), "{}", verify.stderr);
    verify.stderr
}

fn bundle_copy(f: &Fixture, name: &str) -> PathBuf {
    let dir = f.root.join(name);
    copy_dir(&f.bundle, &dir);
    dir
}

#[test]
fn a_bundle_missing_a_file_is_refused_naming_it() {
    let f = fixture();
    let b = bundle_copy(f, "missing-file");
    let state = files_below(&b.join("states")).into_iter().next().expect("a state file");
    std::fs::remove_file(&state).unwrap();
    let rel = state.strip_prefix(&b).unwrap().to_string_lossy().into_owned();
    let err = refused(f, &b);
    assert!(err.contains(&format!("missing file {rel}")), "{err}");
}

#[test]
fn a_hand_edited_bundle_is_refused() {
    let f = fixture();
    let b = bundle_copy(f, "edited-pipeline");
    let path = b.join("pipeline.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("sigma: 4", "sigma: 5", 1)).unwrap();
    assert!(refused(f, &b).contains("pipeline.yaml was changed after export"));

    let b = bundle_copy(f, "edited-manifest");
    let path = b.join("bundle.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"pill\"", "\"pil1\"", 1)).unwrap();
    assert!(refused(f, &b).contains("bundle.json was edited after export"));
}

#[test]
fn a_bundle_from_another_sdk_version_or_without_its_libraries_is_refused() {
    let f = fixture();
    let b = bundle_copy(f, "other-sdk");
    let path = b.join("bundle.json");
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["sdk_abi"] = Value::from(999);
    // Signed again as export signs (digest of the manifest with an empty digest), so only the
    // version differs.
    manifest["digest"] = Value::from("");
    let digest = sha256_hex(serde_json::to_string(&manifest).unwrap().as_bytes());
    manifest["digest"] = Value::from(digest);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let err = refused(f, &b);
    assert!(err.contains("made with SDK ABI 999"), "{err}");

    let r = deployed(f, &["--no-default-plugins", "bundle", "verify", f.bundle.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not on the plugin path"), "{}", r.stderr);
}

#[test]
fn a_bundle_with_another_build_of_a_library_is_refused_naming_it() {
    let f = fixture();
    // The same libraries, one with a byte appended: it still loads, with the same name and
    // version, but it is not the build the bundle was made with.
    let plugins = new_dir(f, "rebuilt-plugins");
    for lib in std::fs::read_dir(f.bin.parent().unwrap()).unwrap().flatten().map(|e| e.path()) {
        let name = lib.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("libanoflow_plugin_") {
            std::fs::copy(&lib, plugins.join(&name)).unwrap();
        }
    }
    let rebuilt = plugins.join("libanoflow_plugin_postprocess.so");
    let mut bytes = std::fs::read(&rebuilt).unwrap();
    bytes.push(0);
    std::fs::write(&rebuilt, bytes).unwrap();
    let args = [
        "--no-default-plugins",
        "--plugins",
        plugins.to_str().unwrap(),
        "bundle",
        "verify",
        f.bundle.to_str().unwrap(),
    ];
    let r = deployed(f, &args);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("plugin library `anoflow-plugin-postprocess`"), "{}", r.stderr);
    assert!(r.stderr.contains("is another build"), "{}", r.stderr);
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = out.expect("sha256sum");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_full_disk_leaves_no_partial_file_and_the_error_names_the_path() {
    let f = fixture();
    let dir = inputs_with(f, "full-disk", |_| {});
    let out = new_dir(f, "full-disk-out");
    // Writes beyond 4 KiB fail with EFBIG (the signal it would raise is ignored): the mask PNG
    // fits, the score map PNG does not.
    let script = "trap '' XFSZ; ulimit -f 4; exec \"$0\" \"$@\"";
    let cwd = f.bin.parent().unwrap().parent().unwrap();
    let mut cmd = Command::new("sh");
    cmd.current_dir(cwd).arg("-c").arg(script).arg(&f.bin);
    cmd.args(["predict", f.bundle.to_str().unwrap(), dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    cmd.args(["--category", "pill", "--scores"]).env_remove("ORT_DYLIB_PATH").env_remove("ANOFLOW_PLUGIN_PATH");
    local_user_dirs(&mut cmd, cwd);
    let r: Run = cmd.output().unwrap().into();
    assert_ne!(r.code, 0, "{}", r.all());
    let score = out.join("good.score.png");
    assert!(r.stderr.contains(&format!("cannot write {}", score.display())), "{}", r.stderr);
    assert!(!score.exists(), "no partial score map");
    let leftovers: Vec<PathBuf> = files_below(&out)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp-")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(out.join("good.mask.png").is_file(), "the mask, written before, is whole");
}

#[test]
fn watch_predicts_new_images_until_terminated() {
    let f = fixture();
    let dir = inputs_with(f, "watched", |_| {});
    // The outputs land inside the watched directory: they must not be taken for new images.
    let out = dir.join("predictions");
    let cwd = f.bin.parent().unwrap().parent().unwrap();
    let mut cmd = Command::new(&f.bin);
    cmd.current_dir(cwd).env_remove("ORT_DYLIB_PATH").env_remove("ANOFLOW_PLUGIN_PATH");
    cmd.args(["predict", f.bundle.to_str().unwrap(), dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    cmd.args(["--category", "tiles", "--watch", "--poll-ms", "100", "--quiet"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    local_user_dirs(&mut cmd, cwd);
    let child = cmd.spawn().unwrap();
    let wait_for = |path: &Path| {
        let start = std::time::Instant::now();
        while !path.is_file() {
            assert!(start.elapsed().as_secs() < 120, "{} never appeared", path.display());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for(&out.join("good.mask.png"));
    // A new image, written under a hidden name and renamed into place as a copier would.
    let tmp = dir.join(".incoming.png");
    std::fs::copy(f.images.join(format!("{}.png", f.ids[1])), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("later.png")).unwrap();
    wait_for(&out.join("later.mask.png"));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 0, "a terminated watch ends cleanly\n{}", r.all());
    assert!(r.stderr.contains("predicted 2 images"), "{}", r.stderr);
    let ids: Vec<String> =
        lines(&out.join("predictions.jsonl")).iter().map(|l| l["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["good", "later"]);
}
