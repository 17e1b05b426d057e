//! Implements `wasmgate:plugin/log`: plugin lines go into the host's tracing, with the plugin
//! and the route named, cut to a bounded length (`wasmgate_rules::log`).

use wasmtime::Result;

use crate::plugins::bindings::wasmgate::plugin::log::{Host, Level};
use crate::plugins::state::HostState;

impl Host for HostState {
    fn enabled(&mut self, level: Level) -> Result<bool> {
        Ok(match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        })
    }

    fn log(&mut self, level: Level, message: String) -> Result<()> {
        let message = wasmgate_rules::log::cut_line(&message);
        let (plugin, route) = (&*self.ctx.plugin, &*self.ctx.route);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, route, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, route, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, route, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, route, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, route, "{message}"),
        }
        Ok(())
    }
}
