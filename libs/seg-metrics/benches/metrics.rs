//! All metrics over 1,000 test images of 224x224 with 2 mask sources and 1 score source
//! (the budget: at most 2 s). Run: `cargo bench -p anoflow-seg-metrics --bench metrics`.
//! Prints the time to accumulate (the sink's `consume`), to compute every figure (sort +
//! sweeps) and, separately, to write the accumulator file.

use std::time::Instant;

use anoflow_seg_metrics::accumulate::{Accumulators, SampleView};
use anoflow_seg_metrics::{ranking, results};

struct Data {
    id: String,
    anomalous: bool,
    gt: Vec<u8>,
    thr: Vec<u8>,
    ttt: Vec<u8>,
    score: Vec<f32>,
}

/// splitmix64
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e3779b97f4a7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn unit(state: &mut u64) -> f32 {
    (next(state) >> 40) as f32 / (1u64 << 24) as f32
}

fn make(n: usize, h: usize, w: usize) -> Vec<Data> {
    let mut st = 42u64;
    (0..n)
        .map(|i| {
            let anomalous = i % 4 != 0;
            let (cy, cx, r) = (30.0 + unit(&mut st) * 160.0, 30.0 + unit(&mut st) * 160.0, 5.0 + unit(&mut st) * 25.0);
            let mut gt = vec![0u8; h * w];
            let mut score = vec![0f32; h * w];
            for y in 0..h {
                for x in 0..w {
                    let d = ((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)).sqrt();
                    gt[y * w + x] = u8::from(anomalous && d < r);
                    let bump = if anomalous { (-(d / r).powi(2)).exp() } else { 0.0 };
                    // Continuous scores: (almost) every pixel is a distinct threshold, the worst case.
                    score[y * w + x] = bump + 0.6 * unit(&mut st);
                }
            }
            let thr = score.iter().map(|&v| u8::from(v > 0.7)).collect();
            let ttt = score.iter().map(|&v| u8::from(v > 0.5)).collect();
            Data { id: format!("bench/{i:04}"), anomalous, gt, thr, ttt, score }
        })
        .collect()
}

fn main() {
    let (n, h, w) = (1000, 224, 224);
    let data = make(n, h, w);
    let mut best = f64::INFINITY;
    for round in 0..3 {
        let t0 = Instant::now();
        let mut acc = Accumulators::new();
        for (i, d) in data.iter().enumerate() {
            let view = SampleView {
                id: &d.id,
                index: i as u64,
                category: "bench",
                defect: if d.anomalous { "blob" } else { "good" },
                label: Some(d.anomalous),
                gt: (&d.gt, h, w),
                masks: vec![("thr.mask", Some((&d.thr, h, w))), ("ttt.mask", Some((&d.ttt, h, w)))],
                scores: vec![("scorer.score", Some((&d.score, h, w)))],
                image_scores: vec![],
            };
            if let Err(e) = acc.add(&view) {
                eprintln!("bench: {e}");
                std::process::exit(1);
            }
        }
        let t1 = Instant::now();
        let res = results::compute(&mut acc, 0.3);
        let t2 = Instant::now();
        let bytes = acc.to_bytes().unwrap();
        let t3 = Instant::now();
        let total = (t2 - t0).as_secs_f64();
        best = best.min(total);
        let get = |s: &str, m: &str, sub: &str, p: &str| res.get("bench", s, m, sub, p).unwrap_or(f64::NAN);
        println!(
            "round {round}: accumulate {:.3} s, compute {:.3} s, all metrics {:.3} s | accumulators.bin {:.1} MB in {:.3} s \
             | pixel AUROC {:.4} AUPRO {:.4} F1-max {:.4} thr F1 {:.4}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            total,
            bytes.len() as f64 / 1e6,
            (t3 - t2).as_secs_f64(),
            get("scorer.score", "pixel_auroc", "all", "pixels"),
            get("scorer.score", "aupro", "all", "pixels"),
            get("scorer.score", "f1_max", "all", "pixels"),
            get("thr.mask", "f1", "anomalous", "pixels"),
        );
    }
    // Where the compute time goes, on a fresh accumulator.
    let mut acc = Accumulators::new();
    for (i, d) in data.iter().enumerate() {
        let view = SampleView {
            id: &d.id,
            index: i as u64,
            category: "bench",
            defect: "x",
            label: Some(d.anomalous),
            gt: (&d.gt, h, w),
            masks: vec![],
            scores: vec![("scorer.score", Some((&d.score, h, w)))],
            image_scores: vec![],
        };
        let _ = acc.add(&view);
    }
    let t0 = Instant::now();
    acc.ensure_sorted();
    let t1 = Instant::now();
    if let Some(cat) = acc.categories.get("bench") {
        if let Some(s) = cat.scores.get("scorer.score") {
            let neg = ranking::Negatives { anomalous: &s.neg_anomalous, good: &s.neg_good };
            let _ = ranking::summarize(&s.positives, neg, s.components, 0.3);
            let t2 = Instant::now();
            println!(
                "breakdown: radix sort {:.3} s, one sweep for AUROC + AUPRO + both F1-max {:.3} s, {} pixels",
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64(),
                s.positives.len() + s.neg_anomalous.len() + s.neg_good.len()
            );
        }
    }
    println!("best of 3: all metrics over {n} images of {h}x{w} (2 mask sources, 1 score source): {best:.3} s");
}
