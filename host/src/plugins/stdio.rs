//! A plugin's stdout and stderr, captured line by line into the host's log with the plugin and
//! the route named, within the plugin's log budget (`capabilities::log::Budget`). Lines are
//! cut at a bounded length; nothing is ever buffered without bound.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::state::StageContext;
use wasmgate_rules::log::{MAX_LINE_BYTES, cut_line};

#[derive(Clone)]
pub struct LogStream {
    ctx: Arc<StageContext>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    pub fn new(ctx: Arc<StageContext>, stream: &'static str) -> Self {
        Self {
            ctx,
            stream,
            pending: Arc::default(),
        }
    }

    fn emit(&self, line: &[u8]) {
        // The same budget as the plugin's `log` lines: printing is no way around it.
        if !tracing::enabled!(target: "plugin", tracing::Level::INFO) || !self.ctx.log.admit() {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = cut_line(text.trim_end_matches('\r'));
        tracing::info!(target: "plugin", plugin = %self.ctx.plugin, route = %self.ctx.route, stream = self.stream, "{text}");
    }

    fn push(&self, mut bytes: &[u8]) {
        let mut pending = self.pending.lock();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if pending.is_empty() {
                self.emit(&bytes[..nl]);
            } else {
                pending.extend_from_slice(&bytes[..nl]);
                self.emit(&pending);
                pending.clear();
            }
            bytes = &bytes[nl + 1..];
        }
        let room = MAX_LINE_BYTES.saturating_sub(pending.len());
        pending.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if pending.len() >= MAX_LINE_BYTES {
            self.emit(&pending);
            pending.clear();
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LogStream {
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
