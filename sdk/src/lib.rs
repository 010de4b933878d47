//! # anoflow-sdk
//!
//! The one stable interface between the `anoflow` host and its plugin libraries.
//!
//! A plugin library is a `cdylib` crate that implements [`stage::StagePlugin`] for each of
//! its stage types and lists them with [`export_plugin!`]:
//!
//! ```ignore
//! use anoflow_sdk::prelude::*;
//!
//! pub struct Invert;
//! impl StagePlugin for Invert {
//!     type Config = NoParams;
//!     type Stage = Box<dyn Map>;
//!     fn descriptor() -> StageDescriptor {
//!         StageDescriptor::new("invert", "255 minus every pixel")
//!             .input("image", ValueKind::Image, "input image")
//!             .output("image", ValueKind::Image, "inverted image")
//!     }
//!     fn create(_config: NoParams, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
//!         Ok(Box::new(InvertStage))
//!     }
//! }
//! anoflow_sdk::export_plugin! { stages: [Invert] }
//! ```
//!
//! Everything crossing the boundary is ABI-stable (`abi_stable`); the SDK ABI version and
//! the data-contract version are checked by the host at load time; every call into a stage
//! catches panics and returns them as errors, so a plugin never aborts the host.

pub mod abi;
pub mod checks;
pub mod codec;
pub mod config;
pub mod descriptor;
pub mod error;
pub mod harness;
mod panics;
pub mod params;
pub mod stage;
pub mod state;
pub mod value;

/// Re-exports used by [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
pub mod reexports {
    pub use abi_stable::export_root_module;
    pub use abi_stable::prefix_type::PrefixTypeTrait;
    pub use abi_stable::std_types::{RStr, RVec};
}

/// The derive macros and attributes a stage's `Config` uses.
pub use schemars;

/// Everything a plugin author needs, in one import.
pub mod prelude {
    pub use crate::abi::{CreateContext, FinishContext, Headline, SinkReport};
    pub use crate::config::{File, Model, NoParams};
    pub use crate::descriptor::{StageDescriptor, StageKind};
    pub use crate::error::{ErrorKind, StageError, StageResult};
    pub use crate::stage::{Fitted, Map, Outputs, Sample, Sink, Source, StagePlugin};
    pub use crate::value::{
        split_variant, FeatureMap, Image, Mask, Pixels, PointCloud, SampleMeta, ScoreMap, Value, ValueKind,
        LABEL_ANOMALOUS, LABEL_NOMINAL, LABEL_UNKNOWN, VARIANT_MARK,
    };
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
}

/// Exports a plugin library's stages. Put it once at the root of a `cdylib` crate:
///
/// ```ignore
/// anoflow_sdk::export_plugin! { stages: [Resize, CenterCrop] }
/// ```
///
/// The crate must also depend on `abi_stable` (its attribute macro expands to paths in it).
#[macro_export]
macro_rules! export_plugin {
    (stages: [$($stage:ty),* $(,)?] $(,)?) => {
        $crate::export_plugin! {
            @versions ($crate::abi::SDK_ABI_VERSION, $crate::abi::DATA_CONTRACT_VERSION)
            stages: [$($stage),*]
        }
    };
    // Explicit versions: only for the host's own tests of version mismatches.
    (@versions ($sdk_abi:expr, $contract:expr) stages: [$($stage:ty),* $(,)?] $(,)?) => {
        #[no_mangle]
        pub extern "C" fn anoflow_plugin_versions() -> $crate::abi::AbiVersions {
            $crate::abi::AbiVersions { sdk_abi: $sdk_abi, data_contract: $contract }
        }

        /// Where this crate lives, for the descriptors' source files.
        #[doc(hidden)]
        pub struct __AnoflowCrate;
        impl $crate::stage::CrateInfo for __AnoflowCrate {
            const MANIFEST_DIR: &'static str = env!("CARGO_MANIFEST_DIR");
        }

        extern "C" fn __anoflow_stage_factories() -> $crate::reexports::RVec<$crate::abi::StageFactory> {
            let mut factories = $crate::reexports::RVec::new();
            $(
                factories.push($crate::abi::StageFactory {
                    descriptor: $crate::stage::descriptor_shim::<$stage, __AnoflowCrate>,
                    create: $crate::stage::create_shim::<$stage>,
                });
            )*
            factories
        }

        #[$crate::reexports::export_root_module]
        pub fn __anoflow_root_module() -> $crate::abi::PluginModuleRef {
            use $crate::reexports::PrefixTypeTrait;
            $crate::abi::PluginModule {
                sdk_abi_version: $sdk_abi,
                data_contract_version: $contract,
                library_name: $crate::reexports::RStr::from_str(env!("CARGO_PKG_NAME")),
                library_version: $crate::reexports::RStr::from_str(env!("CARGO_PKG_VERSION")),
                stages: __anoflow_stage_factories,
            }
            .leak_into_prefix()
        }
    };
}
