//! Stage tests through the SDK harness, on 28x28 grids (a 224x224 image at stride 8) with
//! 1024-d RGB features and 33-d 3D features.

use super::*;
use anoflow_sdk::harness::{inputs, meta, StageHarness};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const D2: usize = 1024;
const D3: usize = 33;
const LATENT: usize = 8;
const G: usize = 28;

/// Fixed random projections of a shared latent: nominal 2D and 3D features of a location are
/// both linear in its latent, so each predicts the other.
struct World {
    b: Vec<f32>,
    c: Vec<f32>,
}

impl World {
    fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        Self {
            b: (0..LATENT * D2).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            c: (0..LATENT * D3).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        }
    }

    fn project(z: &[f32], m: &[f32], d: usize, offset: f32) -> Vec<f32> {
        (0..d).map(|j| offset + (0..LATENT).map(|k| z[k] * m[k * d + j]).sum::<f32>()).collect()
    }

    /// One image's maps; cells in `broken` get a 3D feature from another latent.
    fn sample(&self, seed: u64, broken: impl Fn(usize, usize) -> bool) -> (FeatureMap, FeatureMap) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut f2, mut f3) = (Vec::with_capacity(G * G * D2), Vec::with_capacity(G * G * D3));
        for y in 0..G {
            for x in 0..G {
                let z: Vec<f32> = (0..LATENT).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let noise: Vec<f32> = (0..D2).map(|_| rng.gen_range(-0.05..0.05)).collect();
                f2.extend(Self::project(&z, &self.b, D2, 1.0).iter().zip(&noise).map(|(a, n)| a + n));
                let z3: Vec<f32> =
                    if broken(y, x) { (0..LATENT).map(|_| rng.gen_range(-1.0..1.0)).collect() } else { z };
                f3.extend(Self::project(&z3, &self.c, D3, 10.0));
            }
        }
        (
            FeatureMap::new(D2 as u32, G as u32, G as u32, 8.0, f2).unwrap(),
            FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, f3).unwrap(),
        )
    }
}

fn pair(f2: FeatureMap, f3: FeatureMap) -> Vec<anoflow_sdk::value::PortValue> {
    inputs(vec![("features_2d", f2.into()), ("features_3d", f3.into())])
}

fn fitted(params: serde_json::Value, world: &World) -> StageHarness {
    let mut h = StageHarness::new::<CrossmodalMapping>(params).unwrap();
    let train = (0..6u64)
        .map(|s| {
            let (a, b) = world.sample(s, |_, _| false);
            (meta(&format!("train/{s}")), pair(a, b))
        })
        .collect();
    h.fit(train).unwrap();
    h
}

#[test]
fn locations_breaking_the_2d_3d_relation_score_higher() {
    let world = World::new();
    for params in [json!({}), json!({"distance": "l2", "combine": "sum", "sigma": 0})] {
        let h = fitted(params.clone(), &world);
        let block = |y: usize, x: usize| (10..16).contains(&y) && (12..18).contains(&x);
        let (a, b) = world.sample(100, block);
        let out = h.process(&meta("test/broken"), pair(a, b)).unwrap();
        let s = out.score_map("score");
        assert_eq!((s.height(), s.width()), (224, 224));
        // Compare block centres (pixel (13*8+4, 15*8+4)) with far-away cells.
        let inside = s.get(13 * 8 + 4, 15 * 8 + 4);
        let outside = (0..224)
            .step_by(8)
            .flat_map(|y| (0..224).step_by(8).map(move |x| (y, x)))
            .filter(|&(y, x)| !(48..160).contains(&y) || !(64..176).contains(&x))
            .map(|(y, x)| s.get(y, x))
            .fold(0.0f32, f32::max);
        assert!(inside > 3.0 * outside, "{params}: inside {inside}, max outside {outside}");
        let (a, b) = world.sample(101, |_, _| false);
        let good = h.process(&meta("test/good"), pair(a, b)).unwrap();
        assert!(out.scalar("image_score") > 3.0 * good.scalar("image_score"));
    }
}

