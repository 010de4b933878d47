//! Synthetic samples for the sinks' tests (feature `testing`): tiny hand-made values and
//! realistic 224x224 ones with a blob defect, as the SDK's harness takes them.

use anoflow_sdk::prelude::*;
use anoflow_sdk::value::PortValue;

/// A test sample's metadata: `crack` on anomalous samples, `good` on the others.
pub fn sample_meta(id: &str, category: &str, anomalous: bool, index: u64) -> SampleMeta {
    let mut m = SampleMeta::new(id, category, "test");
    m.label = if anomalous { LABEL_ANOMALOUS } else { LABEL_NOMINAL };
    m.defect = if anomalous { "crack" } else { "good" }.into();
    m.index = index;
    m
}

/// One input value on `port` from the edge `source`.
pub fn port(port: &str, source: &str, value: Value) -> PortValue {
    PortValue { port: port.into(), source: source.into(), value }
}

/// A mask value (`d`: 0 or 1, row-major).
pub fn mask(h: u32, w: u32, d: &[u8]) -> Value {
    Mask::new(h, w, d.to_vec()).unwrap().into()
}

/// A score-map value.
pub fn score(h: u32, w: u32, d: &[f32]) -> Value {
    ScoreMap::new(h, w, d.to_vec()).unwrap().into()
}

/// Deterministic pseudo-random numbers for test data (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Realistic 224x224 samples: a blob defect on anomalous images, a smooth score map that is
/// higher on the defect, a mask from a threshold and a mask that is dilated.
pub fn realistic(n: usize, categories: &[&str], seed: u64) -> Vec<(SampleMeta, Vec<PortValue>)> {
    let (h, w) = (224usize, 224usize);
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let category = categories[i % categories.len()];
            let anomalous = i % 3 != 0;
            let (cy, cx, r) = (40.0 + rng.unit() * 140.0, 40.0 + rng.unit() * 140.0, 6.0 + rng.unit() * 20.0);
            let mut gt = vec![0u8; h * w];
            let mut s = vec![0f32; h * w];
            for y in 0..h {
                for x in 0..w {
                    let d = ((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)).sqrt();
                    let inside = anomalous && d < r;
                    gt[y * w + x] = u8::from(inside);
                    let bump = if anomalous { (-(d / r).powi(2)).exp() } else { 0.0 };
                    // Quantized noise makes ties, which the metrics must handle.
                    s[y * w + x] = ((bump + 0.5 * rng.unit()) * 256.0).round() / 256.0;
                }
            }
            let thr: Vec<u8> = s.iter().map(|&v| u8::from(v > 0.55)).collect();
            let wide: Vec<u8> = s.iter().map(|&v| u8::from(v > 0.4)).collect();
            let inputs = vec![
                port("gt", "data.mask", mask(h as u32, w as u32, &gt)),
                port("masks", "thr.mask", mask(h as u32, w as u32, &thr)),
                port("masks", "ttt.mask", mask(h as u32, w as u32, &wide)),
                port("scores", "scorer.score", score(h as u32, w as u32, &s)),
                port("image_scores", "scorer.image_score", Value::Scalar(f64::from(rng.unit()))),
            ];
            (sample_meta(&format!("{category}/{i:03}"), category, anomalous, i as u64), inputs)
        })
        .collect()
}
