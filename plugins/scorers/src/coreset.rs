//! Greedy k-center coreset selection (PatchCore, Algorithm 1): repeatedly take the point
//! farthest from everything taken so far, measured on a seeded random projection.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::linalg::{sgemm, sq_dist, View};

/// Dimension of the random projection the selection works on (as in the paper's code).
pub const PROJECTION_DIM: usize = 128;

/// `rows` (row-major, `dim` columns) projected by a seeded Gaussian matrix to
/// [`PROJECTION_DIM`] dimensions; rows already that small are returned as they are.
pub fn random_projection(rows: &[f32], dim: usize, seed: u64) -> (Vec<f32>, usize) {
    if dim <= PROJECTION_DIM {
        return (rows.to_vec(), dim);
    }
    (Projection::new(dim, seed).apply(rows), PROJECTION_DIM)
}

/// The seeded Gaussian matrix of [`random_projection`], made once for rows that arrive in parts.
pub struct Projection {
    matrix: Vec<f32>,
    dim: usize,
}

impl Projection {
    /// The map from `dim` columns (more than [`PROJECTION_DIM`]) to [`PROJECTION_DIM`].
    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = 1.0 / (PROJECTION_DIM as f32).sqrt();
        // Box-Muller Gaussian entries: a Johnson-Lindenstrauss map that keeps distances in expectation.
        let matrix = (0..dim * PROJECTION_DIM)
            .map(|_| {
                let (u, v): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
                scale * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            })
            .collect();
        Self { matrix, dim }
    }

    /// `rows` (`dim` columns) projected; a row's projection does not depend on the rows
    /// projected with it.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let dim = self.dim;
        let n = rows.len() / dim;
        let mut out = vec![0.0f32; n * PROJECTION_DIM];
        // In row blocks so the GEMM threads and its buffers stay small.
        const BLOCK: usize = 8192;
        out.par_chunks_mut(BLOCK * PROJECTION_DIM).zip(rows.par_chunks(BLOCK * dim)).for_each(|(o, r)| {
            let m = r.len() / dim;
            sgemm(1.0, View::rows(r, m, dim), View::rows(&self.matrix, dim, PROJECTION_DIM), 0.0, o);
        });
        out
    }
}

/// Indices of `count` points chosen by greedy k-center from `points` (row-major, `dim`
/// columns), starting at `first`, in selection order.
///
/// The same picks as [`greedy_k_center_scan`], which measures every point against every new
/// centre, with most of those measurements skipped: a point whose distance to its own centre
/// is small against that centre's distance to the new one cannot come nearer to the new one
/// (triangle inequality). The bound allows for the rounding of the computed distances
/// ([`PruneBound`]), so a skipped point is one whose computed distance could not have dropped,
/// and the picks are bit-identical. Of the points left, those whose 8-bit codes already put
/// them too far from the new centre are skipped too ([`Quantized`]: a quarter of the bytes,
/// exact integer sums, the codes' rounding error bounded per row). Points are visited in
/// order, so the rows that are measured stream from memory as in the plain scan.
pub fn greedy_k_center(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
    k_center(points, dim, count, first, PruneBound::new(dim))
}

/// Greedy k-center measuring every point against every new centre: the plain algorithm, the
/// benchmark's reference.
pub fn greedy_k_center_scan(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
    k_center(points, dim, count, first, None)
}

fn k_center(points: &[f32], dim: usize, count: usize, first: usize, bound: Option<PruneBound>) -> Vec<usize> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    let count = count.min(n).min(u32::MAX as usize);
    if count == 0 {
        return Vec::new();
    }
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let screen = bound.as_ref().and_then(|_| Quantized::new(points, dim));
    let mut chosen = Vec::with_capacity(count);
    // The chosen rows, side by side, so the per-pick centre distances stream.
    let mut centres: Vec<f32> = Vec::with_capacity(count * dim);
    let mut min_d = vec![f32::INFINITY; n];
    // The centre (position in `chosen`) each point's distance was measured against; any
    // value while the distance is infinite, which is always measured.
    let mut owner = vec![0u32; n];
    // Per point, what the quantized screen needs to know of its distance (Quantized::reach).
    let mut reach = vec![f64::INFINITY; n];
    // Per earlier centre, the distance below which its points are not measured: rebuilt at
    // every pick with a bound, all -inf (measure everything) without one.
    let mut skip_below = vec![f32::NEG_INFINITY; if bound.is_some() { 1 } else { count }];
    let mut screen_rest = 0u32;
    const SCREEN_REST: u32 = 64;
    let mut next = first;
    const CHUNK: usize = 4096;
    while chosen.len() < count {
        let slot = chosen.len() as u32;
        chosen.push(next);
        let c = row(next);
        if let Some(bound) = bound.as_ref().filter(|_| slot > 0) {
            skip_below.clear();
            skip_below.par_extend(centres.par_chunks(1024 * dim).flat_map_iter(|block| bound.skip_below_all(block, c)));
        }
        centres.extend_from_slice(c);
        let update = Update {
            c,
            slot,
            skip_below: &skip_below,
            screen: screen.as_ref().zip(bound.as_ref()).map(|(quantized, bound)| Screen {
                quantized,
                bound,
                centre: quantized.codes(next, next + 1),
                centre_error: quantized.error[next],
                on: screen_rest == 0,
            }),
        };
        // Update every point's distance to the chosen set and find the farthest, per chunk.
        let Tally { farthest: (best_d, best_i), screened, ruled_out } = min_d
            .par_chunks_mut(CHUNK)
            .zip(owner.par_chunks_mut(CHUNK))
            .zip(reach.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(ci, ((md, own), rch))| {
                let (base, len) = (ci * CHUNK, md.len());
                update.chunk(Chunk {
                    md,
                    owner: own,
                    reach: rch,
                    points: &points[base * dim..(base + len) * dim],
                    base,
                })
            })
            .reduce(Tally::default, Tally::join);
        // Where the codes rarely rule a point out (distances all alike), the screen only
        // costs: rest it for a while, then try again. Either way the picks are the same.
        screen_rest = match screen_rest {
            0 if screened > 0 && ruled_out * 4 < screened => SCREEN_REST,
            0 => 0,
            n => n - 1,
        };
        if best_i == usize::MAX || best_d <= 0.0 {
            break; // every remaining point duplicates a chosen one
        }
        next = best_i;
    }
    chosen
}

