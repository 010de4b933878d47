//! Fused exact nearest-neighbour search: register-blocked SIMD dot products of query rows
//! against a bank packed once into lane-interleaved panels, folded with the norms into
//! |q|^2 + |b|^2 - 2 q.b and reduced straight into a running minimum per query, so no distance
//! matrix is ever written. The winner's distance is then recomputed directly, as in
//! [`crate::linalg::nearest_neighbours`], the portable path used where the CPU lacks AVX2+FMA
//! (or is not x86-64).

use rayon::prelude::*;

use crate::linalg::{row_sq_norms, sq_dist};

/// Bank rows per packed panel: the lanes of two AVX-512 or four AVX2 registers.
const PANEL: usize = 32;
/// Bytes of packed bank one query tile sweeps before moving on: sized to stay in L2.
const BLOCK_BYTES: usize = 1 << 20;
/// Columns per pass over a panel: a 128 x 32 slice of it (16 KiB) stays in L1 while every
/// query step of the tile reuses it; partial dot products carry over between passes.
const K_BLOCK: usize = 128;
/// Most query rows per tile: bounds the per-tile running-minimum state.
const MAX_TILE: usize = 256;

/// The instruction set a [`PackedBank`] runs its microkernel with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// 6 queries x 16 bank rows per step, 12 ymm accumulators.
    Avx2Fma,
    /// 8 queries x 32 bank rows per step, 16 zmm accumulators (more makes LLVM keep them in
    /// memory).
    Avx512,
}

impl Isa {
    /// The best kernel this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        Self::available().into_iter().last()
    }

    /// Every kernel this CPU runs, slowest first.
    pub fn available() -> Vec<Self> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Self::Avx2Fma);
            }
            if is_x86_feature_detected!("avx512f") {
                out.push(Self::Avx512);
            }
        }
        out
    }

    /// Query rows per microkernel call.
    fn rows_per_step(self) -> usize {
        match self {
            Self::Avx2Fma => 6,
            Self::Avx512 => 8,
        }
    }
}

/// A bank of `rows x dim` vectors laid out for the fused kernel: panel `p` holds bank rows
/// `32p..32p+32` interleaved by column (`panel[k * 32 + lane]` is column `k` of row
/// `32p + lane`), 64-byte aligned, the last panel padded with zero rows whose norm is +inf so
/// they never win. Costs one more copy of the bank.
pub struct PackedBank {
    storage: Vec<f32>,
    /// Index in `storage` of the first panel (the first 64-byte aligned element).
    start: usize,
    norms: Vec<f32>,
    rows: usize,
    dim: usize,
    isa: Isa,
}

impl PackedBank {
    /// Packs `bank` (row-major, `dim` columns, squared norms `norms`) for the best kernel this
    /// CPU runs; `None` where there is none, or for an empty bank.
    pub fn new(bank: &[f32], norms: &[f32], dim: usize) -> Option<Self> {
        Self::with_isa(bank, norms, dim, Isa::detect()?)
    }

