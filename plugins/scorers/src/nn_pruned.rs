//! Exact nearest neighbours that measure few bank rows: a cheap lower bound rules the rest out.
//!
//! Patch features of one category lie near a low-dimensional subspace: on MobileNetV2 patch
//! features, 32 directions of a PatchCore memory bank hold 92-93 % of its variance. With an
//! orthonormal basis P (d x k) of such a subspace, the bank mean m, x = q - m and y = b - m:
//!
//! ```text
//! |q - b|^2 = |P'x - P'y|^2 + |Rx - Ry|^2 >= |P'x - P'y|^2 + (|Rx| - |Ry|)^2 =: L(q, b),   R = I - PP'
//! ```
//!
//! (Pythagoras, then the reverse triangle inequality). L is the squared distance between the
//! (k + 1)-dimensional vectors (P'x, |Rx|) and (P'y, |Ry|), so it costs k + 1 multiply-adds per
//! pair instead of d: one small GEMM against the whole bank. A query then measures exactly
//! ([`exact_sq_dist`]) the row with the smallest L, then every row whose L does not exceed the
//! smallest exact distance found so far plus a rounding allowance; no other row can win. The
//! winner is the row with the smallest `exact_sq_dist`, ties to the lowest index: the rule of
//! [`crate::nn_exact`], so the result has the same bits as a full scan by any kernel. On real
//! features a query measures 8 to 80 of thousands of rows on average (docs/PERFORMANCE.md).
//!
//! Where the bound is weak (features spread over every direction, such as noise) a query would
//! measure many rows: past a budget it is handed back, for a full scan; and a bank whose basis
//! holds under half its variance gets no bound at all.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::linalg::{dgemm, sgemm, View};
use crate::nn_exact::{exact_sq_dist, reported};

/// Directions of the bound's subspace. On a 2,508-row MobileNetV2 bank, 32 directions measure
/// about 10 rows per query and 64 about 4, in the same time (half the GEMM); 32 builds faster.
pub const DIRECTIONS: usize = 32;
/// Bank rows the basis is estimated from (evenly spaced): enough for 32 directions, cheap at fit.
const SAMPLE_ROWS: usize = 4096;
/// Subspace (power) iterations from a seeded random start: the captured variance stops moving
/// after two on MobileNetV2 banks.
const ITERATIONS: usize = 3;
/// Banks smaller than this are scanned whole: the full scan is already cheap there.
const MIN_ROWS: usize = 256;
/// Below this share of the bank's variance the bound rules too little out to pay for itself.
const MIN_CAPTURED: f64 = 0.5;
/// Bank rows projected at a time while building.
const BLOCK: usize = 1024;
/// Most query rows per tile.
const TILE: usize = 64;
/// Bytes of bounds (queries x bank rows, f32) a tile holds at once.
const BOUND_BYTES: usize = 4 << 20;

/// A query's nearest row (Euclidean distance, bank index), or `None` if handed back.
pub type Found = Option<(f32, u32)>;

/// The bound's data for one bank: the basis and every row's reduced vector in it.
pub struct ProjectedBank {
    dim: usize,
    k: usize,
    mean: Vec<f64>,
    /// `dim x k`, row-major: column `t` is direction `t`.
    basis: Vec<f64>,
    /// `rows x (k + 1)`: per bank row, its reduced vector (P'y, |Ry|) rounded to f32.
    reduced: Vec<f32>,
    /// Per bank row, |reduced|^2 less the rounding allowance's share of the row, as f32: the
    /// bound is `|a_q|^2 + offset - 2 a_q.a_b` minus the query's share.
    offset: Vec<f32>,
    /// Relative rounding allowance (see [`allowance`]).
    allowance: f64,
    /// Share of the bank's variance (about its mean) the directions hold.
    captured: f64,
    /// Rows a query may measure before it is handed back for a full scan.
    max_checks: usize,
}

impl ProjectedBank {
    /// The bound for `bank` (row-major, `dim` columns) over [`DIRECTIONS`] directions, or `None`
    /// where it would not pay (a small or low-dimensional bank, a non-finite value, a basis
    /// holding under half the variance).
    pub fn build(bank: &[f32], dim: usize) -> Option<Self> {
        Self::build_with(bank, dim, DIRECTIONS, MIN_ROWS)
    }