/// One pick's update: the new centre, its position among the chosen, per earlier centre the
/// distance below which that centre's points are not measured, and the quantized screen.
struct Update<'a> {
    c: &'a [f32],
    slot: u32,
    skip_below: &'a [f32],
    screen: Option<Screen<'a>>,
}

/// A run of consecutive points: their distances to the chosen set, centres and reaches.
struct Chunk<'a> {
    md: &'a mut [f32],
    owner: &'a mut [u32],
    reach: &'a mut [f64],
    points: &'a [f32],
    /// Index of the first point.
    base: usize,
}

/// The new centre's codes and rounding error, for [`Quantized::rules_out`].
struct Screen<'a> {
    quantized: &'a Quantized,
    bound: &'a PruneBound,
    centre: &'a [i8],
    centre_error: f64,
    /// Whether to screen at this pick (the reaches are kept up to date either way).
    on: bool,
}

/// One pick's outcome over some points: the farthest (first on ties; `usize::MAX` if none
/// beats -inf), how many points the screen looked at and how many it ruled out.
struct Tally {
    farthest: (f32, usize),
    screened: usize,
    ruled_out: usize,
}

impl Default for Tally {
    fn default() -> Self {
        Self { farthest: (f32::NEG_INFINITY, usize::MAX), screened: 0, ruled_out: 0 }
    }
}

impl Tally {
    fn join(a: Self, b: Self) -> Self {
        let (x, y) = (a.farthest, b.farthest);
        Self {
            farthest: if y.0 > x.0 || (y.0 == x.0 && y.1 < x.1) { y } else { x },
            screened: a.screened + b.screened,
            ruled_out: a.ruled_out + b.ruled_out,
        }
    }
}

impl Update<'_> {
    /// Lowers each point's distance to the chosen set by its distance to the new centre;
    /// returns the farthest point, first on ties (`usize::MAX` if none beats -inf).
    fn chunk(&self, chunk: Chunk<'_>) -> Tally {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU runs AVX2, checked just above.
            return unsafe { self.chunk_avx2(chunk) };
        }
        self.chunk_portable(chunk)
    }

    /// [`Self::chunk_portable`] compiled for 256-bit registers: lane for lane the same
    /// subtractions, multiplications and additions as `sq_dist` (no FMA, no reordering), so
    /// the distances, and hence the picks, are bit-identical to the portable build.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn chunk_avx2(&self, chunk: Chunk<'_>) -> Tally {
        self.chunk_portable(chunk)
    }

    #[inline(always)]
    fn chunk_portable(&self, chunk: Chunk<'_>) -> Tally {
        let Chunk { md, owner, reach, points, base } = chunk;
        let dim = self.c.len();
        let mut tally = Tally::default();
        let best = &mut tally.farthest;
        let screen = self.screen.as_ref().filter(|s| s.on);
        for (j, ((m, own), p)) in md.iter_mut().zip(owner.iter_mut()).zip(points.chunks_exact(dim)).enumerate() {
            // Neither is NaN: distances to the set never take a NaN, nor does the bound.
            let mut ruled_out = *m < self.skip_below[*own as usize];
            if let Some(s) = screen.filter(|_| !ruled_out) {
                tally.screened += 1;
                ruled_out = s.quantized.rules_out(
                    s.quantized.codes(base + j, base + j + 1),
                    s.centre,
                    reach[j],
                    s.centre_error,
                );
                tally.ruled_out += usize::from(ruled_out);
            }
            if !ruled_out {
                let d = sq_dist(p, self.c);
                if d < *m {
                    *m = d;
                    *own = self.slot;
                    if let Some(s) = &self.screen {
                        reach[j] = s.quantized.reach(d, s.quantized.error[base + j], s.bound);
                    }
                }
            }
            if *m > best.0 {
                *best = (*m, base + j);
            }
        }
        tally
    }
}

