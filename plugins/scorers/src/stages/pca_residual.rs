//! `pca-residual`: a reconstruction-based scorer. PCA is fitted on nominal patch features; a
//! test patch scores the norm of what the principal subspace cannot reconstruct,
//! |(x - mu) - V V^T (x - mu)|.

use anoflow_sdk::prelude::*;
use rayon::prelude::*;

use crate::common::{check_dim, checked_features, default_sigma, fitted, scorer_ports, FitRows, MapShaping};
use crate::linalg::{sgemm, symmetric_eigen, View};
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

pub struct PcaResidual;

/// Params of `pca-residual`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PcaConfig {
    /// Gaussian blur sigma applied to the upsampled map, in pixels (0: none).
    #[serde(default = "default_sigma")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub sigma: f64,
    /// Keep the fewest components explaining this fraction of the variance (ignored if
    /// `components` > 0).
    #[serde(default = "default_variance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub variance: f64,
    /// Number of principal components to keep (0: choose by `variance`).
    #[serde(default)]
    pub components: usize,
}

fn default_variance() -> f64 {
    0.95
}

impl StagePlugin for PcaResidual {
    type Config = PcaConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        scorer_ports(StageDescriptor::new(
            "pca-residual",
            "reconstruction error of each patch under a PCA fitted on nominal patches",
        ))
    }

    fn create(config: PcaConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(PcaStage {
            node: ctx.node_id.to_string(),
            variance: config.variance,
            components: config.components,
            shaping: MapShaping::new(config.sigma),
            fit: FitRows::default(),
            model: None,
        }))
    }
}

/// The fitted subspace: mean and the kept components as rows of a `k x dim` matrix.
pub struct PcaModel {
    pub dim: usize,
    pub mean: Vec<f32>,
    pub basis: Vec<f32>,
}

impl PcaModel {
    pub fn components(&self) -> usize {
        self.basis.len() / self.dim.max(1)
    }

    /// Fits on row-major `rows`; keeps `components` if > 0, else the fewest components whose
    /// eigenvalues sum to `variance` of the total.
    pub fn fit(rows: &[f32], dim: usize, variance: f64, components: usize) -> Self {
        let n = rows.len() / dim;
        let mut mean64 = vec![0.0f64; dim];
        for r in rows.chunks_exact(dim) {
            for (m, &v) in mean64.iter_mut().zip(r) {
                *m += f64::from(v);
            }
        }
        let mean: Vec<f32> = mean64.iter().map(|m| (m / n as f64) as f32).collect();
        // Covariance by GEMM over row blocks, each block's product summed in f64 in block
        // order (the same bits however many blocks run at once). The blocks run side by side,
        // a round of as many as there are threads at a time: the GEMM itself is single-threaded.
        let mut cov = vec![0.0f64; dim * dim];
        const BLOCK: usize = 4096;
        let blocks: Vec<&[f32]> = rows.chunks(BLOCK * dim).collect();
        for round in blocks.chunks(rayon::current_num_threads().max(1)) {
            let products: Vec<Vec<f32>> = round
                .par_iter()
                .map(|block| {
                    let m = block.len() / dim;
                    let centred: Vec<f32> =
                        block.chunks_exact(dim).flat_map(|r| r.iter().zip(&mean).map(|(v, m)| v - m)).collect();
                    let mut block_cov = vec![0.0f32; dim * dim];
                    sgemm(1.0, View::transposed(&centred, m, dim), View::rows(&centred, m, dim), 0.0, &mut block_cov);
                    block_cov
                })
                .collect();
            for block_cov in &products {
                for (c, &b) in cov.iter_mut().zip(block_cov) {
                    *c += f64::from(b);
                }
            }
        }
        let denom = (n.max(2) - 1) as f64;
        cov.iter_mut().for_each(|c| *c /= denom);
        let (values, vectors) = symmetric_eigen(&cov, dim);
        let k = if components > 0 {
            components.min(dim)
        } else {
            let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
            let mut acc = 0.0;
            let mut k = 0;
            while k < dim && acc < variance * total {
                acc += values[k].max(0.0);
                k += 1;
            }
            k
        };
        let basis = vectors[..k * dim].iter().map(|&v| v as f32).collect();
        Self { dim, mean, basis }
    }

    /// Residual norm of each row.
    pub fn score(&self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.dim;
        let k = self.components();
        let mut resid: Vec<f32> =
            rows.chunks_exact(self.dim).flat_map(|r| r.iter().zip(&self.mean).map(|(v, m)| v - m)).collect();
        if k > 0 {
            let mut coef = vec![0.0f32; n * k];
            sgemm(1.0, View::rows(&resid, n, self.dim), View::transposed(&self.basis, k, self.dim), 0.0, &mut coef);
            sgemm(-1.0, View::rows(&coef, n, k), View::rows(&self.basis, k, self.dim), 1.0, &mut resid);
        }
        resid.chunks_exact(self.dim).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).collect()
    }
}

struct PcaStage {
    node: String,
    variance: f64,
    components: usize,
    shaping: MapShaping,
    fit: FitRows,
    model: Option<PcaModel>,
}

const STATE_NAME: &str = "pca-residual";
/// The layout of pca-residual's sections (see `save_state`).
const STATE_VERSION: u32 = 1;