    /// Packs for `isa`; `None` if this CPU cannot run it, or for an empty bank.
    pub fn with_isa(bank: &[f32], norms: &[f32], dim: usize, isa: Isa) -> Option<Self> {
        let rows = norms.len();
        if dim == 0 || rows == 0 || !Isa::available().contains(&isa) || u32::try_from(rows).is_err() {
            return None;
        }
        assert_eq!(bank.len(), rows * dim, "bank and norms disagree");
        let panels = rows.div_ceil(PANEL);
        const ALIGN_SLACK: usize = 64 / std::mem::size_of::<f32>();
        let mut storage = vec![0.0f32; panels * PANEL * dim + ALIGN_SLACK];
        let start = storage.as_ptr().align_offset(64).min(ALIGN_SLACK);
        for (p, panel) in storage[start..start + panels * PANEL * dim].chunks_exact_mut(PANEL * dim).enumerate() {
            for (lane, row) in bank[p * PANEL * dim..].chunks_exact(dim).take(PANEL).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    panel[k * PANEL + lane] = v;
                }
            }
        }
        let mut padded = norms.to_vec();
        padded.resize(panels * PANEL, f32::INFINITY);
        Some(Self { storage, start, norms: padded, rows, dim, isa })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn panels(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.norms.len() * self.dim]
    }

    /// Exact nearest bank row of each query (row-major, `dim` columns): (Euclidean distance,
    /// bank index), the same contract as [`crate::linalg::nearest_neighbours`]. Query tiles
    /// run in parallel when `parallel`.
    pub fn nearest(&self, bank: &[f32], queries: &[f32], parallel: bool) -> Vec<(f32, u32)> {
        let dim = self.dim;
        assert_eq!(bank.len(), self.rows * dim, "the bank is not the one packed");
        let nq = queries.len() / dim;
        assert_eq!(nq * dim, queries.len(), "queries are whole rows");
        let mut out = vec![(f32::INFINITY, 0u32); nq];
        let tile = self.tile_rows(nq, parallel);
        let run = |(qt, res): (&[f32], &mut [(f32, u32)])| {
            let best = self.search_tile(qt);
            for (i, (r, &j)) in res.iter_mut().zip(&best).enumerate() {
                let j_row = j as usize;
                *r = (sq_dist(&qt[i * dim..(i + 1) * dim], &bank[j_row * dim..(j_row + 1) * dim]).sqrt(), j);
            }
        };
        if parallel {
            queries.par_chunks(tile * dim).zip(out.par_chunks_mut(tile)).for_each(run);
        } else {
            queries.chunks(tile * dim).zip(out.chunks_mut(tile)).for_each(run);
        }
        out
    }

    /// Query rows per tile: a whole number of microkernel steps, about four tiles per thread
    /// so the pool balances, at most [`MAX_TILE`].
    fn tile_rows(&self, nq: usize, parallel: bool) -> usize {
        let step = self.isa.rows_per_step();
        let tiles = if parallel { 4 * rayon::current_num_threads() } else { 1 };
        nq.div_ceil(tiles).div_ceil(step).clamp(1, MAX_TILE / step) * step
    }

    /// Bank index of the nearest row (by |q|^2 + |b|^2 - 2 q.b) for each query row of `qt`.
    fn search_tile(&self, qt: &[f32]) -> Vec<u32> {
        let dim = self.dim;
        let rows = qt.len() / dim;
        let qn = row_sq_norms(qt, dim);
        // Per query and lane: the smallest distance seen in that lane and its bank row.
        let mut best_d = vec![f32::INFINITY; rows * PANEL];
        let mut best_i = vec![0u32; rows * PANEL];
        let panels = self.panels();
        let n_panels = self.norms.len() / PANEL;
        let per_block = (BLOCK_BYTES / (PANEL * dim * 4)).max(1);
        // Dot products of every query row with the block's panels, summed over the columns so
        // far: `[panel in block][query row][lane]`, at most 256 x 1 MiB / (4 dim) values.
        let mut partial = vec![0.0f32; per_block.min(n_panels) * rows * PANEL];
        let step = self.isa.rows_per_step();
        let packed_q = pack_queries(qt, dim, step);
        for block in (0..n_panels).step_by(per_block) {
            for k0 in (0..dim).step_by(K_BLOCK) {
                let k1 = (k0 + K_BLOCK).min(dim);
                for p in block..(block + per_block).min(n_panels) {
                    let panel = &panels[(p * dim + k0) * PANEL..(p * dim + k1) * PANEL];
                    let norms = &self.norms[p * PANEL..(p + 1) * PANEL];
                    let base = (p * PANEL) as u32;
                    let part = &mut partial[(p - block) * rows * PANEL..(p - block + 1) * rows * PANEL];
                    for r0 in (0..rows).step_by(step) {
                        let r1 = (r0 + step).min(rows);
                        let q = &packed_q[r0 * dim..r1 * dim];
                        let s = Step { q, qn: &qn[r0..r1], dim, k0, k1, panel, norms, base };
                        let lanes = r0 * PANEL..r1 * PANEL;
                        let state = State {
                            partial: &mut part[lanes.clone()],
                            best_d: &mut best_d[lanes.clone()],
                            best_i: &mut best_i[lanes],
                        };
                        step_kernel(self.isa, s, state);
                    }
                }
            }
        }
        // Lowest distance over the lanes; on equal distances the lowest bank index, which is
        // the first one a row-by-row scan with a strict `<` keeps.
        best_d
            .chunks_exact(PANEL)
            .zip(best_i.chunks_exact(PANEL))
            .map(|(d, i)| {
                let mut b = (f32::INFINITY, 0u32);
                for (&dv, &iv) in d.iter().zip(i) {
                    if dv < b.0 || (dv == b.0 && iv < b.1) {
                        b = (dv, iv);
                    }
                }
                b.1
            })
            .collect()
    }
}

