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
//!
//! With `NN_BENCH_REAL=<dir>` it also searches real patch features, written by
//! `tools/bench_nn_reference.py --extract-real <dir>` (raw little-endian f32 rows and a side
//! `features.json` naming the arrays, their rows and the searched shapes): per shape, the
//! default search (`Bank::new` then `score_patches_exact`), each fused kernel this CPU runs and
//! the GEMM-tile path, timed on the same query subset as the Python side, and what the default's
//! projected bound did (variance held, rows measured per query, queries scanned whole). Every path must return
//! the same (distance bits, index) per query, or the bench panics; the default path's results go
//! to `<dir>/anoflow-nn-<label>.bin` (f32 distance, u32 index per query) for the Python side's
//! check against FAISS.

use std::path::Path;
use std::time::Instant;

use anoflow_plugin_scorers::nn_kernel::{Isa, NnKernel};
use anoflow_plugin_scorers::nn_pruned::{ProjectedBank, DIRECTIONS};
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
    if let Some(dir) = std::env::var_os("NN_BENCH_REAL") {
        if let Err(e) = real_features(Path::new(&dir), runs, &mut tsv) {
            eprintln!("NN_BENCH_REAL={}: {e}", dir.to_string_lossy());
            std::process::exit(1);
        }
    }
    if let Some(path) = std::env::var_os("NN_BENCH_TSV") {
        if let Err(e) = std::fs::write(&path, tsv) {
            eprintln!("cannot write {}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
    }
}

/// One searched shape of the real features: the first `queries` query rows against a bank.
struct RealShape {
    label: String,
    bank: Vec<f32>,
    queries: usize,
}

/// The real features of `tools/bench_nn_reference.py --extract-real`.
struct RealSet {
    category: String,
    dim: usize,
    queries: Vec<f32>,
    shapes: Vec<RealShape>,
}

impl RealSet {
    fn load(dir: &Path) -> Result<Self, String> {
        let meta_path = dir.join("features.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let field = |v: &serde_json::Value, key: &str| -> Result<serde_json::Value, String> {
            v.get(key).cloned().ok_or_else(|| format!("{}: expected a field `{key}`", meta_path.display()))
        };
        let count = |v: &serde_json::Value, key: &str| -> Result<usize, String> {
            field(v, key)?
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("{}: `{key}`: expected a non-negative integer", meta_path.display()))
        };
        let text_of = |v: &serde_json::Value, key: &str| -> Result<String, String> {
            field(v, key)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{}: `{key}`: expected a string", meta_path.display()))
        };
        let dim = count(&meta, "dim")?;
        if dim == 0 {
            return Err(format!("{}: `dim`: expected a positive integer, found 0", meta_path.display()));
        }
        let arrays = field(&meta, "arrays")?;
        let array = |name: &str| -> Result<Vec<f32>, String> {
            let a = field(&arrays, name)?;
            read_f32(&dir.join(text_of(&a, "file")?), count(&a, "rows")?, dim)
        };
        let queries = array("queries")?;
        let mut shapes = Vec::new();
        let listed = field(&meta, "shapes")?;
        for shape in listed.as_array().ok_or_else(|| format!("{}: `shapes`: expected a list", meta_path.display()))? {
            let n = count(shape, "queries")?;
            if n * dim > queries.len() {
                return Err(format!(
                    "{}: a shape asks for {n} queries, the queries file has {}",
                    meta_path.display(),
                    queries.len() / dim
                ));
            }
            shapes.push(RealShape {
                label: text_of(shape, "label")?,
                bank: array(&text_of(shape, "bank")?)?,
                queries: n,
            });
        }
        Ok(Self { category: text_of(&meta, "category")?, dim, queries, shapes })
    }
}

