//! End-to-end: what a hostile but fair user can hand the binary (issue 15). A library planted
//! above the working directory, a pipeline name that leaves `runs/`, NUL / BOM / a second
//! document in a pipeline file, a FIFO on the plugin path, a closed standard output, and image
//! files that claim or carry gigabytes.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anoflow_e2e::{anoflow, anoflow_bin, workspace_root, write_pipeline, Run};

/// Runs `cmd`, killing it and failing the test if it runs longer than `limit` (a command
/// that blocks must fail the test, not hang it).
fn run_within(cmd: Command, limit: Duration) -> Run {
    run_measured(cmd, limit).0
}

/// [`run_within`], also returning the command's peak resident memory in bytes on Linux (0
/// elsewhere): its `VmHWM`, read at every poll, so as of at most 20 ms before it exited.
/// (`getrusage(RUSAGE_CHILDREN)` would give the largest child of the whole test process,
/// whichever test started it.)
fn run_measured(mut cmd: Command, limit: Duration) -> (Run, u64) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn anoflow");
    let started = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(high_water_mark(child.id()));
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!("anoflow did not finish within {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("collect output").into(), peak)
}

/// A running process's peak resident memory so far (`VmHWM`), in bytes; 0 if unknown.
fn high_water_mark(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().strip_suffix("kB"));
    kb.and_then(|v| v.trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"not a library").unwrap();
}

// ---- 5: where ONNX Runtime comes from ----

#[test]
fn doctor_never_takes_onnx_runtime_from_above_the_working_directory() {
    let shared = tempfile::tempdir().unwrap();
    touch(&shared.path().join(".cache/onnxruntime/libonnxruntime.so.1.99.0"));
    let cwd = shared.path().join("bundle/work");
    touch(&cwd.join(".cache/onnxruntime/libonnxruntime.so.1.99.0"));
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(&cwd).arg("doctor").env_remove("ORT_DYLIB_PATH").env_remove("ANOFLOW_PLUGIN_PATH");
    let r = run_within(cmd, Duration::from_secs(60));
    let runtime = r.stdout.split("ONNX Runtime").nth(1).unwrap_or_default().to_string();
    assert!(!runtime.contains("1.99.0") && !runtime.contains(&shared.path().display().to_string()), "{}", r.all());
    // The checkout this binary was built in has its own runtime (tools/fetch_onnxruntime.sh).
    let own = workspace_root().join(".cache/onnxruntime");
    if std::fs::read_dir(&own).is_ok_and(|mut d| d.any(|e| e.is_ok())) {
        assert!(runtime.contains("  ok   ") && runtime.contains(&own.display().to_string()), "{}", r.all());
        assert!(runtime.contains("found through the .cache/onnxruntime of the checkout"), "{}", r.all());
    }
}

#[test]
fn the_onnxruntime_flag_names_the_library_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libonnxruntime.so.1.23.0");
    touch(&lib);
    let r = anoflow(dir.path(), &["doctor", "--onnxruntime", lib.to_str().unwrap()], &[]);
    assert!(
        r.stdout.contains(&format!("ok   {} (version 1.23.0, found through ORT_DYLIB_PATH", lib.display())),
        "{}",
        r.all()
    );

    let r = anoflow(dir.path(), &["doctor", "--onnxruntime=/nonexistent/libonnxruntime.so.1.30.0"], &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--onnxruntime /nonexistent/libonnxruntime.so.1.30.0: not a file"), "{}", r.all());
}

// ---- 6: the pipeline name ----

const SMALL: &str = "nodes:
  data: { plugin: synthetic, with: { categories: [tiles], train: 4, test_good: 1, test_defective: 1, size: 64 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [grad.score] } }
";

#[test]
fn a_name_that_leaves_the_runs_directory_is_refused_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let escape = dir.path().join("escaped");
    for name in [escape.to_str().unwrap(), "../..", "../escaped"] {
        let p = write_pipeline(&work, "p.yaml", &format!("name: \"{name}\"\n{SMALL}"));
        let r = anoflow(&work, &["validate", p.to_str().unwrap()], &[]);
        assert_eq!(r.code, 1, "{name}: {}", r.all());
        assert!(r.stderr.contains("p.yaml:1:7: error: `name`"), "{name}: {}", r.all());
        let r = anoflow(&work, &["run", p.to_str().unwrap(), "-q", "--no-cache"], &[]);
        assert_eq!(r.code, 1, "{name}: {}", r.all());
        assert!(!escape.exists() && !work.join("runs").exists(), "{name}: the run wrote something");
    }
}

// ---- pipeline files: NUL, BOM, a second document ----