    /// [`ProjectedBank::build`] with `k` directions and a smallest bank of `min_rows` rows.
    pub fn build_with(bank: &[f32], dim: usize, k: usize, min_rows: usize) -> Option<Self> {
        let rows = bank.len().checked_div(dim)?;
        if rows < min_rows.max(2) || k == 0 || dim < 2 * k || bank.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut mean = vec![0.0f64; dim];
        for row in bank.chunks_exact(dim) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let basis = estimate_basis(bank, dim, &mean, k)?;
        let allowance = allowance(dim, k, orthonormality_error(&basis, dim, k));
        if !allowance.is_finite() {
            return None;
        }
        let mut reduced = Vec::with_capacity(rows * (k + 1));
        let mut offset = Vec::with_capacity(rows);
        let (mut kept, mut total) = (0.0f64, 0.0f64);
        let mut centred = vec![0.0f64; BLOCK.min(rows) * dim];
        let mut coords = vec![0.0f64; BLOCK.min(rows) * k];
        for chunk in bank.chunks(BLOCK * dim) {
            let n = chunk.len() / dim;
            let centred = &mut centred[..n * dim];
            centre(chunk, &mean, centred);
            let coords = &mut coords[..n * k];
            dgemm(1.0, View::rows(centred, n, dim), View::rows(&basis, dim, k), 0.0, coords);
            for (x, p) in centred.chunks_exact(dim).zip(coords.chunks_exact(k)) {
                let (sq, reduced_sq) = push_reduced(&mut reduced, x, p);
                offset.push((reduced_sq - allowance * sq) as f32);
                kept += sum_sq(p);
                total += sq;
            }
        }
        if !(total > 0.0 && kept >= MIN_CAPTURED * total) {
            return None;
        }
        let captured = kept / total;
        Some(Self { dim, k, mean, basis, reduced, offset, allowance, captured, max_checks: (rows / 32).max(32) })
    }

    /// Share of the bank's variance (about its mean) the bound's directions hold.
    pub fn captured_variance(&self) -> f64 {
        self.captured
    }

    /// Bank rows.
    pub fn rows(&self) -> usize {
        self.offset.len()
    }

    /// The nearest bank row of each query (row-major, `dim` columns) by the rule of
    /// [`crate::nn_exact`]: (Euclidean distance, bank index), or `None` for a query handed back
    /// (a non-finite value, or more candidates than the budget), to be scanned whole. `bank` is
    /// the bank this was built from. Query tiles run in parallel when `parallel`.
    pub fn nearest(&self, bank: &[f32], queries: &[f32], parallel: bool) -> Vec<Found> {
        self.nearest_counted(bank, queries, parallel).0
    }

    /// [`ProjectedBank::nearest`], and how many rows were measured exactly in all (for benches).
    pub fn nearest_counted(&self, bank: &[f32], queries: &[f32], parallel: bool) -> (Vec<Found>, usize) {
        let dim = self.dim;
        assert_eq!(bank.len(), self.rows() * dim, "the bank is not the one projected");
        let nq = queries.len() / dim;
        assert_eq!(nq * dim, queries.len(), "queries are whole rows");
        let mut out = vec![None; nq];
        let threads = if parallel { rayon::current_num_threads() } else { 1 };
        // Each tile holds its queries' bounds against the whole bank: at most BOUND_BYTES.
        let widest = (BOUND_BYTES / (4 * self.rows())).clamp(1, TILE);
        let tile = nq.div_ceil(4 * threads).clamp(1, widest);
        let run = |scratch: &mut Scratch, (qt, res): (&[f32], &mut [Found])| self.search_tile(scratch, bank, qt, res);
        let measured = if parallel {
            queries.par_chunks(tile * dim).zip(out.par_chunks_mut(tile)).map_init(Scratch::default, run).sum()
        } else {
            let mut scratch = Scratch::default();
            queries.chunks(tile * dim).zip(out.chunks_mut(tile)).map(|c| run(&mut scratch, c)).sum()
        };
        (out, measured)
    }

