//! The `synthetic` source (in memory) and the writer of the same data on disk, in the exact
//! MVTec AD or MVTec 3D-AD layout.

use std::path::{Path, PathBuf};

use anoflow_sdk::prelude::*;
use rayon::prelude::*;

use crate::common::{pick_split, reindex, sample_meta, validation_holdout, DatasetError, SPLITS};
use crate::synth::{render, test_specs, train_specs, Category, DefectKind, Part, SampleSpec, SynthConfig};

const STAGE: &str = "synthetic";

/// The `synthetic` stage.
pub struct Synthetic;

impl StagePlugin for Synthetic {
    fn descriptor() -> StageDescriptor {
        let d = SynthConfig::default();
        let category_choices: Vec<&str> = Category::names().into_iter().chain(["all"]).collect();
        StageDescriptor::source(
            "synthetic",
            "Deterministic MVTec-like dataset rendered in memory: textures and objects, many defect kinds with exact masks",
        )
        .output("image", ValueKind::Image, "u8 RGB image, size x size")
        .output("mask", ValueKind::Mask, "ground-truth defect mask (all zeros for nominal samples)")
        .output("xyz", ValueKind::PointCloud, "organized point cloud in mm, zeros = no point (only with `xyz: true`)")
        .param(ParamSpec::int("seed", 0, "dataset seed: the same seed gives the same images"))
        .param(ParamSpec::with_default(
            "categories",
            ParamType::StringList,
            serde_json::json!(Category::names()),
            &format!("categories to generate ({}), or [all]", Category::names().join(", ")),
        ).one_of(&category_choices))
        .param(ParamSpec::int("train", d.train as i64, "nominal training images per category (validation is held out of these)").min(0.0))
        .param(ParamSpec::float("validation_fraction", d.validation_fraction, "fraction of the training images held out as the validation split").range(0.0, 0.9))
        .param(ParamSpec::int("test_good", d.test_good as i64, "nominal test images per category").min(0.0))
        .param(ParamSpec::int("test_defective", d.test_defective as i64, "defective test images per category (kinds cycle)").min(0.0))
        .param(ParamSpec::int("size", d.size as i64, "image height and width in pixels (>= 64)").range(64.0, 4096.0))
        .param(ParamSpec::bool("xyz", false, "also render a point cloud, with dent and bump (geometry-only) defects"))
        .splits(&SPLITS)
    }

    fn create(params: &Params, _ctx: &CreateContext) -> StageResult<StageImpl> {
        Ok(StageImpl::Source(Box::new(SyntheticSource { cfg: config_from_params(params)? })))
    }
}

/// Reads a [`SynthConfig`] from the stage's params.
pub fn config_from_params(params: &Params) -> StageResult<SynthConfig> {
    let names: Vec<String> = params.get("categories")?;
    let mut categories = Vec::new();
    for n in &names {
        if n == "all" {
            categories = Category::ALL.to_vec();
            break;
        }
        let c = Category::parse(n).ok_or_else(|| {
            StageError::invalid_param(format!(
                "node `{}`: param `categories`: unknown category `{n}`; known: {}",
                params.node(),
                Category::names().join(", ")
            ))
        })?;
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    if categories.is_empty() {
        return Err(StageError::invalid_param(format!(
            "node `{}`: param `categories`: the list is empty",
            params.node()
        )));
    }
    let size = params.usize("size")?;
    if !(64..=4096).contains(&size) {
        return Err(StageError::invalid_param(format!(
            "node `{}`: param `size`: expected 64..=4096 pixels, found {size}",
            params.node()
        )));
    }
    let seed: i64 = params.get("seed")?;
    Ok(SynthConfig {
        seed: seed as u64,
        categories,
        train: params.usize("train")?,
        validation_fraction: params.f64_in("validation_fraction", 0.0, 0.9)?,
        test_good: params.usize("test_good")?,
        test_defective: params.usize("test_defective")?,
        size,
        xyz: params.bool("xyz")?,
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
