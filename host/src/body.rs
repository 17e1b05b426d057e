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
    /// The start of a body already read, then the rest of it as it streams: what a body
    /// found too large to buffer goes on as (`collect_up_to`).
    Prefixed(Box<(Option<Bytes>, Body)>),
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
            Body::Prefixed(b) => {
                let (prefix, rest) = &mut **b;
                match prefix.take() {
                    Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                    None => Pin::new(rest).poll_frame(cx),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Client(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Body::Compressed(_) => false,
            Body::Prefixed(b) => b.0.is_none() && b.1.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Client(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Compressed(b) => b.size_hint(),
            Body::Prefixed(b) => {
                let (prefix, rest) = &**b;
                let read = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
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

/// A body read up to a bound: whole, or, when it is larger, as a body that streams on.
#[derive(Debug)]
pub enum UpTo {
    Whole(Bytes),
    Larger(Body),
}

/// Reads a body when it is at most `limit` bytes. A larger one, known by its size hint (a
/// `content-length`) or once more than `limit` bytes of it have arrived, is handed back
/// unread past that point: what arrived first, then the rest as it streams.
pub async fn collect_up_to(mut body: Body, limit: usize) -> Result<UpTo, BodyError> {
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Ok(UpTo::Larger(body));
    }
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            // Trailers: a buffered body keeps none, as `collect` keeps none.
            continue;
        };
        read.extend_from_slice(&data);
        if read.len() > limit {
            let prefix = Some(read.freeze());
            return Ok(UpTo::Larger(Body::Prefixed(Box::new((prefix, body)))));
        }
    }
    Ok(UpTo::Whole(read.freeze()))
}
