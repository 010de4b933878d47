//! The `synthetic` source (in memory) and the writer of the same data on disk, in the exact
//! MVTec AD or MVTec 3D-AD layout.

use std::path::{Path, PathBuf};

use anoflow_sdk::prelude::*;
use rayon::prelude::*;

use crate::common::{pick_split, reindex, sample_meta, validation_holdout, DatasetError, SPLITS};
use anoflow_scene::{render, test_specs, train_specs, Category, DefectKind, Part, SampleSpec, SynthConfig};

const STAGE: &str = "synthetic";

/// The `synthetic` stage.
pub struct Synthetic;

/// Params of `synthetic` (defaults: [`SynthConfig::default`]).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Dataset seed: the same seed gives the same images.
    #[serde(default)]
    pub seed: i64,
    /// Categories to generate (woven, grain, tiles, carpet, washer, pill, screw), or [all].
    #[serde(default = "every_category")]
    pub categories: Vec<CategoryName>,
    /// Nominal training images per category (validation is held out of these).
    #[serde(default = "default_train")]
    pub train: usize,
    /// Fraction of the training images held out as the validation split.
    #[serde(default = "default_validation_fraction")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub validation_fraction: f64,
    /// Nominal test images per category.
    #[serde(default = "default_test_good")]
    pub test_good: usize,
    /// Defective test images per category (kinds cycle).
    #[serde(default = "default_test_defective")]
    pub test_defective: usize,
    /// Image height and width in pixels (>= 64).
    #[serde(default = "default_size")]
    #[schemars(range(min = 64, max = 4096))]
    pub size: usize,
    /// Also render a point cloud, with dent and bump (geometry-only) defects.
    #[serde(default)]
    pub xyz: bool,
}

/// A category name in `categories`, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CategoryName {
    Woven,
    Grain,
    Tiles,
    Carpet,
    Washer,
    Pill,
    Screw,
    All,
}

impl CategoryName {
    /// The category, `None` for `all`.
    fn category(self) -> Option<Category> {
        match self {
            CategoryName::Woven => Some(Category::Woven),
            CategoryName::Grain => Some(Category::Grain),
            CategoryName::Tiles => Some(Category::Tiles),
            CategoryName::Carpet => Some(Category::Carpet),
            CategoryName::Washer => Some(Category::Washer),
            CategoryName::Pill => Some(Category::Pill),
            CategoryName::Screw => Some(Category::Screw),
            CategoryName::All => None,
        }
    }
}

fn every_category() -> Vec<CategoryName> {
    Category::ALL
        .iter()
        .map(|c| match c {
            Category::Woven => CategoryName::Woven,
            Category::Grain => CategoryName::Grain,
            Category::Tiles => CategoryName::Tiles,
            Category::Carpet => CategoryName::Carpet,
            Category::Washer => CategoryName::Washer,
            Category::Pill => CategoryName::Pill,
            Category::Screw => CategoryName::Screw,
        })
        .collect()
}
fn default_train() -> usize {
    SynthConfig::default().train
}
fn default_validation_fraction() -> f64 {
    SynthConfig::default().validation_fraction
}
fn default_test_good() -> usize {
    SynthConfig::default().test_good
}
fn default_test_defective() -> usize {
    SynthConfig::default().test_defective
}
fn default_size() -> usize {
    SynthConfig::default().size
}

impl StagePlugin for Synthetic {
    type Config = SyntheticConfig;
    type Stage = Box<dyn Source>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "synthetic",
            "Deterministic MVTec-like dataset rendered in memory: textures and objects, many defect kinds with exact masks",
        )
        .output("image", ValueKind::Image, "u8 RGB image, size x size")
        .output("mask", ValueKind::Mask, "ground-truth defect mask (all zeros for nominal samples)")
        .output("xyz", ValueKind::PointCloud, "organized point cloud in mm, zeros = no point (only with `xyz: true`)")
        .splits(&SPLITS)
    }

    fn create(config: SyntheticConfig, ctx: &CreateContext) -> StageResult<Box<dyn Source>> {
        Ok(Box::new(SyntheticSource { cfg: synth_config(&config, &ctx.node_id)? }))
    }
}

