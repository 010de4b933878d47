//! The `mvtec-ad` source.

use std::path::{Path, PathBuf};

use anoflow_sdk::prelude::*;

use crate::common::{
    default_validation_fraction, dir_name, file_stem, files_with_ext, pick_split, reindex, require_dir,
    resolve_categories, sample_meta, subdirs, validation_holdout, CategoryParam, DatasetError, Result, SPLITS,
};

const AD: &str = "mvtec-ad";

/// The `mvtec-ad` stage.
pub struct MvtecAd;

/// Params of `mvtec-ad`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MvtecAdConfig {
    /// Dataset root (holds one directory per category).
    pub root: File,
    /// A category name, a list of names, or `all` (every category directory under root).
    #[serde(default)]
    pub category: CategoryParam,
    /// Fraction of train/good held out as the validation split (seeded).
    #[serde(default = "default_validation_fraction")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub validation_fraction: f64,
    /// Seed of the validation hold-out.
    #[serde(default)]
    pub seed: i64,
}

impl StagePlugin for MvtecAd {
    type Config = MvtecAdConfig;
    type Stage = Box<dyn Source>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            AD,
            "MVTec AD layout: <root>/<category>/train/good, test/<defect>, ground_truth/<defect>/<name>_mask.png",
        )
        .output("image", ValueKind::Image, "u8 RGB image (grey categories are replicated to 3 channels)")
        .output("mask", ValueKind::Mask, "ground-truth mask (all zeros for good images)")
        .splits(&SPLITS)
    }

    fn create(config: MvtecAdConfig, ctx: &CreateContext) -> StageResult<Box<dyn Source>> {
        let root = config.root.resolve(ctx);
        let categories = resolve_categories(AD, &root, &config.category.names(&ctx.node_id)?)?;
        Ok(Box::new(MvtecAdSource {
            root,
            categories,
            validation_fraction: config.validation_fraction,
            seed: config.seed as u64,
        }))
    }
}

struct MvtecAdSource {
    root: PathBuf,
    categories: Vec<String>,
    validation_fraction: f64,
    seed: u64,
}

/// `<cat>/ground_truth/<defect>/<stem>_mask.png` for `<cat>/test/<defect>/<stem>.png`.
pub fn mvtec_ad_mask_path(image: &Path) -> Option<PathBuf> {
    let defect_dir = image.parent()?;
    let cat_dir = defect_dir.parent()?.parent()?;
    Some(cat_dir.join("ground_truth").join(dir_name(defect_dir)).join(format!("{}_mask.png", file_stem(image))))
}

impl MvtecAdSource {
    fn list_split(&self, split: &str) -> Result<Vec<SampleMeta>> {
        let mut metas = Vec::new();
        for cat in &self.categories {
            let cat_dir = self.root.join(cat);
            match split {
                "train" | "validation" => {
                    let dir = cat_dir.join("train").join("good");
                    require_dir(AD, &dir)?;
                    let files = files_with_ext(AD, &dir, &["png"])?;
                    let held = validation_holdout(files.len(), self.validation_fraction, self.seed, cat);
                    for f in pick_split(files, &held, split) {
                        let id = format!("{cat}/train/good/{}", file_stem(&f));
                        metas.push(sample_meta(id, cat, split, "good", &f, 0));
                    }
                }
                "test" => {
                    let test_dir = cat_dir.join("test");
                    require_dir(AD, &test_dir)?;
                    for defect_dir in subdirs(AD, &test_dir)? {
                        let defect = dir_name(&defect_dir);
                        for f in files_with_ext(AD, &defect_dir, &["png"])? {
                            if defect != "good" {
                                let mask = mvtec_ad_mask_path(&f).unwrap_or_default();
                                if !mask.is_file() {
                                    return Err(DatasetError::MissingMask { stage: AD, image: f, mask });
                                }
                            }
                            let id = format!("{cat}/test/{defect}/{}", file_stem(&f));
                            metas.push(sample_meta(id, cat, split, &defect, &f, 0));
                        }
                    }
                }
                other => return Err(DatasetError::UnknownSplit { stage: AD, split: other.into() }),
            }
        }
        if metas.is_empty() {
            let why = match split {
                "validation" if self.validation_fraction == 0.0 => "validation_fraction is 0".to_string(),
                "validation" => "too few train/good images to hold any out".to_string(),
                "test" => format!("no PNG images under `<category>/test/*` for {}", self.categories.join(", ")),
                _ => format!("no PNG images in `<category>/train/good` for {}", self.categories.join(", ")),
            };
            return Err(DatasetError::EmptySplit {
                stage: AD,
                split: split.into(),
                why: format!("{why} (root `{}`)", self.root.display()),
            });
        }
        Ok(reindex(metas))
    }
}

impl Source for MvtecAdSource {
    fn list(&self, split: &str) -> StageResult<Vec<SampleMeta>> {
        Ok(self.list_split(split)?)
    }

    fn load(&self, meta: &SampleMeta) -> StageResult<Outputs> {
        let path = PathBuf::from(meta.path.as_str());
        let image = anoflow_imaging::read_image_rgb(&path).map_err(DatasetError::from)?;
        let (h, w) = (image.height(), image.width());
        let mask = if meta.defect == "good" {
            Mask::zeros(h as u32, w as u32)?
        } else {
            let mask_path = mvtec_ad_mask_path(&path).unwrap_or_default();
            anoflow_imaging::read_mask(&mask_path, Some((h, w))).map_err(DatasetError::from)?
        };
        Ok(Outputs::new().with("image", image).with("mask", mask))
    }
}
