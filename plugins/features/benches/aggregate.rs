//! Time per image of patch-aggregate on the default backbone's maps (192 ch at 28x28 and
//! 576 ch at 14x14, i.e. MobileNetV2 at 224x224) and on WideResNet-50's (512 ch at 28x28 and
//! 1024 ch at 14x14), and of sample_bilinear at 1,000 pixels.
//!
//! `cargo bench -p anoflow-plugin-features --bench aggregate`

use std::time::Instant;

use anoflow_plugin_features::{aggregate, sample_bilinear, AggregateConfig, Reduction};
use anoflow_sdk::prelude::FeatureMap;

fn map(c: usize, hw: usize, stride: f32) -> FeatureMap {
    let data = (0..hw * hw * c).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    FeatureMap::new(c as u32, hw as u32, hw as u32, stride, data).expect("feature map")
}

fn ms_per_call(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_secs_f64() < 2.0 {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1000.0 / n as f64
}

fn main() {
    let reductions = [
        ("adaptive-avg 1024", Reduction::AdaptiveAvg { layer_dim: 1024, dim: 1024 }),
        ("random-projection 1024", Reduction::RandomProjection { dim: 1024, seed: 0 }),
        ("none", Reduction::None),
    ];
    for (backbone, a, b) in [
        ("mobilenet_v2", map(192, 28, 8.0), map(576, 14, 16.0)),
        ("wide_resnet50", map(512, 28, 8.0), map(1024, 14, 16.0)),
    ] {
        for (name, reduction) in &reductions {
            let cfg = AggregateConfig { patch_size: 3, count_include_pad: true, reduction: reduction.clone() };
            let ms = ms_per_call(|| {
                aggregate(&[&a, &b], &cfg).expect("aggregate");
            });
            println!("patch-aggregate {backbone} ({}+{} ch) {name}: {ms:.2} ms/image", a.channels(), b.channels());
        }
    }
    let fm = map(1536, 28, 8.0);
    let mut out = vec![0.0f32; 1536];
    let ms = ms_per_call(|| {
        for i in 0..1000 {
            sample_bilinear(&fm, (i * 37 % 224) as f32, (i * 101 % 224) as f32, &mut out);
        }
    });
    println!("sample_bilinear 1536 ch, 1000 pixels: {ms:.3} ms");
}
