//! ONNX Runtime, loaded once per process from the library that `anoflow-ort-locate` finds.

use std::sync::OnceLock;

use anoflow_ort_locate::{locate, RuntimeLibrary};
use ort::environment::Environment;

use crate::error::OnnxError;

static RUNTIME: OnceLock<Result<(RuntimeLibrary, Environment), String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment and the library it came from. The first call
/// loads the library; a failure is remembered and returned to every later caller.
pub fn environment() -> Result<&'static (RuntimeLibrary, Environment), OnnxError> {
    RUNTIME.get_or_init(init).as_ref().map_err(|e| OnnxError::Runtime(e.clone()))
}

fn init() -> Result<(RuntimeLibrary, Environment), String> {
    let lib = locate().map_err(|e| e.to_string())?;
    let version = lib.version.map_or_else(|| "of unknown version".to_string(), |v| v.to_string());
    let builder = ort::init_from(&lib.path).map_err(|e| {
        format!("cannot load {} (ONNX Runtime {version}, found through {}): {e}", lib.path.display(), lib.found_by)
    })?;
    let env = builder
        .with_name("anoflow")
        .build()
        .map_err(|e| format!("cannot create an environment with {}: {e}", lib.path.display()))?;
    Ok((lib, env))
}
