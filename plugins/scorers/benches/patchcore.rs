//! PatchCore fit (coreset) time against the number of train patches, and per-image
//! nearest-neighbour scoring time against bank size, with the GFLOP/s the scoring reaches
//! (2 * patches * bank * dim flops for the distance GEMM).
//!
//! `cargo bench -p anoflow-plugin-scorers --bench patchcore` (set `BENCH_QUICK=1` for a
//! smaller run). Prints a Markdown table; `tools/bench_scorers.sh` runs it beside the numpy
//! reference.

use std::time::Instant;

use anoflow_plugin_scorers::nn_kernel::NnKernel;
use anoflow_plugin_scorers::patchcore::Bank;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PATCHES: usize = 784; // 28 x 28 cells per image
const DIM: usize = 1024;

fn features(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * DIM).map(|_| rng.gen_range(0.0f32..1.0)).collect()
}

/// Median wall time of `runs` calls, in seconds.
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let images: &[usize] = if quick { &[10, 40] } else { &[10, 20, 40] };
    let threads = rayon::current_num_threads();
    println!("# patchcore bench: dim {DIM}, {PATCHES} patches per image, rayon threads {threads}");
    println!();
    println!("| train images | train rows | coreset 10% fit (s) | bank rows |");
    println!("|---:|---:|---:|---:|");
    for &n in images {
        let rows = features(n * PATCHES, n as u64);
        let t = Instant::now();
        let bank = Bank::fit(&rows, DIM, 0.1, 0, NnKernel::Auto);
        let fit = t.elapsed().as_secs_f64();
        println!("| {n} | {} | {fit:.2} | {} |", n * PATCHES, bank.len());
    }
    println!();
    println!("| bank rows | per-image scoring, parallel tiles (ms) | GFLOP/s | single tile loop (ms) | GFLOP/s |");
    println!("|---:|---:|---:|---:|---:|");
    let banks: &[usize] = if quick { &[3136, 31360] } else { &[784, 3136, 7840, 31360] };
    let query = features(PATCHES, 999);
    for &m in banks {
        let bank = Bank::new(features(m, 7 + m as u64), DIM);
        let flops = 2.0 * PATCHES as f64 * m as f64 * DIM as f64;
        let runs = if m > 10_000 { 3 } else { 7 };
        let par = median_secs(runs, || {
            std::hint::black_box(bank.score_patches(&query, true));
        });
        let seq = median_secs(runs, || {
            std::hint::black_box(bank.score_patches(&query, false));
        });
        println!("| {m} | {:.1} | {:.1} | {:.1} | {:.1} |", par * 1e3, flops / par / 1e9, seq * 1e3, flops / seq / 1e9);
    }
}
