//! The HTTP/1.1 client end of an upstream connection.
//!
//! A request is written and its response read by the task that handles the client's request,
//! and the response body is read from the socket by whoever polls it (hyper's server, when it
//! writes the body to the client): no task per connection, no channel between them. Parsing is
//! httparse's; framing follows RFC 9112 §6, and any doubt about where a response ends closes
//! the connection rather than risk reading one response's bytes as the next one's.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pool::WorkerPool;
use crate::body::{self, Body};

/// Most bytes a response head (status line and headers) may take.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// Most bytes of chunk extensions on one chunk-size line, and of trailer fields in all.
const MAX_CHUNK_EXT: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// How much room a read asks for: small for heads and short bodies, more for long bodies.
const READ_SMALL: usize = 16 * 1024;
const READ_LARGE: usize = 64 * 1024;
/// Request bodies up to this size are written in the same `write` as the head.
const COALESCE_BODY: usize = 16 * 1024;

/// Why a request got no (complete) response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection closed before a single byte of the response: on a reused connection,
    /// the upstream most likely closed it while it sat idle.
    #[error("the connection closed before the response started")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("the response body ended early")]
    Truncated,
    #[error("no byte of the response body came for {} ms", .0.as_millis())]
    Stalled(Duration),
    #[error("reading the client's request body failed: {0}")]
    RequestBody(String),
}

/// An open connection to an upstream target, with the bytes read from it but not yet used.
pub struct Conn {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

/// A request body as it will be written: known bytes (kept for a retry on another
/// connection) or a stream that can be sent once.
pub enum Outgoing {
    Bytes(Bytes),
    Stream(Body),
}

impl Outgoing {
    pub fn new(body: Body) -> Self {
        match body {
            Body::Full(b) => Self::Bytes(b.unwrap_or_default()),
            b if b.is_end_stream() => Self::Bytes(Bytes::new()),
            b => Self::Stream(b),
        }
    }

    /// Whether the same request can be sent again after a failed attempt.
    pub fn replayable(&self) -> bool {
        matches!(self, Self::Bytes(_))
    }
}

/// How a response's body is delimited.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes the connection.
    Close,
}