#[test]
fn nul_bom_and_a_second_document_are_handled_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("name: v\n{SMALL}");
    let validate = |file: &str, bytes: Vec<u8>| {
        std::fs::write(dir.path().join(file), bytes).unwrap();
        anoflow(dir.path(), &["validate", file], &[])
    };

    // A NUL after the first node used to cut the file there: "ok (1 nodes)".
    let nul = text.replacen("\n  grad", "\0\n  grad", 1).into_bytes();
    let r = validate("nul.yaml", nul);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("nul.yaml:3:") && r.stderr.contains("NUL character"), "{}", r.all());

    let r = validate("bom.yaml", [b"\xef\xbb\xbf".as_slice(), text.as_bytes()].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("bom.yaml: ok (3 nodes"), "{}", r.all());

    let r = validate("two.yaml", format!("{text}---\nname: w\nnodes: {{}}\n").into_bytes());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("two.yaml:6:1: error: not valid YAML: a second YAML document"), "{}", r.all());
}

// ---- a FIFO on the plugin path ----

#[cfg(unix)]
#[test]
fn a_fifo_on_the_plugin_path_is_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let fifo = plugins.join("libanoflow_plugin_evil.so");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::write(plugins.join("libhelper.so"), b"x").unwrap();

    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(dir.path()).arg("doctor").env("ANOFLOW_PLUGIN_PATH", &plugins);
    let r = run_within(cmd, Duration::from_secs(60));
    assert!(
        r.stdout.contains(&format!("SKIP {}: a FIFO (named pipe), not a regular file", fifo.display())),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains(&format!(
            "SKIP {}: does not match the plugin naming rule",
            plugins.join("libhelper.so").display()
        )),
        "{}",
        r.all()
    );

    // Every other command goes on with the rest of the plugin path.
    let p = write_pipeline(dir.path(), "p.yaml", &format!("name: v\n{SMALL}"));
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(dir.path()).args(["validate", p.to_str().unwrap()]).env("ANOFLOW_PLUGIN_PATH", &plugins);
    let r = run_within(cmd, Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}", r.all());
}

// ---- a closed standard output ----

#[cfg(unix)]
#[test]
fn a_closed_standard_output_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(anoflow_bin())
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn anoflow");
    // Close the reading end before anything is read, as `anoflow schema | head -0` does.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert!(out.status.success() || out.status.signal() == Some(13), "{:?}: {stderr}", out.status);
}

// ---- 7: images that claim or carry gigabytes ----

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend(crc32fast::hash(&out[4..]).to_be_bytes());
    out
}

/// A PNG of `w` x `h` pixels of colour type `color` (0 grey, 2 RGB, 6 RGBA), 8-bit, whose
/// IDAT holds `idat` (a zlib stream).
fn png_file(w: u32, h: u32, color: u8, idat: &[u8]) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    out.extend(chunk(b"IDAT", idat));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A zlib stream of `n` zero bytes in fixed-Huffman blocks: each 258-byte run is one
/// length/distance pair, so 16000 x 16000 pixels take a few hundred KB (the "746 KB PNG").
fn zlib_zeros(n: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        len: u32,
    }
    impl Bits {
        fn put(&mut self, value: u32, bits: u32) {
            self.acc |= value << self.len;
            self.len += bits;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u32, bits: u32) {
            let reversed = (0..bits).fold(0, |r, i| r | (((code >> i) & 1) << (bits - 1 - i)));
            self.put(reversed, bits);
        }
    }
    let mut b = Bits { out: vec![0x78, 0x01], acc: 0, len: 0 };
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman
    b.code(0x30, 8); // literal 0
    let mut left = n - 1;
    while left > 0 {
        let run = if left >= 258 {
            258
        } else if left >= 3 {
            left
        } else {
            0
        };
        if run == 0 {
            b.code(0x30, 8);
            left -= 1;
            continue;
        }
        if run == 258 {
            b.code(0xc5, 8); // length code 285: 258
        } else {
            // Length codes 257..284 with extra bits (RFC 1951, 3.2.5).
            const BASE: [u32; 29] = [
                3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163,
                195, 227, 258,
            ];
            const EXTRA: [u32; 29] =
                [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
            let i = (0..29).rev().find(|&i| BASE[i] <= run as u32).unwrap();
            let sym = 257 + i as u32;
            if sym < 280 {
                b.code(sym - 256, 7);
            } else {
                b.code(0xc0 + (sym - 280), 8);
            }
            b.put(run as u32 - BASE[i], EXTRA[i]);
        }
        b.code(0, 5); // distance code 0: distance 1
        left -= run;
    }
    b.code(0, 7); // end of block
    if b.len > 0 {
        b.put(0, 8 - b.len);
    }
    // Adler-32 of n zeros: a = 1, b = n mod 65521.
    let adler = ((n % 65521) as u32) << 16 | 1;
    b.out.extend(adler.to_be_bytes());
    b.out
}

