//! Exact nearest-neighbour search at the PatchCore scoring shapes (1024-d): the fused SIMD
//! kernel against the GEMM-tile path, parallel over query tiles, with GFLOP/s counted as
//! 2 * queries * bank * dim (the distance GEMM's flops).
//!
//! `cargo bench -p anoflow-plugin-scorers --bench nn` prints a Markdown table; with
//! `NN_BENCH_TSV=<file>` it also writes `shape, impl, seconds` rows that
//! `tools/bench_nn_reference.py --compare <file>` sets beside OpenBLAS and FAISS
//! (`tools/bench_nn.sh` runs both).
//!
//! With `NN_BENCH_CPU=1` it instead reports GFLOP per CPU-second of this process (user +
//! system time, about 4e11 flops per cell, sequential query tiles), a figure that other jobs
//! on a shared machine disturb far less than wall time; run it with `RAYON_NUM_THREADS=1`
//! beside `tools/bench_nn_reference.py --cpu` with one BLAS thread.

use std::time::Instant;

use anoflow_plugin_scorers::patchcore::Bank;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 1024;
/// (queries, bank rows): one image's 784 patches against a 10 % and a full 40-image bank, and
/// four images against a 16-image bank.
const SHAPES: [(usize, usize); 3] = [(784, 3136), (784, 31_360), (3136, 12_544)];

fn features(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * DIM).map(|_| rng.gen_range(0.0f32..1.0)).collect()
}

/// Shortest wall time of `runs` calls after one warm-up, in seconds: on a machine shared with
/// other jobs the least disturbed run is the most repeatable figure.
fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn cpu_rates() {
    println!("| queries x bank | fused (GFLOP per CPU-s) | GEMM tiles (GFLOP per CPU-s) |");
    println!("|---|---:|---:|");
    for (nq, nb) in SHAPES {
        let bank = Bank::new(features(nb, 7 + nb as u64), DIM);
        let query = features(nq, 999);
        let flops = 2.0 * (nq * nb * DIM) as f64;
        let reps = (4e11 / flops).ceil() as usize;
        let rate = |gemm: bool| -> Option<f64> {
            let start = cpu_secs()?;
            for _ in 0..reps {
                std::hint::black_box(if gemm {
                    bank.score_patches_gemm(&query, false)
                } else {
                    bank.score_patches(&query, false)
                });
            }
            Some(flops * reps as f64 / (cpu_secs()? - start) / 1e9)
        };
        let show = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.1}"));
        println!("| {nq} x {nb} | {} | {} |", show(rate(false)), show(rate(true)));
    }
}

fn main() {
    if std::env::var_os("NN_BENCH_CPU").is_some() {
        cpu_rates();
        return;
    }
    let runs: usize = std::env::var("NN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let isa = anoflow_plugin_scorers::nn_kernel::Isa::detect();
    println!(
        "# nearest-neighbour bench: dim {DIM}, rayon threads {}, fused kernel {isa:?}",
        rayon::current_num_threads()
    );
    println!();
    println!("| queries x bank | fused (ms) | GFLOP/s | GEMM tiles (ms) | GFLOP/s | same results |");
    println!("|---|---:|---:|---:|---:|---|");
    let mut tsv = String::new();
    for (nq, nb) in SHAPES {
        let bank = Bank::new(features(nb, 7 + nb as u64), DIM);
        let query = features(nq, 999);
        let flops = 2.0 * (nq * nb * DIM) as f64;
        let fused = best_secs(runs, || {
            std::hint::black_box(bank.score_patches(&query, true));
        });
        let gemm = best_secs(runs, || {
            std::hint::black_box(bank.score_patches_gemm(&query, true));
        });
        let same = bank.score_patches(&query, true) == bank.score_patches_gemm(&query, true);
        let g = |s: f64| flops / s / 1e9;
        println!(
            "| {nq} x {nb} | {:.1} | {:.1} | {:.1} | {:.1} | {same} |",
            fused * 1e3,
            g(fused),
            gemm * 1e3,
            g(gemm)
        );
        tsv += &format!("{nq}x{nb}\tanoflow fused\t{fused}\n{nq}x{nb}\tanoflow GEMM tiles\t{gemm}\n");
    }
    if let Some(path) = std::env::var_os("NN_BENCH_TSV") {
        if let Err(e) = std::fs::write(&path, tsv) {
            eprintln!("cannot write {}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
    }
}