    /// Searches one tile of queries into `res`; returns the rows measured.
    fn search_tile(&self, s: &mut Scratch, bank: &[f32], qt: &[f32], res: &mut [Found]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { self.search_tile_avx(s, bank, qt, res) };
        }
        self.search_tile_portable(s, bank, qt, res)
    }

    /// [`ProjectedBank::search_tile_portable`] compiled for AVX: the centring and the reduced
    /// vectors' f64 loops get 256-bit registers (the exact distance and the bound scans pick
    /// their AVX builds themselves). AVX alone allows no fused multiply-add, so every lane does
    /// the same operations in the same order and the same rows are measured and picked, to the bit.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    unsafe fn search_tile_avx(&self, s: &mut Scratch, bank: &[f32], qt: &[f32], res: &mut [Found]) -> usize {
        self.search_tile_portable(s, bank, qt, res)
    }

    #[inline(always)]
    fn search_tile_portable(&self, s: &mut Scratch, bank: &[f32], qt: &[f32], res: &mut [Found]) -> usize {
        let (dim, k, rows) = (self.dim, self.k, self.rows());
        let t = qt.len() / dim;
        resize(&mut s.centred, t * dim);
        centre(qt, &self.mean, &mut s.centred);
        // A non-finite query is scanned whole (the full scan's rule covers it); its row is zeroed
        // so it cannot spread NaN through the GEMMs.
        let finite: Vec<bool> = qt.chunks_exact(dim).map(|q| q.iter().all(|v| v.is_finite())).collect();
        for (x, _) in s.centred.chunks_exact_mut(dim).zip(&finite).filter(|(_, &f)| !f) {
            x.fill(0.0);
        }
        resize(&mut s.coords, t * k);
        dgemm(1.0, View::rows(&s.centred, t, dim), View::rows(&self.basis, dim, k), 0.0, &mut s.coords);
        s.reduced.clear();
        let mut queries: Vec<Query> = Vec::with_capacity(t);
        for ((x, p), &finite) in s.centred.chunks_exact(dim).zip(s.coords.chunks_exact(k)).zip(&finite) {
            let (sq, reduced_sq) = push_reduced(&mut s.reduced, x, p);
            queries.push(Query {
                reduced_sq,
                allowance: self.allowance * sq,
                best: (f64::INFINITY, u32::MAX),
                checks: 0,
                alive: finite,
            });
        }
        // Per query and bank row, the bound less the row's allowance and less |a_q|^2, which is
        // the same along a query's row: offset_b - 2 a_q.a_b, one GEMM over rows preset to the
        // offsets.
        resize(&mut s.bound, t * rows);
        s.bound.chunks_exact_mut(rows).for_each(|row| row.copy_from_slice(&self.offset));
        sgemm(-2.0, View::rows(&s.reduced, t, k + 1), View::transposed(&self.reduced, rows, k + 1), 1.0, &mut s.bound);
        let mut measured = 0;
        for (i, (lb, query)) in s.bound.chunks_exact(rows).zip(&mut queries).enumerate() {
            if !query.alive {
                continue;
            }
            let q = &qt[i * dim..(i + 1) * dim];
            // The row of smallest bound first: its exact distance rules most others out. Then
            // the rows it leaves, smallest bound first, so that the best tightens early.
            let first = argmin(lb);
            query.consider(self, bank, q, lb, first);
            let limit = query.limit();
            s.candidates.clear();
            push_candidates(lb, limit, first, &mut s.candidates);
            s.candidates.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, j) in &s.candidates {
                if !query.alive {
                    break;
                }
                query.consider(self, bank, q, lb, j);
            }
            measured += query.checks.min(self.max_checks);
        }
        for (r, query) in res.iter_mut().zip(&queries) {
            *r = query.alive.then(|| (reported(query.best.0), query.best.1));
        }
        measured
    }
}

/// Appends the reduced vector (P'x, |Rx|) of centred `x` with coordinates `p` = P'x, rounded to
/// f32; returns |x|^2 and the squared norm of the reduced vector (before rounding).
fn push_reduced(out: &mut Vec<f32>, x: &[f64], p: &[f64]) -> (f64, f64) {
    let (sq, psq) = (sum_sq(x), sum_sq(p));
    let r2 = (sq - psq).max(0.0);
    out.extend(p.iter().map(|&c| c as f32));
    out.push(r2.sqrt() as f32);
    (sq, psq + r2)
}

/// Index of the smallest value, the first of equals (0 for an empty slice); NaN is never the
/// smallest.
#[inline(always)]
fn argmin(values: &[f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { simd::argmin_avx(values) };
    }
    argmin_portable(values)
}

fn argmin_portable(values: &[f32]) -> usize {
    let smallest = values.iter().copied().fold(f32::INFINITY, f32::min);
    values.iter().position(|&v| v == smallest).unwrap_or(0)
}

/// Appends `(v, j)` for every `values[j] = v` with `f64::from(v) <= limit`, but `j = skip`, in
/// index order.
#[inline(always)]
fn push_candidates(values: &[f32], limit: f64, skip: usize, out: &mut Vec<(f32, usize)>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { simd::push_candidates_avx(values, limit, skip, out) };
    }
    push_candidates_portable(values, limit, skip, out);
}

fn push_candidates_portable(values: &[f32], limit: f64, skip: usize, out: &mut Vec<(f32, usize)>) {
    out.extend(values.iter().enumerate().filter(|&(j, &v)| f64::from(v) <= limit && j != skip).map(|(j, &v)| (v, j)));
}