/// A real, valid PNG of 16000 x 16000 black grey pixels: 256 MB decoded, a few hundred KB on
/// disk. Each row is a filter byte and 16000 zeros.
fn giant_black_png() -> Vec<u8> {
    png_file(16_000, 16_000, 0, &zlib_zeros(16_000 * 16_001))
}

/// A sparse file: `head`, then zeros up to `len` bytes (no disk used for them).
fn sparse_file(path: &Path, head: &[u8], len: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head).unwrap();
    f.set_len(len).unwrap();
}

fn small_png(path: &Path, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let rows: Vec<u8> =
        (0..32).flat_map(|y| std::iter::once(0).chain((0..32 * 3).map(move |x| value ^ (x + y) as u8))).collect();
    // Stored (uncompressed) deflate block: fine for 3 KB.
    let mut z = vec![0x78, 0x01, 1];
    z.extend((rows.len() as u16).to_le_bytes());
    z.extend((!(rows.len() as u16)).to_le_bytes());
    z.extend(&rows);
    let (mut a, mut b) = (1u32, 0u32);
    for &v in &rows {
        a = (a + u32::from(v)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend((b << 16 | a).to_be_bytes());
    std::fs::write(path, png_file(32, 32, 2, &z)).unwrap();
}

#[test]
fn the_test_helpers_make_valid_images() {
    // The hand-made zlib streams decode: the giant PNG is a real image, not a corrupt one.
    let dir = tempfile::tempdir().unwrap();
    small_png(&dir.path().join("imgs/good/a.png"), 3);
    let tiny = png_file(300, 2, 0, &zlib_zeros(2 * 301));
    std::fs::write(dir.path().join("imgs/good/zeros.png"), tiny).unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.yaml",
        "name: helpers\nnodes:\n  data: { plugin: folder, with: { train: [imgs/good], test: [imgs], validation_fraction: 0 } }\n  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }\n  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [grad.score] } }\n",
    );
    let r = anoflow(dir.path(), &["run", p.to_str().unwrap(), "-q", "--no-cache", "--out", "out"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("on 2 test samples"), "{}", r.all());
}

#[test]
fn keep_going_survives_images_that_claim_or_carry_gigabytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for i in 0..4 {
        small_png(&data.join(format!("train/{i}.png")), i as u8 * 40);
    }
    for i in 0..2 {
        small_png(&data.join(format!("test/good/ok{i}.png")), 7 + i as u8);
    }
    let bad = data.join("test/good");
    // 1. A valid 16000 x 16000 image of a few hundred KB: 256 MB decoded, 1 GB with its RGB copy.
    std::fs::write(bad.join("giant.png"), giant_black_png()).unwrap();
    // 2. A 1 KB file whose header claims 16000 x 16000 RGBA pixels.
    std::fs::write(bad.join("claims.png"), png_file(16_000, 16_000, 6, &zlib_zeros(10))).unwrap();
    // 3. A 32 x 32 PNG followed by 3 GB of zeros.
    let mut head = Vec::new();
    small_png(&dir.path().join("head.png"), 1);
    head.extend(std::fs::read(dir.path().join("head.png")).unwrap());
    sparse_file(&bad.join("trailing.png"), &head, 3 << 30);
    // 4. 3 GB of zeros named .png.
    sparse_file(&bad.join("zeros.png"), &[], 3 << 30);

    let p = write_pipeline(
        dir.path(),
        "p.yaml",
        "name: hostile\nnodes:\n  data: { plugin: folder, with: { train: [data/train], test: [data/test], validation_fraction: 0 } }\n  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }\n  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [grad.score] } }\n",
    );
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(dir.path())
        .args(["run", p.to_str().unwrap(), "--keep-going", "-q", "--no-cache", "--out", "run"])
        .env_remove("ANOFLOW_PLUGIN_PATH")
        .env("ANOFLOW_DECODE_BUDGET", "512M");
    let started = Instant::now();
    let (r, peak) = run_measured(cmd, Duration::from_secs(120));
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("on 6 test samples"), "{}", r.all());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report:#}");
    let failures = report["run"]["failures"].as_array().unwrap();
    let reason = |file: &str| -> String {
        let f =
            failures.iter().find(|f| f.to_string().contains(file)).unwrap_or_else(|| panic!("{file}: {failures:#?}"));
        f.to_string()
    };
    assert_eq!(failures.len(), 4, "{failures:#?}");
    assert!(reason("giant.png").contains("more than the whole decode budget of 536870912"), "{failures:#?}");
    assert!(reason("claims.png").contains("more than the whole decode budget"), "{failures:#?}");
    assert!(reason("trailing.png").contains("more than a 32x32 image can take"), "{failures:#?}");
    assert!(reason("zeros.png").contains("bytes 00 00 00 00 00 00 00 00"), "{failures:#?}");
    // Refused from their headers: nothing of their claimed or actual size was read or allocated.
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    eprintln!("peak resident memory of the run: {} MB", peak >> 20);
    #[cfg(target_os = "linux")]
    assert!(peak < 1 << 30, "peak resident memory of the run {peak} bytes");
}

