//! `log`: plugin lines in the host log, tagged with the plugin name.

use super::bindings::torii::plugin::log::{Host, Level};
use crate::config::Capability;
use crate::plugin::PluginState;

/// Longest line kept; a plugin cannot flood the log with one call.
const MAX_LINE: usize = 4096;

impl Host for PluginState {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.check(Capability::Log)?;
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = self.host.name.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
