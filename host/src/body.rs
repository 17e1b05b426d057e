//! The body type that flows through the gateway: the client's request body as hyper's server
//! streams it, an upstream's response body as `proxy` reads it, or bytes held in memory. An
//! enum keeps the common path free of boxing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::proxy::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum Body {
    /// A client's request body.
    Incoming(Incoming),
    /// An upstream's response body.
    Upstream(UpstreamBody),
    /// Bytes in memory, sent as one frame (`None` once sent, or when there are none).
    Full(Option<Bytes>),
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Some(bytes.into()))
}

pub fn empty() -> Body {
    Body::Full(None)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Incoming(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Incoming(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Why a body could not be read into memory.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the body failed: {0}")]
    Io(String),
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn collect(body: Body, limit: usize) -> Result<Bytes, CollectError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(CollectError::TooLarge(limit)),
        Err(e) => Err(CollectError::Io(e.to_string())),
    }
}