impl Fitted for PcaStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        self.fit.observe(&self.node, sample)
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        self.fit.shape.require_some(&self.node)?;
        let fit = std::mem::take(&mut self.fit);
        self.model = Some(PcaModel::fit(&fit.rows, fit.shape.dim, self.variance, self.components));
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let model = fitted(&self.model, &self.node, "process called before fitting")?;
        let fm = checked_features(sample, &self.node)?;
        check_dim(&self.node, sample, model.dim, fm.channels())?;
        let scores = model.score(fm.data());
        self.shaping.outputs_max(sample, fm, &scores)
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let m = fitted(&self.model, &self.node, "no fitted model to save")?;
        let state = StateWriter::new(STATE_NAME, STATE_VERSION)
            .f32("mean", &[m.dim], &m.mean)
            .f32("basis", &[m.components(), m.dim], &m.basis)
            .finish();
        state.map_err(|e| StageError::from(e).context(&self.node))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let node = self.node.clone();
        let ctx = |e: StateError| StageError::from(e).context(&node);
        let r = StateReader::parse(state, STATE_NAME, STATE_VERSION).map_err(ctx)?;
        let (_, mean) = r.f32("mean").map_err(ctx)?;
        let (bd, basis) = r.f32_rank("basis", 2).map_err(ctx)?;
        if bd[1] != mean.len() || mean.is_empty() {
            return Err(StageError::invalid_input(format!(
                "node `{node}`: fitted state: basis is {bd:?} but the mean has {} entries",
                mean.len()
            )));
        }
        self.model = Some(PcaModel { dim: mean.len(), mean, basis });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{feature_map, nominal_rows, shifted};
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::json;

    #[test]
    fn residual_is_zero_in_span_and_full_off_span() {
        // Rows spanning a 5-dim affine subspace of R^300: 5 components reconstruct them exactly.
        let (dim, n, rank) = (300, 2000, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let dirs: Vec<f32> = (0..rank * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let offset: Vec<f32> = (0..dim).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let draw = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            let c: Vec<f32> = (0..rank).map(|_| rng.gen_range(-2.0..2.0)).collect();
            (0..dim).map(|j| offset[j] + (0..rank).map(|k| c[k] * dirs[k * dim + j]).sum::<f32>()).collect()
        };
        let rows: Vec<f32> = (0..n).flat_map(|_| draw(&mut rng)).collect();
        let model = PcaModel::fit(&rows, dim, 0.999999, 0);
        assert_eq!(model.components(), rank, "variance picks the rank");
        let test: Vec<f32> = (0..10).flat_map(|_| draw(&mut rng)).collect();
        let scale: f32 = test[..dim].iter().map(|v| v * v).sum::<f32>().sqrt();
        for s in model.score(&test) {
            assert!(s < 1e-4 * scale, "in-span residual {s} (row norm {scale})");
        }
        // A vector orthogonal to the subspace keeps its whole norm as residual.
        let mut off = vec![0.0f32; dim];
        off[0] = 1.0;
        let basis = &model.basis;
        for k in 0..rank {
            let dot = basis[k * dim];
            for j in 0..dim {
                off[j] -= dot * basis[k * dim + j];
            }
        }
        let norm = off.iter().map(|v| v * v).sum::<f32>().sqrt();
        let x: Vec<f32> = off.iter().zip(&model.mean).map(|(o, m)| m + 5.0 * o / norm).collect();
        let got = model.score(&x)[0];
        assert!((got - 5.0).abs() < 1e-3, "{got}");
        assert_eq!(PcaModel::fit(&rows, dim, 0.5, 3).components(), 3);
    }

    #[test]
    fn covariance_blocks_side_by_side_give_the_same_bits() {
        // Four row blocks (the last partial): one, two or three at a time, one sum order.
        let (dim, n) = (48, 3 * 4096 + 700);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let rows: Vec<f32> = (0..n * dim).map(|i| rng.gen_range(-1.0..1.0) * (1 + i % 7) as f32).collect();
        let fit_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| PcaModel::fit(&rows, dim, 0.9, 0))
        };
        let one = fit_on(1);
        assert!(one.components() > 1);
        for threads in [2, 3] {
            let other = fit_on(threads);
            assert_eq!(one.mean, other.mean, "{threads} threads");
            assert_eq!(one.basis, other.basis, "{threads} threads");
        }
    }

    #[test]
    fn shifted_patches_score_higher_and_state_round_trips() {
        let (h, w, dim) = (28, 28, 256);
        let train = (0..3)
            .map(|i| {
                let fm = feature_map(h, w, dim, 8.0, nominal_rows(h * w, dim, i));
                (meta(&format!("train/{i}")), inputs(vec![("features", fm.into())]))
            })
            .collect();
        let mut st = StageHarness::new::<PcaResidual>(json!({"variance": 0.99})).unwrap();
        st.fit(train).unwrap();
        let rows = shifted(nominal_rows(h * w, dim, 50), w, dim, (0..4, 24..28), 0.3);
        let fm = feature_map(h, w, dim, 8.0, rows);
        let out = st.process(&meta("t"), inputs(vec![("features", fm.clone().into())])).unwrap();
        let map = out.score_map("score");
        let (inside, outside) = (map.get(2 * 8, 26 * 8), map.get(20 * 8, 8 * 8));
        assert!(inside > 2.0 * outside, "inside {inside} vs outside {outside}");

        let mut again = StageHarness::new::<PcaResidual>(json!({})).unwrap();
        again.load_state(st.save_state().unwrap()).unwrap();
        let out2 = again.process(&meta("t"), inputs(vec![("features", fm.into())])).unwrap();
        assert_eq!(map.data(), out2.score_map("score").data());
        let wrong = feature_map(2, 2, 8, 8.0, vec![0.0; 32]);
        let err = again.process(&meta("test/9"), inputs(vec![("features", wrong.into())])).unwrap_err();
        assert!(err.message.contains("sample `test/9`: feature map has 8 channels but the scorer was fitted on 256"));
    }
}
