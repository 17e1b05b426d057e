//! HTTP/2 frames written and read by hand, for tests that do what no well-behaved client does
//! (reset streams as fast as they open them, open more than allowed) and read exactly what the
//! gateway answers (its SETTINGS, RST_STREAM and GOAWAY frames).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

pub const NO_ERROR: u32 = 0x0;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A SETTINGS frame's `(id, value)` pairs.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS block for `GET path` on `authority`, in HPACK without Huffman or indexing.
pub fn get_headers(scheme_https: bool, authority: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, if scheme_https { 0x87 } else { 0x86 }];
    literal(&mut b, 4, path); // :path
    literal(&mut b, 1, authority); // :authority
    b
}

/// A header `name: value` (a literal name) appended to a block.
pub fn header(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    string(block, name);
    string(block, value);
}

fn literal(b: &mut Vec<u8>, name_index: u8, value: &str) {
    b.push(name_index); // 0000 + index: literal without indexing, indexed name
    string(b, value);
}

fn string(b: &mut Vec<u8>, s: &str) {
    // A 7-bit prefixed length, no Huffman.
    let mut n = s.len();
    if n < 127 {
        b.push(n as u8);
    } else {
        b.push(127);
        n -= 127;
        while n >= 128 {
            b.push((n % 128 + 128) as u8);
            n /= 128;
        }
        b.push(n as u8);
    }
    b.extend_from_slice(s.as_bytes());
}

/// One HTTP/2 connection, spoken by hand.
pub struct Conn<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Sends the preface and empty SETTINGS; returns the connection and the server's SETTINGS.
    pub async fn open(mut io: S) -> (Self, Frame) {
        io.write_all(PREFACE).await.unwrap();
        io.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let mut c = Conn {
            io,
            buf: Vec::new(),
        };
        let settings = c.next().await.expect("the server's SETTINGS");
        assert_eq!(
            settings.kind, SETTINGS,
            "the server speaks first with SETTINGS"
        );
        c.send(&frame(SETTINGS, ACK, 0, &[])).await;
        (c, settings)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// Sends, ignoring a connection the server already closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok()
    }

    /// The next frame, or `None` when the server closed the connection (or 10 s passed).
    pub async fn next(&mut self) -> Option<Frame> {
        self.next_within(Duration::from_secs(10)).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until one of `kind` (returned), skipping the rest; `None` if the connection
    /// ended first.
    pub async fn until(&mut self, kind: u8) -> Option<Frame> {
        while let Some(f) = self.next().await {
            if f.kind == kind {
                return Some(f);
            }
        }
        None
    }
}
