//! FPFH and plane removal per 224x224 cloud: `cargo bench -p anoflow-plugin-pointcloud --bench fpfh`.

use anoflow_plugin_pointcloud::{
    cloud::Organized,
    fpfh::{estimate_normals, fpfh_feature_map, fpfh_per_point, spfh_per_point, FpfhConfig},
    plane::{fit_plane, remove_plane, RansacConfig},
    sampling::{farthest_point_sampling, knn_group},
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// A tilted table with a dome-shaped object and a few dropouts, mm, 224x224.
fn scene() -> Organized {
    let n = 224;
    let mut raw = vec![0.0f32; n * n * 3];
    for y in 0..n {
        for x in 0..n {
            if (x * 7 + y * 13) % 97 == 0 {
                continue;
            }
            let (px, py) = (x as f32 * 0.11 - 12.3, y as f32 * 0.11 - 12.3);
            let r2 = px * px + py * py;
            let dome = if r2 < 64.0 { (64.0 - r2).sqrt() * 0.5 } else { 0.0 };
            let z = 400.0 + 0.03 * px - 0.02 * py - dome;
            raw[(y * n + x) * 3..(y * n + x) * 3 + 3].copy_from_slice(&[px, py, z]);
        }
    }
    Organized::from_raw(n, n, &raw)
}

fn bench(c: &mut Criterion) {
    let cloud = scene();
    let cfg = FpfhConfig::default();
    c.bench_function("fpfh 224x224 (normal r 2, feature r 3, stride 8), full cloud", |b| {
        b.iter(|| fpfh_feature_map(black_box(&cloud), &cfg))
    });
    c.bench_function("  part: normals (PCA, 5x5 window), full cloud", |b| {
        b.iter(|| estimate_normals(black_box(&cloud), 2))
    });
    let normals = estimate_normals(&cloud, 2);
    c.bench_function("  part: SPFH (7x7 window), full cloud", |b| {
        b.iter(|| spfh_per_point(black_box(&cloud), &normals, 3))
    });
    c.bench_function("  part: SPFH + FPFH weighting, full cloud", |b| {
        b.iter(|| fpfh_per_point(black_box(&cloud), &normals, 3))
    });
    let ransac = RansacConfig { distance: 0.05, ..RansacConfig::default() };
    c.bench_function("ransac plane fit + removal 224x224 (1000 iterations)", |b| {
        b.iter(|| {
            let mut cl = cloud.clone();
            let p = fit_plane(&cl, &ransac).unwrap();
            remove_plane(&mut cl, &p, ransac.distance)
        })
    });
    let mut object = cloud.clone();
    let p = fit_plane(&object, &ransac).unwrap();
    remove_plane(&mut object, &p, ransac.distance);
    c.bench_function("fpfh 224x224 after plane removal (object only)", |b| {
        b.iter(|| fpfh_feature_map(black_box(&object), &cfg))
    });
    let (pts, _) = object.valid_points();
    c.bench_function("point-mae tokenizer: fps 1024 + knn 32 on the object points", |b| {
        b.iter(|| {
            let centres = farthest_point_sampling(black_box(&pts), 1024, 0);
            knn_group(&pts, &centres, 32)
        })
    });
}

criterion_group! { name = benches; config = Criterion::default().sample_size(10); targets = bench }
criterion_main!(benches);