/// `rows x dim` little-endian f32 values, the whole file.
fn read_f32(path: &Path, rows: usize, dim: usize) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() != rows * dim * 4 {
        return Err(format!(
            "{}: {} bytes, expected {rows} rows x {dim} f32 = {} (features.json)",
            path.display(),
            bytes.len(),
            rows * dim * 4
        ));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Panics, naming both paths and the first query that differs, unless `got` has the bits of
/// `want`: every search path is exact, so this is a correctness check.
fn assert_same(want: &[(f32, u32)], got: &[(f32, u32)], want_name: &str, got_name: &str, shape: &str) {
    assert_eq!(want.len(), got.len(), "{shape}: {got_name} returned {} results, {want_name} {}", got.len(), want.len());
    let differ: Vec<usize> =
        (0..want.len()).filter(|&i| want[i].0.to_bits() != got[i].0.to_bits() || want[i].1 != got[i].1).collect();
    if let Some(&i) = differ.first() {
        panic!(
            "{shape}: {got_name} differs from {want_name} on {} of {} queries; first: query {i}, {:?} against {:?}",
            differ.len(),
            want.len(),
            got[i],
            want[i]
        );
    }
}

/// Times every exact search path on the real features of `dir`, checks that they agree, writes
/// the default path's results beside the features and appends TSV rows.
fn real_features(dir: &Path, runs: usize, tsv: &mut String) -> Result<(), String> {
    let set = RealSet::load(dir)?;
    let dim = set.dim;
    println!();
    println!("# real patch features ({}), {dim}-d, from {}", set.category, dir.display());
    println!();
    println!("| queries x bank | path | bank build (ms) | search (ms) | GFLOP/s | same results |");
    println!("|---|---|---:|---:|---:|---|");
    // None: `Bank::new`, the default search.
    let mut paths: Vec<(String, Option<NnKernel>)> = vec![("anoflow default (Bank::new)".into(), None)];
    for isa in Isa::available() {
        paths.push((format!("anoflow fused {isa:?}"), Some(NnKernel::Fused(isa))));
    }
    paths.push(("anoflow GEMM tiles".into(), Some(NnKernel::Gemm)));
    for shape in &set.shapes {
        let (nq, nb) = (shape.queries, shape.bank.len() / dim);
        let queries = &set.queries[..nq * dim];
        let key = format!("real ({}, {}): {nq}x{nb}", set.category, shape.label);
        let flops = 2.0 * (nq * nb * dim) as f64;
        let mut reference: Option<(String, Vec<(f32, u32)>)> = None;
        for (name, kernel) in &paths {
            let rows = shape.bank.clone();
            let start = Instant::now();
            let bank = match kernel {
                None => Bank::new(rows, dim),
                Some(k) => Bank::with_kernel(rows, dim, *k),
            };
            let build = start.elapsed().as_secs_f64();
            let secs = best_secs(runs, || {
                std::hint::black_box(bank.score_patches_exact(queries, true));
            });
            let got = bank.score_patches_exact(queries, true);
            let same = match &reference {
                None => {
                    reference = Some((name.clone(), got));
                    "reference"
                }
                Some((ref_name, want)) => {
                    assert_same(want, &got, ref_name, name, &key);
                    "identical"
                }
            };
            println!(
                "| {} {nq} x {nb} | {name} | {:.1} | {:.1} | {:.1} | {same} |",
                shape.label,
                build * 1e3,
                secs * 1e3,
                flops / secs / 1e9
            );
            *tsv += &format!("{key}\t{name}\t{secs}\n");
        }
        match ProjectedBank::build(&shape.bank, dim) {
            Some(pb) => {
                let (found, measured) = pb.nearest_counted(&shape.bank, queries, true);
                let handed_back = found.iter().filter(|f| f.is_none()).count();
                println!(
                    "| {} {nq} x {nb} | default: {} directions hold {:.1} % of the bank's variance; {:.2} rows \
                     measured per query; {handed_back} queries ({:.2} %) scanned whole | | | | |",
                    shape.label,
                    DIRECTIONS,
                    100.0 * pb.captured_variance(),
                    measured as f64 / nq as f64,
                    100.0 * handed_back as f64 / nq as f64
                );
            }
            None => println!("| {} {nq} x {nb} | default: no projected bound for this bank | | | | |", shape.label),
        }
        if let Some((_, results)) = reference {
            let path = dir.join(format!("anoflow-nn-{}.bin", shape.label));
            let bytes: Vec<u8> =
                results.iter().flat_map(|&(d, i)| d.to_le_bytes().into_iter().chain(i.to_le_bytes())).collect();
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}
