//! Hand-made feature maps for the scorers' tests.

use anoflow_sdk::prelude::FeatureMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` rows of a "nominal" distribution: a fixed random mean (seed 0) plus small noise from
/// `seed`, with a low-rank structure (8 shared directions) as real backbone features have.
pub fn nominal_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut base = ChaCha8Rng::seed_from_u64(0);
    let mean: Vec<f32> = (0..dim).map(|_| base.gen_range(0.0..1.0)).collect();
    let dirs: Vec<f32> = (0..8 * dim).map(|_| base.gen_range(-0.5..0.5)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let coef: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect();
        for c in 0..dim {
            let low_rank: f32 = (0..8).map(|k| coef[k] * dirs[k * dim + c]).sum();
            out.push(mean[c] + low_rank + rng.gen_range(-0.05..0.05));
        }
    }
    out
}

/// `rows` (a `side`-wide grid) with the cells in `block` (rows y, cols x) moved by `amount`
/// along a fixed direction that the nominal data never takes.
pub fn shifted(
    mut rows: Vec<f32>,
    width: usize,
    dim: usize,
    block: (std::ops::Range<usize>, std::ops::Range<usize>),
    amount: f32,
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(12345);
    let dir: Vec<f32> = (0..dim).map(|_| if rng.gen::<bool>() { amount } else { -amount }).collect();
    for y in block.0.clone() {
        for x in block.1.clone() {
            let at = (y * width + x) * dim;
            for (v, d) in rows[at..at + dim].iter_mut().zip(&dir) {
                *v += d;
            }
        }
    }
    rows
}

pub fn feature_map(h: usize, w: usize, dim: usize, stride: f32, rows: Vec<f32>) -> FeatureMap {
    FeatureMap::new(dim as u32, h as u32, w as u32, stride, rows).unwrap()
}
