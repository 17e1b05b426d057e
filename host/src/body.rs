//! The body type that flows through the gateway: the client's request body, an upstream's
//! response body as `upstream` reads it, or bytes held in memory. An enum keeps the common path
//! free of boxing. This module sits above both `client_body` and `upstream`; neither imports it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};

use crate::client_body::{ClientBody, ClientBodyError};
use crate::fault::Fault;
use crate::upstream::{UpstreamBody, UpstreamError};

#[derive(Debug)]
pub enum Body {
    /// A client's request body.
    Client(ClientBody),
    /// An upstream's response body.
    Upstream(UpstreamBody),
    /// Bytes in memory, sent as one frame (`None` once sent, or when there are none).
    Full(Option<Bytes>),
    /// Another body, compressed as it streams (`compress = true` on the route).
    Compressed(Box<crate::compress::Compressed>),
}

/// Why a body stopped before its end, and so whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Client(#[from] ClientBodyError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("compression failed: {0}")]
    Compression(std::io::Error),
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Some(bytes.into()))
}

pub fn empty() -> Body {
    Body::Full(None)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Client(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Body::Compressed(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Client(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Body::Compressed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Client(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Compressed(b) => b.size_hint(),
        }
    }
}

/// Why a body could not be read into memory.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the whole body did not arrive within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl BodyError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::Client(_) => Fault::Client,
            Self::Upstream(_) => Fault::Upstream,
            Self::Compression(_) => Fault::Gateway,
        }
    }
}

/// Reads a whole body, refusing more than `limit` bytes, or (when `within` is set) taking
/// longer than that in all.
pub async fn collect(
    body: Body,
    limit: usize,
    within: Option<Duration>,
) -> Result<Bytes, CollectError> {
    let read = Limited::new(body, limit).collect();
    let collected = match within {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .map_err(|_| CollectError::TimedOut(t))?,
        None => read.await,
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<BodyError>() {
            Ok(e) => Err(CollectError::Body(*e)),
            Err(_) => Err(CollectError::TooLarge(limit)),
        },
    }
}
