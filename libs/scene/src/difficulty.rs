//! The dataset must not be trivially easy: a per-pixel colour threshold, even with the best
//! threshold chosen on the test set itself, segments it poorly.

use crate::render::{render, Rendered};
use crate::spec::{test_specs, train_specs, Category, SynthConfig};

/// Best pixel F1 over all thresholds of `scores` against `labels`.
fn best_f1(scores: &[f32], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let (mut tp, mut best) = (0.0f64, 0.0f64);
    for (k, &i) in order.iter().enumerate() {
        tp += f64::from(u8::from(labels[i]));
        let predicted = (k + 1) as f64;
        // Only at a change of score is this a reachable threshold.
        if k + 1 == order.len() || scores[order[k + 1]] != scores[i] {
            best = best.max(2.0 * tp / (predicted + positives));
        }
    }
    best
}

#[test]
fn best_f1_on_hand_values() {
    assert_eq!(best_f1(&[0.9, 0.8, 0.1, 0.05], &[true, true, false, false]), 1.0);
    // Threshold 0.8: TP 1, FP 1, FN 1 -> 0.5; threshold 0.1: TP 2, FP 1 -> 0.8.
    assert!((best_f1(&[0.8, 0.9, 0.1, 0.0], &[true, false, true, false]) - 0.8).abs() < 1e-12);
}

#[test]
fn colour_threshold_does_not_segment_it() {
    let cfg = SynthConfig { seed: 3, train: 8, test_good: 0, test_defective: 14, ..SynthConfig::default() };
    let n = cfg.size * cfg.size;
    let mut per_category = Vec::new();
    for cat in Category::ALL {
        let train: Vec<Rendered> = train_specs(&cfg, cat).iter().map(|s| render(&cfg, s)).collect();
        // Global mean colour, and the per-pixel mean image, of the nominal images.
        let mut mean = [0.0f64; 3];
        let mut mean_img = vec![0.0f32; n * 3];
        for r in &train {
            for (i, &v) in r.rgb.iter().enumerate() {
                mean[i % 3] += f64::from(v);
                mean_img[i] += f32::from(v) / train.len() as f32;
            }
        }
        let mean = mean.map(|m| (m / (n * train.len()) as f64) as f32);
        let (mut global, mut pixelwise, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for spec in test_specs(&cfg, cat) {
            let r = render(&cfg, &spec);
            for i in 0..n {
                let px = &r.rgb[i * 3..i * 3 + 3];
                let d = |m: [f32; 3]| (0..3).map(|c| (f32::from(px[c]) - m[c]).powi(2)).sum::<f32>().sqrt();
                global.push(d(mean));
                pixelwise.push(d([mean_img[i * 3], mean_img[i * 3 + 1], mean_img[i * 3 + 2]]));
                labels.push(r.mask[i] == 1);
            }
        }
        let (g, p) = (best_f1(&global, &labels), best_f1(&pixelwise, &labels));
        eprintln!("{:8} best F1: distance to mean colour {g:.3}, to mean image {p:.3}", cat.name());
        per_category.push(g.max(p));
    }
    let mean_f1 = per_category.iter().sum::<f64>() / per_category.len() as f64;
    eprintln!("mean of the better baseline per category: {mean_f1:.3}");
    assert!(per_category.iter().all(|&f| f < 0.5), "{per_category:?}");
    assert!(mean_f1 < 0.35, "{mean_f1}");
}
