//! PatchCore's approximate search (`search: hnsw`) against its exact search at the 448 pipeline's
//! shapes: one image's 3,136 query patches (56 x 56) against banks of 6,272 and 62,720 rows of
//! 1024 dims (a 1 % and a 10 % coreset of 200 train images). Reports recall@1 (the share of
//! queries whose returned neighbour distance equals the exact one: both paths report the same
//! f64-computed distance of a row, so an equal distance means the nearest row or one tied with
//! it), the graph's build time and both searches' times, wall and CPU (user + system of this
//! process, less disturbed by other jobs on a shared machine).
//!
//! `cargo bench -p anoflow-plugin-scorers --bench ann` prints a Markdown table. Knobs:
//! `ANN_BENCH_BANKS` (bank row counts, default `6272,62720`), `ANN_BENCH_EF` (ef_search values,
//! default `16,64`; the crate fixes ef_search when it builds the graph, so each value builds it
//! again), `ANN_BENCH_EFC` (ef_construction, default 40).
//!
//! Data: not uniform noise (in 1024 dims every row is about equally far from every other, which
//! no backbone produces and on which no graph search does well) but rows with the structure of
//! backbone patch features: 64 clusters around a common mean, each with 16 local directions of
//! its own, plus small isotropic noise; queries come from the same clusters, and one in ten is
//! moved off them (an anomalous patch).

use std::time::Instant;

use anoflow_plugin_scorers::nn_hnsw::HnswParams;
use anoflow_plugin_scorers::patchcore::Bank;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 1024;
const QUERIES: usize = 3136;
const CLUSTERS: usize = 64;
const LOCAL: usize = 16;

struct Model {
    mean: Vec<f32>,
    centres: Vec<f32>,
    dirs: Vec<f32>,
    off: Vec<f32>,
}

impl Model {
    fn new() -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(0);
        let mut draw = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| r.gen_range(-a..a)).collect() };
        let mean = draw(DIM, 1.0).iter().map(|v| v.abs()).collect();
        let centres = draw(CLUSTERS * DIM, 0.3);
        let dirs = draw(CLUSTERS * LOCAL * DIM, 0.15);
        let off = draw(DIM, 0.3);
        Self { mean, centres, dirs, off }
    }

    /// `n` rows from `seed`; every `anomalous`-th row (0: none) moved along `off`.
    fn rows(&self, n: usize, seed: u64, anomalous: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n * DIM);
        for i in 0..n {
            let k = rng.gen_range(0..CLUSTERS);
            let coef: Vec<f32> = (0..LOCAL).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let shift = if anomalous > 0 && i % anomalous == 0 { 1.0 } else { 0.0 };
            let dirs = &self.dirs[k * LOCAL * DIM..(k + 1) * LOCAL * DIM];
            for c in 0..DIM {
                let local: f32 = (0..LOCAL).map(|l| coef[l] * dirs[l * DIM + c]).sum();
                let noise = rng.gen_range(-0.02f32..0.02);
                out.push(self.mean[c] + self.centres[k * DIM + c] + local + shift * self.off[c] + noise);
            }
        }
        out
    }
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`).
fn cpu_secs() -> f64 {
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
    };
    read().unwrap_or(f64::NAN)
}

/// (wall seconds, CPU seconds, result) of one call.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, f64, T) {
    let (c, s) = (cpu_secs(), Instant::now());
    let out = f();
    (s.elapsed().as_secs_f64(), cpu_secs() - c, out)
}

fn list(var: &str, default: &str) -> Vec<usize> {
    let text = std::env::var(var).unwrap_or_else(|_| default.to_string());
    text.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

fn main() {
    let banks = list("ANN_BENCH_BANKS", "6272,62720");
    let efs = list("ANN_BENCH_EF", "16,64");
    let efc = list("ANN_BENCH_EFC", "40").first().copied().unwrap_or(40);
    println!(
        "# approximate (HNSW) vs exact nearest-neighbour search: {QUERIES} queries x {DIM} dims, rayon threads {}, \
         ef_construction {efc}",
        rayon::current_num_threads()
    );
    println!();
    println!(
        "| bank rows | ef_search | recall@1 | build wall (s) | build CPU (s) | HNSW search wall (s) | CPU (s) | exact search wall (s) | CPU (s) | speed-up (CPU) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let model = Model::new();
    let queries = model.rows(QUERIES, 999, 10);
    for &nb in &banks {
        let rows = model.rows(nb, 7 + nb as u64, 0);
        let exact_bank = Bank::new(rows.clone(), DIM);
        // Warm-up: page the bank in and start the pool.
        std::hint::black_box(exact_bank.score_patches(&queries[..64 * DIM], true));
        let (ew, ec, exact) = timed(|| exact_bank.score_patches(&queries, true));
        drop(exact_bank);
        for &ef in &efs {
            let params = HnswParams { ef_construction: efc, ef_search: ef, seed: 0 };
            let (bw, bc, bank) = timed(|| Bank::new(rows.clone(), DIM).with_search(Some(params)));
            let (aw, ac, approx) = timed(|| bank.score_patches(&queries, true));
            let hits = approx.iter().zip(&exact).filter(|(a, e)| a.0 == e.0).count();
            assert!(approx.iter().zip(&exact).all(|(a, e)| a.0 >= e.0), "an approximate distance below the exact one");
            println!(
                "| {nb} | {ef} | {:.4} | {bw:.1} | {bc:.1} | {aw:.2} | {ac:.2} | {ew:.2} | {ec:.2} | {:.1}x |",
                hits as f64 / QUERIES as f64,
                ec / ac
            );
        }
    }
}