/// Query rows regrouped by microkernel step: the `m` rows of the step starting at row `r0`
/// (`m` = `step`, or fewer at the end) occupy `r0 * dim..(r0 + m) * dim`, column-interleaved
/// (`[r0 * dim + k * m + r]` is column `k` of row `r0 + r`), so a step reads its rows'
/// values for one column from adjacent addresses instead of rows a page apart.
fn pack_queries(qt: &[f32], dim: usize, step: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; qt.len()];
    for (rows, dst) in qt.chunks(step * dim).zip(out.chunks_mut(step * dim)) {
        let m = rows.len() / dim;
        for (r, row) in rows.chunks_exact(dim).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                dst[k * m + r] = v;
            }
        }
    }
    out
}

/// One microkernel call's inputs: columns `k0..k1` of `m = qn.len()` query rows (all `dim`
/// columns of them in `q`, interleaved as [`pack_queries`] lays them out) against the same columns of one packed panel (`panel`: `(k1 - k0)
/// x 32`), whose rows start at bank index `base` and have squared norms `norms`.
struct Step<'a> {
    q: &'a [f32],
    qn: &'a [f32],
    dim: usize,
    k0: usize,
    k1: usize,
    panel: &'a [f32],
    norms: &'a [f32],
    base: u32,
}

impl Step<'_> {
    /// The first column pass starts the dot products from zero.
    fn first(&self) -> bool {
        self.k0 == 0
    }
    /// The last column pass folds the finished dot products into the running minimum.
    fn last(&self) -> bool {
        self.k1 == self.dim
    }
}

/// Per query row and lane (`m x 32` each): the partial dot product, the smallest distance
/// so far and its bank row.
struct State<'a> {
    partial: &'a mut [f32],
    best_d: &'a mut [f32],
    best_i: &'a mut [u32],
}