/// A response head, and what the connection is good for afterwards.
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    framing: Option<Framing>,
    /// Whether the connection can carry another request once this response's body is read.
    reuse: bool,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            rbuf: BytesMut::with_capacity(READ_SMALL),
            wbuf: Vec::with_capacity(512),
        }
    }

    /// Whether an idle connection is still fit to send on: nothing arrived on it since its last
    /// response (an upstream that closed it sends EOF, which counts). Reads only when the
    /// runtime saw it readable, so a healthy idle connection costs no system call.
    pub fn still_idle(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the request and reads the response head. A streamed request body is written while
    /// the response is awaited, so an upstream that answers early (and refuses the rest) is
    /// heard; the connection is then not reused.
    pub async fn round_trip(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &mut Outgoing,
    ) -> Result<Head, Error> {
        let head_request = method == Method::HEAD;
        match body {
            Outgoing::Bytes(bytes) => {
                encode_head(
                    &mut self.wbuf,
                    method,
                    target,
                    headers,
                    Some(bytes.len() as u64),
                );
                let sent = if bytes.len() <= COALESCE_BODY {
                    self.wbuf.extend_from_slice(bytes);
                    self.io.write_all(&self.wbuf).await
                } else {
                    match self.io.write_all(&self.wbuf).await {
                        Ok(()) => self.io.write_all(bytes).await,
                        Err(e) => Err(e),
                    }
                };
                match sent {
                    Ok(()) => read_head(&mut self.io, &mut self.rbuf, head_request).await,
                    // The upstream may have answered and closed: read what it said.
                    Err(e) => match read_head(&mut self.io, &mut self.rbuf, head_request).await {
                        Ok(head) => Ok(head),
                        Err(Error::Closed) if is_reset(&e) => Err(Error::Closed),
                        Err(_) => Err(Error::Io(e)),
                    },
                }
            }
            Outgoing::Stream(stream) => {
                let length = stream.size_hint().exact();
                encode_head(&mut self.wbuf, method, target, headers, length);
                let (mut rd, mut wr) = self.io.split();
                let wbuf = &mut self.wbuf;
                let write = async {
                    wr.write_all(wbuf).await?;
                    write_stream(&mut wr, stream, length.is_none(), wbuf).await
                };
                let read = read_head(&mut rd, &mut self.rbuf, head_request);
                tokio::pin!(write, read);
                let mut written: Option<Result<(), Error>> = None;
                let head = loop {
                    tokio::select! {
                        biased;
                        head = &mut read => break head,
                        w = &mut write, if written.is_none() => {
                            if let Err(Error::RequestBody(e)) = w {
                                return Err(Error::RequestBody(e));
                            }
                            written = Some(w);
                        }
                    }
                };
                match (head, written) {
                    (Ok(head), Some(Ok(()))) => Ok(head),
                    // Answered before the body was all sent: the connection is mid-request.
                    (Ok(mut head), _) => {
                        head.reuse = false;
                        Ok(head)
                    }
                    (Err(_), Some(Err(e))) => Err(e),
                    (Err(e), _) => Err(e),
                }
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// Methods whose request means no body unless it says so.
fn bodiless_by_default(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    )
}

/// The request line and headers. The body's framing is the gateway's to decide: the
/// `Content-Length` or `Transfer-Encoding` in `headers` (the client's, or a plugin's) is
/// replaced by what the body really is.
fn encode_head(
    buf: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    length: Option<u64>,
) {
    buf.clear();
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match length {
        Some(0) if bodiless_by_default(method) && !headers.contains_key(header::CONTENT_LENGTH) => {
        }
        Some(n) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        None => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
}

/// Writes a streamed request body: as it comes when its length is known (hyper's server
/// checked it against the client's `Content-Length`), in chunks otherwise. `scratch` (the
/// connection's write buffer, free once the head is out) holds each chunk's framing.
async fn write_stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &mut Body,
    chunked: bool,
    scratch: &mut Vec<u8>,
) -> Result<(), Error> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::RequestBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            scratch.clear();
            write!(scratch, "{:x}\r\n", data.len())?;
            if data.len() <= COALESCE_BODY {
                scratch.extend_from_slice(&data);
                scratch.extend_from_slice(b"\r\n");
                w.write_all(scratch).await?;
            } else {
                w.write_all(scratch).await?;
                w.write_all(&data).await?;
                w.write_all(b"\r\n").await?;
            }
        } else {
            w.write_all(&data).await?;
        }
    }
    if chunked {
        w.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// Reads into the spare room of `buf`, making room first. `Ok(0)` is the end of the stream.
fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < want / 4 {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Reads and parses a response head, skipping interim (1xx) responses.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Head, Error> {
    let mut started = !buf.is_empty();
    // Bytes already seen not to end the head: a head that arrives in pieces is parsed again
    // only once a piece brings a blank line, so trickling it costs linear time, not quadratic.
    let mut scanned = 0usize;
    loop {
        if !buf.is_empty() {
            started = true;
            if scanned == 0 || ends_head(&buf[scanned.saturating_sub(3)..]) {
                match parse_head(buf, head_request)? {
                    Some(Parsed::Interim) => {
                        scanned = 0;
                        continue;
                    }
                    Some(Parsed::Final(head)) => return Ok(head),
                    None if buf.len() >= MAX_HEAD => {
                        return Err(Error::Invalid("head too large"));
                    }
                    None => {}
                }
            } else if buf.len() >= MAX_HEAD {
                return Err(Error::Invalid("head too large"));
            }
            scanned = buf.len();
        }
        let n = match std::future::poll_fn(|cx| poll_fill(io, buf, READ_SMALL, cx)).await {
            Ok(n) => n,
            // Reset before a byte of the response: as good as closed (it was, when idle).
            Err(e) if !started && is_reset(&e) => return Err(Error::Closed),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(if started {
                Error::Truncated
            } else {
                Error::Closed
            });
        }
    }
}

/// Whether `bytes` hold the blank line that ends a head (CRLF, or a bare LF, which httparse
/// also accepts).
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

enum Parsed {
    Interim,
    Final(Head),
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

/// Parses the head at the front of `buf` and removes it from `buf`; `None` if it is not all
/// there yet.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Parsed>, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
        Err(_) => return Err(Error::Invalid("malformed head")),
    };
    let code = resp.code.unwrap_or_default();
    let http10 = resp.version == Some(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("bad status code"))?;
    if status.is_informational() {
        if code == 101 {
            return Err(Error::Invalid("protocol switch not asked for"));
        }
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
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
                return Err(Error::Invalid("conflicting content-length"));
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
            .map_err(|_| Error::Invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| Error::Invalid("bad header value"))?;
        headers.append(name, value);
    }

    let mut reuse = !http10 && !facts.close || http10 && facts.keep_alive;
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            None
        } else if facts.transfer_encoding {
            if http10 {
                return Err(Error::Invalid("transfer-encoding in an HTTP/1.0 response"));
            }
            if facts.content_length.is_some() {
                // RFC 9112 §6.3: the encoding wins, and the length must not be passed on. A sender
                // that sends both is not trusted with another request.
                headers.remove(header::CONTENT_LENGTH);
                reuse = false;
            }
            if facts.chunked {
                Some(Framing::Chunked(Chunked::default()))
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
    Ok(Some(Parsed::Final(Head {
        status,
        headers,
        framing,
        reuse,
    })))
}

/// A `Content-Length` value: digits only, possibly a list of one repeated value.
fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    let mut found = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Error::Invalid("bad content-length"));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|prev| prev != n) {
            return Err(Error::Invalid("conflicting content-length"));
        }
        found = Some(n);
    }
    found.ok_or(Error::Invalid("bad content-length"))
}

