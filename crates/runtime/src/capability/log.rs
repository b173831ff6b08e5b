//! The `log` import: plugin log lines into the host's tracing, attributed to
//! the connector and plugin, bounded in count and length per call, with
//! control characters escaped ([`escape`]) so that a line cannot forge
//! another or drive the operator's terminal.

use std::borrow::Cow;

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

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.host_call()?;
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
        let message = escape(&message);
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

/// `text` on one line and inert in a terminal: CR, LF and tab as `\r`, `\n`,
/// `\t`; every other control character (NUL, ESC that starts terminal
/// escape sequences, DEL, the C1 controls such as CSI) and the Unicode line
/// and paragraph separators and bidirectional overrides as `\u{..}`.
/// Borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_and_escape_sequences_are_escaped() {
        for (text, escaped) in [
            ("plain text, unchanged", "plain text, unchanged"),
            (
                "ok\n2026-01-01T00:00:00Z  INFO forged",
                "ok\\n2026-01-01T00:00:00Z  INFO forged",
            ),
            ("a\r\nb", "a\\r\\nb"),
            (
                "\u{1b}[2J\u{1b}]0;title\u{7}",
                "\\u{1b}[2J\\u{1b}]0;title\\u{7}",
            ),
            ("csi \u{9b}31m", "csi \\u{9b}31m"),
            ("nul \0 del \u{7f}", "nul \\u{0} del \\u{7f}"),
            (
                "line\u{2028}sep \u{202e}rtl",
                "line\\u{2028}sep \\u{202e}rtl",
            ),
            ("tab\there", "tab\\there"),
        ] {
            assert_eq!(escape(text), escaped, "{text:?}");
        }
    }
}
