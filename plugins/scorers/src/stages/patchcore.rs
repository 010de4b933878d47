//! `patchcore`: memory bank of nominal patch features, reduced by a greedy k-center coreset;
//! a test patch scores its distance to the nearest bank member (Roth et al., CVPR 2022).

use std::sync::Arc;

use anoflow_sdk::prelude::*;

use crate::common::{check_dim, checked_features, default_sigma, fitted, scorer_ports, MapShaping};
use crate::coreset;
use crate::coreset_fit::CoresetFit;
use crate::linalg::{k_nearest_rows, nearest_neighbours, row_sq_norms};
use crate::nn_hnsw::{HnswIndex, HnswParams};
use crate::nn_kernel::{NnKernel, PackedBank};
use crate::nn_pruned::ProjectedBank;
use anoflow_sdk::state::{StateReader, StateWriter};

pub struct PatchCore;

/// Params of `patchcore`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCoreConfig {
    /// Gaussian blur sigma applied to the upsampled map, in pixels (0: none).
    #[serde(default = "default_sigma")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub sigma: f64,
    /// Fraction of the train patches kept in the memory bank by greedy k-center (1.0 keeps all).
    #[serde(default = "default_coreset")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1))]
    pub coreset: f64,
    /// b in the image-score reweighting: bank neighbours of the nearest bank member (1: plain
    /// max).
    #[serde(default = "default_num_neighbors")]
    #[schemars(range(min = 1))]
    pub num_neighbors: usize,
    /// Seed of the coreset's random projection and starting point (and of `selection`'s
    /// k-means), and of the HNSW graph's levels.
    #[serde(default)]
    pub seed: u64,
    /// Nearest-neighbour search: `{ kind: exact }` (every bank row) or `{ kind: hnsw,
    /// ef_construction, ef_search }` (approximate: an HNSW graph shortlists `ef_search`
    /// candidates, ranked by the exact distance; the graph is rebuilt from the bank on load).
    #[serde(default)]
    pub search: Search,
    /// How the coreset is picked: `{ kind: greedy }` (exact greedy k-center over all train
    /// patches, the paper's) or `{ kind: pre-clustered, clusters }` (approximate: k-means splits
    /// the patches into `clusters` parts, greedy k-center picks twice a part's share inside each,
    /// and greedy k-center over those picks keeps the coreset; about `clusters / 2` times less
    /// selection work, traded for coverage across part borders; off by default: it lost 0.023
    /// pixel AUROC on the 448 synthetic run of docs/results/scorers.md).
    #[serde(default)]
    pub selection: Selection,
}

fn default_coreset() -> f64 {
    0.1
}

fn default_num_neighbors() -> usize {
    3
}

/// `patchcore`'s nearest-neighbour search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Search {
    /// Every bank row.
    #[default]
    Exact,
    /// An HNSW graph shortlists candidates, ranked by the exact distance.
    Hnsw {
        /// Candidate list length while building the graph (larger: better graph, slower build).
        #[serde(default = "default_ef_construction")]
        #[schemars(range(min = 1, max = 4096))]
        ef_construction: usize,
        /// Candidate list length per query (larger: higher recall, slower search).
        #[serde(default = "default_ef_search")]
        #[schemars(range(min = 1, max = 4096))]
        ef_search: usize,
    },
}

/// `patchcore`'s coreset selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Selection {
    /// Greedy k-center over all train patches (PatchCore, Algorithm 1).
    #[default]
    Greedy,
    /// Two-level k-center: k-means (k-means++ seeding, 5 Lloyd steps on a 16,384-row sample)
    /// splits the patches into parts, exact greedy k-center picks inside each part twice its
    /// share of the coreset (shares proportional to the parts' patches, at least one), and
    /// exact greedy k-center over those picks keeps the coreset. Selection work drops about
    /// `clusters / 2`-fold; a patch near a part border is covered by its own part's picks only
    /// in the first round.
    PreClustered {
        /// Number of k-means parts (more: faster selection, more borders).
        #[serde(default = "default_clusters")]
        #[schemars(range(min = 2, max = 1024))]
        clusters: usize,
    },
}

impl Selection {
    fn coreset(self) -> coreset::Selection {
        match self {
            Selection::Greedy => coreset::Selection::Greedy,
            Selection::PreClustered { clusters } => coreset::Selection::PreClustered { clusters },
        }
    }
}

