//! What the gateway reads from an upstream, parsed without I/O: a response head and how its
//! body is framed ([`parse_response_head`]), and a chunked body ([`ChunkedDecoder`]); and,
//! from a client, the coding its `Accept-Encoding` prefers ([`preferred_coding`]).
//!
//! Both take bytes from the front of a buffer however the reads happened to split them, and
//! either consume what they recognised or say they need more. Framing follows RFC 9112 §6:
//! whenever it is in doubt where a response ends, the head says the connection must not be
//! reused, so one response's bytes are never read as the next one's. The host's `upstream::h1`
//! is the I/O side. This crate depends on nothing of the gateway's, so its fuzz targets
//! build in seconds.

#![forbid(unsafe_code)]

mod chunked;
mod coding;
mod head;

pub use chunked::{Chunk, ChunkedDecoder, MAX_CHUNK_EXT, MAX_TRAILERS};
pub use coding::{Coding, preferred_coding};
pub use head::{
    Asked, Framing, MAX_HEAD, MAX_HEADERS, Parsed, ResponseHead, ends_head, parse_response_head,
};

/// Why bytes from an upstream are not a valid response. The text names the rule broken;
/// it is for logs, never for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Invalid {}
