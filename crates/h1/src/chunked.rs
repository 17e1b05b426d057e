//! A chunked body's decoder (RFC 9112 §7.1), fed whatever bytes have arrived.

use bytes::{Buf, Bytes, BytesMut};

use crate::Invalid;

/// Most bytes of chunk extensions on one chunk-size line.
pub const MAX_CHUNK_EXT: usize = 4 * 1024;
/// Most bytes of trailer fields in all.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// What the decoder took from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A piece of the body's data (a chunk, or as much of one as has arrived).
    Data(Bytes),
    /// The last chunk and the trailers are read: the body is complete.
    End,
}

/// Where the decoder is. Lines must end in CRLF.
#[derive(Debug, Clone, Copy)]
enum State {
    Size { value: u64, digits: u8 },
    Ext { value: u64, len: usize },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line: usize, total: usize },
    TrailerLf { line: usize, total: usize },
    End,
}

/// Decodes a chunked body. Chunk extensions are read and dropped; trailer fields are kept for
/// [`ChunkedDecoder::take_trailers`]. Both are bounded, so a hostile sender cannot make the
/// decoder wait forever on one line, nor hold more than [`MAX_TRAILERS`] bytes.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The trailer section's lines, each ending in CRLF (nothing when there are none, so a body
    /// without trailers allocates nothing).
    trailers: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            trailers: Vec::new(),
        }
    }
}

impl ChunkedDecoder {
    /// Takes what it can from the front of `buf`: a piece of data, the end, or `None` when it
    /// needs more bytes. Nothing past the end is consumed. After an error the decoder must not
    /// be used again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, Invalid> {
        loop {
            match self.state {
                State::End => return Ok(Some(Chunk::End)),
                State::Data(rest) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = rest.min(buf.len() as u64);
                    self.state = if n == rest {
                        State::DataCr
                    } else {
                        State::Data(rest - n)
                    };
                    return Ok(Some(Chunk::Data(buf.split_to(n as usize).freeze())));
                }
                _ => {
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    buf.advance(1);
                    let before = self.state;
                    self.state = step(self.state, b).map_err(Invalid)?;
                    match (before, self.state) {
                        (State::Trailer { .. }, State::Trailer { .. }) => self.trailers.push(b),
                        (State::TrailerLf { line, .. }, State::Trailer { .. }) if line > 0 => {
                            self.trailers.extend_from_slice(b"\r\n");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The trailer fields, once [`Chunk::End`] has been returned: `None` when there were none,
    /// or when they do not parse as header fields (they are then dropped; the body is whole).
    pub fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        if self.trailers.is_empty() {
            return None;
        }
        let mut raw = std::mem::take(&mut self.trailers);
        raw.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let httparse::Status::Complete((_, parsed)) =
            httparse::parse_headers(&raw, &mut fields).ok()?
        else {
            return None;
        };
        let mut map = http::HeaderMap::with_capacity(parsed.len());
        for f in parsed {
            let name = http::HeaderName::from_bytes(f.name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_bytes(f.value).ok()?;
            map.append(name, value);
        }
        Some(map)
    }
}

fn step(state: State, b: u8) -> Result<State, &'static str> {
    use State::*;
    Ok(match state {
        Size { value, digits } => match (b as char).to_digit(16) {
            Some(d) if digits < 15 => Size {
                value: value << 4 | u64::from(d),
                digits: digits + 1,
            },
            Some(_) => return Err("chunk size too large"),
            None if digits == 0 => return Err("bad chunk size"),
            None => match b {
                b';' | b' ' | b'\t' => Ext { value, len: 0 },
                b'\r' => SizeLf { value },
                _ => return Err("bad chunk size line"),
            },
        },
        Ext { value, len } => match b {
            b'\r' => SizeLf { value },
            b'\n' => return Err("bare LF in chunk size line"),
            _ if len >= MAX_CHUNK_EXT => return Err("chunk extensions too long"),
            _ => Ext {
                value,
                len: len + 1,
            },
        },
        SizeLf { value } => match (b, value) {
            (b'\n', 0) => Trailer { line: 0, total: 0 },
            (b'\n', n) => Data(n),
            _ => return Err("bad chunk size line"),
        },
        DataCr if b == b'\r' => DataLf,
        DataLf if b == b'\n' => Size {
            value: 0,
            digits: 0,
        },
        DataCr | DataLf => return Err("chunk data longer than its size"),
        Trailer { line, total } => match b {
            b'\r' => TrailerLf { line, total },
            b'\n' => return Err("bare LF in trailer"),
            _ if total >= MAX_TRAILERS => return Err("trailers too long"),
            _ => Trailer {
                line: line + 1,
                total: total + 1,
            },
        },
        TrailerLf { line, total } => match (b, line) {
            (b'\n', 0) => End,
            (b'\n', _) => Trailer { line: 0, total },
            _ => return Err("bad trailer line"),
        },
        Data(_) | End => unreachable!("handled by decode"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step_by: usize) -> Result<Vec<u8>, Invalid> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step_by) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf)? {
                    Some(Chunk::Data(d)) => out.extend_from_slice(&d),
                    Some(Chunk::End) => {
                        assert!(buf.is_empty(), "bytes left after the end: {buf:?}");
                        return Ok(out);
                    }
                    None => break,
                }
            }
        }
        Err(Invalid("incomplete"))
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_arrive() {
        let body = b"5\r\nhello\r\n1;name=\"v\"\r\n,\r\nA \r\n world!!!!\r\n0\r\nx-t: 1\r\n\r\n";
        for step in 1..body.len() {
            assert_eq!(
                decode_all(body, step).unwrap(),
                b"hello, world!!!!",
                "step {step}"
            );
        }
        assert_eq!(decode_all(b"0\r\n\r\n", 1).unwrap(), b"");
    }

    #[test]
    fn trailers_are_kept_however_the_bytes_arrive() {
        let body = b"2\r\nok\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: fine\r\n\r\n";
        for step in 1..body.len() {
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::new();
            let mut ended = false;
            for piece in body.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(c) = dec.decode(&mut buf).unwrap() {
                    if c == Chunk::End {
                        ended = true;
                        break;
                    }
                }
            }
            assert!(ended, "step {step}");
            let t = dec.take_trailers().expect("trailers");
            assert_eq!(t["grpc-status"], "0");
            assert_eq!(t["grpc-message"], "fine");
            assert_eq!(t.len(), 2);
        }
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"0\r\n\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::End)));
        assert_eq!(dec.take_trailers(), None);
        assert_eq!(dec.trailers.capacity(), 0, "no trailers, no allocation");
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"0\r\nno colon here\r\n\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::End)));
        assert_eq!(dec.take_trailers(), None);
    }

    #[test]
    fn bytes_past_the_end_are_left_alone() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        let mut dec = ChunkedDecoder::default();
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Chunk::Data(Bytes::from("ok"))))
        );
        assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::End)));
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"zz\r\n",
            b"5\r\nhello!\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"1234567890123456\r\n",
            b"-1\r\n",
            b"0\r\nx-t: 1\n\r\n",
        ] {
            assert!(
                decode_all(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_EXT + 1], b"\r\n"].concat();
        assert_eq!(
            decode_all(&long_ext, 64),
            Err(Invalid("chunk extensions too long"))
        );
    }
}
