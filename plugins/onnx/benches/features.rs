//! Images/s of the default backbone (MobileNetV2, outputs features.7.expand + features.14.expand)
//! at 224x224 through the Rust path, batch 1 and 8, and peak RSS. Run by tools/bench_features.sh,
//! which runs the same model through Python's onnxruntime right after.
//!
//! `cargo bench -p anoflow-plugin-onnx --bench features -- [--threads N] [--seconds S]`

use std::time::{Duration, Instant};

use anoflow_plugin_onnx::{config, FeatureExtractor, OnnxFeatures};
use anoflow_sdk::{
    harness::{inputs, meta, scratch_dir, StageHarness},
    prelude::*,
};
use serde_json::json;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs `f` (which processes `per_call` images) in 5 rounds of `budget / 5`; returns the best
/// and the median round's images/s (the best is the least disturbed by other processes).
fn rate(budget: Duration, per_call: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..3 {
        f();
    }
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut images = 0;
            while start.elapsed() < budget / 5 {
                f();
                images += per_call;
            }
            images as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    (rounds[4], rounds[2])
}

fn photo(i: usize) -> Image {
    // A deterministic textured 224x224 image (content does not change the cost of a CNN).
    let px = (0..224 * 224 * 3).map(|p| ((p * 31 + i * 17) % 251) as u8).collect();
    Image::from_u8(224, 224, 3, px).expect("224x224x3 image")
}

fn main() {
    let threads = arg("--threads", 2.0) as usize;
    let budget = Duration::from_secs_f64(arg("--seconds", 5.0));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let params = json!({"model": "mobilenet_v2", "threads": threads, "execution_provider": "cpu"});

    let ctx = CreateContext {
        node_id: "bench".into(),
        params_json: params.to_string().into(),
        base_dir: root.to_string_lossy().as_ref().into(),
        work_dir: ".".into(),
        threads: 1,
        inputs: Default::default(),
    };
    let settings = config::ModelSettings {
        model: Model("mobilenet_v2".into()),
        input_size: None,
        mean: None,
        std: None,
        runtime: anoflow_plugin_onnx::params::RuntimeParams { threads, provider: anoflow_plugin_onnx::Provider::Cpu },
    };
    let outputs = vec!["features.7.expand".to_string(), "features.14.expand".to_string()];
    // Cut down to the two maps, as the stage does.
    let loaded = config::load(&settings, &ctx, |_| outputs.clone())
        .expect("run tools/fetch_onnxruntime.sh and tools/prepare_default_model.py");
    let fx = FeatureExtractor::new(loaded.model, loaded.preprocess, outputs).expect("extractor");
    let images: Vec<Image> = (0..8).map(photo).collect();

    let b1 = rate(budget, 1, || {
        fx.extract(&[(&images[0], "b")]).expect("batch 1");
    });
    let batch: Vec<(&Image, &str)> = images.iter().map(|i| (i, "b")).collect();
    let b8 = rate(budget, 8, || {
        fx.extract(&batch).expect("batch 8");
    });

    // A work directory of its own, not the shared temp dir: removed when `work` is dropped.
    let work = scratch_dir("bench-onnx-features");
    let stage = StageHarness::with_dirs::<OnnxFeatures>(json!({"threads": threads}), &root.join("pipelines"), &work)
        .expect("stage");
    let stage_rate = rate(budget, 1, || {
        stage.process(&meta("b"), inputs(vec![("image", images[1].clone().into())])).expect("stage");
    });

    for (what, (best, median)) in [("batch=1", b1), ("batch=8", b8), ("stage onnx-features batch=1", stage_rate)] {
        println!(
            "rust   threads={threads} {what}: best {best:.1} images/s ({:.2} ms/image), median {median:.1}",
            1000.0 / best
        );
    }
    println!("rust  peak RSS MB={:.0}", peak_rss_mb());
}