/// The case at the default decode budget: four valid 746 KB PNGs of 16000 x 16000 RGB
/// pixels (768 MB decoded, 1 GB with the mask the source gives them) through `resize-crop`. Each
/// fits the budget, so all four are decoded; `resize-crop` reads them in place (it made a 3 GB
/// f32 copy of each, two at a time) and the chunk drops them once it has (it kept them to the
/// chunk's end). The run peaked at 10.1 GB before, 4.0 GB after.
#[test]
fn giant_images_within_the_default_budget_are_resized_without_copies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for i in 0..2 {
        small_png(&data.join(format!("train/{i}.png")), i as u8);
        small_png(&data.join(format!("test/good/ok{i}.png")), 9 + i as u8);
    }
    let giant = png_file(16_000, 16_000, 2, &zlib_zeros(16_000 * (3 * 16_000 + 1)));
    for i in 0..4 {
        std::fs::write(data.join(format!("test/good/giant{i}.png")), &giant).unwrap();
    }
    let p = write_pipeline(
        dir.path(),
        "p.yaml",
        "name: giants\nnodes:\n  data: { plugin: folder, with: { train: [data/train], test: [data/test], validation_fraction: 0 } }\n  resize: { plugin: resize-crop, with: { resize: 256, crop: 224 }, inputs: { image: data.image, mask: data.mask } }\n  grad: { plugin: gradient-magnitude, inputs: { image: resize.image } }\n  eval: { plugin: segmentation-metrics, inputs: { gt: resize.mask, scores: [grad.score] } }\n",
    );
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(dir.path())
        .args(["run", p.to_str().unwrap(), "--keep-going", "-q", "--no-cache", "--out", "run"])
        .env_remove("ANOFLOW_PLUGIN_PATH")
        .env_remove("ANOFLOW_DECODE_BUDGET");
    let (r, peak) = run_measured(cmd, Duration::from_secs(300));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("on 6 test samples"), "{}", r.all());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["run"]["failures"].as_array().unwrap().len(), 0, "{report:#}");
    // Every image, the four giants included, went through every node.
    for node in report["run"]["nodes"].as_array().unwrap() {
        assert_eq!(node["samples"], 6, "{node:#}");
    }
    // The giants were decoded (1 GB each), but neither copied nor kept past their resize.
    eprintln!("peak resident memory of the run: {} MB", peak >> 20);
    #[cfg(target_os = "linux")]
    assert!(peak > 1 << 30 && peak < 6 << 30, "peak resident memory of the run {peak} bytes");
}

/// A real image that fits the budget is decoded: images are refused for not fitting, not for
/// being large (8000 x 8000 grey: 64 MB decoded, 256 MB with its RGB copy, within 300 MB).
#[test]
fn a_large_image_within_the_budget_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for i in 0..2 {
        small_png(&data.join(format!("train/{i}.png")), i as u8);
    }
    std::fs::create_dir_all(data.join("test/good")).unwrap();
    std::fs::write(data.join("test/good/large.png"), png_file(8000, 8000, 0, &zlib_zeros(8000 * 8001))).unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.yaml",
        "name: giant\nnodes:\n  data: { plugin: folder, with: { train: [data/train], test: [data/test], validation_fraction: 0 } }\n  resize: { plugin: resize-crop, with: { resize: 64, crop: 64 }, inputs: { image: data.image, mask: data.mask } }\n  grad: { plugin: gradient-magnitude, inputs: { image: resize.image } }\n  eval: { plugin: segmentation-metrics, inputs: { gt: resize.mask, scores: [grad.score] } }\n",
    );
    let mut cmd = Command::new(anoflow_bin());
    cmd.current_dir(dir.path())
        .args(["run", p.to_str().unwrap(), "-q", "--no-cache", "--out", "run"])
        .env_remove("ANOFLOW_PLUGIN_PATH")
        .env("ANOFLOW_DECODE_BUDGET", "300M");
    let r = run_within(cmd, Duration::from_secs(300));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("on 1 test samples"), "{}", r.all());
}
