//! A response head: status, fields, and what its framing means for the body and for the
//! connection after it.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::Invalid;
use crate::chunked::ChunkedDecoder;

/// Most bytes a response head (status line and fields) may take. The I/O side refuses a
/// buffer this long that still holds no whole head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;

/// How a response's body is delimited.
#[derive(Debug)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (RFC 9112 §7.1), decoded by the decoder it carries.
    Chunked(ChunkedDecoder),
    /// Until the upstream closes the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `None`: the response has no body (a 204, a 304, or the answer to a HEAD).
    pub framing: Option<Framing>,
    /// Whether the connection can carry another request once this response's body is read.
    pub reuse: bool,
}

/// What one head at the front of a buffer was.
#[derive(Debug)]
pub enum Parsed {
    /// An interim (1xx) response, consumed; the final one follows.
    Interim(StatusCode),
    Final(ResponseHead),
}

/// What the first pass over a head finds about its framing.
#[derive(Default)]
struct Facts {
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
}

/// Whether `bytes` hold the blank line that ends a head (CRLF, or a bare LF, which httparse
/// also accepts). Lets the I/O side parse a head that arrives in pieces only once a piece
/// ends it, so a trickled head costs linear time.
pub fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// What the request was, as far as its response's framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Any request but these two.
    Plain,
    /// A HEAD: the response has no body whatever its fields say.
    Head,
    /// A request to switch protocols (`Upgrade: websocket`): a 101 is its final answer, with
    /// no body, and the connection belongs to the new protocol from the next byte.
    Upgrade,
}

/// Parses the head at the front of `buf` and removes it from `buf`; `Ok(None)` (and `buf`
/// untouched) if it is not all there yet.
pub fn parse_response_head(buf: &mut BytesMut, asked: Asked) -> Result<Option<Parsed>, Invalid> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many headers")),
        Err(_) => return Err(Invalid("malformed head")),
    };
    let code = resp.code.unwrap_or_default();
    let http10 = resp.version == Some(0);
    let status = StatusCode::from_u16(code).map_err(|_| Invalid("bad status code"))?;
    let switched = code == 101 && asked == Asked::Upgrade;
    if status.is_informational() && !switched {
        if code == 101 {
            return Err(Invalid("protocol switch not asked for"));
        }
        buf.advance(len);
        return Ok(Some(Parsed::Interim(status)));
    }

    // First pass, over the borrowed head: framing facts, and where each field sits.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = resp.headers.len();
    let mut facts = Facts::default();
    for (h, span) in resp.headers.iter().zip(spans.iter_mut()) {
        let name = h.name.as_bytes();
        let value = h.value;
        let ns = name.as_ptr() as usize - base;
        let vs = value.as_ptr() as usize - base;
        *span = (
            ns as u32,
            (ns + name.len()) as u32,
            vs as u32,
            (vs + value.len()) as u32,
        );
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            if facts.content_length.is_some_and(|prev| prev != n) {
                return Err(Invalid("conflicting content-length"));
            }
            facts.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            facts.transfer_encoding = true;
            // Only the last coding says whether the body is chunked.
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            facts.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                facts.close |= token.eq_ignore_ascii_case(b"close");
                facts.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| Invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| Invalid("bad header value"))?;
        headers.append(name, value);
    }

    let mut reuse = !http10 && !facts.close || http10 && facts.keep_alive;
    let bodiless_status = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if switched {
        // What follows is the new protocol's, never a body, and never another response.
        reuse = false;
        None
    } else if asked == Asked::Head || bodiless_status {
        // A 204 or 304 that announces a body may send one, and its bytes would be read as the
        // next response: such a sender is not trusted with another request.
        if bodiless_status
            && (facts.content_length.is_some_and(|n| n > 0) || facts.transfer_encoding)
        {
            reuse = false;
        }
        None
    } else if facts.transfer_encoding {
        if http10 {
            return Err(Invalid("transfer-encoding in an HTTP/1.0 response"));
        }
        if facts.content_length.is_some() {
            // RFC 9112 §6.3: the encoding wins, and the length must not be passed on. A sender
            // that sends both is not trusted with another request.
            headers.remove(header::CONTENT_LENGTH);
            reuse = false;
        }
        if facts.chunked {
            Some(Framing::Chunked(ChunkedDecoder::default()))
        } else {
            reuse = false;
            Some(Framing::Close)
        }
    } else if let Some(n) = facts.content_length {
        Some(Framing::Length(n))
    } else {
        reuse = false;
        Some(Framing::Close)
    };
    Ok(Some(Parsed::Final(ResponseHead {
        status,
        headers,
        framing,
        reuse,
    })))
}

