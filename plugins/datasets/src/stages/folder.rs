//! The `folder` source: any dataset given as directories or glob patterns.
//!
//! Mask-matching rule: a test image found under the test root `R` at `R/<rel dir>/<stem>.<ext>`
//! matches the mask `<masks>/<rel dir>/<stem><mask_suffix>.<png|tif|tiff>` (first that exists).
//! The test root is the directory given, or for a glob pattern the directory before its
//! first wildcard. Labels: an image with a path component (below its root) equal to
//! `good_dir` is nominal (all-zero mask; no mask file is read). Any other test image is
//! anomalous if its mask exists (defect = its parent directory's name, `anomalous` at the
//! root); without one, `missing_mask` decides: `error` (default), `skip` (with a warning on
//! stderr) or `nominal`. Train images are all nominal; the validation split is a seeded
//! `validation_fraction` of them.

use std::path::{Path, PathBuf};

use anoflow_imaging::paths::{has_wildcard, match_path};
use anoflow_sdk::prelude::*;

use crate::common::{
    default_validation_fraction, file_stem, is_image_file, pick_split, reindex, sample_meta, validation_holdout,
    DatasetError, Result, SPLITS,
};

const STAGE: &str = "folder";

/// The `folder` stage.
pub struct Folder;

/// Params of `folder`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    /// Directories or glob patterns (`*`, `?`, `**`) of nominal training images.
    pub train: Vec<File>,
    /// Directories or glob patterns of test images.
    pub test: Vec<File>,
    /// Directory of masks, mirroring the test root's sub-directories (absent or empty: none).
    #[serde(default)]
    pub masks: Option<File>,
    /// Appended to the image stem to name its mask.
    #[serde(default = "default_mask_suffix")]
    pub mask_suffix: String,
    /// A directory with this name holds nominal images.
    #[serde(default = "default_good_dir")]
    pub good_dir: String,
    /// What to do with a non-good test image without a mask: error (refuse the listing), skip
    /// (leave it out, with a warning) or nominal (list it as good).
    #[serde(default)]
    pub missing_mask: MissingMask,
    /// Category name put in the metadata.
    #[serde(default = "default_category")]
    pub category: String,
    /// Fraction of train images held out as the validation split (seeded).
    #[serde(default = "default_validation_fraction")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub validation_fraction: f64,
    /// Seed of the validation hold-out.
    #[serde(default)]
    pub seed: i64,
}

/// What `folder` does with a non-good test image without a mask.
// No variant docs: they would turn the schema's `enum` into alternatives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissingMask {
    #[default]
    Error,
    Skip,
    Nominal,
}

fn default_mask_suffix() -> String {
    "_mask".into()
}
fn default_good_dir() -> String {
    "good".into()
}
fn default_category() -> String {
    "folder".into()
}
impl StagePlugin for Folder {
    type Config = FolderConfig;
    type Stage = Box<dyn Source>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            STAGE,
            "Images from directories or globs: nominal train images, test images, optional masks matched by relative stem + suffix",
        )
        .output("image", ValueKind::Image, "u8 RGB image")
        .output("mask", ValueKind::Mask, "ground-truth mask (all zeros for nominal images)")
        .splits(&SPLITS)
    }

    fn create(config: FolderConfig, ctx: &CreateContext) -> StageResult<Box<dyn Source>> {
        let resolve = |name: &str, items: &[File]| -> StageResult<Vec<String>> {
            if items.is_empty() {
                return Err(StageError::invalid_param(format!(
                    "node `{}`: param `{name}`: the list is empty",
                    ctx.node_id
                )));
            }
            Ok(items.iter().map(|p| p.resolve(ctx).to_string_lossy().into_owned()).collect())
        };
        Ok(Box::new(FolderSource {
            train: resolve("train", &config.train)?,
            test: resolve("test", &config.test)?,
            // An empty string was the old way to say "no masks".
            masks: config.masks.filter(|m| !m.as_str().is_empty()).map(|m| m.resolve(ctx)),
            mask_suffix: config.mask_suffix,
            good_dir: config.good_dir,
            missing_mask: config.missing_mask,
            category: config.category,
            validation_fraction: config.validation_fraction,
            seed: config.seed as u64,
        }))
    }
}

