//! A plugin's stdout and stderr: captured per call, bounded, and written to
//! the host's log under the connector's name when the call ends (also when
//! it faults, so a panic message reaches the operator).
//!
//! Writes never fail: past the cap, bytes are counted and dropped, so a
//! chatty plugin is not turned into a trapping one.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per stream per call.
pub const MAX_BYTES_PER_CALL: usize = 64 * 1024;
/// Lines written to the log per stream per call.
pub const MAX_LINES_PER_CALL: usize = 200;

/// One captured stream of one call. Clones share the buffer.
#[derive(Clone, Default)]
pub struct Captured {
    inner: Arc<Mutex<Buffer>>,
}

#[derive(Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

impl Captured {
    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_BYTES_PER_CALL.saturating_sub(buffer.kept.len());
        let take = room.min(bytes.len());
        buffer.kept.extend_from_slice(&bytes[..take]);
        buffer.dropped += bytes.len() - take;
    }

    /// Write what was captured to the log, one event per line, bounded, and
    /// empty the buffer.
    pub fn drain(&self, connector: &str, plugin: &str, stream: &'static str) {
        let Buffer { kept, dropped } =
            std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()));
        let text = String::from_utf8_lossy(&kept);
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        for line in lines.by_ref().take(MAX_LINES_PER_CALL) {
            let line: String = match line.char_indices().nth(super::log::MAX_LINE_CHARS) {
                Some((cut, _)) => format!("{}... [cut]", &line[..cut]),
                None => line.to_owned(),
            };
            let line = super::log::escape(&line);
            match stream {
                "stderr" => tracing::warn!(connector, plugin, stream, "{line}"),
                _ => tracing::info!(connector, plugin, stream, "{line}"),
            }
        }
        let more_lines = lines.count();
        if dropped > 0 || more_lines > 0 {
            tracing::warn!(
                connector,
                plugin,
                stream,
                dropped_bytes = dropped,
                dropped_lines = more_lines,
                "plugin output beyond {MAX_BYTES_PER_CALL} bytes or {MAX_LINES_PER_CALL} lines per call was dropped"
            );
        }
    }

    /// What was captured so far (for tests).
    pub fn contents(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kept
            .clone()
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_BYTES_PER_CALL)
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_and_never_fails() {
        let mut captured = Captured::default();
        for _ in 0..100 {
            captured.write(Bytes::from(vec![b'x'; 4096])).unwrap();
        }
        assert_eq!(captured.contents().len(), MAX_BYTES_PER_CALL);
        assert_eq!(
            captured.inner.lock().unwrap().dropped,
            100 * 4096 - MAX_BYTES_PER_CALL
        );
        captured.drain("c", "p", "stdout");
        assert!(captured.contents().is_empty());
    }
}