/// The rows rounded to 8-bit integers on one scale shared by all, with a bound on each row's
/// rounding error: a lower bound on any distance from integer arithmetic, which is exact, on
/// a quarter of the bytes. A point whose bound already exceeds its distance to the chosen set
/// is not measured.
///
/// With x~ = scale q_x (a real number, no rounding), |x - c| >= |x~ - c~| - e_x - e_c =
/// scale sqrt(I) - e_x - e_c, I = sum (q_x - q_c)² exactly. If that exceeds
/// R = sqrt((ŝ(x,a) + η) / (1 - γ)) (the point's current computed distance ŝ(x,a), and
/// [`PruneBound`]'s γ and η), then (1 - γ)|x - c|² - η > ŝ(x,a), so the computed ŝ(x,c)
/// cannot be below it. Every f64 step adds relative slack 1e-9 (its own rounding is ~1e-15).
struct Quantized {
    codes: Vec<i8>,
    /// Per row, an upper bound on |x - x~|.
    error: Vec<f64>,
    inv_scale: f64,
    dim: usize,
}

impl Quantized {
    /// `None` when there is nothing to gain or the bound cannot be kept: rows all zero,
    /// non-finite values, or a width whose integer sums could overflow.
    fn new(points: &[f32], dim: usize) -> Option<Self> {
        if dim == 0 || dim > 30_000 || !points.iter().all(|v| v.is_finite()) {
            return None;
        }
        let max = points.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
        if max == 0.0 {
            return None;
        }
        let scale = max / 127.0;
        let inv_scale = 1.0 / scale;
        let codes: Vec<i8> = points
            .par_iter()
            .with_min_len(1 << 16)
            .map(|&v| (f64::from(v) * inv_scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let error: Vec<f64> = points
            .par_chunks(dim)
            .zip(codes.par_chunks(dim))
            .with_min_len(1024)
            .map(|(row, q)| {
                let sum: f64 = row.iter().zip(q).map(|(&v, &q)| (f64::from(v) - scale * f64::from(q)).powi(2)).sum();
                // The f64 products scale * q carry an absolute error up to 2^-53 max each.
                sum.sqrt() * (1.0 + 1e-9) + 1e-12 * max
            })
            .collect();
        Some(Self { codes, error, inv_scale, dim })
    }

    fn codes(&self, from: usize, to: usize) -> &[i8] {
        &self.codes[from * self.dim..to * self.dim]
    }

    /// R + e_x for a point at computed distance `d` to the chosen set with rounding error
    /// `error`; infinite while `d` is.
    fn reach(&self, d: f32, error: f64, bound: &PruneBound) -> f64 {
        (error + ((f64::from(d) + bound.eta) / (1.0 - bound.gamma)).sqrt()) * (1.0 + 1e-9)
    }

    /// Whether a point with codes `q` and [`Self::reach`] `reach` cannot come nearer to the
    /// centre with codes `qc` and rounding error `centre_error`.
    #[inline(always)]
    fn rules_out(&self, q: &[i8], qc: &[i8], reach: f64, centre_error: f64) -> bool {
        let needed = (reach + centre_error) * self.inv_scale;
        let sum: i32 = q
            .iter()
            .zip(qc)
            .map(|(&a, &b)| {
                let d = i32::from(a) - i32::from(b);
                d * d
            })
            .sum();
        f64::from(sum) > needed * needed * (1.0 + 1e-9)
    }
}

/// When a new centre cannot lower a point's computed distance, allowing for rounding.
///
/// Let a be a point's centre, c the new one, and ŝ(·,·) the squared distance as `sq_dist`
/// computes it. For true squared distances s, |ŝ - s| <= γ s + η: every term is non-negative,
/// so the relative error of the sum is at most γ = γ_m = m u / (1 - m u) (u = 2^-24) with m
/// roundings per term (a subtraction, a product and at most `dim + 8` additions, whatever the
/// order); η, at most 2^-149 per rounding, covers results in the subnormal range. Then
///   A = sqrt((ŝ(a,c) - η) / (1 + γ)) <= |a - c| and B = sqrt((ŝ(x,a) + η) / (1 - γ)) >= |x - a|,
/// and by the triangle inequality |x - c| >= A - B. If A >= (1 + ρ) B + sqrt(2η / (1 - γ)),
/// ρ = sqrt((1 + γ) / (1 - γ)), then (1 - γ) |x - c|² >= (1 + γ) |x - a|² + 2η, hence
/// ŝ(x,c) >= ŝ(x,a): the point keeps its distance and its centre. Solved for ŝ(x,a), that is
/// ŝ(x,a) < T(ŝ(a,c)) = B_max² (1 - γ) - η with B_max = (A - sqrt(2η / (1 - γ))) / (1 + ρ);
/// T is shrunk by 1e-9 relative to cover its own f64 rounding (about 1e-15).
struct PruneBound {
    gamma: f64,
    rho: f64,
    eta: f64,
}

impl PruneBound {
    /// `None` where the bound is too loose to be worth it (a dimension of millions).
    fn new(dim: usize) -> Option<Self> {
        let m = (dim + 10) as f64;
        let mu = m * f64::powi(2.0, -24);
        if mu >= 0.01 {
            return None;
        }
        let gamma = mu / (1.0 - mu);
        Some(Self { gamma, rho: ((1.0 + gamma) / (1.0 - gamma)).sqrt(), eta: m * f64::powi(2.0, -149) })
    }

    /// The computed distance below which a point of a centre at computed distance
    /// `centre_d` from the new centre cannot come nearer to the new one: the largest f32 not
    /// above [`Self::keep_below`].
    #[inline]
    fn skip_below(&self, centre_d: f32) -> f32 {
        let t = self.keep_below(centre_d);
        let t32 = t as f32;
        if f64::from(t32) > t {
            t32.next_down()
        } else {
            t32
        }
    }

    /// [`Self::skip_below`] for each row of `centres` against `c`.
    fn skip_below_all(&self, centres: &[f32], c: &[f32]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU runs AVX2, checked just above.
            return unsafe { self.skip_below_all_avx2(centres, c) };
        }
        self.skip_below_all_portable(centres, c)
    }

    /// # Safety
    /// The CPU supports AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn skip_below_all_avx2(&self, centres: &[f32], c: &[f32]) -> Vec<f32> {
        self.skip_below_all_portable(centres, c)
    }

