//! Crossmodal scoring per 224x224 sample (28x28 cells, 1024-d RGB, 33-d FPFH) and the ridge
//! fit: `cargo bench -p anoflow-plugin-crossmodal --bench crossmodal`.

use anoflow_imaging::{gaussian_blur, upsample_bilinear};
use anoflow_plugin_crossmodal::{
    mapping::{cell_scores, Combine, Distance, Scoring},
    ridge,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rows(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
    (0..n * d).map(|_| rng.gen_range(0.0..1.0)).collect()
}

fn bench(c: &mut Criterion) {
    let (d2, d3, cells) = (1024, 33, 28 * 28);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (x2, x3) = (rows(&mut rng, 20_000, d2), rows(&mut rng, 20_000, d3));
    let mut g = c.benchmark_group("crossmodal");
    g.sample_size(10);
    g.bench_function("ridge fit 2D->3D + 3D->2D, 20000 rows, 1024 / 33 dims", |b| {
        b.iter(|| {
            let a = ridge::fit(black_box(&x2), d2, &x3, d3, 0.01).unwrap();
            let b2 = ridge::fit(&x3, d3, &x2, d2, 0.01).unwrap();
            (a, b2)
        })
    });
    let to3 = ridge::fit(&x2, d2, &x3, d3, 0.01).unwrap();
    let to2 = ridge::fit(&x3, d3, &x2, d2, 0.01).unwrap();
    let (f2, f3) = (rows(&mut rng, cells, d2), rows(&mut rng, cells, d3));
    let scoring = Scoring { distance: Distance::Cosine, combine: Combine::Product, skip_empty_3d: true };
    g.bench_function("score one 224x224 sample (28x28 cells): predict both ways + distances", |b| {
        b.iter(|| cell_scores(&to3, &to2, black_box(&f2), &f3, &scoring))
    });
    g.bench_function("score one 224x224 sample + upsample to 224 + blur sigma 4", |b| {
        b.iter(|| {
            let s = cell_scores(&to3, &to2, black_box(&f2), &f3, &scoring);
            let up = upsample_bilinear(&s, 28, 28, 224, 224).unwrap();
            gaussian_blur(&up, 224, 224, 4.0).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
