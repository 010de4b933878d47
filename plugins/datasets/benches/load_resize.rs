//! Loading + `resize-crop` throughput: writes N (default 1,000) synthetic 256x256 PNGs in the
//! MVTec AD layout to a temporary directory, then loads each through the `mvtec-ad` source
//! and resizes / crops it (shorter side 256, centre crop 224) with the `anoflow-imaging` calls
//! the `resize-crop` stage makes (image: antialiased bilinear, mask: nearest), single-threaded
//! and with rayon over samples (as the host runs them). The stage itself lives in another
//! plugin library, and two plugin rlibs cannot be linked into one binary (each exports the
//! plugin root symbols), hence the direct calls.
//!
//! `cargo bench -p anoflow-plugin-datasets --bench load_resize` (N from `ANOFLOW_BENCH_N`).

use std::time::Instant;

use anoflow_plugin_datasets::synth::{Category, SynthConfig};
use anoflow_plugin_datasets::MvtecAd;
use anoflow_sdk::harness::{scratch_dir, StageHarness};
use anoflow_sdk::prelude::*;
use rayon::prelude::*;

fn load_and_crop(source: &StageHarness, meta: &SampleMeta) -> usize {
    use anoflow_imaging::{center_crop, resize_nearest, resize_region, shorter_side_size, Interp, Region};
    let loaded = source.load(meta).expect("load");
    let Some(Value::Image(img)) = loaded.get("image") else { panic!("no image") };
    let mask = loaded.mask("mask");
    let (h, w, c) = (img.height(), img.width(), img.channels());
    let (nh, nw) = shorter_side_size(h, w, 256);
    let region = Region::center(nh, nw, 224, 224).expect("crop");
    let Pixels::U8(px) = img.pixels() else { panic!("not a u8 image") };
    let cropped = resize_region(px, h, w, c, nh, nw, region, Interp::BilinearAntialias).expect("resize");
    let out = Image::from_u8(224, 224, c as u32, cropped.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect())
        .expect("image");
    let m = resize_nearest(mask.data(), h, w, 1, nh, nw).expect("mask resize");
    let m = Mask::new(224, 224, center_crop(&m, nh, nw, 1, 224, 224).expect("mask crop")).expect("mask");
    out.height() + m.height() - 224
}

fn main() {
    let n: usize = std::env::var("ANOFLOW_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // Removed, with the dataset, when `dir` is dropped at the end of main.
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
    let t = Instant::now();
    let metas = source.list("train").expect("list");
    println!("listed {} samples in {:.1} ms", metas.len(), t.elapsed().as_secs_f64() * 1e3);

    let threads = rayon::current_num_threads();
    for (label, parallel) in [("sequential", false), ("rayon", true)] {
        let t = Instant::now();
        let total: usize = if parallel {
            metas.par_iter().map(|m| load_and_crop(&source, m)).sum()
        } else {
            metas.iter().map(|m| load_and_crop(&source, m)).sum()
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
}