    #[inline(always)]
    fn skip_below_all_portable(&self, centres: &[f32], c: &[f32]) -> Vec<f32> {
        centres.chunks_exact(c.len()).map(|a| self.skip_below(sq_dist(a, c))).collect()
    }

    /// [`Self::skip_below`] in f64; -inf (measure everything) if `centre_d` is not finite.
    fn keep_below(&self, centre_d: f32) -> f64 {
        if !centre_d.is_finite() {
            return f64::NEG_INFINITY;
        }
        let Self { gamma, rho, eta } = *self;
        let a = ((f64::from(centre_d) - eta).max(0.0) / (1.0 + gamma)).sqrt();
        let b_max = (a - (2.0 * eta / (1.0 - gamma)).sqrt()) / (1.0 + rho);
        if b_max <= 0.0 {
            return f64::NEG_INFINITY;
        }
        (b_max * b_max * (1.0 - gamma) - eta) * (1.0 - 1e-9)
    }
}

/// The rows of `points` (`dim` columns) at `picked`, in that order, as one contiguous block.
pub fn rows_at(points: &[f32], dim: usize, picked: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(picked.len() * dim);
    for &i in picked {
        out.extend_from_slice(&points[i * dim..(i + 1) * dim]);
    }
    out
}

/// The seeded first pick of a greedy k-center over `n` rows (`salt` tells parts apart).
fn first_pick(seed: u64, salt: u64, n: usize) -> usize {
    ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15 ^ salt).gen_range(0..n)
}

/// How the coreset's rows are picked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Selection {
    /// Greedy k-center over all rows (PatchCore, Algorithm 1).
    #[default]
    Greedy,
    /// A two-level approximation: the rows are split by k-means into `clusters` parts, and
    /// greedy k-center runs inside each part ([`pre_clustered_k_center`]).
    PreClustered { clusters: usize },
}

/// The PatchCore coreset: `fraction` of the rows (at least one), picked by greedy k-center on
/// a seeded random projection. Returns the selected row indices.
pub fn select(rows: &[f32], dim: usize, fraction: f64, seed: u64) -> Vec<usize> {
    select_with(rows, dim, fraction, seed, Selection::Greedy)
}

/// [`select`] by `selection`.
pub fn select_with(rows: &[f32], dim: usize, fraction: f64, seed: u64, selection: Selection) -> Vec<usize> {
    if dim <= PROJECTION_DIM || fraction >= 1.0 {
        return select_projected_with(rows, dim, fraction, seed, selection); // already narrow, or every row kept
    }
    select_projected_with(&Projection::new(dim, seed).apply(rows), PROJECTION_DIM, fraction, seed, selection)
}

/// [`select`] on rows already projected (by [`Projection`] with the same seed, or at most
/// [`PROJECTION_DIM`] wide to begin with): the same picks, without copying the rows.
pub fn select_projected(proj: &[f32], pdim: usize, fraction: f64, seed: u64) -> Vec<usize> {
    select_projected_with(proj, pdim, fraction, seed, Selection::Greedy)
}

/// [`select_projected`] by `selection`.
pub fn select_projected_with(proj: &[f32], pdim: usize, fraction: f64, seed: u64, selection: Selection) -> Vec<usize> {
    let n = proj.len().checked_div(pdim).unwrap_or(0);
    if fraction >= 1.0 || n == 0 {
        return (0..n).collect();
    }
    let count = ((n as f64 * fraction) as usize).clamp(1, n);
    match selection {
        Selection::Greedy => greedy_k_center(proj, pdim, count, first_pick(seed, 0, n)),
        Selection::PreClustered { clusters } => pre_clustered_k_center(proj, pdim, count, clusters, seed),
    }
}

