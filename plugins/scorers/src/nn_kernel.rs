//! Fused exact nearest-neighbour search: register-blocked SIMD dot products of query rows
//! against a bank packed once into lane-interleaved panels, folded with the norms into
//! |q|^2 + |b|^2 - 2 q.b and reduced straight into the two smallest per query and lane, so no
//! distance matrix is ever written. The winner is then chosen among those by the rule of
//! [`crate::nn_exact`], as in [`crate::linalg::nearest_neighbours`] (the portable path used where
//! the CPU lacks AVX2+FMA, or is not x86-64): both return the same bits.

use rayon::prelude::*;

use crate::linalg::row_sq_norms;
use crate::nn_exact::ExactRule;

/// Bank rows per packed panel: the lanes of two AVX-512 or four AVX2 registers.
const PANEL: usize = 32;
/// Bytes of packed bank one query tile sweeps before moving on: sized to stay in L2.
const BLOCK_BYTES: usize = 1 << 20;
/// Columns per pass over a panel: a 128 x 32 slice of it (16 KiB) stays in L1 while every
/// query step of the tile reuses it; partial dot products carry over between passes.
const K_BLOCK: usize = 128;
/// Most query rows per tile: bounds the per-tile running-minimum state.
const MAX_TILE: usize = 256;
/// Smallest distances kept per query and lane: the rows within the rounding bound of the minimum
/// rarely share a lane, and a lane whose second one is within it is checked row by row.
const LANE_SLOTS: usize = 2;

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

/// Which search a bank runs: all return the same bits (the rule of [`crate::nn_exact`]), so the
/// choice only changes speed. `ANOFLOW_NN_KERNEL` forces one, to compare them on real runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NnKernel {
    /// Rows ruled out by a projected lower bound where the bank has a low-dimensional structure
    /// ([`crate::nn_pruned`]), and the fastest fused kernel this CPU runs (else GEMM tiles) for
    /// the rest.
    Auto,
    /// This fused kernel, scanning every row.
    Fused(Isa),
    /// GEMM tiles ([`crate::linalg::nearest_neighbours`]), the portable path.
    Gemm,
}

/// The environment variable [`NnKernel::from_env`] reads.
pub const NN_KERNEL_VAR: &str = "ANOFLOW_NN_KERNEL";

impl NnKernel {
    /// `ANOFLOW_NN_KERNEL`: unset, empty or `auto`; `avx512`; `avx2`; `gemm`. A fused kernel
    /// this CPU cannot run is an error, not a silent fallback.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(NN_KERNEL_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Err(std::env::VarError::NotUnicode(v)) => Err(format!("{NN_KERNEL_VAR}={v:?} is not UTF-8")),
            Ok(v) => Self::parse(&v),
        }
    }

    fn parse(value: &str) -> Result<Self, String> {
        let fused = |isa: Isa| {
            if Isa::available().contains(&isa) {
                Ok(Self::Fused(isa))
            } else {
                Err(format!("{NN_KERNEL_VAR}={value}: this CPU cannot run the {isa:?} kernel"))
            }
        };
        match value {
            "" | "auto" => Ok(Self::Auto),
            "avx512" => fused(Isa::Avx512),
            "avx2" => fused(Isa::Avx2Fma),
            "gemm" => Ok(Self::Gemm),
            _ => Err(format!("{NN_KERNEL_VAR}={value}: expected auto, avx512, avx2 or gemm")),
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
    /// bank index), the same contract and the same bits as [`crate::linalg::nearest_neighbours`].
    /// Query tiles run in parallel when `parallel`.
    pub fn nearest(&self, bank: &[f32], queries: &[f32], parallel: bool) -> Vec<(f32, u32)> {
        let dim = self.dim;
        assert_eq!(bank.len(), self.rows * dim, "the bank is not the one packed");
        let nq = queries.len() / dim;
        assert_eq!(nq * dim, queries.len(), "queries are whole rows");
        let mut out = vec![(f32::INFINITY, 0u32); nq];
        let tile = self.tile_rows(nq, parallel);
        let rule = ExactRule::new(bank, &self.norms[..self.rows], dim);
        let run = |(qt, res): (&[f32], &mut [(f32, u32)])| {
            let (qn, kept) = self.search_tile(qt);
            for (i, (r, lanes)) in res.iter_mut().zip(kept.chunks_exact(PANEL * LANE_SLOTS)).enumerate() {
                *r = rule.resolve(&qt[i * dim..(i + 1) * dim], qn[i], lanes, LANE_SLOTS);
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

    /// The squared norms of the query rows of `qt` and, per query row and lane `l` (bank rows
    /// `l, l + 32, ...`), the two smallest (|q|^2 + |b|^2 - 2 q.b, bank index) in that lane, as
    /// [`ExactRule::resolve`] takes them: `[row][lane][slot]`.
    fn search_tile(&self, qt: &[f32]) -> (Vec<f32>, Vec<(f32, u32)>) {
        let dim = self.dim;
        let rows = qt.len() / dim;
        let qn = row_sq_norms(qt, dim);
        // Per query and lane: the smallest and second smallest distance seen in that lane and
        // their bank rows.
        let mut best_d = vec![f32::INFINITY; rows * PANEL];
        let mut best_i = vec![0u32; rows * PANEL];
        let mut second_d = vec![f32::INFINITY; rows * PANEL];
        let mut second_i = vec![0u32; rows * PANEL];
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
                            best_i: &mut best_i[lanes.clone()],
                            second_d: &mut second_d[lanes.clone()],
                            second_i: &mut second_i[lanes],
                        };
                        step_kernel(self.isa, s, state);
                    }
                }
            }
        }
        let mut kept = Vec::with_capacity(rows * PANEL * LANE_SLOTS);
        for l in 0..rows * PANEL {
            kept.extend([(best_d[l], best_i[l]), (second_d[l], second_i[l])]);
        }
        (qn, kept)
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

/// Per query row and lane (`m x 32` each): the partial dot product, the smallest and second
/// smallest distance so far and their bank rows.
struct State<'a> {
    partial: &'a mut [f32],
    best_d: &'a mut [f32],
    best_i: &'a mut [u32],
    second_d: &'a mut [f32],
    second_i: &'a mut [u32],
}

