//! `crossmodal-mapping`: the CFM-like scorer (see [`crate::mapping`]) with closed-form ridge maps
//! ([`crate::ridge`]) 2D->3D and 3D->2D fitted on nominal patch features.

use anoflow_imaging::scoremap::cells_to_image_map;
use anoflow_sdk::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    grid::{check_finite, check_same_image, on_grid},
    mapping::{cell_scores, is_empty, Combine, Distance, Scoring},
    ridge::{self, LinearMap},
    state,
};

/// Stage type `crossmodal-mapping`.
pub struct CrossmodalMapping;

/// Params of `crossmodal-mapping`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Ridge strength, relative to the mean input variance: lambda = ridge * trace(X^T X) / dim.
    #[serde(default = "default_ridge")]
    #[schemars(range(min = 0.0))]
    pub ridge: f64,
    /// Fit on at most this many patch pairs (seeded reservoir sample).
    #[serde(default = "default_max_rows")]
    #[schemars(range(min = 1))]
    pub max_rows: usize,
    /// Prediction error: 1 - cosine similarity, or L2.
    #[serde(default)]
    pub distance: DistanceParam,
    /// How the two errors make one score (CFM: product).
    #[serde(default)]
    pub combine: CombineParam,
    /// Cells whose 3D feature is all zeros (no geometry) score 0 and are not fitted on.
    #[serde(default = "yes")]
    pub skip_empty_3d: bool,
    /// Gaussian blur sigma of the upsampled map, in pixels (0: none).
    #[serde(default = "default_sigma")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub sigma: f64,
    /// Seed of the reservoir sample.
    #[serde(default)]
    pub seed: u64,
}

fn default_ridge() -> f64 {
    0.01
}

fn default_max_rows() -> usize {
    20000
}

fn yes() -> bool {
    true
}

fn default_sigma() -> f64 {
    4.0
}

/// `crossmodal-mapping`'s prediction error ([`Distance`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DistanceParam {
    #[default]
    Cosine,
    L2,
}

/// How `crossmodal-mapping` combines its two errors ([`Combine`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CombineParam {
    #[default]
    Product,
    Sum,
}

impl StagePlugin for CrossmodalMapping {
    type Config = MappingConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "crossmodal-mapping",
            "CFM-like scorer: ridge maps 2D->3D and 3D->2D fitted on nominal patch features; their prediction errors \
             are the anomaly score",
        )
        .input("features_2d", ValueKind::FeatureMap, "RGB patch features (their grid is the common grid)")
        .input(
            "features_3d",
            ValueKind::FeatureMap,
            "3D patch features of the same image (resized bilinearly to the 2D grid; all-zero cells = no geometry)",
        )
        .optional_input("like", ValueKind::Any, "any spatial value whose size the score map takes (e.g. the image)")
        .output("score", ValueKind::ScoreMap, "combined prediction error, upsampled to image size and blurred")
        .output("image_score", ValueKind::Scalar, "maximum of the score map")
    }

    fn create(config: MappingConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        let scoring = Scoring {
            distance: match config.distance {
                DistanceParam::Cosine => Distance::Cosine,
                DistanceParam::L2 => Distance::L2,
            },
            combine: match config.combine {
                CombineParam::Product => Combine::Product,
                CombineParam::Sum => Combine::Sum,
            },
            skip_empty_3d: config.skip_empty_3d,
        };
        Ok(Box::new(MappingStage {
            node: ctx.node_id.to_string(),
            ridge: config.ridge,
            scoring,
            sigma: config.sigma as f32,
            reservoir: Reservoir::new(config.max_rows, config.seed),
            dims: None,
            maps: None,
        }))
    }
}

/// A seeded reservoir sample of paired rows (algorithm R): memory stays at `cap` rows
/// whatever the size of the fit split, and the sample depends only on the seed and the order
/// of the rows.
struct Reservoir {
    cap: usize,
    seen: usize,
    rows2: Vec<f32>,
    rows3: Vec<f32>,
    rng: ChaCha8Rng,
}