/// Rows of the k-means sample: enough for the centroids, few enough to cost little next to
/// the selection.
const KMEANS_SAMPLE: usize = 16_384;
/// Lloyd iterations on the sample after the k-means++ seeding.
const KMEANS_ITERATIONS: usize = 5;

/// `count` rows of `points` (`dim` columns) by a two-level k-center: k-means (k-means++
/// seeding and a few Lloyd iterations on a seeded sample of the rows) splits the rows into
/// `clusters` parts, each row going to its nearest centroid; each part gets a share of
/// `count` proportional to its rows (largest remainder; a part whose share rounds to nothing
/// still gets one, taken from the largest share), and exact greedy k-center picks
/// [`OVERSAMPLE`] times that many inside the part, the parts side by side on the thread pool.
/// Exact greedy k-center over the union of those picks then keeps `count` (the two-round
/// scheme of distributed k-center, e.g. Malkomes et al., NeurIPS 2015, with parts by k-means
/// instead of at random).
///
/// The work of greedy k-center, rows times picks, drops by about the number of parts over
/// [`OVERSAMPLE`] (less where the parts are uneven); what it trades is coverage across part
/// borders: in the first round a row near a border is covered only by its own part's picks.
/// Every step is seeded by `seed` and none depends on thread timing, so the rows returned
/// depend on the rows and the seed alone. Fewer than `count` only where the parts run out of
/// distinct rows.
pub fn pre_clustered_k_center(points: &[f32], dim: usize, count: usize, clusters: usize, seed: u64) -> Vec<usize> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    let count = count.min(n);
    let clusters = clusters.clamp(1, n.max(1));
    if count == 0 {
        return Vec::new();
    }
    let centroids = kmeans(points, dim, clusters, seed);
    // Each row's part: its nearest centroid, ties to the lowest.
    let part: Vec<u32> =
        points.par_chunks(dim).with_min_len(1024).map(|p| nearest(&centroids, dim, p).1 as u32).collect();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); clusters];
    for (i, &c) in part.iter().enumerate() {
        members[c as usize].push(i);
    }
    let shares = apportion(&members.iter().map(Vec::len).collect::<Vec<_>>(), count);
    let picks: Vec<Vec<usize>> = members
        .par_iter()
        .zip(shares.par_iter())
        .enumerate()
        .map(|(c, (rows, &share))| {
            if share == 0 {
                return Vec::new();
            }
            let first = first_pick(seed, (c as u64).wrapping_mul(0x2545_f491), rows.len());
            let take = (OVERSAMPLE * share).min(rows.len());
            greedy_k_center(&rows_at(points, dim, rows), dim, take, first).into_iter().map(|j| rows[j]).collect()
        })
        .collect();
    let union: Vec<usize> = picks.into_iter().flatten().collect();
    if union.len() <= count {
        return union;
    }
    // Second round: greedy k-center over the union sets the final shares by coverage rather
    // than by row counts, so a sparse part keeps more of its picks than a dense one.
    let first = first_pick(seed, 0, union.len());
    greedy_k_center(&rows_at(points, dim, &union), dim, count, first).into_iter().map(|j| union[j]).collect()
}

/// How many times its share a part picks in the first round of [`pre_clustered_k_center`].
const OVERSAMPLE: usize = 2;

/// `count` split over parts of `sizes` rows in proportion (largest remainder, ties to the
/// lower part); where `count` allows, a non-empty part whose share rounds to nothing gets one,
/// taken from the largest share. No share exceeds its part.
fn apportion(sizes: &[usize], count: usize) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    if n == 0 {
        return vec![0; sizes.len()];
    }
    // Exact integer quotients: count * size / n, remainder count * size % n.
    let quota = |s: usize| (count as u128 * s as u128 / n as u128) as usize;
    let rem = |s: usize| count as u128 * s as u128 % n as u128;
    let mut shares: Vec<usize> = sizes.iter().map(|&s| quota(s)).collect();
    let left = count - shares.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| rem(sizes[b]).cmp(&rem(sizes[a])).then(a.cmp(&b)));
    for &c in order.iter().take(left) {
        shares[c] += 1; // a remainder > 0 means quota < size, so the part has room
    }
    if sizes.iter().filter(|&&s| s > 0).count() <= count {
        for (c, &size) in sizes.iter().enumerate() {
            if size > 0 && shares[c] == 0 {
                // The largest share (lowest part on ties) is at least 2 here: count covers every part.
                let (big, _) = shares.iter().enumerate().fold((0, 0), |m, (j, &s)| if s > m.1 { (j, s) } else { m });
                shares[big] -= 1;
                shares[c] = 1;
            }
        }
    }
    shares
}

/// The nearest of `centroids` (`dim` columns) to `p`: its squared distance and index, ties to
/// the lowest.
fn nearest(centroids: &[f32], dim: usize, p: &[f32]) -> (f32, usize) {
    centroids.chunks_exact(dim).enumerate().fold((f32::INFINITY, 0), |best, (j, c)| {
        let d = sq_dist(p, c);
        if d < best.0 {
            (d, j)
        } else {
            best
        }
    })
}

