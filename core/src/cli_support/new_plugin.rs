//! `anoflow new plugin NAME`: a plugin crate that builds and loads as it is, with nothing
//! but this binary. Inside an anoflow checkout's `plugins/` the crate joins the workspace;
//! anywhere else it is a workspace of its own with the SDK's source, carried in this binary
//! at its exact version, vendored under `vendor/anoflow-sdk` (no registry release and no
//! checkout needed), and the binary's own `Cargo.lock`, so it resolves the dependency
//! versions the host was built with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::{find_upward, write_atomic};

/// The SDK's source files, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../sdk/README.md")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/abi.rs", include_str!("../../../sdk/src/abi.rs")),
    ("src/checks.rs", include_str!("../../../sdk/src/checks.rs")),
    ("src/codec.rs", include_str!("../../../sdk/src/codec.rs")),
    ("src/config.rs", include_str!("../../../sdk/src/config.rs")),
    ("src/descriptor.rs", include_str!("../../../sdk/src/descriptor.rs")),
    ("src/error.rs", include_str!("../../../sdk/src/error.rs")),
    ("src/harness.rs", include_str!("../../../sdk/src/harness.rs")),
    ("src/panics.rs", include_str!("../../../sdk/src/panics.rs")),
    ("src/params.rs", include_str!("../../../sdk/src/params.rs")),
    ("src/stage.rs", include_str!("../../../sdk/src/stage.rs")),
    ("src/state.rs", include_str!("../../../sdk/src/state.rs")),
    ("src/value.rs", include_str!("../../../sdk/src/value.rs")),
];

/// The lock file this binary was built with: a vendored crate starts from the same versions.
const WORKSPACE_LOCK: &str = include_str!("../../../Cargo.lock");

/// The SDK's version: the workspace's, shared by this binary.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The vendored SDK's manifest: the SDK's own, with the workspace's dependency versions
/// written out (a unit test keeps it in step with `sdk/Cargo.toml`).
fn vendored_sdk_manifest() -> String {
    format!(
        r#"# The anoflow SDK {SDK_VERSION}, as carried by the `anoflow` binary that created this crate.
# Keep it at the version of the anoflow you load the plugin into.
[package]
name = "anoflow-sdk"
version = "{SDK_VERSION}"
edition = "2021"
license = "MIT OR Apache-2.0"
description = "The stable ABI between the anoflow host and its plugin libraries"
publish = false

[dependencies]
abi_stable = "0.11.3"
bytemuck = "1"
crc32fast = "1"
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
schemars = "1"
thiserror = "2"
"#
    )
}

/// How the new crate gets the SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A member of the anoflow workspace at this root (`plugins/NAME`).
    Workspace(PathBuf),
    /// Vendored under `vendor/anoflow-sdk`, the crate its own workspace.
    Vendored,
}

/// A created crate, and what to do next.
#[derive(Debug)]
pub struct Created {
    pub root: PathBuf,
    pub name: String,
    pub sdk: SdkSource,
}

impl Created {
    /// The library file `cargo build` makes (`libanoflow_plugin_NAME.so` on Linux).
    pub fn library_file(&self) -> String {
        let stem = format!("anoflow_plugin_{}", self.name.replace('-', "_"));
        if cfg!(target_os = "windows") {
            format!("{stem}.dll")
        } else if cfg!(target_os = "macos") {
            format!("lib{stem}.dylib")
        } else {
            format!("lib{stem}.so")
        }
    }

