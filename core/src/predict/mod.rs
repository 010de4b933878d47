//! `anoflow predict`: a bundle's pipeline on new images, through the executor's predictor.
//!
//! Inputs are files, directories (every PNG or TIFF below, recursively) or glob patterns.
//! An image's id is its path below the directory (or pattern root) it was found in, without
//! the extension (a file named alone: its stem); its category is `--category`, the bundle's
//! only category, or else the first directory of that relative path. For each image predict
//! writes `<out>/<id>.mask.png` (0/255, at the image's own size), with `--scores`
//! `<out>/<id>.score.png`, and one JSON line (stdout and `<out>/predictions.jsonl`). A bad
//! image gives an error line and the others go on; a failed write stops with the path.

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anoflow_imaging::paths::{is_image_file, match_path};
use anoflow_sdk::value::{PortValue, SampleMeta, Value, LABEL_UNKNOWN};
use serde_json::{json, Value as Json};

use crate::{
    bundle::{Bundle, Geometry, OutputRef},
    executor::{NodeStats, Predictor, INTERRUPTED},
    fsutil::write_atomic,
};

mod geometry;
mod session;
#[cfg(test)]
mod tests;

pub use geometry::*;
pub use session::*;

/// Why predict stopped.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot write {path}: {source} (nothing partial was left there)")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Run(#[from] crate::executor::RunError),
}

pub struct PredictOptions {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub category: Option<String>,
    pub scores: bool,
    pub in_flight: usize,
    pub watch: bool,
    pub poll: Duration,
    /// Print each JSON line on stdout too.
    pub echo: bool,
}

/// One image to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputImage {
    pub path: PathBuf,
    /// Below the directory or pattern root it was found in, `/`-separated, extension kept.
    pub rel: String,
}

impl InputImage {
    /// The id: `rel` without its extension.
    pub fn id(&self) -> String {
        match self.rel.rfind('.') {
            Some(dot) if !self.rel[dot..].contains('/') => self.rel[..dot].to_string(),
            _ => self.rel.clone(),
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn rel_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

/// The images the inputs name, sorted within each input; an input naming nothing is an error.
pub fn list_inputs(inputs: &[String]) -> Result<Vec<InputImage>, PredictError> {
    let mut out = Vec::new();
    for input in inputs {
        let found = list_input(input)?;
        if found.is_empty() && !input.contains(['*', '?']) {
            return Err(PredictError::Setup(format!("input {input}: no PNG or TIFF image there")));
        }
        out.extend(found);
    }
    Ok(out)
}

fn list_input(input: &str) -> Result<Vec<InputImage>, PredictError> {
    let path = Path::new(input);
    if input.contains(['*', '?']) {
        let comps: Vec<&str> = input.split('/').collect();
        let first_wild = comps.iter().position(|c| c.contains(['*', '?'])).unwrap_or(comps.len());
        let root_text = comps[..first_wild].join("/");
        let root = PathBuf::from(if root_text.is_empty() && input.starts_with('/') {
            "/".into()
        } else if root_text.is_empty() {
            ".".into()
        } else {
            root_text
        });
        if !root.is_dir() {
            return Err(PredictError::Setup(format!("input {input}: {} is not a directory", root.display())));
        }
        let mut files = Vec::new();
        walk(&root, &mut files);
        files.sort();
        let pattern = &comps[first_wild..];
        return Ok(files
            .into_iter()
            .filter(|f| {
                let rel = rel_of(&root, f);
                let parts: Vec<&str> = rel.split('/').collect();
                is_image_file(f) && match_path(pattern, &parts)
            })
            .map(|f| InputImage { rel: rel_of(&root, &f), path: f })
            .collect());
    }
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files);
        files.retain(|f| is_image_file(f));
        files.sort();
        return Ok(files.into_iter().map(|f| InputImage { rel: rel_of(path, &f), path: f }).collect());
    }
    if path.exists() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok(vec![InputImage { path: path.to_path_buf(), rel: name }]);
    }
    Err(PredictError::Setup(format!("input {input}: no such file or directory")))
}

/// The category of an image: the flag, the bundle's only one, or the first directory of its
/// relative path when that is one of the bundle's.
pub fn category_of(image: &InputImage, flag: Option<&str>, categories: &[String]) -> Result<String, String> {
    if let Some(c) = flag {
        return Ok(c.to_string());
    }
    match categories {
        [] => Ok("input".into()),
        [only] => Ok(only.clone()),
        _ => {
            let first = image.rel.split('/').next().filter(|_| image.rel.contains('/')).unwrap_or_default();
            if categories.iter().any(|c| c == first) {
                Ok(first.to_string())
            } else {
                Err(format!(
                    "no category: pass --category or put the image in a directory named after one of: {}",
                    categories.join(", ")
                ))
            }
        }
    }
}
