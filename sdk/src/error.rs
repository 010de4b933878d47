//! The one error type that crosses the plugin boundary.

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, coarsely, so the host can decide how to report it.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A parameter has a bad value (the message names it).
    InvalidParam,
    /// An input value or an input file is not what the stage expects.
    InvalidInput,
    /// Reading or writing a file failed.
    Io,
    /// The stage does not support the call (e.g. `fit` on a map stage).
    Unsupported,
    /// The stage panicked; the panic was caught inside the plugin.
    Panic,
    /// Any other failure inside the stage.
    Internal,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidParam => "invalid parameter",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Io => "i/o error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Panic => "panic",
            ErrorKind::Internal => "internal error",
        }
    }
}

/// An error returned by a stage. The host adds node id, plugin and sample id around it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub kind: ErrorKind,
    pub message: RString,
    /// The input edge (`node.port`, as [`crate::stage::Sample::all`] names it) whose value the
    /// stage cannot use, when the error is about that one value; empty otherwise. The host
    /// then blames the node that produced the value, and a sink gets the sample again
    /// without it (see [`crate::stage::Sink::consume`]).
    pub input: RString,
}

impl StageError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: RString::from(message.into()), input: RString::new() }
    }
    /// The value on input edge `source` (`node.port`) is unusable: wrong size, not finite...
    pub fn bad_input(source: &str, message: impl Into<String>) -> Self {
        Self { input: source.into(), ..Self::invalid_input(message) }
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// An I/O error on `path`, keeping the OS reason.
    pub fn io(path: impl AsRef<std::path::Path>, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Io, format!("{}: {err}", path.as_ref().display()))
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        Self { message: RString::from(format!("{ctx}: {}", self.message)), ..self }
    }
}

pub type StageResult<T> = Result<T, StageError>;
