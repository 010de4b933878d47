//! Per-image TTT4AS benchmark at 224x224 with 1536-dim features at stride 8 (28x28):
//! pseudo-labels + training-feature sampling + standardization + fit + predict, as the
//! stage runs it (single thread). Also: peak heap per image in flight (counting allocator),
//! the dual-CD linear SVM against linfa-svm's linear SMO on the same training set, and
//! `.npy` files of the same case for the Python reference (`tools/bench_ttt4as_reference.py`).
//!
//! `cargo bench -p anoflow-plugin-ttt4as --bench ttt4as -- [--out DIR] [--runs N]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anoflow_imaging::resample::Grid;
use anoflow_plugin_ttt4as::{
    classifier::{kernel_svm, linear_svm, ClassifierSpec, Kernel, KernelSvmConfig, LinearSvmConfig, TrainingSet},
    pseudo_labels::pseudo_labels,
    synthetic::{f1, make_case, CaseSpec},
    ttt::{prepare_training, run, NamedFeatures, TttConfig},
};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn median_ms(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 9 / 10], v[0])
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64, f64) {
    for _ in 0..3 {
        std::hint::black_box(f());
    }
    let times = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median_ms(times)
}

/// Minimal `.npy` (v1.0, little-endian) writer.
fn write_npy(path: &std::path::Path, descr: &str, shape: &[usize], bytes: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    let tmp = path.with_extension("npy.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, path)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = arg("--runs").map_or(Ok(50), |v| v.parse())?;
    let out_dir = std::path::PathBuf::from(arg("--out").unwrap_or_else(|| "target/bench-ttt4as".into()));

    let case = make_case(&CaseSpec::default())?;
    let (h, w) = (case.size, case.size);
    let fm = &case.features[0];
    let feats = [NamedFeatures { name: "backbone.features", map: fm }];
    let cfg = TttConfig::default();
    println!(
        "case: score {h}x{w}, features {}x{}x{} (stride {}), defaults {:?}",
        fm.height(),
        fm.width(),
        fm.channels(),
        fm.stride(),
        cfg.classifier
    );

    // Whole per-image step, as the stage runs it.
    let out = run(&case.score, h, w, &feats, &cfg, 42)?;
    println!(
        "result: {} anomalous + {} nominal labels, {:?}, mask {} px, F1 vs defect {:.3}",
        out.labels.anomalous.len(),
        out.labels.nominal.len(),
        out.outcome,
        out.mask.iter().filter(|&&m| m == 1).count(),
        f1(&out.mask, &case.gt)
    );
    let (med, p90, min) = time(runs, || run(&case.score, h, w, &feats, &cfg, 42));
    let step_median = med;
    println!("ttt4as per image (pseudo-labels + sampling + standardize + fit + predict): median {med:.2} ms, p90 {p90:.2} ms, min {min:.2} ms ({runs} runs)");
    let (lmed, _, _) = time(runs, || pseudo_labels(&case.score, h, w, &cfg.labels, 42));
    println!("  of which pseudo-labels: median {lmed:.2} ms");

    // Heap per image in flight: what one run allocates above the inputs it is given.
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    std::hint::black_box(run(&case.score, h, w, &feats, &cfg, 42)?);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let inputs = (case.score.len() + fm.data().len()) * 4;
    println!(
        "memory per image in flight: peak {:.1} MB allocated by the step, plus {:.1} MB of inputs (score map + features)",
        peak as f64 / 1e6,
        inputs as f64 / 1e6
    );
    let full_res = fm.channels() * h * w * 4;
    println!("  (the upsampled feature map the linearity trick avoids: {:.0} MB)", full_res as f64 / 1e6);

    // Dual CD against linfa-svm (linear kernel, SMO) on the same standardized training set.
    let labels = pseudo_labels(&case.score, h, w, &cfg.labels, 42);
    let grids = [Grid::new(fm.height(), fm.width(), h, w)];
    let tr = prepare_training(&labels, w, &feats, &grids, &cfg);
    let set = TrainingSet { x: &tr.x, y: &tr.y, d: tr.d, class_weight: tr.class_weight };
    // Evaluation data: every feature cell, standardized, labelled by the defect mask at its centre.
    let (gh, gw, c) = (fm.height(), fm.width(), fm.channels());
    let mut cells = fm.data().to_vec();
    tr.standardizer.apply(&mut cells);
    let stride = fm.stride() as usize;
    let cell_gt: Vec<bool> = (0..gh * gw)
        .map(|p| case.gt[((p / gw) * stride + stride / 2) * w + (p % gw) * stride + stride / 2] == 1)
        .collect();
    let acc = |decide: &dyn Fn(&[f32]) -> f32, rows: &[f32], truth: &[bool]| -> f64 {
        let hits = rows.chunks_exact(c).zip(truth).filter(|(r, &t)| (decide(r) > 0.0) == t).count();
        hits as f64 / truth.len() as f64
    };
    let train_truth: Vec<bool> = tr.y.iter().map(|&y| y > 0.0).collect();
    println!(
        "classifier comparison on one image's training set: n = {}, d = {}, C = 0.001, balanced",
        set.len(),
        set.d
    );
    for (name, spec) in [
        ("dual-CD L2-loss (default)", LinearSvmConfig::default()),
        ("dual-CD L1-loss", LinearSvmConfig { loss: linear_svm::Loss::L1, ..Default::default() }),
        ("dual-CD L2-loss tol 1e-4", LinearSvmConfig { tol: 1e-4, ..Default::default() }),
    ] {
        let (model, info) = linear_svm::fit(&set, &spec, 42);
        let (med, _, _) = time(runs, || linear_svm::fit(&set, &spec, 42));
        let d = |r: &[f32]| model.decision(r);
        println!(
            "  {name:<28} fit median {med:8.2} ms, train acc {:.3}, cell acc vs defect {:.3}, {info:?}",
            acc(&d, &tr.x, &train_truth),
            acc(&d, &cells, &cell_gt)
        );
    }
    let linfa_cfg = KernelSvmConfig { c: 0.001, kernel: Kernel::Linear, tol: 1e-3, exact: false };
    let t = Instant::now();
    let (model, info) = kernel_svm::fit(&set, &linfa_cfg)?;
    let once = t.elapsed().as_secs_f64() * 1e3;
    let (med, _, _) = time(runs.min(10), || kernel_svm::fit(&set, &linfa_cfg));
    let d = |r: &[f32]| model.decision(r);
    println!(
        "  {:<28} fit median {med:8.2} ms (first {once:.1} ms), train acc {:.3}, cell acc vs defect {:.3}, {} SVs",
        "linfa-svm linear SMO",
        acc(&d, &tr.x, &train_truth),
        acc(&d, &cells, &cell_gt),
        info.support_vectors
    );
    // Other classifier kinds through the whole step.
    for (name, json) in [
        ("logistic", serde_json::json!({"kind": "logistic"})),
        ("kernel-svm gaussian", serde_json::json!({"kind": "kernel-svm"})),
    ] {
        let spec = ClassifierSpec::from_json(json.as_object().ok_or("object")?)?;
        let kcfg = TttConfig { classifier: spec, ..TttConfig::default() };
        let out = run(&case.score, h, w, &feats, &kcfg, 42)?;
        let (med, _, _) = time(runs.min(10), || run(&case.score, h, w, &feats, &kcfg, 42));
        println!("  whole step with {name:<20} median {med:8.2} ms, F1 vs defect {:.3}", f1(&out.mask, &case.gt));
    }

    std::fs::create_dir_all(&out_dir)?;
    write_npy(&out_dir.join("score.npy"), "<f4", &[h, w], &f32_bytes(&case.score))?;
    write_npy(&out_dir.join("features.npy"), "<f4", &[gh, gw, c], &f32_bytes(fm.data()))?;
    write_npy(&out_dir.join("gt.npy"), "|u1", &[h, w], &case.gt)?;
    write_npy(&out_dir.join("rust_mask.npy"), "|u1", &[h, w], &out.mask)?;
    std::fs::write(out_dir.join("rust_median_ms.txt"), format!("{step_median:.4}\n"))?;
    println!("wrote the case to {}", out_dir.display());
    Ok(())
}
