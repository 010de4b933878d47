//! Tests of the aggregation recipe; the stage's own tests are in its file under `stages/`.

use anoflow_imaging::resize_bilinear;
use anoflow_sdk::{prelude::*, value::PortValue};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

pub(crate) fn random_map(c: usize, h: usize, w: usize, stride: f32, seed: u64) -> FeatureMap {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..h * w * c).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    FeatureMap::new(c as u32, h as u32, w as u32, stride, data).unwrap()
}

pub(crate) fn constant_map(c: usize, h: usize, w: usize, stride: f32, v: f32) -> FeatureMap {
    FeatureMap::new(c as u32, h as u32, w as u32, stride, vec![v; h * w * c]).unwrap()
}

/// Two layers as the backbone's multi-valued output delivers them.
pub(crate) fn layer_inputs(maps: Vec<(&str, FeatureMap)>) -> Vec<PortValue> {
    maps.into_iter()
        .map(|(label, fm)| PortValue {
            port: "features".into(),
            source: format!("backbone.features[{label}]").into(),
            value: fm.into(),
        })
        .collect()
}

#[test]
fn box_average_counts_padding_as_avg_pool_does() {
    let ones = vec![1.0f32; 5 * 4 * 2];
    let with_pad = box_average(&ones, 5, 4, 2, 3, true);
    let at = |v: &[f32], y: usize, x: usize| v[(y * 4 + x) * 2 + 1];
    assert!((at(&with_pad, 0, 0) - 4.0 / 9.0).abs() < 1e-6);
    assert!((at(&with_pad, 0, 1) - 6.0 / 9.0).abs() < 1e-6);
    assert!((at(&with_pad, 2, 2) - 1.0).abs() < 1e-6);
    let without = box_average(&ones, 5, 4, 2, 3, false);
    assert!(without.iter().all(|v| (v - 1.0).abs() < 1e-6));

    // Interior value = mean of the 3x3 neighbourhood, per channel.
    let fm = random_map(3, 6, 7, 8.0, 1);
    let avg = box_average(fm.data(), 6, 7, 3, 3, true);
    let mut expect = [0.0f32; 3];
    for y in 2..5 {
        for x in 3..6 {
            expect.iter_mut().zip(fm.at(y, x)).for_each(|(e, v)| *e += v / 9.0);
        }
    }
    let got = &avg[(3 * 7 + 4) * 3..(3 * 7 + 4) * 3 + 3];
    assert!(got.iter().zip(&expect).all(|(g, e)| (g - e).abs() < 1e-5), "{got:?} vs {expect:?}");
}

#[test]
fn adaptive_pool_uses_torch_windows() {
    let mut out = [0.0f32; 3];
    adaptive_avg_pool(&[1.0, 2.0, 3.0, 4.0, 5.0], 3, &mut out);
    // Windows [0, 2), [1, 4), [3, 5).
    assert_eq!(out, [1.5, 3.0, 4.5]);
    let mut up = [0.0f32; 4];
    adaptive_avg_pool(&[1.0, 3.0], 4, &mut up);
    assert_eq!(up, [1.0, 1.0, 3.0, 3.0]);
}

#[test]
fn composed_reduction_equals_the_two_poolings() {
    let (a, b) = (random_map(192, 1, 1, 8.0, 5), random_map(576, 1, 1, 8.0, 6));
    let (mut pa, mut pb) = (vec![0.0f32; 1024], vec![0.0f32; 1024]);
    adaptive_avg_pool(a.data(), 1024, &mut pa);
    adaptive_avg_pool(b.data(), 1024, &mut pb);
    let mut expect = vec![0.0f32; 1024];
    adaptive_avg_pool(&[pa, pb].concat(), 1024, &mut expect);
    let mut got = vec![0.0f32; 1024];
    ChannelReduction::new(&[192, 576], 1024, 1024).apply(&[a.data(), b.data()].concat(), &mut got);
    let worst = got.iter().zip(&expect).map(|(g, e)| (g - e).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "max difference {worst}");
}

#[test]
fn no_reduction_is_the_concatenation_of_averaged_upsampled_layers() {
    let fine = random_map(64, 28, 28, 8.0, 2);
    let coarse = random_map(96, 14, 14, 16.0, 3);
    let cfg = AggregateConfig { patch_size: 1, count_include_pad: true, reduction: Reduction::None };
    let fm = aggregate(&[&fine, &coarse], &cfg).unwrap();
    assert_eq!((fm.channels(), fm.height()), (160, 28));
    let up = resize_bilinear(coarse.data(), 14, 14, 96, 28, 28).unwrap();
    for (y, x) in [(0, 0), (5, 17), (27, 27)] {
        assert_eq!(&fm.at(y, x)[..64], fine.at(y, x));
        let p = (y * 28 + x) * 96;
        assert_eq!(&fm.at(y, x)[64..], &up[p..p + 96]);
    }
}

#[test]
fn random_projection_is_seeded_and_keeps_distances() {
    let a = random_map(768, 28, 28, 8.0, 4);
    let cfg = |seed| AggregateConfig {
        patch_size: 1,
        count_include_pad: true,
        reduction: Reduction::RandomProjection { dim: 256, seed },
    };
    let p1 = aggregate(&[&a], &cfg(7)).unwrap();
    let p2 = aggregate(&[&a], &cfg(7)).unwrap();
    let p3 = aggregate(&[&a], &cfg(8)).unwrap();
    assert_eq!(p1.channels(), 256);
    assert_eq!(p1.data(), p2.data());
    assert_ne!(p1.data(), p3.data());
    // Johnson-Lindenstrauss: distances between locations survive within a few tens of percent.
    let dist = |f: &FeatureMap, p: (usize, usize), q: (usize, usize)| {
        f.at(p.0, p.1).iter().zip(f.at(q.0, q.1)).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
    };
    for (p, q) in [((0, 0), (3, 4)), ((10, 10), (27, 1)), ((5, 20), (6, 20))] {
        let ratio = dist(&p1, p, q) / dist(&a, p, q);
        assert!((0.75..1.25).contains(&ratio), "distance ratio {ratio}");
    }
}

#[test]
fn sample_bilinear_equals_full_upsampling() {
    // Integer stride, and a map whose image size is not a whole number of cells (stride 7.5).
    for (h, w, stride) in [(28usize, 28usize, 8.0f32), (7, 5, 7.5)] {
        let fm = random_map(48, h, w, stride, 9);
        let (ih, iw) = ((h as f32 * stride).round() as usize, (w as f32 * stride).round() as usize);
        let full = resize_bilinear(fm.data(), h, w, 48, ih, iw).unwrap();
        let mut got = vec![0.0f32; 48];
        let mut worst = 0.0f32;
        for y in 0..ih {
            for x in 0..iw {
                sample_bilinear(&fm, y as f32, x as f32, &mut got);
                let p = (y * iw + x) * 48;
                for (g, f) in got.iter().zip(&full[p..p + 48]) {
                    worst = worst.max((g - f).abs());
                }
            }
        }
        assert!(worst < 1e-5, "{h}x{w} stride {stride}: max difference {worst}");
    }
}