#[test]
fn state_round_trips_and_errors_are_named() {
    let world = World::new();
    let h = fitted(json!({"max_rows": 3000}), &world);
    let (a, b) = world.sample(7, |y, _| y < 5);
    let want = h.process(&meta("t"), pair(a.clone(), b.clone())).unwrap();
    let mut h2 = StageHarness::new::<CrossmodalMapping>(json!({"max_rows": 3000})).unwrap();
    h2.load_state(h.save_state().unwrap()).unwrap();
    let got = h2.process(&meta("t"), pair(a.clone(), b.clone())).unwrap();
    assert_eq!(want.score_map("score").data(), got.score_map("score").data());
    assert!(h2.load_state(vec![1, 2, 3]).is_err());

    // 3D features from a cloud of another size (32x32 cells at stride 8 = 256 px).
    let big = FeatureMap::new(D3 as u32, 32, 32, 8.0, vec![1.0; 32 * 32 * D3]).unwrap();
    let err = h.process(&meta("cat/test/x/003"), pair(a.clone(), big)).unwrap_err();
    assert!(err.message.contains("sample `cat/test/x/003`") && err.message.contains("different sizes"), "{err}");
    // A 250 px image: 3D grid rounded up (32 cells, 256 px), 2D grid rounded down (31, 248 px).
    let up = FeatureMap::new(D3 as u32, 32, 32, 8.0, vec![1.0; 32 * 32 * D3]).unwrap();
    let down = FeatureMap::new(D2 as u32, 31, 31, 8.0, vec![1.0; 31 * 31 * D2]).unwrap();
    assert!(h.process(&meta("250px"), pair(down, up)).is_ok());
    // The same image at another stride is fine (resized to the 2D grid).
    let coarse = FeatureMap::new(D3 as u32, 14, 14, 16.0, vec![1.0; 14 * 14 * D3]).unwrap();
    assert!(h.process(&meta("ok"), pair(a.clone(), coarse)).is_ok());
    // NaN features.
    let mut bad = b.data().to_vec();
    bad[5 * D3 + 2] = f32::NAN;
    let nan = FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, bad).unwrap();
    let err = h.process(&meta("n"), pair(a.clone(), nan)).unwrap_err();
    assert!(err.message.contains("`features_3d` holds NaN at cell (y 0, x 5), channel 2"), "{err}");
    // Dims differing between fit and test.
    let narrow = FeatureMap::new(16, G as u32, G as u32, 8.0, vec![0.5; G * G * 16]).unwrap();
    let err = h.process(&meta("d"), pair(narrow, b.clone())).unwrap_err();
    assert!(err.message.contains("16 (2D) and 33 (3D) channels but the mappings were fitted on 1024 and 33"), "{err}");
    // Dims differing within the fit split.
    let mut h3 = StageHarness::new::<CrossmodalMapping>(json!({})).unwrap();
    let narrow = FeatureMap::new(16, G as u32, G as u32, 8.0, vec![0.5; G * G * 16]).unwrap();
    let err = h3.fit(vec![(meta("f0"), pair(a, b.clone())), (meta("f1"), pair(narrow, b))]).unwrap_err();
    assert!(err.message.contains("fit sample `f0` had 1024 and 33"), "{err}");
}

#[test]
fn empty_3d_cells_score_zero_and_are_not_fitted() {
    let world = World::new();
    let h = fitted(json!({}), &world);
    let (a, b) = world.sample(9, |_, _| false);
    let mut d3 = b.data().to_vec();
    for x in 0..G {
        d3[(20 * G + x) * D3..(20 * G + x + 1) * D3].iter_mut().for_each(|v| *v = 0.0);
    }
    let b = FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, d3).unwrap();
    let out = h.process(&meta("e"), pair(a.clone(), b.clone())).unwrap();
    let unblurred = StageHarness::new::<CrossmodalMapping>(json!({"sigma": 0})).unwrap();
    let mut unblurred = unblurred;
    unblurred.load_state(h.save_state().unwrap()).unwrap();
    // `like` at the feature grid's size: the map is the per-cell scores, unresampled.
    let mut ins = pair(a, b);
    ins.extend(inputs(vec![("like", Mask::zeros(G as u32, G as u32).unwrap().into())]));
    let s = unblurred.process(&meta("e"), ins).unwrap();
    let s = s.score_map("score");
    assert_eq!((s.height(), s.width()), (G, G));
    assert!((0..G).all(|x| s.get(20, x) == 0.0));
    assert!((0..G).all(|x| s.get(19, x) > 0.0));
    assert!(out.score_map("score").data().iter().all(|v| v.is_finite()));
    // A fit split without any geometry is refused.
    let mut h = StageHarness::new::<CrossmodalMapping>(json!({})).unwrap();
    let z = FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, vec![0.0; G * G * D3]).unwrap();
    let (a, _) = world.sample(1, |_, _| false);
    let err = h.fit(vec![(meta("f"), pair(a, z))]).unwrap_err();
    assert!(err.message.contains("no fit location has 3D geometry"), "{err}");
}

