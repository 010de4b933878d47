//! PatchCore coreset selection (10 % by greedy k-center on a 128-d random projection) on 48
//! images' patches, 37,632 x 1024-d: the projection GEMM and the selection loop timed apart
//! (`coreset::select` is the two in a row).
//!
//! `cargo bench -p anoflow-plugin-scorers --bench coreset`; run it with `RAYON_NUM_THREADS=1`
//! and without to compare one thread against the pool.

use std::time::Instant;

use anoflow_plugin_scorers::coreset::{greedy_k_center, random_projection};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 1024;
const ROWS: usize = 48 * 784;

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(48);
    let rows: Vec<f32> = (0..ROWS * DIM).map(|_| rng.gen_range(0.0f32..1.0)).collect();
    let count = ROWS / 10;
    let t = Instant::now();
    let (proj, pdim) = random_projection(&rows, DIM, 0);
    let projection = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let picked = greedy_k_center(&proj, pdim, count, 0);
    let selection = t.elapsed().as_secs_f64();
    println!("# coreset bench: {ROWS} x {DIM}, 10 %, rayon threads {}", rayon::current_num_threads());
    println!();
    println!("| rows | picked | projection (s) | selection loop (s) |");
    println!("|---:|---:|---:|---:|");
    println!("| {ROWS} | {} | {projection:.2} | {selection:.2} |", picked.len());
}
