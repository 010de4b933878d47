//! PatchCore's fit rows gathered without holding them at full width: each sample's rows are
//! projected to the coreset's [`PROJECTION_DIM`] columns as they arrive, and the full rows go
//! to an unnamed temporary file ([`RowSpill`]) from which only the selected coreset rows are
//! read back. A category's fit then holds an eighth of the bytes of its 1024-wide rows (plus
//! the bank), which is what lets two categories fit side by side in little more memory than one.
//!
//! The bank is bit-identical to [`Bank::fit`] over all rows at once: the projection of a row
//! does not depend on the rows projected with it (`projection_is_the_same_in_any_row_blocks`),
//! so [`coreset::select_projected`] on the gathered projection picks the same rows.
//!
//! The file goes to [`std::env::temp_dir`] (`TMPDIR` on Unix), never to the cache or the run
//! directory, and has no name there.

use std::path::PathBuf;

use anoflow_sdk::prelude::*;

use crate::common::FitShape;
use crate::coreset::{self, PROJECTION_DIM};
use crate::nn_kernel::NnKernel;
use crate::spill::RowSpill;
use crate::stages::patchcore::Bank;

/// Fit rows on their way to a coreset bank.
pub struct CoresetFit {
    fraction: f64,
    seed: u64,
    selection: coreset::Selection,
    spill_dir: PathBuf,
    shape: FitShape,
    /// The rows the selection runs on: their projections while `spill` holds the full rows,
    /// else the rows themselves (already narrow enough, or all of them kept).
    kept: Vec<f32>,
    spill: Option<RowSpill>,
    /// The projection's matrix, made at the first spilled sample.
    projection: Option<coreset::Projection>,
}

impl CoresetFit {
    /// Gathers rows for a bank of `fraction` of them, spilling to the system's temporary directory.
    pub fn new(fraction: f64, seed: u64) -> Self {
        Self::spilling_to(std::env::temp_dir(), fraction, seed)
    }

    /// Gathers rows for a bank of `fraction` of them, spilling full rows to `dir`.
    pub fn spilling_to(dir: PathBuf, fraction: f64, seed: u64) -> Self {
        Self {
            fraction,
            seed,
            selection: coreset::Selection::Greedy,
            spill_dir: dir,
            shape: FitShape::default(),
            kept: Vec::new(),
            spill: None,
            projection: None,
        }
    }

    /// The same, picking the coreset by `selection` (greedy k-center unless told otherwise).
    pub fn with_selection(mut self, selection: coreset::Selection) -> Self {
        self.selection = selection;
        self
    }

    /// Whether rows of `dim` columns go to the spill: only when the selection runs on a
    /// narrower projection (rows of at most [`PROJECTION_DIM`] are their own projection, and
    /// a `fraction` of 1 keeps every row in the bank anyway).
    fn spills(&self, dim: usize) -> bool {
        dim > PROJECTION_DIM && self.fraction < 1.0
    }

    pub fn observe(&mut self, node: &str, sample: &Sample<'_>) -> StageResult<()> {
        let fm = self.shape.accept(node, sample)?;
        let dim = self.shape.dim;
        if !self.spills(dim) {
            self.kept.extend_from_slice(fm.data());
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(RowSpill::new_in(&self.spill_dir, dim).map_err(|e| {
                StageError::new(
                    ErrorKind::Io,
                    format!(
                        "node `{node}`: cannot create a temporary file for the fit rows in `{}`: {e}",
                        self.spill_dir.display()
                    ),
                )
            })?),
        };
        spill.append(fm.data()).map_err(|e| {
            StageError::new(
                ErrorKind::Io,
                format!(
                    "node `{node}`, sample `{}`: cannot write the fit rows to a temporary file in `{}` \
                 ({} MB written so far): {e}; set TMPDIR to a directory with room for them",
                    sample.meta.id,
                    spill.dir().display(),
                    spill.rows() * dim * 4 / 1_000_000
                ),
            )
        })?;
        let seed = self.seed;
        let projected = self.projection.get_or_insert_with(|| coreset::Projection::new(dim, seed)).apply(fm.data());
        self.kept.extend_from_slice(&projected);
        Ok(())
    }

