//! PatchCore coreset selection (10 % by greedy k-center on a 128-d random projection) on 48
//! images' worth of patches, 37,632 x 1024-d: the projection GEMM and the selection loop timed
//! apart (`coreset::select` is the two in a row), and the selection both as shipped (points
//! that the triangle inequality rules out are not measured) and as the plain scan, on the same
//! rows, with the picks checked equal.
//!
//! Two kinds of rows: uniform noise, where every distance is alike and nothing can be ruled
//! out (the pruning's worst case), and Gaussian blobs, closer to patch features, which have
//! structure. The shipped pipelines' own features are timed in docs/PERFORMANCE.md.
//!
//! `cargo bench -p anoflow-plugin-scorers --bench coreset`; run it with `RAYON_NUM_THREADS=1`
//! and without to compare one thread against the pool.

use std::time::Instant;

use anoflow_plugin_scorers::coreset::{greedy_k_center, greedy_k_center_scan, random_projection};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 1024;
const ROWS: usize = 48 * 784;

fn uniform(rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..ROWS * DIM).map(|_| rng.gen_range(0.0f32..1.0)).collect()
}

/// 64 blob centres in [0, 1)^1024, each row one of them plus noise of spread 0.15.
fn blobs(rng: &mut ChaCha8Rng) -> Vec<f32> {
    let centres: Vec<f32> = (0..64 * DIM).map(|_| rng.gen_range(0.0f32..1.0)).collect();
    let mut rows = Vec::with_capacity(ROWS * DIM);
    for _ in 0..ROWS {
        let c = rng.gen_range(0..64);
        rows.extend(centres[c * DIM..(c + 1) * DIM].iter().map(|&m| m + 0.15 * (rng.gen::<f32>() - 0.5)));
    }
    rows
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(48);
    let count = ROWS / 10;
    println!("# coreset bench: {ROWS} x {DIM}, 10 %, rayon threads {}", rayon::current_num_threads());
    println!();
    println!("| rows | picked | projection (s) | selection, plain scan (s) | selection, pruned (s) | scan / pruned |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, rows) in [("uniform", uniform(&mut rng)), ("blobs", blobs(&mut rng))] {
        let t = Instant::now();
        let (proj, pdim) = random_projection(&rows, DIM, 0);
        let projection = t.elapsed().as_secs_f64();
        drop(rows);
        let t = Instant::now();
        let scanned = greedy_k_center_scan(&proj, pdim, count, 0);
        let scan = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let picked = greedy_k_center(&proj, pdim, count, 0);
        let pruned = t.elapsed().as_secs_f64();
        assert_eq!(picked, scanned, "{name}: the pruned selection must pick what the scan picks");
        println!("| {name} | {} | {projection:.2} | {scan:.2} | {pruned:.2} | {:.2}x |", picked.len(), scan / pruned);
    }
}
