//! Diagnostics: every problem found in a pipeline, with file, position and node.

use std::{fmt, path::PathBuf};

use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub node: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.col)?;
        }
        write!(f, ": error: ")?;
        if let Some(n) = &self.node {
            write!(f, "node `{n}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// `" (did you mean `x`?)"` when one of `candidates` is close to `name` (a typo), else empty:
/// the hint every "unknown ..." message ends with.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    anoflow_sdk::params::did_you_mean(name, candidates).map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

/// Collects diagnostics for one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self { file: file.into(), items: Vec::new() }
    }

    pub fn error(&mut self, pos: Option<Pos>, node: Option<&str>, message: impl Into<String>) {
        self.items.push(Diagnostic {
            file: self.file.clone(),
            pos,
            node: node.map(str::to_string),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn into_vec(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| d.pos.unwrap_or_default());
        self.items
    }
}

/// All problems of a pipeline, reported together.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PipelineErrors(pub Vec<Diagnostic>);

impl fmt::Display for PipelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{} found", if n == 1 { "" } else { "s" })
    }
}