fn default_clusters() -> usize {
    16
}

fn default_ef_construction() -> usize {
    40
}

fn default_ef_search() -> usize {
    64
}

impl StagePlugin for PatchCore {
    type Config = PatchCoreConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        scorer_ports(StageDescriptor::new(
            "patchcore",
            "PatchCore: nearest-neighbour distance of each patch to a coreset memory bank of nominal patches",
        ))
    }

    fn create(config: PatchCoreConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        let (fraction, seed) = (config.coreset, config.seed);
        let search = match config.search {
            Search::Exact => None,
            Search::Hnsw { ef_construction, ef_search } => Some(HnswParams { ef_construction, ef_search, seed }),
        };
        let kernel =
            NnKernel::from_env().map_err(|e| StageError::invalid_param(format!("node `{}`: {e}", ctx.node_id)))?;
        Ok(Box::new(PatchCoreStage {
            node: ctx.node_id.to_string(),
            kernel,
            fraction,
            num_neighbors: config.num_neighbors,
            seed,
            selection: config.selection.coreset(),
            search,
            shaping: MapShaping::new(config.sigma),
            fit: CoresetFit::new(fraction, seed).with_selection(config.selection.coreset()),
            bank: None,
        }))
    }
}

/// The fitted memory bank.
pub struct Bank {
    /// Shared with the HNSW graph's points, when there is one.
    pub rows: Arc<[f32]>,
    pub norms: Vec<f32>,
    pub dim: usize,
    /// The rows packed for the fused SIMD search, where the CPU runs it and there is no bound.
    packed: Option<PackedBank>,
    /// The lower bound that lets exact search measure few rows (`NnKernel::Auto`, where it pays).
    projected: Option<ProjectedBank>,
    /// An approximate search replacing the exact one (`search: hnsw`).
    hnsw: Option<HnswIndex>,
}

impl Bank {
    /// The bank searched by the fastest kernel this CPU runs.
    pub fn new(rows: Vec<f32>, dim: usize) -> Self {
        Self::with_kernel(rows, dim, NnKernel::Auto)
    }

    /// The bank searched by `kernel` (GEMM tiles where a fused one cannot run here).
    pub fn with_kernel(rows: Vec<f32>, dim: usize, kernel: NnKernel) -> Self {
        let norms = row_sq_norms(&rows, dim);
        let projected = match kernel {
            NnKernel::Auto => ProjectedBank::build(&rows, dim),
            NnKernel::Fused(_) | NnKernel::Gemm => None,
        };
        // With the bound, the few queries it hands back take GEMM tiles: a packed copy of the
        // bank would cost as much memory as the bank for well under 1 % of the queries.
        let packed = match kernel {
            NnKernel::Auto if projected.is_some() => None,
            NnKernel::Auto => PackedBank::new(&rows, &norms, dim),
            NnKernel::Fused(isa) => PackedBank::with_isa(&rows, &norms, dim, isa),
            NnKernel::Gemm => None,
        };
        Self { rows: rows.into(), norms, dim, packed, projected, hnsw: None }
    }

