//! Approximate nearest-neighbour search for large PatchCore memory banks: an HNSW graph
//! (Malkov and Yashunin, the `instant-distance` crate) over the bank rows shortlists candidates,
//! and the exact rule's distance ([`exact_sq_dist`]) picks among them. A returned neighbour
//! therefore carries the very distance the exact search reports for that row (L2, the square
//! root of the f64 squared distance rounded once to f32); only which row is returned may differ,
//! when the graph search misses the true nearest one.
//!
//! Determinism: the graph's level assignment is seeded, and the graph is built on a one-thread
//! rayon pool because the crate's parallel insertion depends on thread timing; its distance
//! ([`sq_dist`]) is the same sequence of f32 operations on every CPU (an AVX2 build of the same
//! code where the CPU has it). Searches read the graph only, one query at a time, so parallel
//! queries give the same result as sequential ones. The graph is not part of the fitted state:
//! it is rebuilt from the stored bank on load, which gives the same graph.

use std::sync::Arc;

use instant_distance::{Builder, Hnsw, Point, Search};
use rayon::prelude::*;

use crate::linalg::sq_dist;
use crate::nn_exact::exact_sq_dist;

/// The graph's parameters. The crate fixes M (32 links per node on the upper layers, 64 on the
/// ground layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Candidate list length while inserting a row (efConstruction).
    pub ef_construction: usize,
    /// Candidate list length while searching (ef); every candidate it returns is re-ranked by
    /// the exact distance.
    pub ef_search: usize,
    /// Seed of the rows' random levels.
    pub seed: u64,
}

/// One row of a row-major matrix shared by all of its rows (bank or queries).
#[derive(Clone)]
struct Row {
    data: Arc<[f32]>,
    start: usize,
    dim: usize,
}

impl Row {
    fn values(&self) -> &[f32] {
        &self.data[self.start..self.start + self.dim]
    }
}

impl Point for Row {
    /// Squared L2 in f32: ranks rows as L2 does.
    fn distance(&self, other: &Self) -> f32 {
        row_dist(self.values(), other.values())
    }
}

/// [`sq_dist`], in an AVX2 build where the CPU has it (the same operations lane for lane, no FMA,
/// so the same bits, and the same graph on every CPU).
fn row_dist(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU runs AVX2, checked just above.
        return unsafe { row_dist_avx2(a, b) };
    }
    sq_dist(a, b)
}

/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_dist_avx2(a: &[f32], b: &[f32]) -> f32 {
    sq_dist(a, b)
}

/// An HNSW graph over a bank's rows.
pub struct HnswIndex {
    hnsw: Hnsw<Row>,
}

/// Queries per parallel task: enough to amortise a task, few enough to share the work out.
const QUERY_CHUNK: usize = 64;

impl HnswIndex {
    /// Builds the graph over `rows` (row-major, `dim` columns).
    pub fn build(rows: &Arc<[f32]>, dim: usize, params: HnswParams) -> Self {
        assert!(dim > 0 && rows.len().is_multiple_of(dim), "bank rows and dim disagree");
        let points: Vec<Row> =
            (0..rows.len() / dim).map(|i| Row { data: Arc::clone(rows), start: i * dim, dim }).collect();
        let builder =
            Builder::default().ef_construction(params.ef_construction).ef_search(params.ef_search).seed(params.seed);
        let build = move || builder.build_hnsw(points).0;
        // One thread makes the insertion order, hence the graph, a function of the input alone.
        let hnsw = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
            Ok(pool) => pool.install(build),
            // Without a pool of its own (threads exhausted), the calling thread builds it.
            Err(_) => build(),
        };
        Self { hnsw }
    }

    /// Per query row of `patches`: (L2 distance, bank row) of the nearest of the graph search's
    /// candidates by [`exact_sq_dist`], ties to the lowest bank row. `bank` is the indexed matrix.
    pub fn nearest(&self, bank: &[f32], patches: &[f32], dim: usize, parallel: bool) -> Vec<(f32, u32)> {
        let queries: Arc<[f32]> = Arc::from(patches);
        let n = patches.len() / dim;
        let run = |search: &mut Search, range: std::ops::Range<usize>| -> Vec<(f32, u32)> {
            range
                .map(|i| self.nearest_one(bank, &Row { data: Arc::clone(&queries), start: i * dim, dim }, search))
                .collect()
        };
        let chunks: Vec<std::ops::Range<usize>> =
            (0..n).step_by(QUERY_CHUNK).map(|s| s..(s + QUERY_CHUNK).min(n)).collect();
        if parallel {
            chunks.into_par_iter().map_init(Search::default, run).flatten_iter().collect()
        } else {
            let mut search = Search::default();
            chunks.into_iter().flat_map(|r| run(&mut search, r)).collect()
        }
    }

    fn nearest_one(&self, bank: &[f32], query: &Row, search: &mut Search) -> (f32, u32) {
        let q = query.values();
        let dim = query.dim;
        let found: Vec<(f32, usize)> =
            self.hnsw.search(query, search).map(|item| (item.distance, item.point.start / dim)).collect();
        let smallest = found.iter().map(|f| f.0).fold(f32::INFINITY, f32::min);
        let cutoff = candidate_cutoff(smallest, dim);
        let mut best = (f64::INFINITY, u32::MAX);
        let mut consider = |j: usize| {
            let d = exact_sq_dist(q, &bank[j * dim..(j + 1) * dim]);
            let j = j as u32;
            if d < best.0 || (d == best.0 && j < best.1) || best.1 == u32::MAX {
                best = (d, j);
            }
        };
        if found.is_empty() || !cutoff.is_finite() {
            // An empty graph search or distances out of f32 range: every row, exactly.
            (0..bank.len() / dim).for_each(consider);
        } else {
            found.iter().filter(|f| f64::from(f.0) <= cutoff).for_each(|f| consider(f.1));
        }
        (best.0.sqrt() as f32, best.1)
    }
}

