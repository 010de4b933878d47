//! # anoflow-plugin-crossmodal
//!
//! Multimodal (RGB + 3D) stages over feature maps:
//!
//! - `concat-features`: several feature maps of one image (e.g. RGB backbone + FPFH) on the
//!   first map's grid, concatenated per location, so one memory bank (`patchcore`) scores both
//!   modalities at once (BTF/M3DM-style fusion). No per-channel standardization: optionally
//!   each map's vector is L2-normalized per location first (`normalize: l2`), so that neither
//!   modality dominates the distances by its scale alone (FPFH bins are ~0-200, CNN
//!   activations ~0-10).
//! - `crossmodal-mapping`: CFM-like scorer (see [`mapping`]) with closed-form ridge maps
//!   ([`ridge`]) 2D->3D and 3D->2D fitted on nominal patch features.

pub mod grid;
pub mod mapping;
pub mod ridge;
pub mod state;

use anoflow_imaging::scoremap::cells_to_image_map;
use anoflow_sdk::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    grid::{check_finite, check_same_image, on_grid},
    mapping::{cell_scores, is_empty, Combine, Distance, Scoring},
    ridge::LinearMap,
};

/// Stage type `concat-features`.
pub struct ConcatFeatures;

/// Params of `concat-features`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcatConfig {
    /// Per map and location before concatenating: nothing, or divide the vector by its L2 norm
    /// (zero vectors stay zero).
    #[serde(default)]
    pub normalize: Normalize,
}

/// `concat-features`' per-location normalization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    #[default]
    None,
    L2,
}

impl StagePlugin for ConcatFeatures {
    type Config = ConcatConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "concat-features",
            "Feature maps of one image (e.g. RGB and 3D) resized bilinearly to the first map's grid and concatenated \
             per location",
        )
        .multi_input("features", ValueKind::FeatureMap, "feature maps of the same image, in pipeline order")
        .output("features", ValueKind::FeatureMap, "the first map's grid and stride, the sum of the channels")
    }

    fn create(config: ConcatConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let l2 = match config.normalize {
            Normalize::None => false,
            Normalize::L2 => true,
        };
        Ok(Box::new(ConcatStage { node: ctx.node_id.to_string(), l2 }))
    }
}

struct ConcatStage {
    node: String,
    l2: bool,
}

impl Map for ConcatStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let maps = sample.feature_maps("features")?;
        let sources: Vec<&str> = sample.all("features").map(|(s, _)| s).collect();
        let Some(first) = maps.first() else {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: input `features` received no map",
                self.node, sample.meta.id
            )));
        };
        let (h, w) = (first.height(), first.width());
        let total: usize = maps.iter().map(|m| m.channels()).sum();
        let mut out = vec![0.0f32; h * w * total];
        let mut offset = 0;
        for (fm, src) in maps.iter().zip(&sources) {
            check_finite(&self.node, sample, &format!("`features` (edge `{src}`)"), fm)?;
            check_same_image(|| format!("node `{}`, sample `{}`, edge `{src}`", self.node, sample.meta.id), first, fm)?;
            let c = fm.channels();
            let data = on_grid(fm, h, w)?;
            for (cell, row) in data.chunks_exact(c).enumerate() {
                let dst = &mut out[cell * total + offset..cell * total + offset + c];
                dst.copy_from_slice(row);
                if self.l2 {
                    let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    if n > 0.0 {
                        dst.iter_mut().for_each(|v| *v /= n);
                    }
                }
            }
            offset += c;
        }
        let fm = FeatureMap::new(total as u32, h as u32, w as u32, first.stride(), out)?;
        Ok(Outputs::new().with("features", fm))
    }
}

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

anoflow_sdk::export_plugin! { stages: [ConcatFeatures, CrossmodalMapping] }

#[cfg(test)]
mod tests;