#[test]
fn concat_resizes_to_the_first_grid_and_normalizes() {
    let rgb = FeatureMap::new(4, 28, 28, 8.0, (0..28 * 28 * 4).map(|i| (i % 7) as f32 + 1.0).collect()).unwrap();
    let geo = FeatureMap::new(33, 14, 14, 16.0, vec![2.0; 14 * 14 * 33]).unwrap();
    let ins = inputs(vec![("features", rgb.clone().into()), ("features", geo.clone().into())]);
    let h = StageHarness::new::<ConcatFeatures>(json!({})).unwrap();
    let out = h.process(&meta("c"), ins.clone()).unwrap();
    let fm = out.feature_map("features");
    assert_eq!((fm.height(), fm.width(), fm.channels(), fm.stride()), (28, 28, 37, 8.0));
    assert_eq!(&fm.at(3, 5)[..4], rgb.at(3, 5));
    assert!(fm.at(3, 5)[4..].iter().all(|&v| (v - 2.0).abs() < 1e-6));
    let h = StageHarness::new::<ConcatFeatures>(json!({"normalize": "l2"})).unwrap();
    let fm = h.process(&meta("c"), ins).unwrap().feature_map("features").clone();
    let n1: f32 = fm.at(9, 9)[..4].iter().map(|v| v * v).sum();
    let n2: f32 = fm.at(9, 9)[4..].iter().map(|v| v * v).sum();
    assert!((n1 - 1.0).abs() < 1e-5 && (n2 - 1.0).abs() < 1e-5);
    // Another image size is refused, NaN too.
    let other = FeatureMap::new(33, 32, 32, 8.0, vec![2.0; 32 * 32 * 33]).unwrap();
    let err =
        h.process(&meta("s"), inputs(vec![("features", rgb.clone().into()), ("features", other.into())])).unwrap_err();
    assert!(err.message.contains("different sizes") && err.message.contains("sample `s`"), "{err}");
    let mut d = geo.data().to_vec();
    d[0] = f32::INFINITY;
    let inf = FeatureMap::new(33, 14, 14, 16.0, d).unwrap();
    let err = h.process(&meta("s"), inputs(vec![("features", rgb.into()), ("features", inf.into())])).unwrap_err();
    assert!(err.message.contains("holds inf"), "{err}");
}

#[test]
fn bad_params_are_refused_naming_them() {
    for (params, want) in [
        (json!({"distance": "manhattan"}), "param `distance`: `manhattan` is not one of cosine, l2"),
        (json!({"combine": "max"}), "param `combine`: `max` is not one of product, sum"),
        (json!({"ridge": -0.1}), "param `ridge`: -0.1 is out of range"),
        (json!({"max_rows": 0}), "param `max_rows`: 0 is out of range"),
        (json!({"sigma": 1001}), "param `sigma`: 1001 is out of range"),
        (json!({"rigde": 0.1}), "unknown param `rigde` (did you mean `ridge`?)"),
    ] {
        let err = StageHarness::new::<CrossmodalMapping>(params).err().expect("refused");
        assert!(err.message.contains("node `test-crossmodal-mapping`") && err.message.contains(want), "{err}");
    }
    let err = StageHarness::new::<ConcatFeatures>(json!({"normalize": "l1"})).err().expect("refused");
    assert!(err.message.contains("param `normalize`: `l1` is not one of none, l2"), "{err}");
}