/// `k` centroids of `points`: k-means++ seeding and [`KMEANS_ITERATIONS`] Lloyd steps on a
/// seeded sample of at most [`KMEANS_SAMPLE`] rows, sums taken in row order (deterministic).
fn kmeans(points: &[f32], dim: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = points.len() / dim;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6a09_e667_f3bc_c908);
    let sample: Vec<usize> = if n <= KMEANS_SAMPLE {
        (0..n).collect()
    } else {
        let mut s = rand::seq::index::sample(&mut rng, n, KMEANS_SAMPLE).into_vec();
        s.sort_unstable();
        s
    };
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    // k-means++: each next centroid drawn with probability proportional to the squared distance.
    let mut centroids = Vec::with_capacity(k * dim);
    centroids.extend_from_slice(row(sample[rng.gen_range(0..sample.len())]));
    let mut d2: Vec<f64> = sample.iter().map(|&i| f64::from(sq_dist(row(i), &centroids[..dim]))).collect();
    while centroids.len() < k * dim {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.gen_range(0.0..total);
            d2.iter()
                .position(|&d| {
                    t -= d;
                    t < 0.0
                })
                .unwrap_or(sample.len() - 1)
        } else {
            rng.gen_range(0..sample.len())
        };
        let c = row(sample[pick]).to_vec();
        for (d, &i) in d2.iter_mut().zip(&sample) {
            *d = d.min(f64::from(sq_dist(row(i), &c)));
        }
        centroids.extend_from_slice(&c);
    }
    for _ in 0..KMEANS_ITERATIONS {
        let owner: Vec<usize> = sample.par_iter().map(|&i| nearest(&centroids, dim, row(i)).1).collect();
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (&i, &c) in sample.iter().zip(&owner) {
            counts[c] += 1;
            for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(v);
            }
        }
        for ((centroid, sum), &count) in centroids.chunks_exact_mut(dim).zip(sums.chunks_exact(dim)).zip(&counts) {
            if count > 0 {
                for (x, s) in centroid.iter_mut().zip(sum) {
                    *x = (s / count as f64) as f32;
                }
            } // an empty centroid stays where it was
        }
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Greedy k-center in one plain scan per pick: strict `>`, so ties go to the lowest index.
    fn greedy_k_center_serial(points: &[f32], dim: usize, count: usize, first: usize) -> Vec<usize> {
        let n = points.len() / dim;
        let mut chosen = Vec::new();
        let mut min_d = vec![f32::INFINITY; n];
        let mut next = first;
        while chosen.len() < count.min(n) {
            chosen.push(next);
            let c = &points[next * dim..(next + 1) * dim];
            let mut best = (f32::NEG_INFINITY, usize::MAX);
            for (i, p) in points.chunks_exact(dim).enumerate() {
                min_d[i] = min_d[i].min(sq_dist(p, c));
                if min_d[i] > best.0 {
                    best = (min_d[i], i);
                }
            }
            if best.1 == usize::MAX || best.0 <= 0.0 {
                break;
            }
            next = best.1;
        }
        chosen
    }

    #[test]
    fn parallel_picks_equal_the_serial_scan() {
        // Sizes below, at and across the 4096-row chunks; small integer coordinates make many
        // exact distance ties, across chunks too, which the reduction must break like the scan.
        // 128 columns: the projected width, where the SIMD build's lanes are all in use.
        let sizes =
            [(1, 3, 1), (50, 2, 20), (4096, 3, 300), (4097, 2, 500), (13_001, 4, 900), (9000, 128, 200), (700, 13, 90)];
        for (i, &(n, dim, count)) in sizes.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            let points: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(0..6) as f32).collect();
            let first = rng.gen_range(0..n);
            let want = greedy_k_center_serial(&points, dim, count, first);
            assert_eq!(greedy_k_center(&points, dim, count, first), want, "n {n} dim {dim}");
            assert_eq!(greedy_k_center_scan(&points, dim, count, first), want, "n {n} dim {dim}, scan");
            let floats: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let want = greedy_k_center_serial(&floats, dim, count, first);
            assert_eq!(greedy_k_center(&floats, dim, count, first), want, "n {n} dim {dim}, floats");
            assert_eq!(greedy_k_center_scan(&floats, dim, count, first), want, "n {n} dim {dim}, floats, scan");
        }
    }

    /// Gaussian blobs around `centres` random centres, spread `spread`, scaled by `scale`.
    fn blobs(n: usize, dim: usize, centres: usize, spread: f32, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let means: Vec<f32> = (0..centres * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = rng.gen_range(0..centres);
            for j in 0..dim {
                let g: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>() * 0.5;
                out.push(scale * (means[c * dim + j] + spread * g));
            }
        }
        out
    }

    #[test]
    fn pruned_picks_equal_the_serial_scan_on_clustered_data() {
        // Clustered rows, where the pruning skips most measurements, at the projected width and
        // a small one; 20,000 rows put more than the parallel threshold in the first cluster.
        for (i, &(n, dim, centres, spread, count)) in
            [(20_000, 128, 40, 0.05, 2000), (6000, 16, 12, 0.2, 3000), (3000, 128, 3, 0.01, 3000)].iter().enumerate()
        {
            let points = blobs(n, dim, centres, spread, 1.0, i as u64);
            let want = greedy_k_center_serial(&points, dim, count, 7);
            assert_eq!(greedy_k_center(&points, dim, count, 7), want, "n {n} dim {dim}");
        }
    }

    #[test]
    fn pruned_picks_equal_the_serial_scan_at_extreme_magnitudes() {
        // Tiny rows (squared distances in the subnormal range), huge ones (some squared
        // distances overflow to infinity) and exact duplicates (a pick at distance 0 stops).
        for (i, scale) in [1e-21f32, 1e-19, 1e18, 3e18].into_iter().enumerate() {
            let points = blobs(2500, 24, 6, 0.1, scale, 10 + i as u64);
            let want = greedy_k_center_serial(&points, 24, 800, 3);
            assert_eq!(greedy_k_center(&points, 24, 800, 3), want, "scale {scale}");
        }
        let mut dup = blobs(100, 8, 4, 0.1, 1.0, 20);
        dup.extend_from_within(..);
        let want = greedy_k_center_serial(&dup, 8, 150, 0);
        assert!(want.len() <= 100, "duplicates end the selection early");
        assert_eq!(greedy_k_center(&dup, 8, 150, 0), want);
    }

    #[test]
    fn the_prune_bound_never_skips_a_point_that_would_come_nearer() {
        // x between its centre a and the new centre c, on or near the segment, around the
        // midpoint where the triangle inequality is tight: whenever the bound says skip, the
        // computed distance to c must not be below the computed distance to a.
        let dim = PROJECTION_DIM;
        let bound = PruneBound::new(dim).expect("a bound at 128 dimensions");
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut skipped, mut checked) = (0, 0);
        for _ in 0..400 {
            let a: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let c: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let keep_below = bound.keep_below(sq_dist(&a, &c));
            for _ in 0..200 {
                let t = 0.5 - rng.gen_range(0.0f32..2e-5);
                let x: Vec<f32> =
                    a.iter().zip(&c).map(|(&p, &q)| p + t * (q - p) + rng.gen_range(-1e-7f32..1e-7)).collect();
                let (to_a, to_c) = (sq_dist(&x, &a), sq_dist(&x, &c));
                checked += 1;
                if f64::from(to_a) < keep_below {
                    skipped += 1;
                    assert!(to_c >= to_a, "skipped a point that comes nearer: {to_c} < {to_a}");
                }
            }
        }
        assert!(skipped > checked / 10, "the bound skipped {skipped} of {checked}: too loose to be of use");
        // Far from the midpoint it skips, at the midpoint it must not.
        let a = vec![0.0f32; dim];
        let mut c = vec![0.0f32; dim];
        c[0] = 2.0;
        let mut x = vec![0.0f32; dim];
        x[0] = 0.9;
        assert!(f64::from(sq_dist(&x, &a)) < bound.keep_below(sq_dist(&a, &c)));
        x[0] = 1.0;
        assert!(f64::from(sq_dist(&x, &a)) >= bound.keep_below(sq_dist(&a, &c)));
        assert_eq!(bound.keep_below(f32::INFINITY), f64::NEG_INFINITY);
        assert_eq!(bound.keep_below(f32::NAN), f64::NEG_INFINITY);
    }

    #[test]
    fn the_quantized_screen_never_rules_out_a_point_that_would_come_nearer() {
        // Pairs (x, c) at distances spread around x's distance to the chosen set, down to the
        // rounding error of the 8-bit codes, where the screen is tight.
        let dim = PROJECTION_DIM;
        let bound = PruneBound::new(dim).expect("a bound at 128 dimensions");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut ruled_out, mut checked) = (0, 0);
        for _ in 0..200 {
            let x: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let dir: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let mut rows = x.clone();
            let mut radii = Vec::new();
            for _ in 0..50 {
                let r = rng.gen_range(0.5f32..1.5);
                radii.push(r);
                rows.extend(x.iter().zip(&dir).map(|(&v, &d)| v + r * d / 6.5));
            }
            let q = Quantized::new(&rows, dim).expect("finite, non-zero rows");
            let m = sq_dist(&x, &rows[dim..2 * dim]); // x's distance to the chosen set: the first c
            let reach = q.reach(m, q.error[0], &bound);
            for k in 1..=radii.len() {
                let c = &rows[k * dim..(k + 1) * dim];
                checked += 1;
                if q.rules_out(q.codes(0, 1), q.codes(k, k + 1), reach, q.error[k]) {
                    ruled_out += 1;
                    assert!(sq_dist(&x, c) >= m, "ruled out a centre that is nearer");
                }
            }
        }
        assert!(ruled_out > checked / 4, "the screen ruled out {ruled_out} of {checked}: too loose to be of use");
        assert!(ruled_out < checked, "the screen ruled out every centre, the nearer ones too");
    }

    /// The largest distance from a row of `points` to its nearest row among `picked`.
    fn covering_radius(points: &[f32], dim: usize, picked: &[usize]) -> f32 {
        let centres = rows_at(points, dim, picked);
        points.par_chunks(dim).map(|p| nearest(&centres, dim, p).0).reduce(|| 0.0, f32::max).sqrt()
    }

    #[test]
    fn pre_clustered_picks_are_seeded_distinct_and_as_many_as_asked() {
        let points = blobs(20_000, 32, 24, 0.1, 1.0, 30);
        let sel = Selection::PreClustered { clusters: 16 };
        let a = select_projected_with(&points, 32, 0.05, 4, sel);
        assert_eq!(a.len(), 1000);
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 1000, "a row picked twice");
        assert!(distinct.last().is_some_and(|&i| i < 20_000));
        assert_eq!(select_projected_with(&points, 32, 0.05, 4, sel), a, "same seed, other picks");
        // On a one-thread pool too: the picks do not depend on the threads.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(pool.install(|| select_projected_with(&points, 32, 0.05, 4, sel)), a, "one thread");
        assert_ne!(select_projected_with(&points, 32, 0.05, 5, sel), a, "another seed, the same picks");
        // A single row, and more parts than rows.
        assert_eq!(select_projected_with(&points[..32], 32, 0.5, 4, sel), vec![0]);
        assert_eq!(
            select_projected_with(&points[..5 * 32], 32, 0.99, 4, Selection::PreClustered { clusters: 9 }).len(),
            4
        );
    }

    #[test]
    fn pre_clustered_covering_radius_is_near_the_exact_greedy_on_clustered_data() {
        // Blobs (a few rows moved far out), at the projected width and a narrow one. Measured:
        // 1.03-1.12 times the exact radius, 64 parts on the 16-d blobs the worst.
        for (i, &(n, dim, centres, spread, fraction)) in
            [(20_000, 128, 40, 0.05, 0.02), (12_000, 16, 10, 0.2, 0.05), (8000, 128, 3, 0.01, 0.1)].iter().enumerate()
        {
            let mut points = blobs(n, dim, centres, spread, 1.0, 40 + i as u64);
            for k in 0..5 {
                points[(k * 997) * dim + k] += 3.0;
            }
            let exact = covering_radius(&points, dim, &select_projected(&points, dim, fraction, 1));
            for clusters in [4, 16, 64] {
                let picked = select_projected_with(&points, dim, fraction, 1, Selection::PreClustered { clusters });
                let approx = covering_radius(&points, dim, &picked);
                assert!(approx <= 1.25 * exact, "n {n} dim {dim}, {clusters} parts: radius {approx} vs exact {exact}");
            }
        }
    }

    #[test]
    fn apportion_is_proportional_and_covers_every_part() {
        assert_eq!(apportion(&[50, 30, 20], 10), vec![5, 3, 2]);
        assert_eq!(apportion(&[1, 1, 1], 2), vec![1, 1, 0], "largest remainder, ties to the lower part");
        assert_eq!(apportion(&[997, 2, 1], 10), vec![8, 1, 1], "tiny parts get one each");
        assert_eq!(apportion(&[0, 4, 0], 3), vec![0, 3, 0]);
        assert_eq!(apportion(&[], 3), Vec::<usize>::new());
        for (sizes, count) in [(vec![7, 3, 11, 1, 0, 5], 13), (vec![1000, 1, 1, 1], 4), (vec![3, 3, 3], 9)] {
            let shares = apportion(&sizes, count);
            assert_eq!(shares.iter().sum::<usize>(), count, "{sizes:?}");
            assert!(shares.iter().zip(&sizes).all(|(s, n)| s <= n && (*n == 0 || *s > 0)), "{sizes:?}: {shares:?}");
        }
    }

    #[test]
    fn picks_the_farthest_points_of_a_line() {
        // Points 0, 1, ..., 10 on a line, starting at 0: then 10, then 5, then one of {2, 3} ...
        let pts: Vec<f32> = (0..=10).map(|v| v as f32).collect();
        let got = greedy_k_center(&pts, 1, 3, 0);
        assert_eq!(got, vec![0, 10, 5]);
        // Then ties at distance 2 ({2, 3, 7, 8}) go to the lowest index: 2, after which 7.
        assert_eq!(greedy_k_center(&pts, 1, 5, 0), vec![0, 10, 5, 2, 7]);
    }

    #[test]
    fn outliers_of_a_1024_dim_cluster_are_all_selected() {
        let dim = 1024;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut rows: Vec<f32> = (0..2000 * dim).map(|_| rng.gen_range(-0.05..0.05)).collect();
        // Five far points, each shifted by 10 along its own axis.
        let outliers = [17usize, 500, 901, 1333, 1999];
        for (k, &o) in outliers.iter().enumerate() {
            rows[o * dim + k * 7] += 10.0;
        }
        let picked = select(&rows, dim, 6.0 / 2000.0, 42);
        assert_eq!(picked.len(), 6);
        for o in outliers {
            assert!(picked.contains(&o), "outlier {o} missing from {picked:?}");
        }
        assert_eq!(select(&rows, dim, 1.0, 42).len(), 2000, "coreset 1.0 keeps every row");
    }
}
