//! `padim`: one multivariate Gaussian per feature-map position over a seeded random subset of
//! the channels; a test patch scores its Mahalanobis distance to its position's Gaussian
//! (Defard et al., ICPR 2020). Covariances are regularised with +epsilon I, as in the paper.

use anoflow_sdk::prelude::*;
use rand::{seq::index::sample as sample_indices, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{check_dim, checked_features, default_sigma, fitted, scorer_ports, MapShaping};
use crate::linalg::{cholesky_packed, solve_lower_sq_norm};
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

pub struct Padim;

/// Params of `padim`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PadimConfig {
    /// Gaussian blur sigma applied to the upsampled map, in pixels (0: none).
    #[serde(default = "default_sigma")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub sigma: f64,
    /// Size of the random channel subset (all channels if the features have fewer).
    #[serde(default = "default_channels")]
    #[schemars(range(min = 1))]
    pub channels: usize,
    /// Regularisation added to each covariance's diagonal.
    #[serde(default = "default_epsilon")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub epsilon: f64,
    /// Seed of the random channel subset.
    #[serde(default)]
    pub seed: u64,
}

fn default_channels() -> usize {
    100
}

fn default_epsilon() -> f64 {
    0.01
}

impl StagePlugin for Padim {
    type Config = PadimConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        scorer_ports(StageDescriptor::new(
            "padim",
            "PaDiM: Mahalanobis distance of each patch to a Gaussian fitted at its position on nominal patches",
        ))
    }

    fn create(config: PadimConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(PadimStage {
            node: ctx.node_id.to_string(),
            channels: config.channels,
            epsilon: config.epsilon,
            seed: config.seed,
            shaping: MapShaping::new(config.sigma),
            acc: None,
            model: None,
        }))
    }
}

/// Shape of the feature maps the stage was fitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grid {
    h: usize,
    w: usize,
    c: usize,
}

/// Running sums per position, shifted by the first sample to limit cancellation.
struct Accumulator {
    grid: Grid,
    first_sample: String,
    picked: Vec<usize>,
    shift: Vec<f64>,
    sum: Vec<f64>,
    /// Packed lower triangle of sum x x^T per position.
    outer: Vec<f64>,
    n: usize,
}

/// The fitted Gaussians: per position the mean and the packed lower Cholesky factor of the
/// regularised covariance.
pub struct PadimModel {
    grid: Grid,
    picked: Vec<usize>,
    mean: Vec<f64>,
    chol: Vec<f64>,
}

fn tri(d: usize) -> usize {
    d * (d + 1) / 2
}

impl PadimModel {
    /// Mahalanobis distance per position of a feature map of the fitted grid.
    pub fn score(&self, data: &[f32]) -> Vec<f32> {
        let d = self.picked.len();
        let (mut x, mut z) = (vec![0.0; d], vec![0.0; d]);
        (0..self.grid.h * self.grid.w)
            .map(|p| {
                let row = &data[p * self.grid.c..(p + 1) * self.grid.c];
                for (k, &ch) in self.picked.iter().enumerate() {
                    x[k] = f64::from(row[ch]) - self.mean[p * d + k];
                }
                solve_lower_sq_norm(&self.chol[p * tri(d)..(p + 1) * tri(d)], &x, &mut z).sqrt() as f32
            })
            .collect()
    }
}

struct PadimStage {
    node: String,
    channels: usize,
    epsilon: f64,
    seed: u64,
    shaping: MapShaping,
    acc: Option<Accumulator>,
    model: Option<PadimModel>,
}

const STATE_NAME: &str = "padim";
/// The layout of padim's sections (see `save_state`).
const STATE_VERSION: u32 = 1;

impl PadimStage {
    fn grid_mismatch(&self, sample: &Sample<'_>, found: Grid, fitted: Grid, against: &str) -> StageError {
        StageError::invalid_input(format!(
            "node `{}`, sample `{}`: feature map is {}x{}x{} (h x w x channels) but {against} {}x{}x{}",
            self.node, sample.meta.id, found.h, found.w, found.c, fitted.h, fitted.w, fitted.c
        ))
    }
}

