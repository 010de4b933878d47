//! The binary interface between the host and a plugin library.
//!
//! A plugin library exports two things:
//! - `anoflow_plugin_versions`, a plain C function returning [`AbiVersions`]; the host reads
//!   it first, so a library built against another SDK ABI or data contract is reported with
//!   expected-vs-found versions instead of a layout dump;
//! - an abi_stable root module ([`PluginModule`]) listing its stage factories.
//!
//! Bump [`SDK_ABI_VERSION`] when anything in this file changes shape, and
//! [`DATA_CONTRACT_VERSION`] when the value types in `value.rs` change.

// The code `#[sabi_trait]` generates trips this lint; it is sound.
#![allow(non_local_definitions)]

use abi_stable::{
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

use crate::{descriptor::StageDescriptor, error::StageError, value::PortValue, value::SampleInput, value::SampleMeta};

/// Version of the host/plugin calling interface (root module, stage trait, contexts).
/// 2: param ranges in `ParamSpec`, the rejected input in `StageError`, the input edges in
/// `CreateContext`. 3: an output's size relation in `PortSpec` (`same_size_as`). 4: typed
/// configs (the config schema, batch size and source file in `StageDescriptor`; `File`,
/// `Model` and `FileList` param types), `SinkReport::headline`.
pub const SDK_ABI_VERSION: u32 = 4;
/// Version of the data contract (the value types that flow between stages).
pub const DATA_CONTRACT_VERSION: u32 = 1;
/// The semver-compatible release lines of this crate and the versions each speaks:
/// `(line, SDK_ABI_VERSION, DATA_CONTRACT_VERSION)`, the line being `0.minor` before 1.0 and
/// the major version after. A change of either number is a breaking release: it needs a new
/// line (a test checks the crate's version against this table).
pub const SDK_RELEASES: &[(&str, u32, u32)] = &[("0.1", 3, 1), ("0.2", 4, 1)];
/// Name of the plain C symbol carrying [`AbiVersions`].
pub const VERSIONS_SYMBOL: &[u8] = b"anoflow_plugin_versions\0";

/// Read by the host before anything else in a library.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiVersions {
    pub sdk_abi: u32,
    pub data_contract: u32,
}

/// What the host tells a stage when it creates it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct CreateContext {
    /// The node id in the pipeline file.
    pub node_id: RString,
    /// Parameters as a JSON object, already checked and merged with defaults.
    pub params_json: RString,
    /// Directory of the pipeline file: relative paths in params resolve against it.
    pub base_dir: RString,
    /// Directory where this node may write files (inside the run directory).
    pub work_dir: RString,
    /// Worker threads the host runs; a stage may size its own pools from it.
    pub threads: u32,
    /// Every edge into the node, in pipeline order. A sink that reports per source can list
    /// a source even when some sample (or every sample) arrives without its value.
    pub inputs: RVec<InputEdge>,
}

/// An edge into a node, as [`CreateContext::inputs`] lists it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct InputEdge {
    /// The node's input port, e.g. `masks`.
    pub port: RString,
    /// The edge as a sample names its value: `node.port`.
    pub source: RString,
    /// The producing port carries several labelled values per sample, named
    /// `node.port[label]`, so the labels are only known from the samples.
    pub labelled: bool,
}

impl CreateContext {
    /// The edges into `port`, in pipeline order.
    pub fn edges(&self, port: &str) -> impl Iterator<Item = &InputEdge> + '_ {
        let port = port.to_string();
        self.inputs.iter().filter(move |e| e.port == port.as_str())
    }
}

/// What the host tells a sink when the run is over.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FinishContext {
    pub node_id: RString,
    /// Directory where the sink writes its outputs (inside the run directory).
    pub out_dir: RString,
}

/// What a sink hands back when it finishes.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct SinkReport {
    /// A Markdown summary the host prints and puts in the run report.
    pub markdown: RString,
    /// Machine-readable results as JSON text (`null` when none).
    pub json: RString,
    /// Files written, relative to the run directory.
    pub files: RVec<RString>,
    /// The few figures that sum the sink up (e.g. `best.f1`), in order: the host puts them in
    /// run.json and in the columns of a sweep's comparison table.
    pub headline: RVec<Headline>,
}