/// The largest f32 `t` with `f64::from(t) <= limit` (`-inf` below every f32, NaN for NaN): for an
/// f32 `v`, `f64::from(v) <= limit` exactly when `v <= t`.
fn f32_floor(limit: f64) -> f32 {
    let t = limit as f32;
    if f64::from(t) > limit {
        t.next_down()
    } else {
        t
    }
}

/// AVX versions of the scans above: the same answers, eight values at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// [`super::argmin_portable`] with AVX. `_mm256_min_ps(v, m)` returns `m` where `v` is NaN,
    /// so NaN is skipped as `f32::min` skips it; the index is then the first value equal to the
    /// minimum (either zero's sign compares equal, as in the portable scan).
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub unsafe fn argmin_avx(values: &[f32]) -> usize {
        let n = values.len();
        let whole = n - n % 8;
        let p = values.as_ptr();
        let mut m = _mm256_set1_ps(f32::INFINITY);
        let mut i = 0;
        while i < whole {
            // SAFETY: i + 8 <= whole <= n.
            m = _mm256_min_ps(unsafe { _mm256_loadu_ps(p.add(i)) }, m);
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        let smallest = lanes.iter().chain(&values[whole..]).copied().fold(f32::INFINITY, f32::min);
        let target = _mm256_set1_ps(smallest);
        let mut i = 0;
        while i < whole {
            // SAFETY: i + 8 <= whole <= n.
            let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(unsafe { _mm256_loadu_ps(p.add(i)) }, target);
            let bits = _mm256_movemask_ps(eq);
            if bits != 0 {
                return i + bits.trailing_zeros() as usize;
            }
            i += 8;
        }
        values[whole..].iter().position(|&v| v == smallest).map_or(0, |k| whole + k)
    }

    /// [`super::push_candidates_portable`] with AVX: one f32 comparison against
    /// [`super::f32_floor`] of the limit stands for the f64 one (ordered: NaN never passes).
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub unsafe fn push_candidates_avx(values: &[f32], limit: f64, skip: usize, out: &mut Vec<(f32, usize)>) {
        let t = super::f32_floor(limit);
        let n = values.len();
        let whole = n - n % 8;
        let p = values.as_ptr();
        let bound = _mm256_set1_ps(t);
        let mut i = 0;
        while i < whole {
            // SAFETY: i + 8 <= whole <= n.
            let le = _mm256_cmp_ps::<_CMP_LE_OQ>(unsafe { _mm256_loadu_ps(p.add(i)) }, bound);
            let mut bits = _mm256_movemask_ps(le) as u32;
            while bits != 0 {
                let j = i + bits.trailing_zeros() as usize;
                if j != skip {
                    out.push((values[j], j));
                }
                bits &= bits - 1;
            }
            i += 8;
        }
        for (j, &v) in values.iter().enumerate().skip(whole) {
            if v <= t && j != skip {
                out.push((v, j));
            }
        }
    }
}

/// Buffers a thread reuses from tile to tile.
#[derive(Default)]
struct Scratch {
    centred: Vec<f64>,
    coords: Vec<f64>,
    reduced: Vec<f32>,
    bound: Vec<f32>,
    candidates: Vec<(f32, usize)>,
}

/// `v` at length `len` (contents are overwritten by the caller).
fn resize<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    v.resize(len, T::default());
}

/// One query's search state.
struct Query {
    /// |a_q|^2, left out of the stored bounds.
    reduced_sq: f64,
    /// The rounding allowance's share of the query: `allowance * |q - m|^2`.
    allowance: f64,
    /// Smallest `exact_sq_dist` so far and its row.
    best: (f64, u32),
    checks: usize,
    /// False once handed back.
    alive: bool,
}

impl Query {
    /// The largest stored bound that leaves a row a chance against the best so far.
    fn limit(&self) -> f64 {
        self.best.0 + self.allowance - self.reduced_sq
    }

    /// Measures row `row` if its stored bound `lb[row]` leaves it a chance.
    #[inline(always)]
    fn consider(&mut self, pb: &ProjectedBank, bank: &[f32], q: &[f32], lb: &[f32], row: usize) {
        if f64::from(lb[row]) > self.limit() {
            return;
        }
        self.checks += 1;
        if self.checks > pb.max_checks {
            self.alive = false;
            return;
        }
        let d = exact_sq_dist(q, &bank[row * pb.dim..(row + 1) * pb.dim]);
        let row = row as u32;
        if d < self.best.0 || (d == self.best.0 && row < self.best.1) {
            self.best = (d, row);
        }
    }
}