impl Reservoir {
    fn new(cap: usize, seed: u64) -> Self {
        Self { cap, seen: 0, rows2: Vec::new(), rows3: Vec::new(), rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    fn offer(&mut self, r2: &[f32], r3: &[f32]) {
        let slot = if self.seen < self.cap {
            self.rows2.extend_from_slice(r2);
            self.rows3.extend_from_slice(r3);
            None
        } else {
            Some(self.rng.gen_range(0..=self.seen)).filter(|&j| j < self.cap)
        };
        if let Some(j) = slot {
            let (d2, d3) = (r2.len(), r3.len());
            self.rows2[j * d2..(j + 1) * d2].copy_from_slice(r2);
            self.rows3[j * d3..(j + 1) * d3].copy_from_slice(r3);
        }
        self.seen += 1;
    }
}

struct MappingStage {
    node: String,
    ridge: f64,
    scoring: Scoring,
    sigma: f32,
    reservoir: Reservoir,
    /// `(dim_2d, dim_3d, first fit sample)`.
    dims: Option<(usize, usize, String)>,
    /// `(2D->3D, 3D->2D)` once fitted.
    maps: Option<(LinearMap, LinearMap)>,
}

/// Both maps of a sample, checked, with the 3D rows on the 2D grid.
struct Paired<'a> {
    f2: &'a FeatureMap,
    rows3: std::borrow::Cow<'a, [f32]>,
    d3: usize,
}

impl MappingStage {
    fn paired<'a>(&self, sample: &Sample<'a>) -> StageResult<Paired<'a>> {
        let f2 = sample.feature_map("features_2d")?;
        let f3 = sample.feature_map("features_3d")?;
        check_finite(&self.node, sample, "`features_2d`", f2)?;
        check_finite(&self.node, sample, "`features_3d`", f3)?;
        check_same_image(|| format!("node `{}`, sample `{}`", self.node, sample.meta.id), f2, f3)?;
        Ok(Paired { f2, rows3: on_grid(f3, f2.height(), f2.width())?, d3: f3.channels() })
    }

    fn shape_map(&self, sample: &Sample<'_>, fm: &FeatureMap, scores: &[f32]) -> StageResult<ScoreMap> {
        cells_to_image_map(scores, fm, sample.maybe("like"), self.sigma, &sample.meta.id)
            .map_err(|e| e.context(format!("node `{}`", self.node)))
    }
}

