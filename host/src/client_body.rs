//! The client's request body as the gateway reads it: hyper's stream, cut off when the client
//! sends no byte of it for `server.body_read_timeout_ms`, and a typed reason when reading it
//! fails. It depends on nothing of the gateway's but `silence`, so both the proxy (which streams it
//! upstream) and `body` (which buffers it for plugins) use it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::silence::Silence;

/// Why the client's request body could not be read to its end. Always the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client sent no byte of its request body for {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the client closed the connection before its request body ended: {0}")]
    Aborted(#[source] hyper::Error),
    #[error("the client's request body is malformed: {0}")]
    Malformed(#[source] hyper::Error),
}

impl ClientBodyError {
    /// Sorts hyper's body error: an early end of the stream (or a reset) is the client giving
    /// up; anything else is bytes that break the framing (a bad chunk size, say).
    fn from_hyper(e: hyper::Error) -> Self {
        use std::io::ErrorKind::*;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
                        Self::Aborted(e)
                    }
                    _ => Self::Malformed(e),
                };
            }
            source = s.source();
        }
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            Self::Aborted(e)
        } else {
            Self::Malformed(e)
        }
    }
}

/// A client's request body. Each wait for its next bytes may last at most `silence`.
pub struct ClientBody {
    inner: Incoming,
    silence: Silence,
}

impl ClientBody {
    pub fn new(inner: Incoming, silence: Duration) -> Self {
        Self {
            inner,
            silence: Silence::new(silence),
        }
    }
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody")
            .field("silence", &self.silence.limit())
            .finish()
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.silence.progress();
                Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::from_hyper)))
            }
            Poll::Pending => {
                ready!(this.silence.poll_expired(cx));
                Poll::Ready(Some(Err(ClientBodyError::TimedOut(this.silence.limit()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