/// One headline figure of a sink.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Headline {
    pub name: RString,
    pub value: f64,
}

/// Per-sample result of a batch call.
pub type SampleOutputs = RResult<RVec<PortValue>, StageError>;

/// The object-safe, ABI-stable face of every stage. Plugin authors never implement it:
/// they implement the traits in [`crate::stage`] and the SDK adapts them, catching panics.
#[sabi_trait]
pub trait StageFfi: Send + Sync {
    /// Sources: the sample list of a split, in a deterministic order.
    fn list(&self, split: RStr<'_>) -> RResult<RVec<SampleMeta>, StageError>;

    /// Sources: load samples. Map and fitted stages: compute outputs. One result per sample.
    fn process(&self, batch: RVec<SampleInput>) -> RVec<SampleOutputs>;

    /// Fitted stages: observe samples of the fit split (called in sample order).
    fn fit_observe(&mut self, batch: RVec<SampleInput>) -> RResult<(), StageError>;

    /// Fitted stages: the fit split is over; learn.
    fn fit_finish(&mut self) -> RResult<(), StageError>;

    /// Fitted stages: serialize the fitted state (for the cache). Sinks: serialize what they
    /// accumulated (for merging shards). `Unsupported` if the stage cannot.
    fn save_state(&self) -> RResult<RVec<u8>, StageError>;

    /// Fitted stages: restore a state written by `save_state`. Sinks: merge one in.
    fn load_state(&mut self, state: RVec<u8>) -> RResult<(), StageError>;

    /// Sinks: consume samples (called in sample order).
    fn consume(&mut self, batch: RVec<SampleInput>) -> RResult<(), StageError>;

    /// Sinks: write results.
    #[sabi(last_prefix_field)]
    fn finish(&mut self, ctx: &FinishContext) -> RResult<SinkReport, StageError>;
}

/// A created stage, owned by the host.
pub type StageBox = StageFfi_TO<'static, RBox<()>>;

/// One stage type exported by a library.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct StageFactory {
    pub descriptor: extern "C" fn() -> RResult<StageDescriptor, StageError>,
    pub create: extern "C" fn(&CreateContext) -> RResult<StageBox, StageError>,
}

/// The root module of a plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    pub sdk_abi_version: u32,
    pub data_contract_version: u32,
    /// The library's name, e.g. `anoflow-plugin-ttt4as`.
    pub library_name: RStr<'static>,
    /// The library's crate version.
    pub library_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub stages: extern "C" fn() -> RVec<StageFactory>,
}

impl RootModule for PluginModuleRef {
    abi_stable::declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "anoflow_plugin";
    const NAME: &'static str = "anoflow_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The release line of a version: `0.minor` before 1.0, the major version after.
    fn release_line(version: &str) -> String {
        let mut parts = version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some(minor)) => format!("0.{minor}"),
            (Some(major), _) => major.to_string(),
            _ => version.to_string(),
        }
    }

    #[test]
    fn the_crate_version_names_the_abi_and_contract_it_speaks() {
        let line = release_line(env!("CARGO_PKG_VERSION"));
        let entry = SDK_RELEASES.iter().find(|(l, _, _)| *l == line);
        assert_eq!(
            entry.map(|(_, abi, contract)| (*abi, *contract)),
            Some((SDK_ABI_VERSION, DATA_CONTRACT_VERSION)),
            "anoflow-sdk {} (line {line}) speaks SDK ABI {SDK_ABI_VERSION} and data contract \
             {DATA_CONTRACT_VERSION}: a change of either is a breaking release; add a line to SDK_RELEASES",
            env!("CARGO_PKG_VERSION")
        );
        for (i, (l, abi, contract)) in SDK_RELEASES.iter().enumerate() {
            let later = &SDK_RELEASES[i + 1..];
            assert!(
                later.iter().all(|(m, a, c)| m != l && (a, c) != (abi, contract)),
                "{l} repeats a line or versions"
            );
        }
        assert_eq!(release_line("0.3.2"), "0.3");
        assert_eq!(release_line("2.1.0"), "2");
    }
}