impl Fitted for PadimStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let fm = checked_features(sample, &self.node)?;
        let grid = Grid { h: fm.height(), w: fm.width(), c: fm.channels() };
        if self.acc.is_none() {
            let d = self.channels.min(grid.c);
            let mut picked = sample_indices(&mut ChaCha8Rng::seed_from_u64(self.seed), grid.c, d).into_vec();
            picked.sort_unstable();
            let cells = grid.h * grid.w;
            let shift = (0..cells)
                .flat_map(|p| picked.iter().map(move |&ch| (p, ch)))
                .map(|(p, ch)| f64::from(fm.data()[p * grid.c + ch]))
                .collect();
            self.acc = Some(Accumulator {
                grid,
                first_sample: sample.meta.id.to_string(),
                picked,
                shift,
                sum: vec![0.0; cells * d],
                outer: vec![0.0; cells * tri(d)],
                n: 0,
            });
        }
        let Some(acc) = self.acc.as_ref() else { return Ok(()) };
        if acc.grid != grid {
            let first = format!("fit sample `{}` was", acc.first_sample);
            return Err(self.grid_mismatch(sample, grid, acc.grid, &first));
        }
        let Some(acc) = self.acc.as_mut() else { return Ok(()) };
        let d = acc.picked.len();
        let mut x = vec![0.0f64; d];
        for p in 0..grid.h * grid.w {
            let row = &fm.data()[p * grid.c..(p + 1) * grid.c];
            for (k, &ch) in acc.picked.iter().enumerate() {
                x[k] = f64::from(row[ch]) - acc.shift[p * d + k];
                acc.sum[p * d + k] += x[k];
            }
            let outer = &mut acc.outer[p * tri(d)..(p + 1) * tri(d)];
            let mut at = 0;
            for i in 0..d {
                let xi = x[i];
                for (o, &xj) in outer[at..at + i + 1].iter_mut().zip(&x[..=i]) {
                    *o += xi * xj;
                }
                at += i + 1;
            }
        }
        acc.n += 1;
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        let acc = self.acc.take().ok_or_else(|| {
            StageError::invalid_input(format!(
                "node `{}`: the fit split delivered no samples; nothing to fit on",
                self.node
            ))
        })?;
        let d = acc.picked.len();
        let n = acc.n as f64;
        // Unbiased covariance (numpy's np.cov), or the biased one for a single sample.
        let denom = if acc.n > 1 { n - 1.0 } else { 1.0 };
        let cells = acc.grid.h * acc.grid.w;
        let mut mean = vec![0.0; cells * d];
        let mut chol = acc.outer;
        for p in 0..cells {
            let m: Vec<f64> = acc.sum[p * d..(p + 1) * d].iter().map(|s| s / n).collect();
            let cov = &mut chol[p * tri(d)..(p + 1) * tri(d)];
            let mut at = 0;
            for i in 0..d {
                for j in 0..=i {
                    cov[at + j] = (cov[at + j] - n * m[i] * m[j]) / denom;
                }
                cov[at + i] += self.epsilon;
                at += i + 1;
            }
            if !cholesky_packed(cov, d) {
                return Err(StageError::internal(format!(
                    "node `{}`: covariance at cell {p} is not positive definite even after regularisation",
                    self.node
                )));
            }
            for k in 0..d {
                mean[p * d + k] = m[k] + acc.shift[p * d + k];
            }
        }
        self.model = Some(PadimModel { grid: acc.grid, picked: acc.picked, mean, chol });
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let model = fitted(&self.model, &self.node, "process called before fitting")?;
        let fm = checked_features(sample, &self.node)?;
        check_dim(&self.node, sample, model.grid.c, fm.channels())?;
        let grid = Grid { h: fm.height(), w: fm.width(), c: fm.channels() };
        if grid != model.grid {
            return Err(self.grid_mismatch(sample, grid, model.grid, "the scorer was fitted on"));
        }
        let scores = model.score(fm.data());
        self.shaping.outputs_max(sample, fm, &scores)
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let m = fitted(&self.model, &self.node, "no fitted model to save")?;
        let picked: Vec<u64> = m.picked.iter().map(|&c| c as u64).collect();
        let (cells, d) = (m.grid.h * m.grid.w, m.picked.len());
        let state = StateWriter::new(STATE_NAME, STATE_VERSION)
            .u64("grid", &[3], &[m.grid.h as u64, m.grid.w as u64, m.grid.c as u64])
            .u64("channels", &[d], &picked)
            .f64("mean", &[cells, d], &m.mean)
            .f64("cholesky", &[cells, tri(d)], &m.chol)
            .finish();
        state.map_err(|e| StageError::from(e).context(&self.node))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let node = self.node.clone();
        let ctx = |e: StateError| StageError::from(e).context(&node);
        let r = StateReader::parse(state, STATE_NAME, STATE_VERSION).map_err(ctx)?;
        let g = r.array_shape::<u64>("grid", &[3]).map_err(ctx)?;
        let (_, picked) = r.u64("channels").map_err(ctx)?;
        let (md, mean) = r.f64_rank("mean", 2).map_err(ctx)?;
        let (cd, chol) = r.f64_rank("cholesky", 2).map_err(ctx)?;
        let grid = match g.as_slice() {
            [h, w, c] => Grid { h: *h as usize, w: *w as usize, c: *c as usize },
            _ => return Err(StageError::invalid_input(format!("node `{node}`: fitted state: bad grid section"))),
        };
        let picked: Vec<usize> = picked.iter().map(|&c| c as usize).collect();
        let (cells, d) = (grid.h * grid.w, picked.len());
        if md != [cells, d] || cd != [cells, tri(d)] || picked.iter().any(|&c| c >= grid.c) {
            return Err(StageError::invalid_input(format!(
                "node `{node}`: fitted state: sections do not agree with grid {}x{}x{}",
                grid.h, grid.w, grid.c
            )));
        }
        self.model = Some(PadimModel { grid, picked, mean, chol });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{feature_map, nominal_rows, shifted};
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use anoflow_sdk::value::PortValue;
    use serde_json::json;

    fn samples(n: usize, h: usize, w: usize, dim: usize) -> Vec<(SampleMeta, Vec<PortValue>)> {
        (0..n)
            .map(|i| {
                let fm = feature_map(h, w, dim, 8.0, nominal_rows(h * w, dim, i as u64));
                (meta(&format!("train/{i}")), inputs(vec![("features", fm.into())]))
            })
            .collect()
    }

    /// Gauss-Jordan inverse of a dense f64 matrix.
    fn inverse(mut a: Vec<f64>, n: usize) -> Vec<f64> {
        let mut inv: Vec<f64> = (0..n * n).map(|i| f64::from(u8::from(i / n == i % n))).collect();
        for col in 0..n {
            let piv = (col..n).max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs())).unwrap();
            for k in 0..n {
                a.swap(col * n + k, piv * n + k);
                inv.swap(col * n + k, piv * n + k);
            }
            let p = a[col * n + col];
            for k in 0..n {
                a[col * n + k] /= p;
                inv[col * n + k] /= p;
            }
            for r in 0..n {
                if r != col {
                    let f = a[r * n + col];
                    for k in 0..n {
                        a[r * n + k] -= f * a[col * n + k];
                        inv[r * n + k] -= f * inv[col * n + k];
                    }
                }
            }
        }
        inv
    }

    #[test]
    fn mahalanobis_equals_a_direct_computation() {
        let (h, w, dim, n) = (3, 4, 256, 30);
        let train = samples(n, h, w, dim);
        let mut st = StageHarness::new::<Padim>(json!({"channels": 40, "sigma": 0, "seed": 3})).unwrap();
        st.fit(train.clone()).unwrap();
        let test = nominal_rows(h * w, dim, 777);
        let out = st
            .process(&meta("t"), inputs(vec![("features", feature_map(h, w, dim, 1.0, test.clone()).into())]))
            .unwrap();
        let got = out.score_map("score").data().to_vec();

        let mut picked = sample_indices(&mut ChaCha8Rng::seed_from_u64(3), dim, 40).into_vec();
        picked.sort_unstable();
        let d = picked.len();
        for p in 0..h * w {
            let xs: Vec<Vec<f64>> = train
                .iter()
                .map(|(_, ins)| {
                    let anoflow_sdk::value::Value::FeatureMap(fm) = &ins[0].value else { panic!() };
                    picked.iter().map(|&c| f64::from(fm.at(p / w, p % w)[c])).collect()
                })
                .collect();
            let mu: Vec<f64> = (0..d).map(|k| xs.iter().map(|x| x[k]).sum::<f64>() / n as f64).collect();
            let mut cov = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] = xs.iter().map(|x| (x[i] - mu[i]) * (x[j] - mu[j])).sum::<f64>() / (n - 1) as f64;
                }
                cov[i * d + i] += 0.01;
            }
            let inv = inverse(cov, d);
            let diff: Vec<f64> = (0..d).map(|k| f64::from(test[p * dim + picked[k]]) - mu[k]).collect();
            let m2: f64 = (0..d).map(|i| (0..d).map(|j| diff[i] * inv[i * d + j] * diff[j]).sum::<f64>()).sum();
            let want = m2.sqrt();
            assert!((f64::from(got[p]) - want).abs() < 1e-4 * want, "cell {p}: {} vs {want}", got[p]);
        }
    }

    #[test]
    fn shifted_patches_score_higher_and_state_round_trips() {
        let (h, w, dim) = (28, 28, 1024);
        let mut st = StageHarness::new::<Padim>(json!({"channels": 50})).unwrap();
        st.fit(samples(12, h, w, dim)).unwrap();
        let rows = shifted(nominal_rows(h * w, dim, 500), w, dim, (20..24, 3..7), 0.3);
        let fm = feature_map(h, w, dim, 8.0, rows);
        let out = st.process(&meta("t"), inputs(vec![("features", fm.clone().into())])).unwrap();
        let map = out.score_map("score");
        assert_eq!((map.height(), map.width()), (224, 224));
        let (inside, outside) = (map.get(22 * 8, 5 * 8), map.get(5 * 8, 20 * 8));
        assert!(inside > 2.0 * outside, "inside {inside} vs outside {outside}");

        let mut again = StageHarness::new::<Padim>(json!({"channels": 50})).unwrap();
        again.load_state(st.save_state().unwrap()).unwrap();
        let out2 = again.process(&meta("t"), inputs(vec![("features", fm.into())])).unwrap();
        assert_eq!(out.score_map("score").data(), out2.score_map("score").data());
        assert_eq!(out.scalar("image_score"), out2.scalar("image_score"));
    }

    #[test]
    fn grid_and_dim_mismatches_are_named() {
        let mut st = StageHarness::new::<Padim>(json!({"channels": 8})).unwrap();
        assert!(st.fit(Vec::new()).unwrap_err().message.contains("no samples"));
        let mut bad = samples(2, 4, 4, 16);
        let odd = feature_map(5, 4, 16, 8.0, nominal_rows(20, 16, 9));
        bad.push((meta("train/odd"), inputs(vec![("features", odd.into())])));
        let err = StageHarness::new::<Padim>(json!({"channels": 8})).unwrap().fit(bad).unwrap_err();
        assert!(
            err.message
                .contains("`train/odd`: feature map is 5x4x16 (h x w x channels) but fit sample `train/0` was 4x4x16"),
            "{err}"
        );
        st.fit(samples(2, 4, 4, 16)).unwrap();
        let wrong = feature_map(4, 4, 12, 8.0, nominal_rows(16, 12, 9));
        let err = st.process(&meta("test/3"), inputs(vec![("features", wrong.into())])).unwrap_err();
        assert!(
            err.message.contains("sample `test/3`: feature map has 12 channels but the scorer was fitted on 16"),
            "{err}"
        );
    }
}