/// Adds one column pass of one panel into `m` query rows' partial dot products and, on the
/// last pass, their running minimum; on `isa`, which the bank was packed for, so the CPU runs it.
fn step_kernel(isa: Isa, s: Step<'_>, st: State<'_>) {
    let m = s.qn.len();
    assert!(m >= 1 && m <= isa.rows_per_step());
    assert!(s.k0 < s.k1 && s.k1 <= s.dim && s.q.len() == m * s.dim);
    assert!(s.panel.len() == PANEL * (s.k1 - s.k0) && s.norms.len() == PANEL);
    assert!(st.partial.len() == m * PANEL && st.best_d.len() == m * PANEL && st.best_i.len() == m * PANEL);
    #[cfg(target_arch = "x86_64")]
    {
        use x86::*;
        macro_rules! dispatch {
            ($kernel:ident, $($n:literal)*) => {
                match m {
                    // SAFETY: a PackedBank holds an `isa` only if `Isa::available` found the
                    // CPU features; the asserts above give every length the kernel reads.
                    $($n => unsafe { $kernel::<$n>(&s, st) },)*
                    _ => unreachable!("m is checked against rows_per_step"),
                }
            };
        }
        match isa {
            Isa::Avx2Fma => dispatch!(avx2_step, 1 2 3 4 5 6),
            Isa::Avx512 => dispatch!(avx512_step, 1 2 3 4 5 6 7 8),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (s, st);
        unreachable!("no SIMD kernel exists off x86-64, so no PackedBank is built");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{State, Step, PANEL};
    use std::arch::x86_64::*;

    /// AVX2+FMA: `M` query rows x 16 lanes, once per half panel.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `s.q` holds `M * s.dim` values, `k0 < k1 <= s.dim`,
    /// `s.panel` holds `32 * (k1 - k0)`, `s.norms` 32, and each slice of `st` `M * 32` (all
    /// checked by `step_kernel`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_step<const M: usize>(s: &Step<'_>, st: State<'_>) {
        let (q, p, k0) = (s.q.as_ptr(), s.panel.as_ptr(), s.k0);
        for half in 0..2 {
            let lane0 = half * 16;
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            if !s.first() {
                for (r, a) in acc.iter_mut().enumerate() {
                    let part = &st.partial[r * PANEL + lane0..r * PANEL + lane0 + 16];
                    // SAFETY: `part` is exactly 16 values, bounds-checked when cut.
                    unsafe {
                        a[0] = _mm256_loadu_ps(part.as_ptr());
                        a[1] = _mm256_loadu_ps(part.as_ptr().add(8));
                    }
                }
            }
            for k in 0..s.k1 - k0 {
                // SAFETY: k < k1 - k0 and lane0 + 16 <= 32, so both loads lie in the panel
                // slice's 32 * (k1 - k0) values; r < M and k0 + k < dim keep the query read,
                // at (k0 + k) * M + r, in its M * dim.
                unsafe {
                    let b0 = _mm256_loadu_ps(p.add(k * PANEL + lane0));
                    let b1 = _mm256_loadu_ps(p.add(k * PANEL + lane0 + 8));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*q.add((k0 + k) * M + r));
                        a[0] = _mm256_fmadd_ps(x, b0, a[0]);
                        a[1] = _mm256_fmadd_ps(x, b1, a[1]);
                    }
                }
            }
            let two = _mm256_set1_ps(2.0);
            for (r, a) in acc.iter().enumerate() {
                let qn = _mm256_set1_ps(s.qn[r]);
                for (h, &dot) in a.iter().enumerate() {
                    let lane = lane0 + 8 * h;
                    let o = r * PANEL + lane;
                    if !s.last() {
                        let part = &mut st.partial[o..o + 8];
                        // SAFETY: `part` is exactly 8 values, bounds-checked when cut.
                        unsafe { _mm256_storeu_ps(part.as_mut_ptr(), dot) };
                        continue;
                    }
                    let norms = &s.norms[lane..lane + 8];
                    let (bd, bi) = (&mut st.best_d[o..o + 8], &mut st.best_i[o..o + 8]);
                    // SAFETY: each slice above is exactly 8 values, bounds-checked when cut.
                    unsafe {
                        // (|q|^2 + |b|^2) - 2 q.b, rounded once as the GEMM path does (2 q.b is exact).
                        let d2 = _mm256_fnmadd_ps(two, dot, _mm256_add_ps(qn, _mm256_loadu_ps(norms.as_ptr())));
                        let old = _mm256_loadu_ps(bd.as_ptr());
                        let better = _mm256_cmp_ps::<_CMP_LT_OQ>(d2, old);
                        _mm256_storeu_ps(bd.as_mut_ptr(), _mm256_blendv_ps(old, d2, better));
                        let idx = _mm256_add_epi32(
                            _mm256_set1_epi32((s.base as usize + lane) as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        let old_i = _mm256_loadu_si256(bi.as_ptr().cast());
                        let new_i = _mm256_blendv_epi8(old_i, idx, _mm256_castps_si256(better));
                        _mm256_storeu_si256(bi.as_mut_ptr().cast(), new_i);
                    }
                }
            }
        }
    }

    /// AVX-512: `M` query rows x the panel's 32 lanes.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; lengths as for [`avx2_step`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512_step<const M: usize>(s: &Step<'_>, st: State<'_>) {
        let (q, p, k0) = (s.q.as_ptr(), s.panel.as_ptr(), s.k0);
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        if !s.first() {
            for (r, a) in acc.iter_mut().enumerate() {
                let part = &st.partial[r * PANEL..(r + 1) * PANEL];
                // SAFETY: `part` is exactly 32 values, bounds-checked when cut.
                unsafe {
                    a[0] = _mm512_loadu_ps(part.as_ptr());
                    a[1] = _mm512_loadu_ps(part.as_ptr().add(16));
                }
            }
        }
        for k in 0..s.k1 - k0 {
            // SAFETY: k < k1 - k0, so both loads lie in the panel slice's 32 * (k1 - k0)
            // values; r < M and k0 + k < dim keep the query read, at (k0 + k) * M + r, in
            // its M * dim.
            unsafe {
                let b0 = _mm512_loadu_ps(p.add(k * PANEL));
                let b1 = _mm512_loadu_ps(p.add(k * PANEL + 16));
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*q.add((k0 + k) * M + r));
                    a[0] = _mm512_fmadd_ps(x, b0, a[0]);
                    a[1] = _mm512_fmadd_ps(x, b1, a[1]);
                }
            }
        }
        let two = _mm512_set1_ps(2.0);
        for (r, a) in acc.iter().enumerate() {
            let qn = _mm512_set1_ps(s.qn[r]);
            for (h, &dot) in a.iter().enumerate() {
                let lane = 16 * h;
                let o = r * PANEL + lane;
                if !s.last() {
                    let part = &mut st.partial[o..o + 16];
                    // SAFETY: `part` is exactly 16 values, bounds-checked when cut.
                    unsafe { _mm512_storeu_ps(part.as_mut_ptr(), dot) };
                    continue;
                }
                let norms = &s.norms[lane..lane + 16];
                let (bd, bi) = (&mut st.best_d[o..o + 16], &mut st.best_i[o..o + 16]);
                // SAFETY: each slice above is exactly 16 values, bounds-checked when cut.
                unsafe {
                    let d2 = _mm512_fnmadd_ps(two, dot, _mm512_add_ps(qn, _mm512_loadu_ps(norms.as_ptr())));
                    let old = _mm512_loadu_ps(bd.as_ptr());
                    let better = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d2, old);
                    _mm512_storeu_ps(bd.as_mut_ptr(), _mm512_mask_mov_ps(old, better, d2));
                    let idx = _mm512_add_epi32(
                        _mm512_set1_epi32((s.base as usize + lane) as i32),
                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                    );
                    let old_i = _mm512_loadu_si512(bi.as_ptr().cast());
                    _mm512_storeu_si512(bi.as_mut_ptr().cast(), _mm512_mask_mov_epi32(old_i, better, idx));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::nearest_neighbours;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// Nearest bank row by an f64 scan: (distance, index), lowest index on ties.
    fn brute_f64(bank: &[f32], q: &[f32]) -> (f64, usize) {
        bank.chunks_exact(q.len())
            .enumerate()
            .map(|(j, r)| (r.iter().zip(q).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum::<f64>(), j))
            .fold((f64::INFINITY, 0), |b, c| if c.0 < b.0 { c } else { b })
    }

    fn check(dim: usize, nb: usize, nq: usize, seed: u64) {
        let bank = random(nb * dim, seed);
        let mut queries = random(nq * dim, seed + 1000);
        // The first query sits almost on a bank row: the cancellation-prone case.
        for c in 0..dim {
            queries[c] = bank[(nb / 2) * dim + c] + 1e-3;
        }
        let norms = row_sq_norms(&bank, dim);
        let old = nearest_neighbours(&bank, &norms, &queries, dim, false);
        let isas = Isa::available();
        for &isa in &isas {
            let packed = PackedBank::with_isa(&bank, &norms, dim, isa).expect("isa is available");
            for parallel in [false, true] {
                let got = packed.nearest(&bank, &queries, parallel);
                assert_eq!(got.len(), nq);
                for (qi, (&(d, j), &(od, oj))) in got.iter().zip(&old).enumerate() {
                    let ctx = format!("{isa:?} dim {dim} nb {nb} nq {nq} parallel {parallel} query {qi}");
                    let (bd, bj) = brute_f64(&bank, &queries[qi * dim..(qi + 1) * dim]);
                    assert_eq!(j as usize, bj, "{ctx}: index vs f64 reference");
                    let bd = bd.sqrt();
                    assert!((f64::from(d) - bd).abs() <= 1e-5 * bd.max(1e-3) + 1e-6, "{ctx}: {d} vs {bd}");
                    assert_eq!((d.to_bits(), j), (od.to_bits(), oj), "{ctx}: vs the GEMM path");
                }
            }
        }
    }

    #[test]
    fn fused_kernel_matches_f64_reference_and_gemm_path_on_remainders() {
        // Dims off multiples of 8, odd and single query/bank counts, banks smaller than a panel,
        // counts off the 6- and 8-row steps and the 32-row panels.
        for (i, &(dim, nb, nq)) in
            [(1, 1, 1), (3, 2, 1), (7, 31, 5), (13, 33, 13), (64, 65, 7), (100, 97, 29), (257, 5, 3), (1, 100, 40)]
                .iter()
                .enumerate()
        {
            check(dim, nb, nq, i as u64);
        }
    }

    #[test]
    fn fused_kernel_crosses_cache_blocks_and_query_tiles() {
        // 1027-d: 7 panels (224 rows) per cache block, so 600 rows span three blocks; 301
        // queries make several tiles, the last one partial.
        check(1027, 600, 301, 77);
    }

    #[test]
    fn lane_reduction_keeps_the_lowest_index_on_exact_ties() {
        // Bank rows 3, 40 and 70 are identical (lanes 3, 8 and 6 of three panels): the first wins.
        let dim = 5;
        let mut bank = random(80 * dim, 9);
        for dup in [40, 70] {
            let (src, dst) = bank.split_at_mut(dup * dim);
            dst[..dim].copy_from_slice(&src[3 * dim..4 * dim]);
        }
        let query: Vec<f32> = bank[3 * dim..4 * dim].iter().map(|v| v + 1e-4).collect();
        let norms = row_sq_norms(&bank, dim);
        for isa in Isa::available() {
            let packed = PackedBank::with_isa(&bank, &norms, dim, isa).expect("isa is available");
            assert_eq!(packed.nearest(&bank, &query, false)[0].1, 3, "{isa:?}");
        }
    }

    #[test]
    fn no_packed_bank_for_an_empty_bank() {
        assert!(PackedBank::new(&[], &[], 4).is_none());
    }
}
