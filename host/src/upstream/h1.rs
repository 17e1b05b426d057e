//! The HTTP/1.1 client end of an upstream connection: the I/O around `wasmgate-h1`'s parsers.
//!
//! A request is written and its response read by the task that handles the client's request,
//! and the response body is read from the socket by whoever polls it (hyper's server, when it
//! writes the body to the client): no task per connection, no channel between them. Framing
//! follows RFC 9112 §6, and any doubt about where a response ends closes the connection
//! rather than risk reading one response's bytes as the next one's.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use wasmgate_h1::{Asked, Chunk, Framing, Invalid, MAX_HEAD, Parsed, ResponseHead};

use super::pool::WorkerPool;
use super::stream::Stream;
use crate::client_body::{ClientBody, ClientBodyError};
use crate::silence::Silence;

/// Most interim (1xx) responses before the final one; past this the upstream is refused.
pub const MAX_INTERIM: usize = 16;
/// How much room a read asks for: small for heads and short bodies, more for long bodies.
const READ_SMALL: usize = 16 * 1024;
const READ_LARGE: usize = 64 * 1024;
/// Request bodies up to this size are written in the same `write` as the head.
const COALESCE_BODY: usize = 16 * 1024;

/// Why a request got no (complete) response, or a response body stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection closed before a single byte of the response: on a reused connection,
    /// the upstream most likely closed it while it sat idle.
    #[error("the connection closed before the response started")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("invalid response: {0}")]
    Invalid(#[from] Invalid),
    #[error("the response body ended early")]
    Truncated,
    #[error("no byte of the response body came for {} ms", .0.as_millis())]
    Stalled(Duration),
    /// No response head within `timeout_ms` of the request (body included) being sent, or
    /// the upstream stopped reading the request for that long.
    #[error("no response within {} ms of sending the request", .0.as_millis())]
    TimedOut(Duration),
    /// The client's body failed while it was being sent: not the upstream's doing.
    #[error(transparent)]
    RequestBody(#[from] ClientBodyError),
    /// An HTTP/2 upstream's connection or stream failed.
    #[error("HTTP/2: {0}")]
    H2(#[source] hyper::Error),
}

type Error = UpstreamError;

/// An open connection to an upstream target, with the bytes read from it but not yet used.
pub struct Conn {
    io: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// When it was opened, for the pool's maximum lifetime.
    pub(super) opened: Instant,
}

/// A request body as it will be written: known bytes (kept for a retry on another
/// connection) or the client's stream, which can be sent once.
pub enum Outgoing {
    Bytes(Bytes),
    Stream(ClientBody),
}

impl Outgoing {
    /// The client's body, streamed; one already known to be empty is sent as no bytes.
    pub fn stream(body: ClientBody) -> Self {
        if body.is_end_stream() {
            Self::Bytes(Bytes::new())
        } else {
            Self::Stream(body)
        }
    }

    /// Whether the same request can be sent again after a failed attempt.
    pub fn replayable(&self) -> bool {
        matches!(self, Self::Bytes(_))
    }
}

impl Conn {
    pub fn new(io: Stream) -> Self {
        Self {
            io,
            rbuf: BytesMut::with_capacity(READ_SMALL),
            wbuf: Vec::with_capacity(512),
            opened: Instant::now(),
        }
    }

    /// Whether an idle connection is still fit to send on (see [`Stream::still_idle`]).
    pub fn still_idle(&mut self) -> bool {
        self.io.still_idle()
    }

    /// Writes the request and reads the response head. `timeout` runs from the moment the
    /// whole request (body included) is written; a client's body that is slow to come is
    /// bounded by its own read timeout instead. A streamed request body is written while the
    /// response is awaited, so an upstream that answers early (and refuses the rest) is heard;
    /// the connection is then not reused.
    pub async fn round_trip(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &mut Outgoing,
        timeout: Duration,
    ) -> Result<ResponseHead, Error> {
        let asked = if method == Method::HEAD {
            Asked::Head
        } else {
            Asked::Plain
        };
        match body {
            Outgoing::Bytes(bytes) => {
                encode_head(
                    &mut self.wbuf,
                    method,
                    target,
                    headers,
                    Some(bytes.len() as u64),
                );
                let write = async {
                    if bytes.len() <= COALESCE_BODY {
                        self.wbuf.extend_from_slice(bytes);
                        self.io.write_all(&self.wbuf).await
                    } else {
                        self.io.write_all(&self.wbuf).await?;
                        self.io.write_all(bytes).await
                    }
                };
                let sent = tokio::time::timeout(timeout, write)
                    .await
                    .map_err(|_| Error::TimedOut(timeout))?;
                let read = read_head(&mut self.io, &mut self.rbuf, asked);
                let read = async {
                    tokio::time::timeout(timeout, read)
                        .await
                        .map_err(|_| Error::TimedOut(timeout))?
                };
                match sent {
                    Ok(()) => read.await,
                    // The upstream may have answered and closed: read what it said.
                    Err(e) => match read.await {
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
                    write_within(&mut wr, wbuf, timeout).await?;
                    write_stream(&mut wr, stream, length.is_none(), wbuf, timeout).await
                };
                let read = read_head(&mut rd, &mut self.rbuf, asked);
                // Armed once the request is all written.
                let deadline = tokio::time::sleep(Duration::MAX);
                tokio::pin!(write, read, deadline);
                let mut written: Option<Result<(), Error>> = None;
                let head = loop {
                    tokio::select! {
                        biased;
                        head = &mut read => break head,
                        w = &mut write, if written.is_none() => {
                            if let Err(Error::RequestBody(e)) = w {
                                return Err(Error::RequestBody(e));
                            }
                            deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                            written = Some(w);
                        }
                        () = &mut deadline, if written.is_some() => {
                            return Err(Error::TimedOut(timeout));
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

impl Conn {
    /// Sends a request to switch protocols (it has no body) and reads the answer, all within
    /// `timeout`. After a 101 the connection is the new protocol's: see [`Conn::into_tunnel`].
    pub async fn upgrade(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<ResponseHead, Error> {
        encode_head(&mut self.wbuf, method, target, headers, Some(0));
        let Self { io, rbuf, wbuf, .. } = self;
        let exchange = async {
            io.write_all(wbuf).await?;
            read_head(io, rbuf, Asked::Upgrade).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::TimedOut(timeout))?
    }

    /// The socket, and the bytes of the new protocol that came with the 101.
    pub fn into_tunnel(self) -> (Stream, BytesMut) {
        (self.io, self.rbuf)
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

/// One write to the upstream, which must take it within `timeout`: an upstream that stops
/// reading a request is as silent as one that never answers.
async fn write_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), Error> {
    match tokio::time::timeout(timeout, w.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::TimedOut(timeout)),
    }
}

/// Writes a streamed request body: as it comes when its length is known (hyper's server
/// checked it against the client's `Content-Length`), in chunks otherwise. `scratch` (the
/// connection's write buffer, free once the head is out) holds each chunk's framing.
async fn write_stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &mut ClientBody,
    chunked: bool,
    scratch: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), Error> {
    while let Some(frame) = body.frame().await {
        let data = match frame?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                // Trailers end the body; a body of known length has nowhere to put them.
                if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                    scratch.clear();
                    scratch.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        scratch.extend_from_slice(name.as_str().as_bytes());
                        scratch.extend_from_slice(b": ");
                        scratch.extend_from_slice(value.as_bytes());
                        scratch.extend_from_slice(b"\r\n");
                    }
                    scratch.extend_from_slice(b"\r\n");
                    return write_within(w, scratch, timeout).await;
                }
                continue;
            }
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
                write_within(w, scratch, timeout).await?;
            } else {
                write_within(w, scratch, timeout).await?;
                write_within(w, &data, timeout).await?;
                write_within(w, b"\r\n", timeout).await?;
            }
        } else {
            write_within(w, &data, timeout).await?;
        }
    }
    if chunked {
        write_within(w, b"0\r\n\r\n", timeout).await?;
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

/// Reads and parses a response head, skipping at most `MAX_INTERIM` interim (1xx) responses.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    asked: Asked,
) -> Result<ResponseHead, Error> {
    let mut started = !buf.is_empty();
    let mut interim = 0usize;
    // Bytes already seen not to end the head: a head that arrives in pieces is parsed again
    // only once a piece brings a blank line, so trickling it costs linear time, not quadratic.
    let mut scanned = 0usize;
    loop {
        if !buf.is_empty() {
            started = true;
            if scanned == 0 || wasmgate_h1::ends_head(&buf[scanned.saturating_sub(3)..]) {
                match wasmgate_h1::parse_response_head(buf, asked)? {
                    Some(Parsed::Interim(_)) => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(Invalid("too many interim responses").into());
                        }
                        scanned = 0;
                        continue;
                    }
                    Some(Parsed::Final(head)) => return Ok(head),
                    None if buf.len() >= MAX_HEAD => {
                        return Err(Invalid("head too large").into());
                    }
                    None => {}
                }
            } else if buf.len() >= MAX_HEAD {
                return Err(Invalid("head too large").into());
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

/// Turns a response head into the response the gateway passes on; the connection goes with
/// the body, and back to `home` once the body has been read to its end. The body fails when
/// the upstream sends nothing for `read_timeout` while it is being read.
pub fn into_response(
    conn: Conn,
    head: ResponseHead,
    home: &Arc<WorkerPool>,
    target: u64,
    read_timeout: Duration,
) -> Response<H1Body> {
    let body = match head.framing {
        None | Some(Framing::Length(0)) => {
            if head.reuse && conn.rbuf.is_empty() {
                home.put(target, conn);
            }
            H1Body::empty()
        }
        Some(framing) => H1Body {
            conn: Some(conn),
            framing,
            reuse: head.reuse,
            home: Some((home.clone(), target)),
            stall: Silence::new(read_timeout),
        },
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = head.headers;
    resp
}

/// A response body read straight from an HTTP/1.1 upstream connection.
pub struct H1Body {
    conn: Option<Conn>,
    framing: Framing,
    reuse: bool,
    home: Option<(Arc<WorkerPool>, u64)>,
    /// The longest the upstream may send nothing while the body is read.
    stall: Silence,
}

impl H1Body {
    /// A response without a body (its connection, if any, already went back to its pool).
    fn empty() -> Self {
        Self {
            conn: None,
            framing: Framing::Length(0),
            reuse: false,
            home: None,
            stall: Silence::new(Duration::ZERO),
        }
    }

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
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("framing", &self.framing)
            .finish()
    }
}

impl http_body::Body for H1Body {
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
                        let trailers = dec.take_trailers();
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
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
                Poll::Pending if this.stall.poll_expired(cx).is_ready() => {
                    let read_timeout = this.stall.limit();
                    tracing::warn!(
                        fault = "upstream",
                        read_timeout_ms = read_timeout.as_millis() as u64,
                        "upstream response body stalled; its connection is closed"
                    );
                    return this.fail(Error::Stalled(read_timeout));
                }
                Poll::Pending => return Poll::Pending,
            };
            this.stall.progress();
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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

    #[tokio::test]
    async fn interim_responses_are_capped() {
        let mut raw = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM);
        raw.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let mut buf = BytesMut::new();
        let head = read_head(&mut &raw[..], &mut buf, Asked::Plain)
            .await
            .unwrap();
        assert_eq!(head.status, 200);

        let raw = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(MAX_INTERIM + 1);
        let mut buf = BytesMut::new();
        let err = read_head(&mut &raw[..], &mut buf, Asked::Plain)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("too many interim"), "{err}");
    }
}
