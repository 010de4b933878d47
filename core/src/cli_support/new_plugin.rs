//! `anoflow new plugin NAME`: a plugin crate that builds and loads as it is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::{exe_dir, find_upward, write_atomic};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Creates `<dir>/<name>/` with Cargo.toml and src/lib.rs; returns the crate directory.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    if !valid_name(name) {
        bail!("plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter");
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = sdk_dependency(dir);
    let cargo = format!(
        r#"[package]
name = "anoflow-plugin-{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
{sdk}
abi_stable = "0.11.3"

[dev-dependencies]
serde_json = "1"
"#
    );
    let stage = name.to_string();
    let type_name: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    let lib = format!(
        r#"//! The `{stage}` stage: scales a score map by a factor. Replace with your own logic.

use anoflow_sdk::prelude::*;

pub struct {type_name};

impl StagePlugin for {type_name} {{
    fn descriptor() -> StageDescriptor {{
        StageDescriptor::map("{stage}", "multiplies a score map by `factor`")
            .input("score", ValueKind::ScoreMap, "anomaly score map")
            .output("score", ValueKind::ScoreMap, "scaled score map")
            .param(ParamSpec::float("factor", 1.0, "multiplier"))
    }}

    fn create(params: &Params, _ctx: &CreateContext) -> StageResult<StageImpl> {{
        Ok(StageImpl::Map(Box::new({type_name}Stage {{ factor: params.f64("factor")? as f32 }})))
    }}
}}

struct {type_name}Stage {{
    factor: f32,
}}

impl Map for {type_name}Stage {{
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {{
        let score = sample.score_map("score")?;
        let data = score.data().iter().map(|v| v * self.factor).collect();
        Ok(Outputs::new().with("score", ScoreMap::new(score.height() as u32, score.width() as u32, data)?))
    }}
}}

anoflow_sdk::export_plugin! {{ stages: [{type_name}] }}

#[cfg(test)]
mod tests {{
    use super::*;
    use anoflow_sdk::harness::{{inputs, meta, StageHarness}};

    #[test]
    fn scales() {{
        let h = StageHarness::new::<{type_name}>(serde_json::json!({{"factor": 2.0}})).unwrap();
        let map = ScoreMap::new(1, 2, vec![1.0, 3.0]).unwrap();
        let out = h.process(&meta("s"), inputs(vec![("score", map.into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[2.0, 6.0]);
    }}
}}
"#
    );
    write_atomic(&root.join("Cargo.toml"), cargo.as_bytes()).with_context(|| format!("writing {}", root.display()))?;
    write_atomic(&root.join("src/lib.rs"), lib.as_bytes())?;
    Ok(root)
}

/// Inside the anoflow workspace the SDK is a path dependency; elsewhere a version.
/// The workspace is looked for above the target dir, the current dir and this executable.
fn sdk_dependency(dir: &Path) -> String {
    let starts = [std::fs::canonicalize(dir).ok(), std::env::current_dir().ok(), exe_dir()].into_iter().flatten();
    match find_upward(starts, |d| d.join("sdk/Cargo.toml").exists() && d.join("core/Cargo.toml").exists()) {
        Some(root) => format!("anoflow-sdk = {{ path = \"{}\" }}", root.join("sdk").display()),
        None => format!("anoflow-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("my-stage2"));
        assert!(!valid_name("My_Stage"));
        assert!(!valid_name("2x"));
    }
}