struct FolderSource {
    train: Vec<String>,
    test: Vec<String>,
    masks: Option<PathBuf>,
    mask_suffix: String,
    good_dir: String,
    missing_mask: MissingMask,
    category: String,
    validation_fraction: f64,
    seed: u64,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd =
        std::fs::read_dir(dir).map_err(|source| DatasetError::Io { stage: STAGE, path: dir.to_path_buf(), source })?;
    for e in rd {
        let p = e.map_err(|source| DatasetError::Io { stage: STAGE, path: dir.to_path_buf(), source })?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The image files an entry names, with the root their relative paths start from; sorted.
fn expand(entry: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    if !has_wildcard(entry) {
        let root = PathBuf::from(entry);
        if !root.is_dir() {
            return Err(DatasetError::MissingDir { stage: STAGE, dir: root });
        }
        let mut files = Vec::new();
        walk(&root, &mut files)?;
        files.retain(|f| is_image_file(f));
        files.sort();
        return Ok((root, files));
    }
    let comps: Vec<&str> = entry.split('/').collect();
    let first_wild = comps.iter().position(|c| has_wildcard(c)).unwrap_or(comps.len());
    let root_str = comps[..first_wild].join("/");
    let root = PathBuf::from(if root_str.is_empty() { "/".to_string() } else { root_str });
    if !root.is_dir() {
        return Err(DatasetError::MissingDir { stage: STAGE, dir: root });
    }
    let pattern = &comps[first_wild..];
    let mut files = Vec::new();
    walk(&root, &mut files)?;
    files.retain(|f| {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        is_image_file(f) && match_path(pattern, &parts)
    });
    files.sort();
    Ok((root, files))
}

fn rel_dir(root: &Path, file: &Path) -> PathBuf {
    file.parent().and_then(|p| p.strip_prefix(root).ok()).map(Path::to_path_buf).unwrap_or_default()
}

impl FolderSource {
    fn mask_for(&self, root: &Path, image: &Path) -> Option<PathBuf> {
        let masks = self.masks.as_ref()?;
        let dir = masks.join(rel_dir(root, image));
        let stem = format!("{}{}", file_stem(image), self.mask_suffix);
        ["png", "tif", "tiff"].iter().map(|ext| dir.join(format!("{stem}.{ext}"))).find(|p| p.is_file())
    }

    fn expected_mask(&self, root: &Path, image: &Path) -> PathBuf {
        let masks = self.masks.clone().unwrap_or_else(|| PathBuf::from("<no `masks` given>"));
        masks.join(rel_dir(root, image)).join(format!("{}{}.png", file_stem(image), self.mask_suffix))
    }

    fn is_good(&self, root: &Path, image: &Path) -> bool {
        rel_dir(root, image).components().any(|c| c.as_os_str() == self.good_dir.as_str())
    }

    fn list_split(&self, split: &str) -> Result<Vec<SampleMeta>> {
        let cat = &self.category;
        let mut metas = Vec::new();
        match split {
            "train" | "validation" => {
                let mut files = Vec::new();
                for e in &self.train {
                    files.extend(expand(e)?.1);
                }
                files.sort();
                files.dedup();
                let held = validation_holdout(files.len(), self.validation_fraction, self.seed, cat);
                for f in pick_split(files, &held, split) {
                    metas.push(sample_meta(format!("{cat}/train/{}", f.display()), cat, split, "good", &f, 0));
                }
            }
            "test" => {
                for e in &self.test {
                    let (root, files) = expand(e)?;
                    for f in files {
                        let id = format!("{cat}/test/{}", f.display());
                        if self.is_good(&root, &f) {
                            metas.push(sample_meta(id, cat, split, "good", &f, 0));
                            continue;
                        }
                        let defect = match rel_dir(&root, &f).file_name() {
                            Some(n) => n.to_string_lossy().into_owned(),
                            None => "anomalous".to_string(),
                        };
                        if self.mask_for(&root, &f).is_some() {
                            metas.push(sample_meta(id, cat, split, &defect, &f, 0));
                            continue;
                        }
                        match self.missing_mask {
                            MissingMask::Nominal => metas.push(sample_meta(id, cat, split, "good", &f, 0)),
                            MissingMask::Skip => eprintln!(
                                "warning: folder: skipping test image `{}`: no mask at `{}`",
                                f.display(),
                                self.expected_mask(&root, &f).display()
                            ),
                            MissingMask::Error => {
                                return Err(DatasetError::MissingMask {
                                    stage: STAGE,
                                    mask: self.expected_mask(&root, &f),
                                    image: f,
                                })
                            }
                        }
                    }
                }
            }
            other => return Err(DatasetError::UnknownSplit { stage: STAGE, split: other.into() }),
        }
        if metas.is_empty() {
            let entries = if split == "test" { &self.test } else { &self.train };
            return Err(DatasetError::EmptySplit {
                stage: STAGE,
                split: split.into(),
                why: format!("no PNG or TIFF images matched by {}", entries.join(", ")),
            });
        }
        Ok(reindex(metas))
    }

    /// Finds the mask again at load time: the root is the entry the image came from.
    fn load_mask_path(&self, image: &Path) -> Option<PathBuf> {
        self.test.iter().find_map(|e| {
            let comps: Vec<&str> = e.split('/').collect();
            let first_wild = comps.iter().position(|c| has_wildcard(c)).unwrap_or(comps.len());
            let root = PathBuf::from(comps[..first_wild].join("/"));
            image.starts_with(&root).then(|| self.mask_for(&root, image)).flatten()
        })
    }
}

impl Source for FolderSource {
    fn list(&self, split: &str) -> StageResult<Vec<SampleMeta>> {
        Ok(self.list_split(split)?)
    }

    fn load(&self, meta: &SampleMeta) -> StageResult<Outputs> {
        let path = PathBuf::from(meta.path.as_str());
        let image = anoflow_imaging::read_image_rgb(&path).map_err(DatasetError::from)?;
        let (h, w) = (image.height(), image.width());
        let mask = if meta.label == LABEL_ANOMALOUS {
            let mask_path = self.load_mask_path(&path).ok_or_else(|| DatasetError::BadSample {
                stage: STAGE,
                id: meta.id.to_string(),
                reason: "its mask disappeared since listing".into(),
            })?;
            anoflow_imaging::read_mask(&mask_path, Some((h, w))).map_err(DatasetError::from)?
        } else {
            Mask::zeros(h as u32, w as u32)?
        };
        Ok(Outputs::new().with("image", image).with("mask", mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MvtecAd;
    use anoflow_sdk::harness::StageHarness;
    use serde_json::json;

    #[test]
    fn bad_params_are_refused_by_name() {
        let err = StageHarness::new::<Folder>(json!({"train": ["a"], "test": ["b"], "missing_mask": "ignore"}))
            .err()
            .unwrap();
        assert!(err.message.contains("param `missing_mask`: `ignore` is not one of error, skip, nominal"), "{err}");
        let err = StageHarness::new::<Folder>(json!({"train": [], "test": ["b"]})).err().unwrap();
        assert!(err.message.contains("param `train`: the list is empty"), "{err}");
        let err = StageHarness::new::<Folder>(json!({"train": ["a"]})).err().unwrap();
        assert!(err.message.contains("missing required param `test`"), "{err}");
        let err = StageHarness::new::<MvtecAd>(json!({"root": "r", "category": 3})).err().unwrap();
        assert!(err.message.contains("param `category`: expected string"), "{err}");
        let err = StageHarness::new::<MvtecAd>(json!({"root": "r", "category": []})).err().unwrap();
        assert!(err.message.contains("param `category`: the list is empty"), "{err}");
    }
}