    /// The bank searched through an HNSW graph (built here) instead of exactly, or exactly
    /// (`None`).
    pub fn with_search(mut self, search: Option<HnswParams>) -> Self {
        self.hnsw = search.map(|p| HnswIndex::build(&self.rows, self.dim, p));
        self
    }
    pub fn len(&self) -> usize {
        self.norms.len()
    }
    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }
    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    /// Builds the bank from fit rows: the coreset of `fraction` of them.
    pub fn fit(rows: &[f32], dim: usize, fraction: f64, seed: u64, kernel: NnKernel) -> Self {
        Self::fit_with(rows, dim, fraction, seed, coreset::Selection::Greedy, kernel)
    }

    /// [`Self::fit`] with the coreset picked by `selection`.
    pub fn fit_with(
        rows: &[f32],
        dim: usize,
        fraction: f64,
        seed: u64,
        selection: coreset::Selection,
        kernel: NnKernel,
    ) -> Self {
        let picked = coreset::select_with(rows, dim, fraction, seed, selection);
        Self::with_kernel(coreset::rows_at(rows, dim, &picked), dim, kernel)
    }

    /// Per-patch nearest-neighbour distance and index: through the HNSW graph if the bank has
    /// one, else exactly: the fused SIMD search where the CPU runs it (and it was not turned off),
    /// else GEMM tiles; the same bits either way.
    pub fn score_patches(&self, patches: &[f32], parallel: bool) -> Vec<(f32, u32)> {
        if let Some(hnsw) = &self.hnsw {
            return hnsw.nearest(&self.rows, patches, self.dim, parallel);
        }
        self.score_patches_exact(patches, parallel)
    }

    /// Per-patch exact nearest neighbours, whether or not the bank has an HNSW graph: through
    /// the lower bound where the bank has one (the queries it hands back are scanned whole), else
    /// by a full scan. The same bits either way.
    pub fn score_patches_exact(&self, patches: &[f32], parallel: bool) -> Vec<(f32, u32)> {
        let Some(projected) = &self.projected else {
            return self.score_patches_scan(patches, parallel);
        };
        let found = projected.nearest(&self.rows, patches, parallel);
        let handed_back: Vec<usize> = found.iter().enumerate().filter(|(_, f)| f.is_none()).map(|(i, _)| i).collect();
        let mut rest = Vec::with_capacity(handed_back.len() * self.dim);
        for &i in &handed_back {
            rest.extend_from_slice(&patches[i * self.dim..(i + 1) * self.dim]);
        }
        let mut scanned = self.score_patches_scan(&rest, parallel).into_iter();
        found.into_iter().map(|f| f.or_else(|| scanned.next()).unwrap_or((f32::INFINITY, 0))).collect()
    }

    /// Per-patch exact nearest neighbours by a full scan of the bank: the fused SIMD kernel where
    /// the CPU runs it (and it was not turned off), else GEMM tiles.
    pub fn score_patches_scan(&self, patches: &[f32], parallel: bool) -> Vec<(f32, u32)> {
        match &self.packed {
            Some(packed) => packed.nearest(&self.rows, patches, parallel),
            None => self.score_patches_gemm(patches, parallel),
        }
    }

    /// Per-patch nearest neighbours by GEMM tiles (the portable path), whatever the CPU.
    pub fn score_patches_gemm(&self, patches: &[f32], parallel: bool) -> Vec<(f32, u32)> {
        nearest_neighbours(&self.rows, &self.norms, patches, self.dim, parallel)
    }

    /// The paper's image score: s = (1 - exp|m* - t| / sum_{m in N_b(m*)} exp|m - t|) * s*, where
    /// t is the test patch with the largest nearest-neighbour distance s*, m* its nearest bank
    /// member and N_b(m*) the b bank members nearest to m* (m* itself among them). With b = 1
    /// the weight would be 0, so the plain maximum is returned, as in the reference code.
    pub fn image_score(&self, patches: &[f32], nn: &[(f32, u32)], b: usize) -> f32 {
        let Some((t, &(s_star, m_star))) = nn.iter().enumerate().max_by(|x, y| x.1 .0.total_cmp(&y.1 .0)) else {
            return 0.0;
        };
        if b <= 1 {
            return s_star;
        }
        let test = &patches[t * self.dim..(t + 1) * self.dim];
        let support = k_nearest_rows(&self.rows, self.row(m_star as usize), b);
        let dists: Vec<f64> = support
            .iter()
            .map(|&(_, j)| f64::from(crate::linalg::sq_dist(test, self.row(j as usize))).sqrt())
            .collect();
        let own = f64::from(s_star);
        let top = dists.iter().copied().fold(own, f64::max);
        let denom: f64 = dists.iter().map(|d| (d - top).exp()).sum();
        // m* is in its own neighbourhood; if ties pushed it out, its term still belongs in the sum.
        let denom = if support.iter().any(|&(_, j)| j == m_star) { denom } else { denom + (own - top).exp() };
        let weight = 1.0 - (own - top).exp() / denom;
        (weight * own) as f32
    }
}

struct PatchCoreStage {
    node: String,
    kernel: NnKernel,
    fraction: f64,
    num_neighbors: usize,
    seed: u64,
    selection: coreset::Selection,
    /// `search: hnsw`'s graph params; `None` for exact search.
    search: Option<HnswParams>,
    shaping: MapShaping,
    fit: CoresetFit,
    bank: Option<Bank>,
}

const STATE_NAME: &str = "patchcore";
/// The layout of patchcore's sections (see `save_state`).
const STATE_VERSION: u32 = 1;