    /// The commands that build, test, load and run the new crate.
    pub fn next_steps(&self) -> String {
        let (name, root, lib) = (&self.name, self.root.display(), self.library_file());
        // Where cargo puts the library of a crate outside the workspace.
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
        match &self.sdk {
            SdkSource::Workspace(ws) => format!(
                "created {root} (anoflow-plugin-{name}, a member of the workspace at {ws})\n\
                 next, from {ws}:\n  \
                 cargo test --release -p anoflow-plugin-{name}     # its tests, through the SDK's harness\n  \
                 cargo build --release -p anoflow-plugin-{name}    # target/release/{lib}, next to anoflow: on the default plugin path\n  \
                 target/release/anoflow plugins inspect {name}\n  \
                 target/release/anoflow run {root}/pipeline.yaml\n",
                ws = ws.display()
            ),
            SdkSource::Vendored => format!(
                "created {root} (anoflow-plugin-{name}, with anoflow-sdk {SDK_VERSION} vendored in vendor/anoflow-sdk)\n\
                 next, from {root}:\n  \
                 cargo test --release                 # its tests, through the SDK's harness\n  \
                 cargo build --release                # the library: {target}/release/{lib}\n  \
                 anoflow plugins inspect {name} --plugins {target}/release\n  \
                 anoflow run pipeline.yaml --plugins {target}/release\n\
                 The first build compiles the dependencies (a few minutes); point CARGO_TARGET_DIR at one directory \
                 for all your plugins to do that once (the library then lands in $CARGO_TARGET_DIR/release).\n"
            ),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Creates `<dir>/<name>/`: Cargo.toml, src/lib.rs, the stage in `src/stages/<name>.rs` (the
/// layout of every plugin: one stage, one file, named after the stage with `-` as `_`), a
/// demo pipeline, and the vendored SDK unless the crate is a member of an anoflow checkout's
/// workspace.
pub fn create(dir: &Path, name: &str) -> Result<Created> {
    if !valid_name(name) {
        bail!("plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter");
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = match workspace_of(dir) {
        Some(ws) => SdkSource::Workspace(ws),
        None => SdkSource::Vendored,
    };
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = root.join(rel);
        write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
    };
    write("Cargo.toml", &crate_manifest(name, &sdk))?;
    write("src/lib.rs", &lib_source(name))?;
    write("src/stages/mod.rs", &stages_mod_source(name))?;
    write(&format!("src/stages/{}.rs", module_name(name)), &stage_source(name))?;
    write("pipeline.yaml", &demo_pipeline(name))?;
    if sdk == SdkSource::Vendored {
        // The crate is a project of its own: runs started in it stay in it (see local_dirs).
        write(
            ".anoflow.yaml",
            "# anoflow project settings for runs started below this directory\n# runs: runs\n# cache: .cache/anoflow\n",
        )?;
        write(".gitignore", "/target\n/runs\n/.cache\n")?;
        for (rel, text) in SDK_FILES {
            write(&format!("vendor/anoflow-sdk/{rel}"), text)?;
        }
        write("vendor/anoflow-sdk/Cargo.toml", &vendored_sdk_manifest())?;
        write("Cargo.lock", WORKSPACE_LOCK)?;
    }
    Ok(Created { root, name: name.to_string(), sdk })
}

/// The anoflow checkout whose workspace takes a crate made in `dir`: `dir` is its
/// `plugins/` directory (the workspace's members are `plugins/*`).
fn workspace_of(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let root =
        find_upward([dir.clone()], |d| d.join("sdk/Cargo.toml").is_file() && d.join("core/Cargo.toml").is_file())?;
    (dir == root.join("plugins")).then_some(root)
}

fn crate_manifest(name: &str, sdk: &SdkSource) -> String {
    let (dependency, workspace) = match sdk {
        SdkSource::Workspace(_) => (
            "anoflow-sdk.workspace = true\nabi_stable.workspace = true\nserde.workspace = true\nschemars.workspace = true"
                .to_string(),
            "\n[lints]\nworkspace = true\n",
        ),
        SdkSource::Vendored => (
            format!(
                "# The SDK this crate's anoflow carries, at its exact version. To follow a checkout instead:\n\
                 # anoflow-sdk = {{ git = \"<anoflow repository URL>\", tag = \"v{SDK_VERSION}\" }}\n\
                 anoflow-sdk = {{ path = \"vendor/anoflow-sdk\", version = \"={SDK_VERSION}\" }}\n\
                 abi_stable = \"0.11.3\"   # the export macro expands to paths in it\n\
                 # The derives of a stage's config (its params) expand to paths in these.\n\
                 serde = {{ version = \"1\", features = [\"derive\"] }}\n\
                 schemars = \"1\""
            ),
            "\n# A workspace of its own, wherever it is created.\n[workspace]\n",
        ),
    };
    format!(
        r#"[package]
name = "anoflow-plugin-{name}"
version = "0.1.0"
edition = "2021"

[lib]
# cdylib: the library the host loads; rlib: so tests and benches call the stage directly.
crate-type = ["cdylib", "rlib"]

[dependencies]
{dependency}

[dev-dependencies]
serde_json = "1"
{workspace}"#
    )
}

fn type_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The stage's module and file name: its YAML name with `-` as `_`.
fn module_name(stage: &str) -> String {
    stage.replace('-', "_")
}

fn lib_source(stage: &str) -> String {
    let (type_name, module) = (type_name(stage), module_name(stage));
    format!(
        r#"//! The `{stage}` plugin library. Each stage lives in `src/stages/<name>.rs`, named after
//! the stage (`-` as `_`), so `anoflow plugins inspect` points at its file; add a stage by
//! adding a file there and naming its type in `export_plugin!`.

mod stages;

pub use stages::{module}::{{{type_name}, {type_name}Config}};

anoflow_sdk::export_plugin! {{ stages: [{type_name}] }}
"#
    )
}

fn stages_mod_source(stage: &str) -> String {
    format!("//! One file per stage, named after the stage (`-` as `_`).\n\npub mod {};\n", module_name(stage))
}

fn stage_source(stage: &str) -> String {
    let type_name = type_name(stage);
    format!(
        r#"//! The `{stage}` stage: raises every score to a power, which pulls high scores apart from
//! low ones (scores below zero keep their sign). Replace with your own logic.

use anoflow_sdk::prelude::*;

pub struct {type_name};

/// The stage's params (`with:` in a pipeline): the doc comments, defaults and ranges are
/// what `anoflow plugins inspect` shows and what the host checks before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct {type_name}Config {{
    /// Exponent.
    #[serde(default = "one")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub power: f32,
}}

fn one() -> f32 {{
    1.0
}}

impl StagePlugin for {type_name} {{
    type Config = {type_name}Config;
    // A map stage: the kind comes from this type.
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {{
        StageDescriptor::new("{stage}", "raises every score to `power` (keeping its sign)")
            .input("score", ValueKind::ScoreMap, "anomaly score map")
            // Checked on every sample, by the host and by the harness.
            .output_same_size("score", ValueKind::ScoreMap, "score", "the new score map, the size of the input")
    }}

    fn create(config: {type_name}Config, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {{
        Ok(Box::new({type_name}Stage {{ power: config.power }}))
    }}
}}

struct {type_name}Stage {{
    power: f32,
}}

impl Map for {type_name}Stage {{
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {{
        let score = sample.score_map("score")?;
        let data = score.data().iter().map(|v| v.signum() * v.abs().powf(self.power)).collect();
        Ok(Outputs::new().with("score", ScoreMap::new(score.height() as u32, score.width() as u32, data)?))
    }}
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use anoflow_sdk::harness::{{inputs, meta, StageHarness}};

    #[test]
    fn raises_to_the_power() {{
        let h = StageHarness::new::<{type_name}>(serde_json::json!({{"power": 2.0}})).unwrap();
        let map = ScoreMap::new(1, 3, vec![1.0, 3.0, -2.0]).unwrap();
        let out = h.process(&meta("s"), inputs(vec![("score", map.into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[1.0, 9.0, -4.0]);
    }}

    #[test]
    fn params_are_checked_like_the_host_does() {{
        let err = StageHarness::new::<{type_name}>(serde_json::json!({{"power": 0.0}})).err().unwrap();
        assert!(err.message.contains("power"), "{{err}}");
    }}
}}
"#
    )
}

/// A pipeline that runs the new stage beside a baseline on synthetic data, so the metrics
/// table compares them (one column per mask).
fn demo_pipeline(stage: &str) -> String {
    format!(
        r#"# `anoflow run pipeline.yaml --plugins target/release`: the `{stage}` stage beside a
# baseline on synthetic images; the metrics table has one column per mask.
name: {stage}-demo
nodes:
  data: {{ plugin: synthetic, with: {{ categories: [washer], train: 10, test_good: 4, test_defective: 4, size: 128 }} }}
  grad: {{ plugin: gradient-magnitude, inputs: {{ image: data.image }} }}
  mine: {{ plugin: {stage}, with: {{ power: 2.0 }}, inputs: {{ score: grad.score }} }}
  baseline: {{ plugin: threshold-mean-std, fit: validation, inputs: {{ score: grad.score }} }}
  candidate: {{ plugin: threshold-mean-std, fit: validation, inputs: {{ score: mine.score }} }}
  eval: {{ plugin: segmentation-metrics, inputs: {{ gt: data.mask, masks: [baseline.mask, candidate.mask] }} }}
"#
    )
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

    /// Every dependency of `sdk/Cargo.toml` is in the vendored manifest at the workspace's
    /// version, and every source file of the SDK is carried.
    #[test]
    fn the_vendored_sdk_matches_the_workspace_sdk() {
        let sdk_manifest = include_str!("../../../sdk/Cargo.toml");
        let root_manifest = include_str!("../../../Cargo.toml");
        let vendored = vendored_sdk_manifest();
        assert!(sdk_manifest.contains("version.workspace = true"), "the SDK must share the workspace version");
        let deps = sdk_manifest.split("[dependencies]").nth(1).unwrap_or_default();
        let lines: Vec<&str> =
            deps.lines().take_while(|l| !l.starts_with('[')).filter(|l| !l.trim().is_empty()).collect();
        // Every dependency from the workspace, so that its version line below is the one to carry.
        for l in &lines {
            assert!(l.contains(".workspace = true"), "sdk/Cargo.toml: `{l}` is not a workspace dependency");
        }
        let names: Vec<&str> = lines.iter().filter_map(|l| l.split_once(".workspace").map(|(n, _)| n.trim())).collect();
        assert!(!names.is_empty());
        let vendored_deps = vendored.split("[dependencies]").nth(1).unwrap_or_default();
        assert_eq!(vendored_deps.lines().filter(|l| !l.trim().is_empty()).count(), names.len(), "{vendored}");
        for name in names {
            let line = root_manifest.lines().find(|l| l.starts_with(&format!("{name} ="))).unwrap();
            assert!(vendored_deps.lines().any(|l| l == line), "vendored manifest lacks `{line}`:\n{vendored}");
        }
        let carried: Vec<&str> = SDK_FILES.iter().map(|(p, _)| *p).collect();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src");
        for entry in std::fs::read_dir(src).unwrap() {
            let file = format!("src/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(carried.contains(&file.as_str()), "{file} is not carried by `anoflow new plugin`");
        }
    }

    #[test]
    fn outside_a_checkout_the_crate_vendors_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let created = create(dir.path(), "otsu-binarize").unwrap();
        assert_eq!(created.sdk, SdkSource::Vendored);
        let manifest = std::fs::read_to_string(created.root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("path = \"vendor/anoflow-sdk\", version = \"={SDK_VERSION}\"")));
        assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
        let abi = std::fs::read_to_string(created.root.join("vendor/anoflow-sdk/src/abi.rs")).unwrap();
        assert_eq!(abi, include_str!("../../../sdk/src/abi.rs"));
        assert!(created.root.join("Cargo.lock").is_file() && created.root.join("pipeline.yaml").is_file());
        // One stage, one file, named after the stage; lib.rs exports it.
        let stage = std::fs::read_to_string(created.root.join("src/stages/otsu_binarize.rs")).unwrap();
        assert!(stage.contains("impl StagePlugin for OtsuBinarize") && !stage.contains("export_plugin!"), "{stage}");
        let lib = std::fs::read_to_string(created.root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub use stages::otsu_binarize::{OtsuBinarize, OtsuBinarizeConfig};"), "{lib}");
        assert!(lib.contains("export_plugin! { stages: [OtsuBinarize] }"), "{lib}");
        let stages = std::fs::read_to_string(created.root.join("src/stages/mod.rs")).unwrap();
        assert!(stages.contains("pub mod otsu_binarize;"), "{stages}");
        let dirs = crate::local_dirs::resolve(&created.root.join("src"), &|_| None).unwrap();
        assert_eq!(dirs.runs, created.root.join("runs"), "the crate is a project: its runs stay in it");
        let steps = created.next_steps();
        assert!(steps.contains("cargo build --release") && steps.contains("/release/libanoflow_plugin_otsu_binarize"));
        assert!(create(dir.path(), "otsu-binarize").unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn in_a_checkouts_plugins_dir_the_crate_joins_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["sdk", "core", "plugins"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("sdk/Cargo.toml"), "").unwrap();
        std::fs::write(dir.path().join("core/Cargo.toml"), "").unwrap();
        let created = create(&dir.path().join("plugins"), "my-stage").unwrap();
        assert!(matches!(created.sdk, SdkSource::Workspace(_)));
        let manifest = std::fs::read_to_string(created.root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("anoflow-sdk.workspace = true") && !manifest.contains("[workspace]"), "{manifest}");
        assert!(!created.root.join("vendor").exists());
        assert!(created.next_steps().contains("cargo build --release -p anoflow-plugin-my-stage"));
        // Elsewhere in the checkout the crate is a workspace of its own, with the SDK vendored.
        let other = create(dir.path(), "elsewhere").unwrap();
        assert_eq!(other.sdk, SdkSource::Vendored);
    }
}
