//! Loading + `resize-crop` throughput: writes N (default 1,000) synthetic 256x256 PNGs in the
//! MVTec AD layout to a temporary directory, then loads each through the `mvtec-ad` source
//! and resizes / crops it (256 -> 224) through the `resize-crop` stage, single-threaded and
//! with rayon over samples (as the host runs them).
//!
//! `cargo bench -p anoflow-plugin-imageops --bench load_resize` (N from `ANOFLOW_BENCH_N`).

use std::time::Instant;

use anoflow_plugin_datasets::synth::{Category, SynthConfig};
use anoflow_plugin_datasets::MvtecAd;
use anoflow_plugin_imageops::ResizeCrop;
use anoflow_sdk::harness::{scratch_dir, StageHarness};
use anoflow_sdk::prelude::*;
use anoflow_sdk::value::PortValue;
use rayon::prelude::*;

fn load_and_crop(source: &StageHarness, rc: &StageHarness, meta: &SampleMeta) -> usize {
    let loaded = source.load(meta).expect("load");
    let ins: Vec<PortValue> = loaded
        .0
        .into_iter()
        .map(|p| PortValue { port: p.port.clone(), source: format!("data.{}", p.port).into(), value: p.value })
        .collect();
    let out = rc.process(meta, ins).expect("resize-crop");
    out.mask("mask").height()
}

fn main() {
    let n: usize = std::env::var("ANOFLOW_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir = scratch_dir("bench-load-resize");
    let cfg = SynthConfig {
        seed: 1,
        categories: vec![Category::Woven],
        train: n,
        validation_fraction: 0.0,
        test_good: 0,
        test_defective: 0,
        size: 256,
        xyz: false,
    };
    let t = Instant::now();
    anoflow_plugin_datasets::write_mvtec_ad(&cfg, &dir).expect("write dataset");
    let write_s = t.elapsed().as_secs_f64();
    println!("wrote {n} 256x256 PNGs in {write_s:.2} s ({:.0} images/s, rendering included)", n as f64 / write_s);

    let source = StageHarness::new::<MvtecAd>(serde_json::json!({
        "root": dir.to_str().expect("utf-8 temp dir"), "validation_fraction": 0.0
    }))
    .expect("mvtec-ad");
    let rc = StageHarness::new::<ResizeCrop>(serde_json::json!({"resize": 256, "crop": 224})).expect("resize-crop");
    let t = Instant::now();
    let metas = source.list("train").expect("list");
    println!("listed {} samples in {:.1} ms", metas.len(), t.elapsed().as_secs_f64() * 1e3);

    let threads = rayon::current_num_threads();
    for (label, parallel) in [("1 thread", false), ("rayon", true)] {
        let t = Instant::now();
        let total: usize = if parallel {
            metas.par_iter().map(|m| load_and_crop(&source, &rc, m)).sum()
        } else {
            metas.iter().map(|m| load_and_crop(&source, &rc, m)).sum()
        };
        assert_eq!(total, 224 * metas.len());
        let s = t.elapsed().as_secs_f64();
        let threads = if parallel { threads } else { 1 };
        println!(
            "load + resize-crop, {label} ({threads} threads): {} images in {s:.2} s = {:.0} images/s ({:.2} ms/image/thread)",
            metas.len(),
            metas.len() as f64 / s,
            s * 1e3 * threads as f64 / metas.len() as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
