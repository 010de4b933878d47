//! The params every ONNX stage shares, read in one place: where the model comes from (`model`,
//! resolved through the manifest) and how it runs (`threads`, `execution_provider`). A stage
//! declares its config with [`onnx_stage_config!`](crate::onnx_stage_config), which writes these
//! three fields (docs, defaults) around the stage's own; these helpers turn them into what the
//! runtime needs.

use std::path::PathBuf;

use anoflow_sdk::prelude::*;

use crate::{
    manifest::{self, ResolvedModel},
    Provider,
};

/// How a node's model runs.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeParams {
    /// Intra-op threads (0: ONNX Runtime's default).
    pub threads: usize,
    pub provider: Provider,
}

/// The node's `model` param resolved: a manifest name, looked up by the manifest rule
/// ([`manifest::search_starts`]: the pipeline's directory, the working directory, the
/// executable's, each upward), or a path to an .onnx file.
pub fn resolve_model(model: &Model, ctx: &CreateContext) -> StageResult<ResolvedModel> {
    let base_dir = PathBuf::from(ctx.base_dir.as_str());
    let others = manifest::search_starts(None);
    manifest::resolve(model.as_str(), &base_dir, &others).map_err(|e| StageError::from(e).context(ctx.node_id.as_str()))
}

/// Declares an ONNX stage's typed config: `model` first, then the stage's own fields, then
/// `threads` and `execution_provider`, each with its doc and default written once here, and a
/// `runtime()` method that reads the last two. The YAML stays flat: serde's `flatten` cannot be
/// used because configs refuse unknown fields.
///
/// `model = "name";` gives the model a default (the macro writes a `default_model` function in
/// the caller's module); `model;` makes it required. The calling crate needs `serde` and
/// `schemars` (the derives expand to paths in them).
///
/// ```ignore
/// anoflow_ort_session::onnx_stage_config! {
///     /// Params of `my-stage`.
///     pub struct MyConfig {
///         model = "mobilenet_v2";
///         /// the model output to read
///         #[serde(default, skip_serializing_if = "Option::is_none")]
///         pub output: Option<String>,
///     }
/// }
/// ```
#[macro_export]
macro_rules! onnx_stage_config {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { model = $default:literal; $($fields:tt)* }
    ) => {
        $crate::onnx_stage_config! {
            @emit [$(#[$meta])*] $vis $name [#[serde(default = "default_model")]] { $($fields)* }
        }
        fn default_model() -> $crate::__sdk::prelude::Model {
            $crate::__sdk::prelude::Model($default.into())
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { model; $($fields:tt)* }
    ) => {
        $crate::onnx_stage_config! { @emit [$(#[$meta])*] $vis $name [] { $($fields)* } }
    };
    (
        @emit [$($meta:tt)*] $vis:vis $name:ident [$($model_attr:tt)*] {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $($meta)*
        #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            /// model: a name in models/manifest.yaml (searched from the pipeline's directory upward, then from the working
            /// directory upward) or a path to an .onnx file
            $($model_attr)*
            pub model: $crate::__sdk::prelude::Model,
            $( $(#[$field_meta])* $field_vis $field: $ty, )*
            /// ONNX Runtime intra-op threads per inference (0: its default, one per physical core)
            #[serde(default)]
            pub threads: usize,
            /// where ONNX Runtime runs the model; cuda needs the library of the onnxruntime-gpu wheel
            #[serde(default)]
            pub execution_provider: $crate::Provider,
        }

        impl $name {
            /// How the node's model runs (`threads`, `execution_provider`).
            pub fn runtime(&self) -> $crate::params::RuntimeParams {
                $crate::params::RuntimeParams { threads: self.threads, provider: self.execution_provider }
            }
        }
    };
}
