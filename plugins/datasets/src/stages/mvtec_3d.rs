//! The `mvtec-3d` source.

use std::path::{Path, PathBuf};

use anoflow_sdk::prelude::*;

use crate::common::{
    dir_name, file_stem, files_with_ext, reindex, require_dir, resolve_categories, sample_meta, subdirs, CategoryParam,
    DatasetError, Result, SPLITS,
};

const AD3: &str = "mvtec-3d";

/// The `mvtec-3d` stage.
pub struct Mvtec3d;

/// Params of `mvtec-3d`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mvtec3dConfig {
    /// Dataset root (holds one directory per category).
    pub root: File,
    /// A category name, a list of names, or `all`.
    #[serde(default)]
    pub category: CategoryParam,
}

impl StagePlugin for Mvtec3d {
    type Config = Mvtec3dConfig;
    type Stage = Box<dyn Source>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            AD3,
            "MVTec 3D-AD layout: <root>/<category>/{train,validation,test}/<defect>/{rgb,xyz,gt}/NNN.{png,tiff,png}",
        )
        .output("image", ValueKind::Image, "u8 RGB image")
        .output("xyz", ValueKind::PointCloud, "organized point cloud aligned with the image (zeros = no point)")
        .output("mask", ValueKind::Mask, "ground-truth mask (all zeros for good images without gt)")
        .splits(&SPLITS)
    }

    fn create(config: Mvtec3dConfig, ctx: &CreateContext) -> StageResult<Box<dyn Source>> {
        let root = config.root.resolve(ctx);
        let categories = resolve_categories(AD3, &root, &config.category.names(&ctx.node_id)?)?;
        Ok(Box::new(Mvtec3dSource { root, categories }))
    }
}

struct Mvtec3dSource {
    root: PathBuf,
    categories: Vec<String>,
}

/// `(xyz, gt)` paths beside `<defect>/rgb/NNN.png`.
fn companions(rgb: &Path) -> Option<(PathBuf, PathBuf)> {
    let defect_dir = rgb.parent()?.parent()?;
    let stem = file_stem(rgb);
    Some((defect_dir.join("xyz").join(format!("{stem}.tiff")), defect_dir.join("gt").join(format!("{stem}.png"))))
}

impl Mvtec3dSource {
    fn list_split(&self, split: &str) -> Result<Vec<SampleMeta>> {
        if !SPLITS.contains(&split) {
            return Err(DatasetError::UnknownSplit { stage: AD3, split: split.into() });
        }
        let mut metas = Vec::new();
        for cat in &self.categories {
            let split_dir = self.root.join(cat).join(split);
            require_dir(AD3, &split_dir)?;
            for defect_dir in subdirs(AD3, &split_dir)? {
                let defect = dir_name(&defect_dir);
                let rgb_dir = defect_dir.join("rgb");
                require_dir(AD3, &rgb_dir)?;
                for f in files_with_ext(AD3, &rgb_dir, &["png"])? {
                    let (xyz, gt) = companions(&f).unwrap_or_default();
                    if !xyz.is_file() {
                        return Err(DatasetError::MissingCompanion {
                            stage: AD3,
                            what: "point cloud",
                            dir: defect_dir.clone(),
                            image: f,
                            expected: xyz,
                        });
                    }
                    if defect != "good" && !gt.is_file() {
                        return Err(DatasetError::MissingMask { stage: AD3, image: f, mask: gt });
                    }
                    let id = format!("{cat}/{split}/{defect}/{}", file_stem(&f));
                    metas.push(sample_meta(id, cat, split, &defect, &f, 0));
                }
            }
        }
        if metas.is_empty() {
            return Err(DatasetError::EmptySplit {
                stage: AD3,
                split: split.into(),
                why: format!(
                    "no images in `<category>/{split}/*/rgb` for {} (root `{}`)",
                    self.categories.join(", "),
                    self.root.display()
                ),
            });
        }
        Ok(reindex(metas))
    }
}

impl Source for Mvtec3dSource {
    fn list(&self, split: &str) -> StageResult<Vec<SampleMeta>> {
        Ok(self.list_split(split)?)
    }

    fn load(&self, meta: &SampleMeta) -> StageResult<Outputs> {
        let rgb = PathBuf::from(meta.path.as_str());
        let image = anoflow_imaging::read_image_rgb(&rgb).map_err(DatasetError::from)?;
        let (h, w) = (image.height(), image.width());
        let (xyz_path, gt) = companions(&rgb).unwrap_or_default();
        let xyz = anoflow_imaging::read_tiff_f32_xyz(&xyz_path).map_err(DatasetError::from)?;
        if (xyz.height(), xyz.width()) != (h, w) {
            return Err(DatasetError::SizeMismatch {
                stage: AD3,
                path: xyz_path,
                image: rgb,
                found_h: xyz.height(),
                found_w: xyz.width(),
                expected_h: h,
                expected_w: w,
            }
            .into());
        }
        let mask = if gt.is_file() {
            anoflow_imaging::read_mask(&gt, Some((h, w))).map_err(DatasetError::from)?
        } else if meta.defect == "good" {
            Mask::zeros(h as u32, w as u32)?
        } else {
            return Err(DatasetError::MissingMask { stage: AD3, image: rgb, mask: gt }.into());
        };
        Ok(Outputs::new().with("image", image).with("xyz", xyz).with("mask", mask))
    }
}
