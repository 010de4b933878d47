//! Writes a small random test case (masks, score maps, labels) and the figures this crate
//! computes for it, as JSON, for `tools/check_metrics.py` to recompute independently
//! (scikit-learn, scipy):
//! `cargo run -p anoflow-seg-metrics --example export_check_case -- case.json [seed]`

use anoflow_seg_metrics::accumulate::{Accumulators, SampleView};
use anoflow_seg_metrics::results;
use serde_json::json;

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

struct Img {
    id: String,
    category: String,
    anomalous: bool,
    h: usize,
    w: usize,
    gt: Vec<u8>,
    masks: Vec<(String, Vec<u8>)>,
    score: Vec<f32>,
    image_score: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1) else {
        eprintln!("usage: export_check_case OUT.json [SEED]");
        std::process::exit(2);
    };
    let mut st: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let (h, w) = (40usize, 48usize);
    let mut images = Vec::new();
    for (c, category) in ["carpet", "screw", "grid"].iter().enumerate() {
        for i in 0..12 {
            let anomalous = i % 3 != 0;
            let mut gt = vec![0u8; h * w];
            let mut score = vec![0f32; h * w];
            // One to three rectangular defects; some touch only diagonally (8-connectivity joins them).
            let n_defects = if anomalous { 1 + (next(&mut st) % 3) as usize } else { 0 };
            for _ in 0..n_defects {
                let (y0, x0) = ((next(&mut st) % (h as u64 - 8)) as usize, (next(&mut st) % (w as u64 - 8)) as usize);
                let (dh, dw) = (1 + (next(&mut st) % 7) as usize, 1 + (next(&mut st) % 7) as usize);
                for y in y0..y0 + dh {
                    for x in x0..x0 + dw {
                        gt[y * w + x] = 1;
                    }
                }
                if next(&mut st) & 1 == 0 && y0 + dh + 1 < h && x0 + dw + 1 < w {
                    gt[(y0 + dh) * w + x0 + dw] = 1; // diagonal neighbour of the corner
                }
            }
            for (j, s) in score.iter_mut().enumerate() {
                let base = if gt[j] != 0 { 0.35 } else { 0.0 };
                // 1/32 steps: many ties, as real quantized maps have.
                *s = ((base + 0.65 * unit(&mut st)) * 32.0).floor() / 32.0;
            }
            let thr: Vec<u8> = score.iter().map(|&v| u8::from(v >= 0.6)).collect();
            // A second method that is empty on some images (zero-denominator conventions).
            let sparse: Vec<u8> =
                if i % 4 == 1 { vec![0; h * w] } else { score.iter().map(|&v| u8::from(v >= 0.8)).collect() };
            let image_score =
                f64::from(score.iter().cloned().fold(f32::MIN, f32::max)) + 0.01 * f64::from(unit(&mut st));
            images.push(Img {
                id: format!("{category}/{i:02}"),
                category: category.to_string(),
                anomalous,
                h,
                w,
                gt,
                masks: vec![("thr.mask".into(), thr), ("sparse.mask".into(), sparse)],
                score,
                image_score: image_score + c as f64,
            });
        }
    }
    let mut acc = Accumulators::new();
    for (i, im) in images.iter().enumerate() {
        let view = SampleView {
            id: &im.id,
            index: i as u64,
            category: &im.category,
            defect: if im.anomalous { "defect" } else { "good" },
            label: Some(im.anomalous),
            gt: (&im.gt, im.h, im.w),
            masks: im.masks.iter().map(|(s, m)| (s.as_str(), Some((m.as_slice(), im.h, im.w)))).collect(),
            scores: vec![("scorer.score", Some((&im.score, im.h, im.w)))],
            image_scores: vec![("scorer.image_score", Some(im.image_score))],
        };
        if let Err(e) = acc.add(&view) {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let res = results::compute(&mut acc, 0.3);
    let case = json!({
        "fpr_limit": 0.3,
        "images": images.iter().map(|im| json!({
            "id": im.id, "category": im.category, "anomalous": im.anomalous, "height": im.h, "width": im.w,
            "gt": im.gt, "masks": im.masks.iter().map(|(s, m)| (s.clone(), json!(m))).collect::<serde_json::Map<_, _>>(),
            "score": im.score, "image_score": im.image_score,
        })).collect::<Vec<_>>(),
        "rust": res,
    });
    if let Err(e) = std::fs::write(out, serde_json::to_vec(&case).unwrap_or_default()) {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
    println!("wrote {out}: {} images, {} figures", images.len(), res.records.len());
}