fn sum_sq(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum()
}

/// `out = rows - mean`, row by row, in f64.
fn centre(rows: &[f32], mean: &[f64], out: &mut [f64]) {
    for (src, dst) in rows.chunks_exact(mean.len()).zip(out.chunks_exact_mut(mean.len())) {
        for ((d, &s), &m) in dst.iter_mut().zip(src).zip(mean) {
            *d = f64::from(s) - m;
        }
    }
}

/// An orthonormal `dim x k` basis (row-major) of the bank's leading principal subspace, by
/// subspace iteration from a seeded random start on evenly spaced rows: deterministic, and only
/// its quality (not the search's result) depends on how well it converged. `None` only for
/// non-finite values.
fn estimate_basis(bank: &[f32], dim: usize, mean: &[f64], k: usize) -> Option<Vec<f64>> {
    let rows = bank.len() / dim;
    let step = rows.div_ceil(SAMPLE_ROWS);
    let picked: Vec<f32> = bank.chunks_exact(dim).step_by(step).flatten().copied().collect();
    let n = picked.len() / dim;
    let mut sample = vec![0.0f64; n * dim];
    centre(&picked, mean, &mut sample);
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_ba51);
    let mut basis: Vec<f64> = (0..dim * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    orthonormalize(&mut basis, dim, k)?;
    let mut scores = vec![0.0f64; n * k];
    for _ in 0..ITERATIONS {
        // basis <- X'X basis, then orthonormal again.
        dgemm(1.0, View::rows(&sample, n, dim), View::rows(&basis, dim, k), 0.0, &mut scores);
        dgemm(1.0, View::transposed(&sample, n, dim), View::rows(&scores, n, k), 0.0, &mut basis);
        orthonormalize(&mut basis, dim, k)?;
    }
    Some(basis)
}

/// Modified Gram-Schmidt, twice, on the columns of a row-major `dim x k` matrix. A column that
/// depends on the previous ones (rows spanning fewer than `k` directions) is replaced by the
/// first coordinate axis that does not, so the basis is always orthonormal; `None` only if
/// `k > dim` or the values are not finite.
fn orthonormalize(m: &mut [f64], dim: usize, k: usize) -> Option<()> {
    if k > dim {
        return None;
    }
    let mut next_axis = 0;
    for c in 0..k {
        loop {
            let before = column_norm(m, dim, k, c);
            for _ in 0..2 {
                for p in 0..c {
                    let dot: f64 = (0..dim).map(|r| m[r * k + p] * m[r * k + c]).sum();
                    (0..dim).for_each(|r| m[r * k + c] -= dot * m[r * k + p]);
                }
            }
            let norm = column_norm(m, dim, k, c);
            if !norm.is_finite() {
                return None;
            }
            if norm > 1e-9 * before && norm > 0.0 {
                (0..dim).for_each(|r| m[r * k + c] /= norm);
                break;
            }
            // Dependent: try the next coordinate axis instead (at most `dim` of them are needed
            // before `k <= dim` independent columns are found).
            if next_axis == dim {
                return None;
            }
            (0..dim).for_each(|r| m[r * k + c] = f64::from(u8::from(r == next_axis)));
            next_axis += 1;
        }
    }
    Some(())
}

fn column_norm(m: &[f64], dim: usize, k: usize, c: usize) -> f64 {
    (0..dim).map(|r| m[r * k + c] * m[r * k + c]).sum::<f64>().sqrt()
}

/// delta = k max |P'P - I|, a bound of the spectral norm of P'P - I.
fn orthonormality_error(basis: &[f64], dim: usize, k: usize) -> f64 {
    let mut gram = vec![0.0f64; k * k];
    dgemm(1.0, View::transposed(basis, dim, k), View::rows(basis, dim, k), 0.0, &mut gram);
    let worst = gram
        .chunks_exact(k)
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &g)| (g - f64::from(u8::from(i == j))).abs()))
        .fold(0.0f64, f64::max);
    k as f64 * worst
}