impl Fitted for MappingStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let p = self.paired(sample)?;
        let d2 = p.f2.channels();
        match &self.dims {
            None => self.dims = Some((d2, p.d3, sample.meta.id.to_string())),
            Some((a, b, first)) if (*a, *b) != (d2, p.d3) => {
                return Err(StageError::invalid_input(format!(
                    "node `{}`, sample `{}`: features have {d2} (2D) and {} (3D) channels but fit sample `{first}` had \
                     {a} and {b}",
                    self.node, sample.meta.id, p.d3
                )))
            }
            Some(_) => {}
        }
        for (r2, r3) in p.f2.data().chunks_exact(d2).zip(p.rows3.chunks_exact(p.d3)) {
            if self.scoring.skip_empty_3d && is_empty(r3) {
                continue;
            }
            self.reservoir.offer(r2, r3);
        }
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        let Some((d2, d3, _)) = self.dims.clone() else {
            return Err(StageError::invalid_input(format!(
                "node `{}`: the fit split delivered no samples; nothing to fit on",
                self.node
            )));
        };
        let res = std::mem::replace(&mut self.reservoir, Reservoir::new(1, 0));
        if res.seen == 0 {
            return Err(StageError::invalid_input(format!(
                "node `{}`: no fit location has 3D geometry (every 3D feature is zero); nothing to fit on",
                self.node
            )));
        }
        let err =
            |dir: &str, e: ridge::RidgeError| StageError::internal(format!("node `{}`: fitting {dir}: {e}", self.node));
        let to3 = ridge::fit(&res.rows2, d2, &res.rows3, d3, self.ridge).map_err(|e| err("2D->3D", e))?;
        let to2 = ridge::fit(&res.rows3, d3, &res.rows2, d2, self.ridge).map_err(|e| err("3D->2D", e))?;
        self.maps = Some((to3, to2));
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let Some((to3, to2)) = &self.maps else {
            return Err(StageError::internal(format!("node `{}`: process called before fit", self.node)));
        };
        let p = self.paired(sample)?;
        if (p.f2.channels(), p.d3) != (to3.dim_in, to2.dim_in) {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: features have {} (2D) and {} (3D) channels but the mappings were fitted on {} \
                 and {}",
                self.node,
                sample.meta.id,
                p.f2.channels(),
                p.d3,
                to3.dim_in,
                to2.dim_in
            )));
        }
        let scores = cell_scores(to3, to2, p.f2.data(), &p.rows3, &self.scoring);
        let map = self.shape_map(sample, p.f2, &scores)?;
        let image_score = map.data().iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Ok(Outputs::new().with("score", map).with("image_score", f64::from(image_score)))
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        match &self.maps {
            Some((to3, to2)) => {
                state::encode(to3, to2).map_err(|e| StageError::from(e).context(format!("node `{}`", self.node)))
            }
            None => Err(StageError::internal(format!("node `{}`: nothing fitted to save", self.node))),
        }
    }

    fn load_state(&mut self, bytes: &[u8]) -> StageResult<()> {
        let maps = state::decode(bytes).map_err(|e| StageError::from(e).context(format!("node `{}`", self.node)))?;
        self.maps = Some(maps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! On 28x28 grids (a 224x224 image at stride 8) with 1024-d RGB features and 33-d 3D
    //! features.

    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::json;

    const D2: usize = 1024;
    const D3: usize = 33;
    const LATENT: usize = 8;
    const G: usize = 28;

    /// Fixed random projections of a shared latent: nominal 2D and 3D features of a location are
    /// both linear in its latent, so each predicts the other.
    struct World {
        b: Vec<f32>,
        c: Vec<f32>,
    }

    impl World {
        fn new() -> Self {
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            Self {
                b: (0..LATENT * D2).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                c: (0..LATENT * D3).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            }
        }

        fn project(z: &[f32], m: &[f32], d: usize, offset: f32) -> Vec<f32> {
            (0..d).map(|j| offset + (0..LATENT).map(|k| z[k] * m[k * d + j]).sum::<f32>()).collect()
        }

        /// One image's maps; cells in `broken` get a 3D feature from another latent.
        fn sample(&self, seed: u64, broken: impl Fn(usize, usize) -> bool) -> (FeatureMap, FeatureMap) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (mut f2, mut f3) = (Vec::with_capacity(G * G * D2), Vec::with_capacity(G * G * D3));
            for y in 0..G {
                for x in 0..G {
                    let z: Vec<f32> = (0..LATENT).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let noise: Vec<f32> = (0..D2).map(|_| rng.gen_range(-0.05..0.05)).collect();
                    f2.extend(Self::project(&z, &self.b, D2, 1.0).iter().zip(&noise).map(|(a, n)| a + n));
                    let z3: Vec<f32> =
                        if broken(y, x) { (0..LATENT).map(|_| rng.gen_range(-1.0..1.0)).collect() } else { z };
                    f3.extend(Self::project(&z3, &self.c, D3, 10.0));
                }
            }
            (
                FeatureMap::new(D2 as u32, G as u32, G as u32, 8.0, f2).unwrap(),
                FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, f3).unwrap(),
            )
        }
    }

    fn pair(f2: FeatureMap, f3: FeatureMap) -> Vec<anoflow_sdk::value::PortValue> {
        inputs(vec![("features_2d", f2.into()), ("features_3d", f3.into())])
    }

    fn fitted(params: serde_json::Value, world: &World) -> StageHarness {
        let mut h = StageHarness::new::<CrossmodalMapping>(params).unwrap();
        let train = (0..6u64)
            .map(|s| {
                let (a, b) = world.sample(s, |_, _| false);
                (meta(&format!("train/{s}")), pair(a, b))
            })
            .collect();
        h.fit(train).unwrap();
        h
    }

    #[test]
    fn locations_breaking_the_2d_3d_relation_score_higher() {
        let world = World::new();
        for params in [json!({}), json!({"distance": "l2", "combine": "sum", "sigma": 0})] {
            let h = fitted(params.clone(), &world);
            let block = |y: usize, x: usize| (10..16).contains(&y) && (12..18).contains(&x);
            let (a, b) = world.sample(100, block);
            let out = h.process(&meta("test/broken"), pair(a, b)).unwrap();
            let s = out.score_map("score");
            assert_eq!((s.height(), s.width()), (224, 224));
            // Compare block centres (pixel (13*8+4, 15*8+4)) with far-away cells.
            let inside = s.get(13 * 8 + 4, 15 * 8 + 4);
            let outside = (0..224)
                .step_by(8)
                .flat_map(|y| (0..224).step_by(8).map(move |x| (y, x)))
                .filter(|&(y, x)| !(48..160).contains(&y) || !(64..176).contains(&x))
                .map(|(y, x)| s.get(y, x))
                .fold(0.0f32, f32::max);
            assert!(inside > 3.0 * outside, "{params}: inside {inside}, max outside {outside}");
            let (a, b) = world.sample(101, |_, _| false);
            let good = h.process(&meta("test/good"), pair(a, b)).unwrap();
            assert!(out.scalar("image_score") > 3.0 * good.scalar("image_score"));
        }
    }

    #[test]
    fn state_round_trips_and_errors_are_named() {
        let world = World::new();
        let h = fitted(json!({"max_rows": 3000}), &world);
        let (a, b) = world.sample(7, |y, _| y < 5);
        let want = h.process(&meta("t"), pair(a.clone(), b.clone())).unwrap();
        let mut h2 = StageHarness::new::<CrossmodalMapping>(json!({"max_rows": 3000})).unwrap();
        h2.load_state(h.save_state().unwrap()).unwrap();
        let got = h2.process(&meta("t"), pair(a.clone(), b.clone())).unwrap();
        assert_eq!(want.score_map("score").data(), got.score_map("score").data());
        assert!(h2.load_state(vec![1, 2, 3]).is_err());

        // 3D features from a cloud of another size (32x32 cells at stride 8 = 256 px).
        let big = FeatureMap::new(D3 as u32, 32, 32, 8.0, vec![1.0; 32 * 32 * D3]).unwrap();
        let err = h.process(&meta("cat/test/x/003"), pair(a.clone(), big)).unwrap_err();
        assert!(err.message.contains("sample `cat/test/x/003`") && err.message.contains("different sizes"), "{err}");
        // A 250 px image: 3D grid rounded up (32 cells, 256 px), 2D grid rounded down (31, 248 px).
        let up = FeatureMap::new(D3 as u32, 32, 32, 8.0, vec![1.0; 32 * 32 * D3]).unwrap();
        let down = FeatureMap::new(D2 as u32, 31, 31, 8.0, vec![1.0; 31 * 31 * D2]).unwrap();
        assert!(h.process(&meta("250px"), pair(down, up)).is_ok());
        // The same image at another stride is fine (resized to the 2D grid).
        let coarse = FeatureMap::new(D3 as u32, 14, 14, 16.0, vec![1.0; 14 * 14 * D3]).unwrap();
        assert!(h.process(&meta("ok"), pair(a.clone(), coarse)).is_ok());
        // NaN features.
        let mut bad = b.data().to_vec();
        bad[5 * D3 + 2] = f32::NAN;
        let nan = FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, bad).unwrap();
        let err = h.process(&meta("n"), pair(a.clone(), nan)).unwrap_err();
        assert!(err.message.contains("`features_3d` holds NaN at cell (y 0, x 5), channel 2"), "{err}");
        // Dims differing between fit and test.
        let narrow = FeatureMap::new(16, G as u32, G as u32, 8.0, vec![0.5; G * G * 16]).unwrap();
        let err = h.process(&meta("d"), pair(narrow, b.clone())).unwrap_err();
        assert!(
            err.message.contains("16 (2D) and 33 (3D) channels but the mappings were fitted on 1024 and 33"),
            "{err}"
        );
        // Dims differing within the fit split.
        let mut h3 = StageHarness::new::<CrossmodalMapping>(json!({})).unwrap();
        let narrow = FeatureMap::new(16, G as u32, G as u32, 8.0, vec![0.5; G * G * 16]).unwrap();
        let err = h3.fit(vec![(meta("f0"), pair(a, b.clone())), (meta("f1"), pair(narrow, b))]).unwrap_err();
        assert!(err.message.contains("fit sample `f0` had 1024 and 33"), "{err}");
    }

    #[test]
    fn empty_3d_cells_score_zero_and_are_not_fitted() {
        let world = World::new();
        let h = fitted(json!({}), &world);
        let (a, b) = world.sample(9, |_, _| false);
        let mut d3 = b.data().to_vec();
        for x in 0..G {
            d3[(20 * G + x) * D3..(20 * G + x + 1) * D3].iter_mut().for_each(|v| *v = 0.0);
        }
        let b = FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, d3).unwrap();
        let out = h.process(&meta("e"), pair(a.clone(), b.clone())).unwrap();
        let unblurred = StageHarness::new::<CrossmodalMapping>(json!({"sigma": 0})).unwrap();
        let mut unblurred = unblurred;
        unblurred.load_state(h.save_state().unwrap()).unwrap();
        // `like` at the feature grid's size: the map is the per-cell scores, unresampled.
        let mut ins = pair(a, b);
        ins.extend(inputs(vec![("like", Mask::zeros(G as u32, G as u32).unwrap().into())]));
        let s = unblurred.process(&meta("e"), ins).unwrap();
        let s = s.score_map("score");
        assert_eq!((s.height(), s.width()), (G, G));
        assert!((0..G).all(|x| s.get(20, x) == 0.0));
        assert!((0..G).all(|x| s.get(19, x) > 0.0));
        assert!(out.score_map("score").data().iter().all(|v| v.is_finite()));
        // A fit split without any geometry is refused.
        let mut h = StageHarness::new::<CrossmodalMapping>(json!({})).unwrap();
        let z = FeatureMap::new(D3 as u32, G as u32, G as u32, 8.0, vec![0.0; G * G * D3]).unwrap();
        let (a, _) = world.sample(1, |_, _| false);
        let err = h.fit(vec![(meta("f"), pair(a, z))]).unwrap_err();
        assert!(err.message.contains("no fit location has 3D geometry"), "{err}");
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        for (params, want) in [
            (json!({"distance": "manhattan"}), "param `distance`: `manhattan` is not one of cosine, l2"),
            (json!({"combine": "max"}), "param `combine`: `max` is not one of product, sum"),
            (json!({"ridge": -0.1}), "param `ridge`: -0.1 is out of range"),
            (json!({"max_rows": 0}), "param `max_rows`: 0 is out of range"),
            (json!({"sigma": 1001}), "param `sigma`: 1001 is out of range"),
            (json!({"rigde": 0.1}), "unknown param `rigde` (did you mean `ridge`?)"),
        ] {
            let err = StageHarness::new::<CrossmodalMapping>(params).err().expect("refused");
            assert!(err.message.contains("node `test-crossmodal-mapping`") && err.message.contains(want), "{err}");
        }
    }
}