/// The largest f32 distance ([`sq_dist`]) a candidate may have and still be the exact nearest
/// one when the smallest is `smallest`: the f32 sum of `dim` squared differences errs by at most
/// g = (dim + 3) u / (1 - (dim + 3) u) relative to the exact value (one rounding per difference,
/// square and sum, any order; all terms are non-negative), so D <= d~ / (1 - g) for the smallest
/// and D >= d~ / (1 + g) for a candidate. Doubled for margin, plus the absolute error of subnormal
/// squares (at most 2^-149 each).
fn candidate_cutoff(smallest: f32, dim: usize) -> f64 {
    let nu = (dim as f64 + 3.0) * f64::from(f32::EPSILON) / 2.0;
    let g = if nu < 0.25 { nu / (1.0 - nu) } else { return f64::INFINITY };
    let tiny = (dim as f64 + 1.0) * 2f64.powi(-149);
    ((f64::from(smallest) + tiny) * (1.0 + 2.0 * g) / (1.0 - 2.0 * g) + tiny).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn_exact::tests::brute_force;
    use crate::testdata::nominal_rows;

    fn index(rows: Vec<f32>, dim: usize, ef: usize) -> (Arc<[f32]>, HnswIndex) {
        let rows: Arc<[f32]> = rows.into();
        let p = HnswParams { ef_construction: ef, ef_search: ef, seed: 1 };
        let idx = HnswIndex::build(&rows, dim, p);
        (rows, idx)
    }

    #[test]
    fn a_search_as_wide_as_a_small_bank_is_exact() {
        // ef at least the bank's size: the ground layer's search keeps every row it reaches,
        // and the graph of 300 rows is connected, so every row is a candidate.
        let dim = 64;
        let bank = nominal_rows(300, dim, 2);
        let (rows, idx) = index(bank.clone(), dim, 400);
        let queries = nominal_rows(200, dim, 3);
        let got = idx.nearest(&rows, &queries, dim, true);
        let want: Vec<_> = queries.chunks_exact(dim).map(|q| brute_force(&bank, q)).collect();
        assert_eq!(got, want);
        assert_eq!(got, idx.nearest(&rows, &queries, dim, false), "parallel and sequential queries differ");
    }

    #[test]
    fn recall_on_a_clustered_bank_is_high_and_distances_are_the_exact_ones() {
        let dim = 32;
        let bank = nominal_rows(3000, dim, 5);
        let (rows, idx) = index(bank.clone(), dim, 32);
        let queries = nominal_rows(500, dim, 6);
        let got = idx.nearest(&rows, &queries, dim, true);
        let mut hits = 0;
        for (q, &(d, j)) in queries.chunks_exact(dim).zip(&got) {
            let (want_d, _) = brute_force(&bank, q);
            assert!(d >= want_d, "an approximate neighbour cannot be nearer than the exact one");
            // The reported distance is the exact one of the returned row.
            assert_eq!(d, (exact_sq_dist(q, &bank[j as usize * dim..][..dim])).sqrt() as f32);
            hits += usize::from(d == want_d);
        }
        assert!(hits >= 475, "recall@1 {hits}/500");
    }

    #[test]
    fn the_same_input_builds_the_same_graph() {
        let dim = 16;
        let bank = nominal_rows(2000, dim, 8);
        let queries = nominal_rows(300, dim, 9);
        // ef 4: a narrow search whose misses depend on the graph, so a different graph shows.
        let (rows, a) = index(bank.clone(), dim, 4);
        let (_, b) = index(bank, dim, 4);
        assert_eq!(a.nearest(&rows, &queries, dim, true), b.nearest(&rows, &queries, dim, true));
    }

    #[test]
    fn the_row_distance_is_the_squared_distance() {
        let a: Vec<f32> = (0..1027).map(|i| (i % 13) as f32 * 0.25).collect();
        let b: Vec<f32> = (0..1027).map(|i| (i % 7) as f32 * 0.5).collect();
        let want = exact_sq_dist(&a, &b);
        let got = f64::from(row_dist(&a, &b));
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
        assert_eq!(row_dist(&a, &b), sq_dist(&a, &b), "the AVX2 build gives other bits");
    }

    #[test]
    fn the_cutoff_keeps_ties_within_rounding_and_drops_clear_losers() {
        let c = candidate_cutoff(1.0, 1024);
        assert!(c > 1.0 + 1e-4 && c < 1.0 + 1e-3, "{c}");
        assert!(candidate_cutoff(0.0, 1024) > 0.0);
        assert!(candidate_cutoff(f32::INFINITY, 8).is_infinite());
    }
}
