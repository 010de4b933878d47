//! Loading + `resize-crop` throughput: writes N (default 1,000) synthetic 256x256 PNGs in the
//! MVTec AD layout to a temporary directory, then loads each through the `mvtec-ad` source
//! and resizes / crops it (shorter side 256, centre crop 224) with the `anoflow-imaging` calls
//! the `resize-crop` stage makes (image: antialiased bilinear, mask: nearest), single-threaded
//! and with rayon over samples (as the host runs them). The stage itself lives in another
//! plugin library, and two plugin rlibs cannot be linked into one binary (each exports the
//! plugin root symbols), hence the direct calls.
//!
//! Then the image part of `resize-crop` alone on larger u8 RGB images (256x256, 768x1024,
//! 2000x3000; 16000x16000 with `ANOFLOW_BENCH_GIANT=1`), best of 3: in place, as the stage does
//! it (`resize_region`), against a whole f32 copy, the whole resized image and then the crop,
//! as it did before.
//!
//! `cargo bench -p anoflow-plugin-datasets --bench load_resize` (N from `ANOFLOW_BENCH_N`).

use std::time::Instant;

use anoflow_plugin_datasets::MvtecAd;
use anoflow_scene::{Category, SynthConfig};
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

/// Milliseconds per call of `f`, best of 3 rounds of `reps` calls.
fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            (0..reps).for_each(|_| f());
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .fold(f64::MAX, f64::min)
}

fn resize_crop_alone() {
    use anoflow_imaging::{center_crop, resize, resize_region, shorter_side_size, Interp, Region};
    let mut sizes = vec![(256usize, 256usize, 200usize), (768, 1024, 20), (2000, 3000, 3)];
    if std::env::var_os("ANOFLOW_BENCH_GIANT").is_some() {
        sizes.push((16_000, 16_000, 1));
    }
    for (h, w, reps) in sizes {
        let px: Vec<u8> = (0..h * w * 3).map(|i| (i % 251) as u8).collect();
        let (nh, nw) = shorter_side_size(h, w, 256);
        let region = Region::center(nh, nw, 224, 224).expect("crop");
        let interp = Interp::BilinearAntialias;
        let in_place = best_ms(reps, || {
            std::hint::black_box(resize_region(&px, h, w, 3, nh, nw, region, interp).expect("resize"));
        });
        let whole = best_ms(reps, || {
            let copy: Vec<f32> = px.iter().map(|&v| f32::from(v)).collect();
            let resized = resize(&copy, h, w, 3, nh, nw, interp).expect("resize");
            std::hint::black_box(center_crop(&resized, nh, nw, 3, 224, 224).expect("crop"));
        });
        println!(
            "resize-crop of a {h}x{w} RGB u8 image to 224x224: {in_place:.2} ms in place, {whole:.2} ms through a whole f32 copy ({} MiB more)",
            (h * w * 3 * 4 + nh * nw * 3 * 4) >> 20
        );
    }
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
    resize_crop_alone();
}
