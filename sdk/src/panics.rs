//! Quiet panics inside stages. The SDK catches every panic of a stage and returns it as an
//! error; this hook keeps the standard one from also printing a raw `thread panicked at`
//! line (one per sample, in parallel) and records where the panic happened, so the error
//! carries the message and the location instead.
//!
//! A plugin library links its own copy of the standard library, so the hook only ever sees
//! that library's panics. In a test binary (the harness) it is shared with the tests: panics
//! outside a stage call go to the previous hook, so failing assertions print as usual.

use std::{
    cell::{Cell, RefCell},
    sync::Once,
};

thread_local! {
    /// Stage calls in progress on this thread (calls may nest: a batch calls per sample).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic inside a stage call on this thread happened (`file:line:column`),
    /// and its stack backtrace when `RUST_BACKTRACE` asks for one.
    static LOCATION: RefCell<Option<Caught>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// What the hook records of a panic inside a stage call.
pub(crate) struct Caught {
    pub(crate) location: Option<String>,
    pub(crate) backtrace: Option<String>,
}

/// `RUST_BACKTRACE` set to anything but `0`: the error then carries the panic's backtrace
/// (once, in the error of the sample that failed), instead of the standard hook printing one
/// per sample.
fn wants_backtrace() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
}

/// Installs the hook once per library; panics outside stage calls still reach the previous
/// hook.
fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let backtrace = wants_backtrace().then(|| std::backtrace::Backtrace::force_capture().to_string());
                LOCATION.with(|loc| *loc.borrow_mut() = Some(Caught { location, backtrace }));
            } else {
                previous(info);
            }
        }));
    });
}

/// Marks a stage call on this thread for as long as it lives.
pub(crate) struct QuietPanics;

impl QuietPanics {
    pub(crate) fn enter() -> Self {
        install();
        DEPTH.with(|d| d.set(d.get() + 1));
        LOCATION.with(|loc| loc.borrow_mut().take());
        QuietPanics
    }

    /// What the hook recorded of the panic just caught on this thread, if it saw it.
    pub(crate) fn caught(&self) -> Option<Caught> {
        LOCATION.with(|loc| loc.borrow_mut().take())
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}