/// The relative allowance A: a row can win only if L~ - A (|x|^2 + |y|^2) <= D64, with L~ the
/// bound as computed and D64 its [`exact_sq_dist`] (x = q - m, y = b - m). Inputs are f32; with
/// u = 2^-53 and v = 2^-24 the unit roundoffs of f64 and f32, g_n = n u / (1 - n u), h_n the same
/// with v, n = |x|^2 + |y|^2 and delta = |P'P - I| (measured):
/// - centring (f64) rounds each component once: the centred vectors' difference is off the exact
///   q - b by at most u (|x| + |y|), its square by at most 6 u n;
/// - the orthonormal identities hold to delta: at most 4 delta n on L;
/// - each coordinate (f64) is a d-term dot product with a unit column, off by g_d |x|: the
///   coordinates' squared distance errs by at most (6 sqrt(k) g_d + 3 g_k) n, and each squared
///   residual |x|^2 - |p|^2 by at most e |x|^2 with e = 8 (sqrt(k) + 1) g_(d+k) + 4 delta;
/// - a residual's square root turns that into |r~ - r| <= sqrt(e) |x|, and the residual term
///   (r_x - r_y)^2 is then off by at most 6 sqrt(e) n;
/// - L is computed as |a_x|^2 + |a_y|^2 - 2 a_x.a_y over the reduced vectors a = (P'x, |Rx|)
///   (|a|^2 <= (1 + delta) |x|^2): the cross term, from vectors rounded to f32 and an f32 GEMM of
///   k + 1 terms, is off by at most (h_(k+1) + 2.1 v) (1 + delta) n; the row's part (|a_y|^2 less
///   its allowance) is rounded to f32, the GEMM adds it and the result, at most 3 n in size, is
///   rounded again: 12 v n covers those;
/// - D64 errs by at most g_(d+3) |q - b|^2 <= 2 g_(d+3) n.
///
/// A is twice the sum of those coefficients (covering the rounding of n itself and of the
/// comparisons), about 5e-5 at d = 1024, k = 32: the bound moves by a negligible amount.
fn allowance(dim: usize, k: usize, delta: f64) -> f64 {
    let (u, v) = (f64::EPSILON / 2.0, f64::from(f32::EPSILON) / 2.0);
    let gamma = |n: f64, u: f64| if n * u < 0.5 { n * u / (1.0 - n * u) } else { f64::INFINITY };
    let (d, kf) = (dim as f64, k as f64);
    let e = 8.0 * (kf.sqrt() + 1.0) * gamma(d + kf, u) + 4.0 * delta;
    let f64_terms = 6.0 * u + 4.0 * delta + 6.0 * kf.sqrt() * gamma(d, u) + 3.0 * gamma(kf, u) + e + 6.0 * e.sqrt();
    let f32_terms = (gamma(kf + 1.0, v) + 2.1 * v) * (1.0 + delta) + 12.0 * v;
    let sum = f64_terms + f32_terms + 2.0 * gamma(d + 3.0, u);
    if delta <= 1e-9 {
        2.0 * sum
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn_exact::tests::brute_force;

    /// Rows near a `rank`-dimensional subspace of `dim` dimensions, plus `noise`.
    fn low_rank(rows: usize, dim: usize, rank: usize, noise: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dirs: Vec<f32> = (0..rank * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut out = Vec::with_capacity(rows * dim);
        for _ in 0..rows {
            let w: Vec<f32> = (0..rank).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            for c in 0..dim {
                let v: f32 = (0..rank).map(|t| w[t] * dirs[t * dim + c]).sum();
                let jitter = if noise > 0.0 { rng.gen_range(-noise..noise) } else { 0.0 };
                out.push(v + jitter + 3.0);
            }
        }
        out
    }

    fn check_against_brute_force(bank: &[f32], queries: &[f32], dim: usize, pb: &ProjectedBank) -> usize {
        let mut handed_back = 0;
        for parallel in [false, true] {
            let got = pb.nearest(bank, queries, parallel);
            for (i, g) in got.iter().enumerate() {
                let q = &queries[i * dim..(i + 1) * dim];
                match g {
                    Some(r) => {
                        let want = brute_force(bank, q);
                        assert_eq!((r.0.to_bits(), r.1), (want.0.to_bits(), want.1), "query {i}");
                    }
                    None => handed_back += 1,
                }
            }
        }
        handed_back
    }

    #[test]
    fn finds_the_exact_winner_and_rules_most_rows_out() {
        let dim = 96;
        let bank = low_rank(2000, dim, 6, 0.05, 1);
        let queries = low_rank(300, dim, 6, 0.05, 2);
        let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("a low-rank bank gets a bound");
        assert_eq!(check_against_brute_force(&bank, &queries, dim, &pb), 0);
        let (_, measured) = pb.nearest_counted(&bank, &queries, true);
        assert!(measured < 300 * 20, "{measured} rows measured for 300 queries of a 2,000-row bank");
    }

    #[test]
    fn the_avx_build_of_a_tile_search_matches_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx") {
                return;
            }
            let dim = 1029; // not a multiple of 8: the remainder lanes too
            let bank = low_rank(1500, dim, 6, 0.05, 21);
            let queries = low_rank(97, dim, 6, 0.05, 22);
            let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("bound");
            let (mut a, mut b) = (vec![None; 97], vec![None; 97]);
            let measured = pb.search_tile_portable(&mut Scratch::default(), &bank, &queries, &mut a);
            // SAFETY: AVX is present (checked above).
            let measured_avx = unsafe { pb.search_tile_avx(&mut Scratch::default(), &bank, &queries, &mut b) };
            assert_eq!(measured, measured_avx);
            let bits = |v: &[Found]| v.iter().map(|f| f.map(|(d, i)| (d.to_bits(), i))).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b));
            assert!(a.iter().all(Option::is_some));
        }
    }

    #[test]
    fn the_avx_scans_of_bounds_give_the_portable_answers() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx") {
                return;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(31);
            let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::MAX, f32::MIN_POSITIVE];
            for len in [0usize, 1, 7, 8, 9, 31, 64, 100, 2509] {
                for trial in 0..40 {
                    let mut v: Vec<f32> = (0..len).map(|_| rng.gen_range(-4.0f32..4.0)).collect();
                    if len > 0 {
                        // Ties, specials and repeats of the smallest value anywhere.
                        for _ in 0..(trial % 5) {
                            let at = rng.gen_range(0..len);
                            v[at] = specials[rng.gen_range(0..specials.len())];
                        }
                        if trial % 3 == 0 {
                            let m = v.iter().copied().fold(f32::INFINITY, f32::min);
                            let at = rng.gen_range(0..len);
                            v[at] = m;
                        }
                        if trial % 11 == 0 {
                            v.iter_mut().for_each(|x| *x = f32::NAN);
                        }
                    }
                    // SAFETY: AVX checked above.
                    assert_eq!(unsafe { simd::argmin_avx(&v) }, argmin_portable(&v), "len {len} trial {trial}");
                    let pick = |i: usize| f64::from(v.get(i).copied().unwrap_or(1.0));
                    let limits = [
                        f64::NAN,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        1e300,
                        -1e300,
                        0.0,
                        rng.gen_range(-4.0..4.0),
                        pick(trial),
                        pick(trial) + 1e-12,
                        pick(trial) - 1e-12,
                    ];
                    for limit in limits {
                        let skip = if len > 0 { rng.gen_range(0..len + 1) } else { 0 };
                        let (mut a, mut b) = (Vec::new(), Vec::new());
                        push_candidates_portable(&v, limit, skip, &mut a);
                        // SAFETY: AVX checked above.
                        unsafe { simd::push_candidates_avx(&v, limit, skip, &mut b) };
                        let bits = |c: &[(f32, usize)]| c.iter().map(|&(x, j)| (x.to_bits(), j)).collect::<Vec<_>>();
                        assert_eq!(bits(&a), bits(&b), "len {len} trial {trial} limit {limit}");
                    }
                }
            }
        }
    }

    #[test]
    fn f32_floor_is_the_largest_f32_not_above_the_limit() {
        for limit in [0.1f64, -0.1, 1.0, 3.4e38, 3.5e38, -3.5e38, 1e-46, -1e-46, f64::INFINITY, f64::NEG_INFINITY] {
            let t = f32_floor(limit);
            assert!(f64::from(t) <= limit, "{limit}: {t}");
            assert!(t == f32::INFINITY || f64::from(t.next_up()) > limit, "{limit}: {t}");
        }
        assert!(f32_floor(f64::NAN).is_nan());
    }

    #[test]
    fn duplicate_rows_tie_to_the_lowest_index() {
        let dim = 48;
        let mut bank = low_rank(600, dim, 4, 0.02, 3);
        // Rows 500.. repeat rows 0..100, and the queries are those rows themselves: every
        // winner is a tie at distance 0, won by the lower index.
        let copy: Vec<f32> = bank[..100 * dim].to_vec();
        bank[500 * dim..].copy_from_slice(&copy);
        let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("bound");
        let got = pb.nearest(&bank, &copy, true);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(*g, Some((0.0, i as u32)), "query {i}");
        }
    }

    #[test]
    fn near_ties_below_f32_rounding_pick_the_exact_winner() {
        // Rows that differ from the query by a low bit or two in one column: their distances
        // differ only in f64, where the rule decides.
        let dim = 64;
        let mut bank = low_rank(400, dim, 4, 0.05, 4);
        let q: Vec<f32> = bank[7 * dim..8 * dim].to_vec();
        let up = |v: f32, n: u32| f32::from_bits(v.to_bits() + n);
        for (row, bits) in [(7usize, 2u32), (300, 1), (301, 3)] {
            bank[row * dim..(row + 1) * dim].copy_from_slice(&q);
            bank[row * dim + 5] = up(q[5], bits);
        }
        let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("bound");
        let got = pb.nearest(&bank, &q, false);
        assert_eq!(got, vec![Some(brute_force(&bank, &q))]);
        assert_eq!(got[0].map(|g| g.1), Some(300));
    }

    #[test]
    fn queries_far_from_the_subspace_are_still_exact_or_handed_back() {
        let dim = 64;
        let bank = low_rank(1200, dim, 5, 0.05, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        // Uniform noise around the bank's mean: the bound is weak for these.
        let queries: Vec<f32> = (0..100 * dim).map(|_| 3.0 + rng.gen_range(-4.0f32..4.0)).collect();
        let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("bound");
        check_against_brute_force(&bank, &queries, dim, &pb);
    }

    #[test]
    fn non_finite_queries_are_handed_back() {
        let dim = 40;
        let bank = low_rank(500, dim, 3, 0.05, 7);
        let mut queries = low_rank(3, dim, 3, 0.05, 8);
        queries[dim + 4] = f32::NAN;
        queries[2 * dim] = f32::INFINITY;
        let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("bound");
        let got = pb.nearest(&bank, &queries, false);
        assert_eq!(got[0], Some(brute_force(&bank, &queries[..dim])));
        assert_eq!(&got[1..], &[None, None]);
    }

    #[test]
    fn exact_at_every_scale_offset_and_near_tie() {
        // Scales from 1e-3 to 1e4 and a mean far from the origin (centring must not lose the
        // winner), rows exactly in the subspace (zero residual, where the bound is tightest) and
        // copies of rows moved by one ulp in one column: the bound's allowance must cover every
        // rounding, or a winner is ruled out and the brute force disagrees.
        let dim = 80;
        for (seed, scale, offset) in [(20u64, 1e-3f32, 0.0f32), (21, 1.0, 500.0), (22, 1e4, -3e4), (23, 7.0, 1e3)] {
            let base = low_rank(900, dim, 6, 0.0, seed);
            let mut bank: Vec<f32> = base.iter().map(|v| (v - 3.0) * scale + offset).collect();
            for row in (0..900).step_by(7) {
                let src: Vec<f32> = bank[row * dim..(row + 1) * dim].to_vec();
                let to = (row + 3) % 900;
                bank[to * dim..(to + 1) * dim].copy_from_slice(&src);
                let col = row % dim;
                bank[to * dim + col] = f32::from_bits(src[col].to_bits() + 1);
            }
            let queries: Vec<f32> = low_rank(200, dim, 6, 0.01, seed + 100)
                .iter()
                .map(|v| (v - 3.0) * scale + offset)
                .chain(bank[..50 * dim].iter().copied())
                .collect();
            let pb = ProjectedBank::build_with(&bank, dim, 8, 256).expect("bound");
            check_against_brute_force(&bank, &queries, dim, &pb);
        }
    }

    #[test]
    fn no_bound_where_it_cannot_pay() {
        let dim = 64;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Noise spreads its variance over every direction: 8 of 64 hold about an eighth.
        let noise: Vec<f32> = (0..1000 * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        assert!(ProjectedBank::build_with(&noise, dim, 8, 256).is_none());
        let low = low_rank(1000, dim, 4, 0.05, 10);
        assert!(ProjectedBank::build_with(&low[..100 * dim], dim, 8, 256).is_none(), "too few rows");
        let mut bad = low.clone();
        bad[17] = f32::NAN;
        assert!(ProjectedBank::build_with(&bad, dim, 8, 256).is_none(), "non-finite bank");
        // Identical rows: no variance to hold, no bound.
        let same: Vec<f32> = low[..dim].iter().copied().cycle().take(500 * dim).collect();
        assert!(ProjectedBank::build_with(&same, dim, 8, 256).is_none());
    }

    #[test]
    fn the_basis_is_orthonormal_and_the_allowance_small() {
        let dim = 1024;
        let bank = low_rank(600, dim, 12, 0.05, 11);
        let mean = vec![3.0f64; dim];
        let basis = estimate_basis(&bank, dim, &mean, 32).expect("basis");
        let delta = orthonormality_error(&basis, dim, 32);
        assert!(delta < 1e-12, "delta {delta}");
        let a = allowance(dim, 32, delta);
        assert!(a > 0.0 && a < 1e-4, "allowance {a}");
        assert!(allowance(dim, 32, 1e-6).is_infinite());
    }
}
