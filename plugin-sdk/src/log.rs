//! Log lines that land in the gateway's log, with the plugin and the route named.
//!
//! ```
//! use wasmgate_sdk::log::{self, Level};
//! log::info("cache warmed");
//! if log::enabled(Level::Debug) {
//!     log::debug(&format!("expensive: {:?}", vec![1, 2, 3]));
//! }
//! ```
//!
//! A plugin that never calls into this module does not import the host's `log` interface.
//! Natively, lines go to the mock host ([`testing::logs`](crate::testing::logs)) and to
//! stderr (which `cargo test` shows for failing tests).

use std::fmt;

/// How severe a log line is, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal events.
    Info,
    /// Something odd that the plugin handled.
    Warn,
    /// Something that failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Whether a line at this level would be kept, so a plugin can skip building it.
pub fn enabled(level: Level) -> bool {
    imp::enabled(level)
}

/// Logs a line at `level`. The host cuts it at
/// [`rules::log::MAX_LINE_BYTES`](crate::rules::log::MAX_LINE_BYTES).
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Logs a line at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Logs a line at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs a line at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs a line at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs a line at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::__private::bindings::wasmgate::plugin::log as wit;

    fn to_wit(level: Level) -> wit::Level {
        match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }

    pub(super) fn enabled(level: Level) -> bool {
        wit::enabled(to_wit(level))
    }

    pub(super) fn log(level: Level, message: &str) {
        wit::log(to_wit(level), message)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use crate::testing::host;

    pub(super) fn enabled(level: Level) -> bool {
        host::log_enabled(level)
    }

    pub(super) fn log(level: Level, message: &str) {
        host::log(level, message)
    }
}
