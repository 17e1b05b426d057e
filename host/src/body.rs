//! The body type that flows through the gateway: either a streamed hyper body or bytes held
//! in memory. `Either` keeps the common path free of boxing.

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

pub type Body = Either<Incoming, Full<Bytes>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    Either::Right(Full::new(Bytes::new()))
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