/// A `Content-Length` value: digits only, possibly a list of one repeated value.
fn parse_content_length(value: &[u8]) -> Result<u64, Invalid> {
    let mut found = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Invalid("bad content-length"));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|prev| prev != n) {
            return Err(Invalid("conflicting content-length"));
        }
        found = Some(n);
    }
    found.ok_or(Invalid("bad content-length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], head_request: bool) -> Result<Option<Parsed>, Invalid> {
        let asked = if head_request {
            Asked::Head
        } else {
            Asked::Plain
        };
        parse_response_head(&mut BytesMut::from(raw), asked)
    }

    fn final_head(raw: &[u8]) -> ResponseHead {
        match head(raw, false) {
            Ok(Some(Parsed::Final(h))) => h,
            Ok(Some(Parsed::Interim(_))) => panic!("interim"),
            Ok(None) => panic!("partial"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n");
        assert!(matches!(h.framing, Some(Framing::Length(5))) && h.reuse);
        assert_eq!(h.headers["x-a"], "b");

        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\n");
        assert!(matches!(h.framing, Some(Framing::Length(5))) && !h.reuse);

        let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(matches!(h.framing, Some(Framing::Chunked(_))) && h.reuse);

        // Both: chunked wins, the length is dropped, and the connection is not trusted again.
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(matches!(h.framing, Some(Framing::Chunked(_))) && !h.reuse);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));

        let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert!(matches!(h.framing, Some(Framing::Close)) && !h.reuse);
        let h = final_head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(h.framing, Some(Framing::Close)) && !h.reuse);
        let h = final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(matches!(h.framing, Some(Framing::Length(1))) && !h.reuse);
        match head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true) {
            Ok(Some(Parsed::Final(h))) => assert!(h.framing.is_none() && h.reuse),
            _ => panic!("a response to HEAD has no body"),
        }
        assert!(matches!(
            head(b"HTTP/1.1 103 Early Hints\r\n\r\n", false),
            Ok(Some(Parsed::Interim(StatusCode::EARLY_HINTS)))
        ));
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        ));
    }

    #[test]
    fn a_204_or_304_announcing_a_body_closes_its_connection() {
        for raw in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let h = final_head(raw);
            assert!(
                h.framing.is_none() && !h.reuse,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        for raw in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
        ] {
            let h = final_head(raw);
            assert!(
                h.framing.is_none() && h.reuse,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn bad_heads_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX\x01: a\r\n\r\n",
            b"SMTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(
                head(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<u8> = [
            b"HTTP/1.1 200 OK\r\n".to_vec(),
            b"x: y\r\n".repeat(MAX_HEADERS + 1),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(head(&many, false).unwrap_err(), Invalid("too many headers"));
    }

    #[test]
    fn a_101_ends_the_response_only_when_an_upgrade_was_asked_for() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        let mut buf = BytesMut::from(&raw[..]);
        match parse_response_head(&mut buf, Asked::Upgrade) {
            Ok(Some(Parsed::Final(h))) => {
                assert_eq!(h.status, StatusCode::SWITCHING_PROTOCOLS);
                assert!(h.framing.is_none() && !h.reuse);
                assert_eq!(h.headers["upgrade"], "websocket");
            }
            other => panic!("{other:?}"),
        }
        // The new protocol's first bytes are left where they were.
        assert_eq!(&buf[..], b"\x81\x02hi");
        // A refusal is an ordinary response with its body.
        let mut buf = BytesMut::from(&b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"[..]);
        match parse_response_head(&mut buf, Asked::Upgrade) {
            Ok(Some(Parsed::Final(h))) => assert!(matches!(h.framing, Some(Framing::Length(2)))),
            other => panic!("{other:?}"),
        }
        // Interim responses before the switch are skipped as usual.
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
        assert!(matches!(
            parse_response_head(&mut buf, Asked::Upgrade),
            Ok(Some(Parsed::Interim(StatusCode::CONTINUE)))
        ));
    }

    #[test]
    fn the_end_of_a_head_is_found_across_pieces() {
        assert!(ends_head(b"Length: 1\r\n\r\n"));
        assert!(ends_head(b"\n\r\n"));
        assert!(ends_head(b"x\n\nab"));
        assert!(!ends_head(b"Length: 1\r\n\r"));
        assert!(!ends_head(b"a\r\nb\r\n"));
        assert!(!ends_head(b""));
    }
}
