//! The `log` import: plugin log lines into the host's tracing, attributed to
//! the connector and plugin, bounded in count and length per call.

use crate::HostState;
use crate::bindings::hris::switchyard::connector::log::{Host, Level};

/// Lines one call may log; later lines are dropped (one notice is logged).
pub const MAX_LINES_PER_CALL: u32 = 1_000;
/// Longer lines are cut.
pub const MAX_LINE_CHARS: usize = 4_096;

/// Per-call log state.
pub struct LogState {
    connector: String,
    plugin: String,
    lines: u32,
}

impl LogState {
    /// State for one call of `connector` running `plugin`.
    pub fn new(connector: &str, plugin: &str) -> Self {
        LogState {
            connector: connector.to_owned(),
            plugin: plugin.to_owned(),
            lines: 0,
        }
    }
}

/// Contract 0.1.0's `log`: the same levels under the older package name.
impl crate::bindings::v0_1::hris::switchyard::connector::log::Host for HostState {
    async fn log(
        &mut self,
        level: crate::bindings::v0_1::hris::switchyard::connector::log::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        use crate::bindings::v0_1::hris::switchyard::connector::log::Level as V0_1;
        let level = match level {
            V0_1::Trace => Level::Trace,
            V0_1::Debug => Level::Debug,
            V0_1::Info => Level::Info,
            V0_1::Warn => Level::Warn,
            V0_1::Error => Level::Error,
        };
        Host::log(self, level, message).await
    }
}

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let state = &mut self.log;
        state.lines += 1;
        if state.lines > MAX_LINES_PER_CALL {
            if state.lines == MAX_LINES_PER_CALL + 1 {
                tracing::warn!(connector = %state.connector, plugin = %state.plugin, "log limit of {MAX_LINES_PER_CALL} lines per call reached; further lines dropped");
            }
            return Ok(());
        }
        let message: String = match message.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => format!("{}... [cut]", &message[..cut]),
            None => message,
        };
        let (connector, plugin) = (&state.connector, &state.plugin);
        match level {
            Level::Trace => tracing::trace!(connector, plugin, "{message}"),
            Level::Debug => tracing::debug!(connector, plugin, "{message}"),
            Level::Info => tracing::info!(connector, plugin, "{message}"),
            Level::Warn => tracing::warn!(connector, plugin, "{message}"),
            Level::Error => tracing::error!(connector, plugin, "{message}"),
        }
        Ok(())
    }
}