/// Turns a response head into the response the gateway passes on; the connection goes with
/// the body, and back to `home` once the body has been read to its end. The body fails when
/// the upstream sends nothing for `read_timeout` while it is being read.
pub fn into_response(
    conn: Conn,
    head: Head,
    home: Arc<WorkerPool>,
    target: usize,
    read_timeout: Duration,
) -> Response<Body> {
    let body = match head.framing {
        None | Some(Framing::Length(0)) => {
            if head.reuse && conn.rbuf.is_empty() {
                home.put(target, conn);
            }
            body::empty()
        }
        Some(framing) => Body::Upstream(UpstreamBody {
            conn: Some(conn),
            framing,
            reuse: head.reuse,
            home: Some((home, target)),
            read_timeout,
            stall: None,
        }),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = head.headers;
    resp
}

/// A response body read straight from the upstream connection.
pub struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    reuse: bool,
    home: Option<(Arc<WorkerPool>, usize)>,
    read_timeout: Duration,
    /// The deadline for the next bytes: made at the body's first wait and moved on whenever
    /// bytes come, so a body that came in with its head costs no timer.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UpstreamBody {
    /// The body is complete: the connection goes back to its pool if it can carry another
    /// request (nothing arrived past the end of this response).
    fn finish(&mut self) {
        if let (Some(conn), Some((home, target))) = (self.conn.take(), self.home.take())
            && self.reuse
            && conn.rbuf.is_empty()
        {
            home.put(target, conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        self.home = None;
        Poll::Ready(Some(Err(e)))
    }

    /// A read is waiting: makes the deadline if there is none yet, and says whether it has
    /// passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = match &mut self.stall {
            Some(timer) => timer,
            None => {
                let deadline = tokio::time::Instant::now() + self.read_timeout;
                self.stall
                    .insert(Box::pin(tokio::time::sleep_until(deadline)))
            }
        };
        timer.as_mut().poll(cx).is_ready()
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("framing", &self.framing)
            .finish()
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match &mut this.framing {
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(rest) => {
                    if !conn.rbuf.is_empty() {
                        let n = (*rest).min(conn.rbuf.len() as u64);
                        *rest -= n;
                        let data = conn.rbuf.split_to(n as usize).freeze();
                        if *rest == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if *rest > READ_SMALL as u64 {
                        READ_LARGE
                    } else {
                        READ_SMALL
                    }
                }
                Framing::Chunked(dec) => match dec.decode(&mut conn.rbuf) {
                    Ok(Some(Chunk::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Chunk::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => READ_LARGE,
                    Err(e) => return this.fail(Error::Invalid(e)),
                },
                Framing::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    READ_LARGE
                }
            };
            let filled = match poll_fill(&mut conn.io, &mut conn.rbuf, want, cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending if this.stalled(cx) => {
                    tracing::warn!(
                        read_timeout_ms = this.read_timeout.as_millis() as u64,
                        "upstream response body stalled; its connection is closed"
                    );
                    return this.fail(Error::Stalled(this.read_timeout));
                }
                Poll::Pending => return Poll::Pending,
            };
            // Bytes came: the next wait gets a deadline of its own.
            if let Some(timer) = &mut this.stall {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.read_timeout);
            }
            match filled {
                Ok(0) if matches!(this.framing, Framing::Close) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) if self.conn.is_some() => SizeHint::with_exact(n),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

enum Chunk {
    Data(Bytes),
    End,
}

/// Where a chunked body's decoder is (RFC 9112 §7.1). Lines must end in CRLF.
#[derive(Debug, Clone, Copy)]
enum ChunkState {
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

#[derive(Debug)]
struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl Chunked {
    /// Takes what it can from the front of `buf`: a piece of data, the end, or `None` when it
    /// needs more bytes. Chunk extensions and trailer fields are read and dropped.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, &'static str> {
        loop {
            match self.state {
                ChunkState::End => return Ok(Some(Chunk::End)),
                ChunkState::Data(rest) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = rest.min(buf.len() as u64);
                    self.state = if n == rest {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(rest - n)
                    };
                    return Ok(Some(Chunk::Data(buf.split_to(n as usize).freeze())));
                }
                _ => {
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    buf.advance(1);
                    self.state = step(self.state, b)?;
                }
            }
        }
    }
}

fn step(state: ChunkState, b: u8) -> Result<ChunkState, &'static str> {
    use ChunkState::*;
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

    fn decode_all(input: &[u8], step_by: usize) -> Result<Vec<u8>, &'static str> {
        let mut dec = Chunked::default();
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
        Err("incomplete")
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
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
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
        assert_eq!(decode_all(&long_ext, 64), Err("chunk extensions too long"));
    }

    fn head(raw: &[u8], head_request: bool) -> Result<Option<Parsed>, Error> {
        parse_head(&mut BytesMut::from(raw), head_request)
    }

    fn final_head(raw: &[u8]) -> Head {
        match head(raw, false) {
            Ok(Some(Parsed::Final(h))) => h,
            Ok(Some(Parsed::Interim)) => panic!("interim"),
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
        let h = final_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert!(h.framing.is_none() && h.reuse);
        match head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true) {
            Ok(Some(Parsed::Final(h))) => assert!(h.framing.is_none() && h.reuse),
            _ => panic!("a response to HEAD has no body"),
        }
        assert!(matches!(
            head(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Some(Parsed::Interim))
        ));
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        ));
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
        assert!(matches!(
            head(&many, false),
            Err(Error::Invalid("too many headers"))
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

    #[test]
    fn request_framing_is_the_gateways() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("up"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut buf = Vec::new();
        encode_head(&mut buf, &Method::POST, "/a?b", &h, Some(3));
        assert_eq!(
            buf,
            b"POST /a?b HTTP/1.1\r\nhost: up\r\ncontent-length: 3\r\n\r\n"
        );
        encode_head(&mut buf, &Method::PUT, "/", &HeaderMap::new(), None);
        assert_eq!(buf, b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        encode_head(&mut buf, &Method::GET, "/", &HeaderMap::new(), Some(0));
        assert_eq!(buf, b"GET / HTTP/1.1\r\n\r\n");
        encode_head(&mut buf, &Method::POST, "/", &HeaderMap::new(), Some(0));
        assert_eq!(buf, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }
}