impl Fitted for PatchCoreStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        self.fit.observe(&self.node, sample)
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        let fit =
            std::mem::replace(&mut self.fit, CoresetFit::new(self.fraction, self.seed).with_selection(self.selection));
        self.bank = Some(fit.into_bank(&self.node, self.kernel)?.with_search(self.search));
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let bank = fitted(&self.bank, &self.node, "process called before fitting")?;
        let fm = checked_features(sample, &self.node)?;
        check_dim(&self.node, sample, bank.dim, fm.channels())?;
        let nn = bank.score_patches(fm.data(), true);
        let patch_scores: Vec<f32> = nn.iter().map(|p| p.0).collect();
        let image_score = bank.image_score(fm.data(), &nn, self.num_neighbors);
        self.shaping.outputs(sample, fm, &patch_scores, image_score)
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let bank = fitted(&self.bank, &self.node, "no fitted bank to save")?;
        let state =
            StateWriter::new(STATE_NAME, STATE_VERSION).f32("bank", &[bank.len(), bank.dim], &bank.rows).finish();
        state.map_err(|e| StageError::from(e).context(&self.node))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let r = StateReader::parse(state, STATE_NAME, STATE_VERSION)
            .map_err(|e| StageError::from(e).context(&self.node))?;
        let (dims, rows) = r.f32_rank("bank", 2).map_err(|e| StageError::from(e).context(&self.node))?;
        // The graph is not stored: rebuilt from the bank, deterministically, it is the same one.
        self.bank = Some(Bank::with_kernel(rows, dims[1], self.kernel).with_search(self.search));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{feature_map, nominal_rows, shifted};
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    fn fit_samples(n: usize, dim: usize) -> Vec<(SampleMeta, Vec<anoflow_sdk::value::PortValue>)> {
        (0..n)
            .map(|i| {
                let fm = feature_map(28, 28, dim, 8.0, nominal_rows(28 * 28, dim, i as u64));
                (meta(&format!("train/{i}")), inputs(vec![("features", fm.into())]))
            })
            .collect()
    }

    #[test]
    fn anomalous_patches_score_higher_on_a_28x28x1024_map() {
        let dim = 1024;
        let mut h = StageHarness::new::<PatchCore>(json!({"coreset": 0.1})).unwrap();
        h.fit(fit_samples(4, dim)).unwrap();
        // A test map: nominal everywhere but a 4x4 block shifted off the nominal distribution.
        let rows = shifted(nominal_rows(28 * 28, dim, 99), 28, dim, (10..14, 12..16), 0.6);
        let fm = feature_map(28, 28, dim, 8.0, rows);
        let out = h.process(&meta("test/0"), inputs(vec![("features", fm.clone().into())])).unwrap();
        let map = out.score_map("score");
        assert_eq!((map.height(), map.width()), (224, 224));
        let inside = map.get(12 * 8 + 4, 14 * 8 + 4);
        let outside = map.get(4 * 8, 4 * 8);
        assert!(inside > 1.5 * outside, "inside {inside} vs outside {outside}");

        let nominal = feature_map(28, 28, dim, 8.0, nominal_rows(28 * 28, dim, 100));
        let clean = h.process(&meta("test/1"), inputs(vec![("features", nominal.into())])).unwrap();
        assert!(out.scalar("image_score") > 1.2 * clean.scalar("image_score"));

        // `like` sets the output size.
        let like = Mask::zeros(256, 200).unwrap();
        let out = h.process(&meta("test/2"), inputs(vec![("features", fm.into()), ("like", like.into())])).unwrap();
        assert_eq!((out.score_map("score").height(), out.score_map("score").width()), (256, 200));
    }

    #[test]
    fn image_score_follows_the_paper_formula() {
        // Bank on a line: 0, 1, 3 (1-D). Test patch t = 10: s* = 7 (nearest m* = 3).
        // N_3(m*) = {3, 1, 0}: distances from t are 7, 9, 10.
        let bank = Bank::new(vec![0.0, 1.0, 3.0], 1);
        let patches = [10.0f32, 2.9];
        let nn = bank.score_patches(&patches, false);
        assert_eq!(nn[0], (7.0, 2));
        let got = bank.image_score(&patches, &nn, 3);
        let want = (1.0 - 7f64.exp() / (7f64.exp() + 9f64.exp() + 10f64.exp())) * 7.0;
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(bank.image_score(&patches, &nn, 1), 7.0);
    }

    #[test]
    fn every_kernel_gives_the_same_patch_and_image_scores() {
        let dim = 256;
        // A bank with repeated rows (every 50th row again), so exact ties occur too.
        let mut rows = nominal_rows(400, dim, 3);
        for j in (0..400).step_by(50) {
            let src = rows[j * dim..(j + 1) * dim].to_vec();
            rows[(j + 25) * dim..(j + 26) * dim].copy_from_slice(&src);
        }
        let patches = shifted(nominal_rows(28 * 28, dim, 4), 28, dim, (3..9, 3..9), 0.5);
        let mut kernels = vec![NnKernel::Auto, NnKernel::Gemm];
        kernels.extend(crate::nn_kernel::Isa::available().into_iter().map(NnKernel::Fused));
        let results: Vec<_> = kernels
            .iter()
            .map(|&k| {
                let bank = Bank::with_kernel(rows.clone(), dim, k);
                // `Auto` rules rows out by the projected bound; the others scan every row.
                assert_eq!(bank.projected.is_some(), k == NnKernel::Auto, "{k:?}");
                let nn = bank.score_patches(&patches, true);
                let image = bank.image_score(&patches, &nn, 3);
                (nn, image.to_bits())
            })
            .collect();
        for (k, r) in kernels.iter().zip(&results) {
            assert!(r == &results[1], "{k:?} differs from GEMM tiles");
        }
    }

    #[test]
    fn save_load_round_trip_gives_identical_scores() {
        let dim = 1024;
        let mut a = StageHarness::new::<PatchCore>(json!({"coreset": 0.05, "seed": 7})).unwrap();
        a.fit(fit_samples(2, dim)).unwrap();
        let blob = a.save_state().unwrap();
        let mut b = StageHarness::new::<PatchCore>(json!({"coreset": 0.05, "seed": 7})).unwrap();
        b.load_state(blob).unwrap();
        let fm = feature_map(28, 28, dim, 8.0, nominal_rows(28 * 28, dim, 5));
        let oa = a.process(&meta("t"), inputs(vec![("features", fm.clone().into())])).unwrap();
        let ob = b.process(&meta("t"), inputs(vec![("features", fm.into())])).unwrap();
        assert_eq!(oa.score_map("score").data(), ob.score_map("score").data());
        assert_eq!(oa.scalar("image_score"), ob.scalar("image_score"));
        let err = b.load_state(StateWriter::new("padim", 1).finish().unwrap()).unwrap_err();
        assert!(err.message.contains("written by stage `padim`"), "{err}");
        let err = b.load_state(b"ANOFLOWS".to_vec()).unwrap_err();
        assert!(err.message.contains("bad magic"), "{err}");
    }

    #[test]
    fn hnsw_search_wide_enough_is_exact_and_survives_save_and_load() {
        let dim = 256;
        let hnsw = json!({"coreset": 0.1, "search": {"kind": "hnsw", "ef_construction": 40, "ef_search": 400}});
        let mut a = StageHarness::new::<PatchCore>(hnsw.clone()).unwrap();
        a.fit(fit_samples(2, dim)).unwrap();
        let mut exact = StageHarness::new::<PatchCore>(json!({"coreset": 0.1})).unwrap();
        exact.fit(fit_samples(2, dim)).unwrap();
        let mut b = StageHarness::new::<PatchCore>(hnsw).unwrap();
        b.load_state(a.save_state().unwrap()).unwrap();
        let rows = shifted(nominal_rows(28 * 28, dim, 5), 28, dim, (3..9, 3..9), 0.5);
        let fm = feature_map(28, 28, dim, 8.0, rows);
        let run = |h: &mut StageHarness| h.process(&meta("t"), inputs(vec![("features", fm.clone().into())])).unwrap();
        let (oa, ob, oe) = (run(&mut a), run(&mut b), run(&mut exact));
        // ef_search 400 covers the 156-row bank: the graph search returns every row.
        assert_eq!(oa.score_map("score").data(), oe.score_map("score").data());
        assert_eq!(oa.scalar("image_score"), oe.scalar("image_score"));
        // The graph rebuilt on load is the same.
        assert_eq!(oa.score_map("score").data(), ob.score_map("score").data());
        assert_eq!(oa.scalar("image_score"), ob.scalar("image_score"));
    }

    #[test]
    fn pre_clustered_selection_fits_a_seeded_bank_of_the_asked_size() {
        let dim = 1024;
        let params = json!({"coreset": 0.1, "seed": 3, "selection": {"kind": "pre-clustered", "clusters": 8}});
        let bank_bits = |params: &serde_json::Value| {
            let mut h = StageHarness::new::<PatchCore>(params.clone()).unwrap();
            h.fit(fit_samples(3, dim)).unwrap();
            h.save_state().unwrap()
        };
        let a = bank_bits(&params);
        assert_eq!(a, bank_bits(&params), "same seed, another bank");
        let state = StateReader::parse(&a, STATE_NAME, STATE_VERSION).unwrap();
        let (dims, _) = state.f32_rank("bank", 2).unwrap();
        assert_eq!(dims, vec![3 * 784 / 10, dim]);
        assert_ne!(a, bank_bits(&json!({"coreset": 0.1, "seed": 3})), "the same bank as greedy");
    }

    #[test]
    fn bad_search_params_name_the_node_and_the_param() {
        for (params, want) in [
            (json!({"search": {"kind": "hnsw", "ef_search": 0}}), "param `search.ef_search`: 0 is out of range"),
            (
                json!({"search": {"kind": "hnsw", "ef_construction": 5000}}),
                "param `search.ef_construction`: 5000 is out of range",
            ),
            (json!({"search": {"kind": "annoy"}}), "param `search.kind`: `annoy` is not one of exact, hnsw"),
            (json!({"search": "hnsw"}), "param `search`: expected mapping with a `kind` (exact, hnsw)"),
            (json!({"search": {"kind": "exact", "ef_search": 64}}), "unknown param `search.ef_search`"),
            (json!({"ef_search": 64}), "unknown param `ef_search`"),
            (
                json!({"selection": {"kind": "pre-clustered", "clusters": 1}}),
                "param `selection.clusters`: 1 is out of range",
            ),
            (
                json!({"selection": {"kind": "sampled"}}),
                "param `selection.kind`: `sampled` is not one of greedy, pre-clustered",
            ),
            (json!({"selection": {"kind": "greedy", "clusters": 8}}), "unknown param `selection.clusters`"),
            (json!({"coreset": 0}), "param `coreset`: 0 is out of range"),
            (json!({"coreset": 1.5}), "param `coreset`: 1.5 is out of range"),
            (json!({"num_neighbors": 0}), "param `num_neighbors`: 0 is out of range"),
        ] {
            let err = StageHarness::new::<PatchCore>(params).err().expect("refused");
            assert!(err.message.contains("node `test-patchcore`") && err.message.contains(want), "{err}");
        }
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut h = StageHarness::new::<PatchCore>(json!({})).unwrap();
        let err = h.fit(Vec::new()).unwrap_err();
        assert!(err.message.contains("fit split delivered no samples"), "{err}");

        let mut samples = fit_samples(1, 64);
        let odd = feature_map(4, 4, 32, 8.0, nominal_rows(16, 32, 1));
        samples.push((meta("train/odd"), inputs(vec![("features", odd.into())])));
        let err = h.fit(samples).unwrap_err();
        assert!(
            err.message.contains("`train/odd`: feature map has 32 channels but fit sample `train/0` had 64"),
            "{err}"
        );

        let mut h = StageHarness::new::<PatchCore>(json!({})).unwrap();
        h.fit(fit_samples(1, 64)).unwrap();
        let wrong = feature_map(4, 4, 32, 8.0, nominal_rows(16, 32, 1));
        let err = h.process(&meta("test/7"), inputs(vec![("features", wrong.into())])).unwrap_err();
        assert!(err.message.contains("sample `test/7`: feature map has 32 channels but the scorer was fitted on 64"));
        let mut rows = nominal_rows(16, 64, 1);
        rows[5 * 64 + 3] = f32::NAN;
        let nan = feature_map(4, 4, 64, 8.0, rows);
        let err = h.process(&meta("test/8"), inputs(vec![("features", nan.into())])).unwrap_err();
        assert!(err.message.contains("sample `test/8`: feature map holds NaN at cell (y 1, x 1), channel 3"), "{err}");
        assert!(StageHarness::new::<PatchCore>(json!({"coreset": 0.0})).is_err());
    }
}