/// Adds one column pass of one panel into `m` query rows' partial dot products and, on the
/// last pass, their running minimum; on `isa`, which the bank was packed for, so the CPU runs it.
fn step_kernel(isa: Isa, s: Step<'_>, st: State<'_>) {
    let m = s.qn.len();
    assert!(m >= 1 && m <= isa.rows_per_step());
    assert!(s.k0 < s.k1 && s.k1 <= s.dim && s.q.len() == m * s.dim);
    assert!(s.panel.len() == PANEL * (s.k1 - s.k0) && s.norms.len() == PANEL);
    assert!(st.partial.len() == m * PANEL && st.best_d.len() == m * PANEL && st.best_i.len() == m * PANEL);
    assert!(st.second_d.len() == m * PANEL && st.second_i.len() == m * PANEL);
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
                    let (sd, si) = (&mut st.second_d[o..o + 8], &mut st.second_i[o..o + 8]);
                    // SAFETY: each slice above is exactly 8 values, bounds-checked when cut.
                    unsafe {
                        // (|q|^2 + |b|^2) - 2 q.b, rounded once as the GEMM path does (2 q.b is exact).
                        let d2 = _mm256_fnmadd_ps(two, dot, _mm256_add_ps(qn, _mm256_loadu_ps(norms.as_ptr())));
                        let (old, old2) = (_mm256_loadu_ps(bd.as_ptr()), _mm256_loadu_ps(sd.as_ptr()));
                        let first = _mm256_cmp_ps::<_CMP_LT_OQ>(d2, old);
                        let second = _mm256_cmp_ps::<_CMP_LT_OQ>(d2, old2);
                        // A new smallest pushes the old one to second place; else it may take second.
                        _mm256_storeu_ps(
                            sd.as_mut_ptr(),
                            _mm256_blendv_ps(_mm256_blendv_ps(old2, d2, second), old, first),
                        );
                        _mm256_storeu_ps(bd.as_mut_ptr(), _mm256_blendv_ps(old, d2, first));
                        let idx = _mm256_add_epi32(
                            _mm256_set1_epi32((s.base as usize + lane) as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        let (first, second) = (_mm256_castps_si256(first), _mm256_castps_si256(second));
                        let old_i = _mm256_loadu_si256(bi.as_ptr().cast());
                        let old_i2 = _mm256_loadu_si256(si.as_ptr().cast());
                        let new_i2 = _mm256_blendv_epi8(_mm256_blendv_epi8(old_i2, idx, second), old_i, first);
                        _mm256_storeu_si256(si.as_mut_ptr().cast(), new_i2);
                        _mm256_storeu_si256(bi.as_mut_ptr().cast(), _mm256_blendv_epi8(old_i, idx, first));
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
                let (sd, si) = (&mut st.second_d[o..o + 16], &mut st.second_i[o..o + 16]);
                // SAFETY: each slice above is exactly 16 values, bounds-checked when cut.
                unsafe {
                    let d2 = _mm512_fnmadd_ps(two, dot, _mm512_add_ps(qn, _mm512_loadu_ps(norms.as_ptr())));
                    let (old, old2) = (_mm512_loadu_ps(bd.as_ptr()), _mm512_loadu_ps(sd.as_ptr()));
                    let first = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d2, old);
                    let second = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d2, old2);
                    // A new smallest pushes the old one to second place; else it may take second.
                    let new2 = _mm512_mask_mov_ps(_mm512_mask_mov_ps(old2, second, d2), first, old);
                    _mm512_storeu_ps(sd.as_mut_ptr(), new2);
                    _mm512_storeu_ps(bd.as_mut_ptr(), _mm512_mask_mov_ps(old, first, d2));
                    let idx = _mm512_add_epi32(
                        _mm512_set1_epi32((s.base as usize + lane) as i32),
                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                    );
                    let old_i = _mm512_loadu_si512(bi.as_ptr().cast());
                    let old_i2 = _mm512_loadu_si512(si.as_ptr().cast());
                    let new_i2 = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(old_i2, second, idx), first, old_i);
                    _mm512_storeu_si512(si.as_mut_ptr().cast(), new_i2);
                    _mm512_storeu_si512(bi.as_mut_ptr().cast(), _mm512_mask_mov_epi32(old_i, first, idx));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::nearest_neighbours;
    use crate::nn_exact::tests::brute_force;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// Every search path this CPU runs (GEMM tiles, each fused kernel; sequential and parallel),
    /// named, with its results.
    fn every_path(bank: &[f32], queries: &[f32], dim: usize) -> Vec<(String, Vec<(f32, u32)>)> {
        let norms = row_sq_norms(bank, dim);
        let mut out = Vec::new();
        for parallel in [false, true] {
            out.push((
                format!("GEMM tiles, parallel {parallel}"),
                nearest_neighbours(bank, &norms, queries, dim, parallel),
            ));
            for isa in Isa::available() {
                let packed = PackedBank::with_isa(bank, &norms, dim, isa).expect("isa is available");
                out.push((format!("{isa:?}, parallel {parallel}"), packed.nearest(bank, queries, parallel)));
            }
        }
        out
    }

    /// Every path returns, bit for bit, the documented rule's answer computed by brute force.
    fn assert_every_path_exact(bank: &[f32], queries: &[f32], dim: usize, what: &str) {
        let want: Vec<(u32, u32)> =
            queries.chunks_exact(dim).map(|q| brute_force(bank, q)).map(|(d, j)| (d.to_bits(), j)).collect();
        for (path, got) in every_path(bank, queries, dim) {
            assert_eq!(got.len(), want.len(), "{what}: {path}");
            for (qi, (&(d, j), &w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    (d.to_bits(), j),
                    w,
                    "{what}: {path}, query {qi}: ({d}, {j}) vs ({}, {})",
                    f32::from_bits(w.0),
                    w.1
                );
            }
        }
    }

    /// A bank of `nb` random rows with near-ties built in: row pairs duplicated (in the same lane,
    /// 32 apart, and in others), rows one low bit off another in one column, and queries sitting
    /// on, next to, or halfway between such rows.
    fn tie_case(dim: usize, nb: usize, nq: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut bank = random(nb * dim, seed);
        for _ in 0..nb / 3 {
            let (src, dst) = (rng.gen_range(0..nb), rng.gen_range(0..nb));
            let src_row: Vec<f32> = bank[src * dim..(src + 1) * dim].to_vec();
            let row = &mut bank[dst * dim..(dst + 1) * dim];
            row.copy_from_slice(&src_row);
            if rng.gen_bool(0.5) {
                let c = rng.gen_range(0..dim);
                let bits = row[c].to_bits();
                row[c] = f32::from_bits(if rng.gen_bool(0.5) { bits + 1 } else { bits - 1 });
            }
        }
        if nb > 32 {
            let (src, dst) = bank.split_at_mut(32 * dim);
            dst[..dim].copy_from_slice(&src[..dim]);
        }
        let queries = (0..nq)
            .flat_map(|_| {
                let a = rng.gen_range(0..nb);
                let b = rng.gen_range(0..nb);
                let how = rng.gen_range(0..4);
                let (ra, rb) = (&bank[a * dim..(a + 1) * dim], &bank[b * dim..(b + 1) * dim]);
                (0..dim)
                    .map(|c| match how {
                        0 => ra[c],
                        1 => ra[c] + 1e-3 * rng.gen_range(-1.0f32..1.0),
                        2 => 0.5 * (ra[c] + rb[c]),
                        _ => rng.gen_range(-1.0f32..1.0),
                    })
                    .collect::<Vec<f32>>()
            })
            .collect();
        (bank, queries)
    }

    #[test]
    fn every_path_returns_the_exact_rule_on_remainders() {
        // Dims off multiples of 8, odd and single query/bank counts, banks smaller than a panel,
        // counts off the 6- and 8-row steps and the 32-row panels.
        for (i, &(dim, nb, nq)) in
            [(1, 1, 1), (3, 2, 1), (7, 31, 5), (13, 33, 13), (64, 65, 7), (100, 97, 29), (257, 5, 3), (1, 100, 40)]
                .iter()
                .enumerate()
        {
            let bank = random(nb * dim, i as u64);
            let mut queries = random(nq * dim, i as u64 + 1000);
            // The first query sits almost on a bank row: the cancellation-prone case.
            for c in 0..dim {
                queries[c] = bank[(nb / 2) * dim + c] + 1e-3;
            }
            assert_every_path_exact(&bank, &queries, dim, &format!("dim {dim} nb {nb} nq {nq}"));
        }
    }

    #[test]
    fn every_path_returns_the_exact_rule_across_cache_blocks_and_query_tiles() {
        // 1027-d: 7 panels (224 rows) per cache block, so 600 rows span three blocks; 301
        // queries make several tiles, the last one partial.
        let (bank, queries) = tie_case(1027, 600, 301, 77);
        assert_every_path_exact(&bank, &queries, 1027, "dim 1027 nb 600 nq 301");
    }

    #[test]
    fn exact_ties_go_to_the_lowest_index_on_every_path() {
        // Bank rows 3, 35 (the same lane), 40 and 70 are identical: the first wins, on the
        // query itself (distance 0) and next to it.
        let dim = 5;
        let mut bank = random(80 * dim, 9);
        for dup in [35, 40, 70] {
            let (src, dst) = bank.split_at_mut(dup * dim);
            dst[..dim].copy_from_slice(&src[3 * dim..4 * dim]);
        }
        let mut queries: Vec<f32> = bank[3 * dim..4 * dim].to_vec();
        queries.extend(bank[3 * dim..4 * dim].iter().map(|v| v + 1e-4));
        assert_every_path_exact(&bank, &queries, dim, "duplicates");
        for (path, got) in every_path(&bank, &queries, dim) {
            assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), [3, 3], "{path}");
            assert_eq!(got[0].0, 0.0, "{path}");
        }
    }

    #[test]
    fn rows_one_low_bit_apart_are_told_apart_exactly() {
        // 96 copies of one row, each but the 41st moved by one ulp (up, then down) in one column:
        // the approximate distances cannot rank them, each lane holds three within the bound (so
        // it is scanned), and the exact distance must single out row 40 (the unmoved one) for a
        // query on the row.
        let dim = 64;
        let base = random(dim, 5);
        let mut bank = Vec::new();
        for j in 0..96 {
            let mut row = base.clone();
            let bits = row[j % dim].to_bits();
            if j != 40 {
                row[j % dim] = f32::from_bits(if j < dim { bits + 1 } else { bits - 1 });
            }
            bank.extend(row);
        }
        let mut queries = base.clone();
        // Off the row by far more than an ulp: all 64 stay within the bound of each other.
        queries.extend(base.iter().map(|v| v + 0.25));
        assert_every_path_exact(&bank, &queries, dim, "one-ulp rows");
        for (path, got) in every_path(&bank, &queries, dim) {
            assert_eq!(got[0], (0.0, 40), "{path}");
        }
    }

    #[test]
    fn every_path_agrees_with_the_exact_rule_on_random_shapes_with_near_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        for case in 0..60u64 {
            let dim = [1, 2, 3, 5, 8, 9, 16, 31, 64, 129, 300][rng.gen_range(0..11)];
            let nb = rng.gen_range(1..300);
            let nq = rng.gen_range(1..40);
            let (bank, queries) = tie_case(dim, nb, nq, case);
            assert_every_path_exact(&bank, &queries, dim, &format!("case {case}: dim {dim} nb {nb} nq {nq}"));
        }
    }

    #[test]
    fn kernel_choice_reads_the_documented_values() {
        assert_eq!(NnKernel::parse(""), Ok(NnKernel::Auto));
        assert_eq!(NnKernel::parse("auto"), Ok(NnKernel::Auto));
        assert_eq!(NnKernel::parse("gemm"), Ok(NnKernel::Gemm));
        for (name, isa) in [("avx2", Isa::Avx2Fma), ("avx512", Isa::Avx512)] {
            let got = NnKernel::parse(name);
            if Isa::available().contains(&isa) {
                assert_eq!(got, Ok(NnKernel::Fused(isa)));
            } else {
                assert!(got.unwrap_err().contains("this CPU cannot run"), "{name}");
            }
        }
        let err = NnKernel::parse("sse").unwrap_err();
        assert!(err.contains("ANOFLOW_NN_KERNEL=sse: expected auto, avx512, avx2 or gemm"), "{err}");
    }

    #[test]
    fn no_packed_bank_for_an_empty_bank() {
        assert!(PackedBank::new(&[], &[], 4).is_none());
    }
}