    /// The coreset bank of the observed rows.
    pub fn into_bank(self, node: &str, kernel: NnKernel) -> StageResult<Bank> {
        self.shape.require_some(node)?;
        let dim = self.shape.dim;
        let Some(spill) = self.spill else {
            return Ok(Bank::fit_with(&self.kept, dim, self.fraction, self.seed, self.selection, kernel));
        };
        let picked =
            coreset::select_projected_with(&self.kept, PROJECTION_DIM, self.fraction, self.seed, self.selection);
        drop(self.kept);
        let rows = spill.gather(&picked).map_err(|e| {
            StageError::new(
                ErrorKind::Io,
                format!(
                    "node `{node}`: cannot read the coreset rows back from the temporary file in `{}`: {e}",
                    spill.dir().display()
                ),
            )
        })?;
        Ok(Bank::with_kernel(rows, dim, kernel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{feature_map, nominal_rows};
    use anoflow_sdk::harness::{inputs, meta};

    #[test]
    fn projection_is_the_same_in_any_row_blocks() {
        // Projected all at once (the coreset's own blocks of 8192 rows, the last one partial)
        // and in pieces of other sizes, one sample's 784 rows among them: the same bits.
        let dim = 1024;
        let rows = nominal_rows(9000, dim, 11);
        let (whole, pdim) = coreset::random_projection(&rows, dim, 5);
        assert_eq!(pdim, PROJECTION_DIM);
        for piece in [1, 7, 784, 4096, 8193] {
            // At most 40 pieces (each one makes the projection matrix again).
            let n = (piece * 40).min(9000);
            let mut pieces = Vec::with_capacity(n * PROJECTION_DIM);
            for part in rows[..n * dim].chunks(piece * dim) {
                pieces.extend(coreset::random_projection(part, dim, 5).0);
            }
            let want = &whole[..n * PROJECTION_DIM];
            let same = pieces.len() == want.len() && pieces.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "pieces of {piece} rows differ");
        }
    }

    fn sample_rows(i: usize, dim: usize) -> Vec<f32> {
        nominal_rows(28 * 28, dim, 40 + i as u64)
    }

    /// The bank fitted by [`CoresetFit`] from `n` samples, next to [`Bank::fit_with`] over all rows.
    fn both_banks(
        n: usize,
        dim: usize,
        fraction: f64,
        selection: coreset::Selection,
        dir: &std::path::Path,
    ) -> (Bank, Bank) {
        let mut fit = CoresetFit::spilling_to(dir.to_path_buf(), fraction, 3).with_selection(selection);
        let mut all = Vec::new();
        for i in 0..n {
            let rows = sample_rows(i, dim);
            all.extend_from_slice(&rows);
            let fm = feature_map(28, 28, dim, 8.0, rows);
            let ins = inputs(vec![("features", fm.into())]);
            let m = meta(&format!("train/{i}"));
            fit.observe("scorer", &Sample::new(&m, &ins)).unwrap();
        }
        let streamed = fit.into_bank("scorer", NnKernel::Gemm).unwrap();
        (streamed, Bank::fit_with(&all, dim, fraction, 3, selection, NnKernel::Gemm))
    }

    #[test]
    fn the_streamed_bank_is_the_bank_of_all_rows_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pre_clustered = coreset::Selection::PreClustered { clusters: 8 };
        for (dim, fraction, selection) in [
            (1024, 0.1, coreset::Selection::Greedy),
            (256, 0.02, coreset::Selection::Greedy),
            (64, 0.1, coreset::Selection::Greedy),
            (1024, 1.0, coreset::Selection::Greedy),
            (1024, 0.1, pre_clustered),
            (64, 0.1, pre_clustered),
        ] {
            let (streamed, whole) = both_banks(5, dim, fraction, selection, dir.path());
            assert_eq!(streamed.dim, dim);
            assert!(!whole.is_empty());
            let bits = |b: &Bank| b.rows.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert!(bits(&streamed) == bits(&whole), "dim {dim}, coreset {fraction}, {selection:?}: banks differ");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a spill file was left behind");
    }

    #[test]
    fn an_unusable_spill_directory_is_an_error_naming_the_node_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("absent");
        let mut fit = CoresetFit::spilling_to(gone.clone(), 0.1, 0);
        let fm = feature_map(28, 28, 256, 8.0, sample_rows(0, 256));
        let ins = inputs(vec![("features", fm.into())]);
        let m = meta("train/0");
        let err = fit.observe("scorer", &Sample::new(&m, &ins)).unwrap_err();
        assert!(err.message.contains("node `scorer`: cannot create a temporary file for the fit rows"), "{err}");
        assert!(err.message.contains(&gone.display().to_string()), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_an_error_naming_the_node_and_sample() {
        // /dev/full fails every write with "no space left on device".
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut fit = CoresetFit::spilling_to(dir.path().to_path_buf(), 0.1, 0);
        fit.spill = Some(RowSpill::over(full, dir.path(), 256));
        let fm = feature_map(28, 28, 256, 8.0, sample_rows(0, 256));
        let ins = inputs(vec![("features", fm.into())]);
        let m = meta("train/0");
        let err = fit.observe("scorer", &Sample::new(&m, &ins)).unwrap_err();
        assert!(err.message.contains("node `scorer`, sample `train/0`: cannot write the fit rows"), "{err}");
        assert!(err.message.contains("set TMPDIR"), "{err}");
    }
}