/// The [`SynthConfig`] of a node's params.
pub fn synth_config(config: &SyntheticConfig, node: &str) -> StageResult<SynthConfig> {
    let mut categories = Vec::new();
    for name in &config.categories {
        let Some(c) = name.category() else {
            categories = Category::ALL.to_vec();
            break;
        };
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    if categories.is_empty() {
        return Err(StageError::invalid_param(format!("node `{node}`: param `categories`: the list is empty")));
    }
    Ok(SynthConfig {
        seed: config.seed as u64,
        categories,
        train: config.train,
        validation_fraction: config.validation_fraction,
        test_good: config.test_good,
        test_defective: config.test_defective,
        size: config.size,
        xyz: config.xyz,
    })
}

struct SyntheticSource {
    cfg: SynthConfig,
}

fn spec_id(spec: &SampleSpec) -> String {
    let part = match spec.part {
        Part::Train => "train",
        Part::Test => "test",
    };
    format!("{}/{part}/{}/{}", spec.category.name(), spec.defect_name(), spec.stem())
}

fn parse_id(id: &str) -> Option<SampleSpec> {
    let mut it = id.split('/');
    let category = Category::parse(it.next()?)?;
    let part = match it.next()? {
        "train" => Part::Train,
        "test" => Part::Test,
        _ => return None,
    };
    let defect = match it.next()? {
        "good" => None,
        other => Some(DefectKind::parse(other)?),
    };
    let index = it.next()?.parse().ok()?;
    it.next().is_none().then_some(SampleSpec { category, part, defect, index })
}

/// The specs of a split, in listing order.
pub fn split_specs(cfg: &SynthConfig, split: &str) -> Result<Vec<SampleSpec>, DatasetError> {
    let mut out = Vec::new();
    for &cat in &cfg.categories {
        match split {
            "train" | "validation" => {
                let specs = train_specs(cfg, cat);
                let held = validation_holdout(specs.len(), cfg.validation_fraction, cfg.seed, cat.name());
                out.extend(pick_split(specs, &held, split));
            }
            "test" => out.extend(test_specs(cfg, cat)),
            other => return Err(DatasetError::UnknownSplit { stage: STAGE, split: other.into() }),
        }
    }
    if out.is_empty() {
        let why = match split {
            "validation" => "validation_fraction is 0 or `train` is below 2".to_string(),
            "train" => "`train` is 0".to_string(),
            _ => "`test_good` and `test_defective` are 0".to_string(),
        };
        return Err(DatasetError::EmptySplit { stage: STAGE, split: split.into(), why });
    }
    Ok(out)
}

impl Source for SyntheticSource {
    fn list(&self, split: &str) -> StageResult<Vec<SampleMeta>> {
        let specs = split_specs(&self.cfg, split)?;
        let metas = specs
            .iter()
            .enumerate()
            .map(|(i, s)| sample_meta(spec_id(s), s.category.name(), split, s.defect_name(), Path::new(""), i))
            .collect();
        Ok(reindex(metas))
    }

    fn load(&self, meta: &SampleMeta) -> StageResult<Outputs> {
        let spec = parse_id(&meta.id).ok_or_else(|| DatasetError::BadSample {
            stage: STAGE,
            id: meta.id.to_string(),
            reason: "not an id this source listed (expected `<category>/<train|test>/<defect>/<NNN>`)".into(),
        })?;
        let r = render(&self.cfg, &spec);
        let n = r.size as u32;
        let mut out =
            Outputs::new().with("image", Image::from_u8(n, n, 3, r.rgb)?).with("mask", Mask::new(n, n, r.mask)?);
        if let Some(xyz) = r.xyz {
            out.push("xyz", PointCloud::new(n, n, xyz)?);
        }
        Ok(out)
    }
}

/// Writes the dataset in the exact MVTec AD layout:
/// `<out>/<category>/train/good/NNN.png`, `<out>/<category>/test/<defect>/NNN.png`,
/// `<out>/<category>/ground_truth/<defect>/NNN_mask.png` (0/255; none for `good`).
/// The validation split is not a directory: loaders hold it out of `train/good`.
pub fn write_mvtec_ad(cfg: &SynthConfig, out: &Path) -> Result<usize, DatasetError> {
    let mut jobs: Vec<SampleSpec> = Vec::new();
    for &cat in &cfg.categories {
        jobs.extend(train_specs(cfg, cat));
        jobs.extend(test_specs(cfg, cat));
    }
    jobs.par_iter().try_for_each(|spec| -> Result<(), DatasetError> {
        let r = render(cfg, spec);
        let cat_dir = out.join(spec.category.name());
        let stem = spec.stem();
        let part = if spec.part == Part::Train { "train" } else { "test" };
        let img = cat_dir.join(part).join(spec.defect_name()).join(format!("{stem}.png"));
        anoflow_imaging::write_png_u8(&img, r.size, r.size, 3, &r.rgb)?;
        if spec.defect.is_some() {
            let mask: Vec<u8> = r.mask.iter().map(|&v| v * 255).collect();
            let path = cat_dir.join("ground_truth").join(spec.defect_name()).join(format!("{stem}_mask.png"));
            anoflow_imaging::write_png_u8(&path, r.size, r.size, 1, &mask)?;
        }
        Ok(())
    })?;
    Ok(jobs.len())
}

/// Writes the dataset in the exact MVTec 3D-AD layout:
/// `<out>/<category>/{train,validation,test}/<defect>/{rgb,xyz,gt}/NNN.{png,tiff,png}`.
/// Validation images are the ones loaders of the MVTec AD layout would hold out; `gt` is
/// written for every test image (all zeros for `good`, as in MVTec 3D-AD) and not for
/// train / validation.
pub fn write_mvtec_3d(cfg: &SynthConfig, out: &Path) -> Result<usize, DatasetError> {
    let cfg = SynthConfig { xyz: true, ..cfg.clone() };
    let mut jobs: Vec<(SampleSpec, &'static str, usize)> = Vec::new();
    for &cat in &cfg.categories {
        let train = train_specs(&cfg, cat);
        let held = validation_holdout(train.len(), cfg.validation_fraction, cfg.seed, cat.name());
        let (mut t, mut v) = (0, 0);
        for (spec, h) in train.into_iter().zip(held) {
            // MVTec 3D-AD numbers each split from 000.
            if h {
                jobs.push((spec, "validation", v));
                v += 1;
            } else {
                jobs.push((spec, "train", t));
                t += 1;
            }
        }
        jobs.extend(test_specs(&cfg, cat).into_iter().map(|s| (s, "test", s.index)));
    }
    jobs.par_iter().try_for_each(|(spec, split, number)| -> Result<(), DatasetError> {
        let r = render(&cfg, spec);
        let dir: PathBuf = out.join(spec.category.name()).join(split).join(spec.defect_name());
        let stem = format!("{number:03}");
        anoflow_imaging::write_png_u8(dir.join("rgb").join(format!("{stem}.png")), r.size, r.size, 3, &r.rgb)?;
        let n = r.size as u32;
        let cloud = PointCloud::new(n, n, r.xyz.clone().unwrap_or_default()).map_err(|e| DatasetError::BadSample {
            stage: STAGE,
            id: spec_id(spec),
            reason: e.to_string(),
        })?;
        anoflow_imaging::write_tiff_f32_xyz(dir.join("xyz").join(format!("{stem}.tiff")), &cloud)?;
        if *split == "test" {
            let mask: Vec<u8> = r.mask.iter().map(|&v| v * 255).collect();
            anoflow_imaging::write_png_u8(dir.join("gt").join(format!("{stem}.png")), r.size, r.size, 1, &mask)?;
        }
        Ok(())
    })?;
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::StageHarness;
    use serde_json::json;

    #[test]
    fn lists_splits_and_loads_by_id() {
        let h = StageHarness::new::<Synthetic>(json!({
            "categories": ["pill", "woven"], "train": 10, "test_good": 2, "test_defective": 7, "size": 96
        }))
        .unwrap();
        let train = h.list("train").unwrap();
        let val = h.list("validation").unwrap();
        let test = h.list("test").unwrap();
        assert_eq!((train.len(), val.len(), test.len()), (16, 4, 18));
        assert!(train.iter().all(|m| !val.iter().any(|v| v.id == m.id)));
        assert_eq!(test.iter().filter(|m| m.label == LABEL_ANOMALOUS).count(), 14);
        assert!(test.iter().enumerate().all(|(i, m)| m.index == i as u64));
        let m = test.iter().find(|m| m.defect == "scratch").unwrap();
        assert_eq!(m.id, "pill/test/scratch/000");
        let out = h.load(m).unwrap();
        assert!(out.mask("mask").count_ones() > 0);
        let Some(Value::Image(img)) = out.get("image") else { panic!("image") };
        assert_eq!((img.height(), img.width(), img.channels()), (96, 96, 3));
        assert!(out.get("xyz").is_none());
        let good = test.iter().find(|m| m.defect == "good").unwrap();
        assert_eq!(h.load(good).unwrap().mask("mask").count_ones(), 0);

        let err = h.load(&SampleMeta::new("bogus/id", "x", "test")).unwrap_err();
        assert!(err.message.contains("bogus/id"), "{err}");
        let err = h.list("holdout").unwrap_err();
        assert!(err.message.contains("unknown split `holdout`"), "{err}");
    }

    #[test]
    fn bad_params_are_named() {
        let err = StageHarness::new::<Synthetic>(json!({"categories": ["wovn"]})).err().unwrap();
        assert!(
            err.message.contains("param `categories`: `wovn` is not one of") && err.message.contains("woven"),
            "{err}"
        );
        let err = StageHarness::new::<Synthetic>(json!({"size": 10})).err().unwrap();
        assert!(err.message.contains("param `size`: 10 is out of range: expected a value in [64, 4096]"), "{err}");
        let h = StageHarness::new::<Synthetic>(json!({"validation_fraction": 0.0, "categories": ["pill"]})).unwrap();
        let err = h.list("validation").unwrap_err();
        assert!(err.message.contains("split `validation` is empty"), "{err}");
    }

    #[test]
    fn defaults_are_the_renderers() {
        let config: SyntheticConfig = serde_json::from_value(json!({})).unwrap();
        let cfg = synth_config(&config, "n").unwrap();
        let d = SynthConfig::default();
        assert_eq!(
            (cfg.seed, cfg.categories, cfg.train, cfg.validation_fraction, cfg.test_good, cfg.test_defective),
            (d.seed, d.categories, d.train, d.validation_fraction, d.test_good, d.test_defective)
        );
        assert_eq!((cfg.size, cfg.xyz), (d.size, d.xyz));
        let all: SyntheticConfig = serde_json::from_value(json!({"categories": ["pill", "all"]})).unwrap();
        assert_eq!(synth_config(&all, "n").unwrap().categories, Category::ALL.to_vec());
        let err = StageHarness::new::<Synthetic>(json!({"categories": []})).err().unwrap();
        assert!(err.message.contains("param `categories`: the list is empty"), "{err}");
        let err = StageHarness::new::<Synthetic>(json!({"validation_fraction": 0.95})).err().unwrap();
        assert!(err.message.contains("param `validation_fraction`: 0.95 is out of range"), "{err}");
    }

    #[test]
    fn xyz_output_when_asked() {
        let h = StageHarness::new::<Synthetic>(json!({
            "categories": ["washer"], "train": 2, "test_good": 1, "test_defective": 9, "size": 64, "xyz": true
        }))
        .unwrap();
        let test = h.list("test").unwrap();
        assert!(test.iter().any(|m| m.defect == "dent") && test.iter().any(|m| m.defect == "bump"));
        let out = h.load(&test[0]).unwrap();
        let Some(Value::PointCloud(pc)) = out.get("xyz") else { panic!("xyz") };
        assert_eq!((pc.height(), pc.width()), (64, 64));
    }
}
