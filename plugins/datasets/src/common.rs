//! Pieces shared by the sources: errors, the validation hold-out, directory listing,
//! category selection.

pub use anoflow_imaging::paths::is_image_file;
use std::path::{Path, PathBuf};

use anoflow_sdk::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What can go wrong finding or loading a dataset's files.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{stage}: dataset root `{}` does not exist", root.display())]
    MissingRoot { stage: &'static str, root: PathBuf },
    #[error("{stage}: category `{name}` not found under `{}`; categories there: {}{}", root.display(), available.join(", "), suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownCategory {
        stage: &'static str,
        name: String,
        root: PathBuf,
        available: Vec<String>,
        suggestion: Option<String>,
    },
    #[error("{stage}: no categories under `{}` (expected `<root>/<category>/train/...`)", root.display())]
    NoCategories { stage: &'static str, root: PathBuf },
    #[error("{stage}: missing directory `{}`", dir.display())]
    MissingDir { stage: &'static str, dir: PathBuf },
    #[error("{stage}: test image `{}` has no ground-truth mask: expected `{}`", image.display(), mask.display())]
    MissingMask { stage: &'static str, image: PathBuf, mask: PathBuf },
    #[error("{stage}: `{}` has no {what} for `{}`: expected `{}`", dir.display(), image.display(), expected.display())]
    MissingCompanion { stage: &'static str, what: &'static str, dir: PathBuf, image: PathBuf, expected: PathBuf },
    #[error("{stage}: split `{split}` is empty: {why}")]
    EmptySplit { stage: &'static str, split: String, why: String },
    #[error("{stage}: unknown split `{split}` (this source provides train, validation, test)")]
    UnknownSplit { stage: &'static str, split: String },
    #[error("{stage}: `{}` is {found_h}x{found_w} but its image `{}` is {expected_h}x{expected_w}", path.display(), image.display())]
    SizeMismatch {
        stage: &'static str,
        path: PathBuf,
        image: PathBuf,
        found_h: usize,
        found_w: usize,
        expected_h: usize,
        expected_w: usize,
    },
    #[error("{stage}: sample `{id}`: {reason}")]
    BadSample { stage: &'static str, id: String, reason: String },
    #[error("{stage}: {}: {source}", path.display())]
    Io { stage: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Imaging(#[from] anoflow_imaging::ImagingError),
}

impl From<DatasetError> for StageError {
    fn from(e: DatasetError) -> Self {
        let kind = match e {
            DatasetError::Io { .. } => ErrorKind::Io,
            DatasetError::Imaging(anoflow_imaging::ImagingError::Io { .. }) => ErrorKind::Io,
            DatasetError::UnknownCategory { .. } | DatasetError::MissingRoot { .. } => ErrorKind::InvalidParam,
            _ => ErrorKind::InvalidInput,
        };
        StageError::new(kind, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, DatasetError>;

/// The splits every source here provides.
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// FNV-1a, a stable hash for seeding per-category shuffles.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The share of nominal training images the disk sources hold out for validation by default.
pub fn default_validation_fraction() -> f64 {
    0.2
}

/// Which of `n` nominal training images (in listing order) are held out for validation:
/// `round(n * fraction)` of them (at least one when `fraction > 0` and `n >= 2`, never all),
/// chosen by a shuffle seeded with `seed` and the category name.
pub fn validation_holdout(n: usize, fraction: f64, seed: u64, category: &str) -> Vec<bool> {
    let mut k = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && k == 0 && n >= 2 {
        k = 1;
    }
    k = k.min(n.saturating_sub(1));
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stable_hash(category));
    order.shuffle(&mut rng);
    let mut held = vec![false; n];
    for &i in &order[..k] {
        held[i] = true;
    }
    held
}

/// Keeps the items of the requested split among training items.
pub fn pick_split<T>(items: Vec<T>, held: &[bool], split: &str) -> Vec<T> {
    let want_held = split == "validation";
    items.into_iter().zip(held).filter(|(_, &h)| h == want_held).map(|(t, _)| t).collect()
}

/// Files with one of `exts` (lower-case, no dot) directly in `dir`, sorted; hidden files
/// (such as the temporaries of atomic writes) are skipped.
pub fn files_with_ext(stage: &'static str, dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| DatasetError::Io { stage, path: dir.to_path_buf(), source })?;
    let mut out = Vec::new();
    for entry in rd {
        let p = entry.map_err(|source| DatasetError::Io { stage, path: dir.to_path_buf(), source })?.path();
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !hidden && p.is_file() && ext.is_some_and(|e| exts.contains(&e.as_str())) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Sub-directories of `dir`, sorted by name.
pub fn subdirs(stage: &'static str, dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| DatasetError::Io { stage, path: dir.to_path_buf(), source })?;
    let mut out: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    out.sort();
    Ok(out)
}

pub fn file_stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

pub fn dir_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The `category` param: one name, a list of names, or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CategoryParam {
    One(String),
    Many(Vec<String>),
}

impl Default for CategoryParam {
    fn default() -> Self {
        CategoryParam::One("all".into())
    }
}

impl CategoryParam {
    /// The names asked for; an empty list is refused, naming the node.
    pub fn names(&self, node: &str) -> StageResult<Vec<String>> {
        let names = match self {
            CategoryParam::One(name) => vec![name.clone()],
            CategoryParam::Many(names) => names.clone(),
        };
        if names.is_empty() {
            return Err(StageError::invalid_param(format!("node `{node}`: param `category`: the list is empty")));
        }
        Ok(names)
    }
}

/// Resolves requested category names against the category directories under `root`.
pub fn resolve_categories(stage: &'static str, root: &Path, requested: &[String]) -> Result<Vec<String>> {
    if !root.is_dir() {
        return Err(DatasetError::MissingRoot { stage, root: root.to_path_buf() });
    }
    let available: Vec<String> = subdirs(stage, root)?
        .into_iter()
        .filter(|d| d.join("train").is_dir() || d.join("test").is_dir())
        .map(|d| dir_name(&d))
        .collect();
    if available.is_empty() {
        return Err(DatasetError::NoCategories { stage, root: root.to_path_buf() });
    }
    if requested.iter().any(|r| r == "all") {
        return Ok(available);
    }
    let mut out = Vec::new();
    for name in requested {
        if !available.contains(name) {
            return Err(DatasetError::UnknownCategory {
                stage,
                name: name.clone(),
                root: root.to_path_buf(),
                suggestion: anoflow_sdk::params::did_you_mean(name, available.iter().map(String::as_str)),
                available,
            });
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Metadata of one listed sample.
pub fn sample_meta(id: String, category: &str, split: &str, defect: &str, path: &Path, index: usize) -> SampleMeta {
    let mut m = SampleMeta::new(id, category, split);
    m.defect = defect.into();
    m.label = if defect == "good" { LABEL_NOMINAL } else { LABEL_ANOMALOUS };
    m.path = path.to_string_lossy().as_ref().into();
    m.index = index as u64;
    m
}

/// Numbers the samples in listing order.
pub fn reindex(mut metas: Vec<SampleMeta>) -> Vec<SampleMeta> {
    for (i, m) in metas.iter_mut().enumerate() {
        m.index = i as u64;
    }
    metas
}

/// Fails, naming the stage and the directory, when `dir` is not a directory.
pub fn require_dir(stage: &'static str, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(DatasetError::MissingDir { stage, dir: dir.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_seeded_and_sized() {
        let a = validation_holdout(50, 0.2, 3, "bottle");
        assert_eq!(a.iter().filter(|&&h| h).count(), 10);
        assert_eq!(a, validation_holdout(50, 0.2, 3, "bottle"));
        assert_ne!(a, validation_holdout(50, 0.2, 4, "bottle"));
        assert_ne!(a, validation_holdout(50, 0.2, 3, "cable"));
        assert_eq!(validation_holdout(3, 0.1, 0, "x").iter().filter(|&&h| h).count(), 1);
        assert_eq!(validation_holdout(1, 0.5, 0, "x").iter().filter(|&&h| h).count(), 0);
        assert_eq!(validation_holdout(5, 0.0, 0, "x").iter().filter(|&&h| h).count(), 0);
        assert_eq!(validation_holdout(4, 1.0, 0, "x").iter().filter(|&&h| h).count(), 3);
    }
}
