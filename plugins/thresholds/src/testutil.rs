//! Score maps and harness helpers shared by the stages' unit tests.

use anoflow_sdk::harness::{inputs, meta, StageHarness};
use anoflow_sdk::prelude::*;

/// Deterministic 224x224 validation-like maps with a per-pixel ramp.
pub(crate) fn map(seed: u32) -> ScoreMap {
    let data = (0..224 * 224u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 8;
            (x % 1000) as f32 / 1000.0 + (i % 224) as f32 * 0.001
        })
        .collect();
    ScoreMap::new(224, 224, data).unwrap()
}

pub(crate) fn fit<T: StagePlugin>(params: serde_json::Value, maps: &[ScoreMap]) -> StageHarness {
    let mut h = StageHarness::new::<T>(params).unwrap();
    let samples =
        maps.iter().enumerate().map(|(i, m)| (meta(&format!("v{i}")), inputs(vec![("score", m.clone().into())])));
    h.fit(samples.collect()).unwrap();
    h
}

pub(crate) fn mask_of(h: &StageHarness, m: &ScoreMap) -> Vec<u8> {
    h.process(&meta("t"), inputs(vec![("score", m.clone().into())])).unwrap().mask("mask").data().to_vec()
}

/// The threshold implied by a mask: the largest value masked 0 and the smallest masked 1.
pub(crate) fn bracket(m: &ScoreMap, mask: &[u8]) -> (f32, f32) {
    let below = m.data().iter().zip(mask).filter(|(_, &k)| k == 0).map(|(&v, _)| v).fold(f32::MIN, f32::max);
    let above = m.data().iter().zip(mask).filter(|(_, &k)| k == 1).map(|(&v, _)| v).fold(f32::MAX, f32::min);
    (below, above)
}

/// Asserts that `T` refuses `params` with a message containing `want`.
pub(crate) fn refused<T: StagePlugin>(params: serde_json::Value, want: &str) {
    let err = StageHarness::new::<T>(params).err().expect("refused");
    assert!(err.message.contains(want), "{err}");
}
