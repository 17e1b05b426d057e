//! Response compression, for routes with `compress = true`, as nginx's `gzip on` does it: a
//! response is compressed with brotli or gzip, whichever the client's `Accept-Encoding`
//! prefers, when its type is textual, it is not already encoded, and it is not known to be
//! shorter than the route's `compress_min_bytes`. It streams: nothing is buffered beyond the
//! encoder's window.
//!
//! The upstream is asked for an identity response (the route drops the client's
//! `Accept-Encoding` before forwarding, see `server::handler`), so a response phase that reads
//! the body sees it uncompressed, and the gateway compresses once, after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body as _, Frame, SizeHint};
use tokio_util::io::{ReaderStream, StreamReader};
use wasmgate_h1::Coding;

use crate::body::{Body, BodyError};

/// What a route's compression needs from the request, taken before the request moves on.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// The coding the client prefers, if it accepts one.
    coding: Option<Coding>,
    /// A HEAD gets the headers it would have got, but there is no body to compress.
    head: bool,
}

impl Wanted {
    pub fn of(method: &Method, headers: &HeaderMap) -> Self {
        let values = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes);
        Self {
            coding: wasmgate_h1::preferred_coding(values),
            head: method == Method::HEAD,
        }
    }
}

/// Compresses `resp` if it qualifies (see the module's doc). A response that qualifies gets
/// `Vary: Accept-Encoding` whether or not this client accepted a coding, so caches keep the
/// two apart.
pub fn apply(resp: Response<Body>, wanted: Wanted, min_bytes: u64) -> Response<Body> {
    if !qualifies(&resp, min_bytes) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    add_vary(&mut parts.headers);
    let Some(coding) = wanted.coding else {
        return Response::from_parts(parts, body);
    };
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    // The compressed bytes differ from the ones a strong validator named.
    if let Some(etag) = h.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            h.insert(header::ETAG, weak);
        }
    }
    if wanted.head {
        return Response::from_parts(parts, body);
    }
    let body = Body::Compressed(Box::new(Compressed::new(body, coding)));
    Response::from_parts(parts, body)
}

fn qualifies(resp: &Response<Body>, min_bytes: u64) -> bool {
    let status = resp.status();
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    let h = resp.headers();
    if h.get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    if h.get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| contains_ignore_case(v.as_bytes(), b"no-transform"))
    {
        return false;
    }
    let Some(kind) = h.get(header::CONTENT_TYPE) else {
        return false;
    };
    if !compressible(kind.as_bytes()) {
        return false;
    }
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| resp.body().size_hint().exact());
    length.is_none_or(|n| n >= min_bytes)
}

/// Textual types: `text/*` except event streams (compressing one holds its events back),
/// JSON, XML and JavaScript, and the `+json` and `+xml` structured syntaxes.
fn compressible(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let is = |t: &[u8]| essence.eq_ignore_ascii_case(t);
    let ends = |t: &[u8]| {
        essence.len() >= t.len() && essence[essence.len() - t.len()..].eq_ignore_ascii_case(t)
    };
    if is(b"text/event-stream") {
        return false;
    }
    (essence.len() > 5 && essence[..5].eq_ignore_ascii_case(b"text/"))
        || [
            &b"application/json"[..],
            b"application/javascript",
            b"application/xml",
            b"application/x-javascript",
            b"application/wasm",
            b"image/svg+xml",
        ]
        .iter()
        .any(|t| is(t))
        || ends(b"+json")
        || ends(b"+xml")
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn add_vary(h: &mut HeaderMap) {
    let present = h.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            t.trim_ascii().eq_ignore_ascii_case(b"accept-encoding") || t.trim_ascii() == b"*"
        })
    });
    if !present {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// A body's data as the encoders read it; trailers are dropped (no compressible type has
/// them), and a failure is carried through as an `io::Error` that [`Compressed`] unwraps.
struct Data(Body);

impl futures_util::Stream for Data {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let body = &mut self.get_mut().0;
        loop {
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }
}

type Reader = StreamReader<Data, Bytes>;

// Boxed whole in `Body::Compressed`: the size of a variant costs one allocation per
// compressed response, never the size of `Body`.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    Gzip(ReaderStream<GzipEncoder<Reader>>),
    Brotli(ReaderStream<BrotliEncoder<Reader>>),
}

/// A response body, compressed as it streams.
pub struct Compressed(Encoder);

impl std::fmt::Debug for Compressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = match self.0 {
            Encoder::Gzip(_) => "gzip",
            Encoder::Brotli(_) => "br",
        };
        f.debug_tuple("Compressed").field(&coding).finish()
    }
}

impl Compressed {
    fn new(body: Body, coding: Coding) -> Self {
        let reader = StreamReader::new(Data(body));
        Self(match coding {
            // nginx's and most CDNs' choice of levels: fast, most of the gain.
            Coding::Gzip => Encoder::Gzip(ReaderStream::new(GzipEncoder::with_quality(
                reader,
                Level::Precise(5),
            ))),
            Coding::Brotli => Encoder::Brotli(ReaderStream::new(BrotliEncoder::with_quality(
                reader,
                Level::Precise(4),
            ))),
        })
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let next = match &mut self.0 {
            Encoder::Gzip(s) => futures_util::Stream::poll_next(Pin::new(s), cx),
            Encoder::Brotli(s) => futures_util::Stream::poll_next(Pin::new(s), cx),
        };
        Poll::Ready(match ready!(next) {
            None => None,
            Some(Ok(data)) => Some(Ok(Frame::data(data))),
            Some(Err(e)) => Some(Err(unwrap_error(e))),
        })
    }

    pub fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The body's own failure, if it was one; else the encoder's.
fn unwrap_error(e: io::Error) -> BodyError {
    if e.get_ref().is_some_and(|inner| inner.is::<BodyError>()) {
        let inner = e.into_inner().expect("checked");
        return *inner.downcast::<BodyError>().expect("checked");
    }
    BodyError::Compression(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn response(content_type: &str, body: &'static str) -> Response<Body> {
        let mut r = Response::new(crate::body::full(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        r.headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        r
    }

    fn wanted(accept: &str) -> Wanted {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
        Wanted::of(&Method::GET, &h)
    }

    #[tokio::test]
    async fn a_textual_response_is_compressed_with_its_headers_adjusted() {
        let text = "compressible text ".repeat(100);
        let text: &'static str = Box::leak(text.into_boxed_str());
        let resp = apply(
            response("application/json; charset=utf-8", text),
            wanted("gzip"),
            20,
        );
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(resp.headers()[header::VARY], "accept-encoding");
        assert_eq!(resp.headers()[header::ETAG], "W/\"v1\"");
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
        let gz = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(gz.len() < text.len() / 5, "{} bytes", gz.len());
        use tokio::io::AsyncReadExt;
        let mut plain = Vec::new();
        async_compression::tokio::bufread::GzipDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .await
            .unwrap();
        assert_eq!(plain, text.as_bytes());
    }

    #[test]
    fn textual_types_are_told_apart_case_insensitively() {
        for yes in [
            "Text/HTML",
            "application/JSON; charset=utf-8",
            "application/problem+json",
            "image/svg+xml",
        ] {
            assert!(compressible(yes.as_bytes()), "{yes}");
        }
        for no in [
            "text/event-stream",
            "TEXT/EVENT-STREAM; x=1",
            "image/png",
            "text/",
            "application/jsonx",
            "",
        ] {
            assert!(!compressible(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn what_does_not_qualify_is_left_alone() {
        let long = "x".repeat(2000);
        let long: &'static str = Box::leak(long.into_boxed_str());
        for (kind, extra, why) in [
            ("image/png", None, "not textual"),
            ("text/event-stream", None, "an event stream"),
            (
                "text/html",
                Some((header::CONTENT_ENCODING, "br")),
                "already encoded",
            ),
            (
                "text/html",
                Some((header::CACHE_CONTROL, "public, No-Transform")),
                "no-transform",
            ),
        ] {
            let mut r = response(kind, long);
            if let Some((name, value)) = &extra {
                r.headers_mut()
                    .insert(name.clone(), HeaderValue::from_static(value));
            }
            let r = apply(r, wanted("gzip, br"), 20);
            assert!(
                r.headers()
                    .get(header::CONTENT_ENCODING)
                    .is_none_or(|e| e == "br" && extra.is_some()),
                "{why}"
            );
            assert!(r.headers().get(header::VARY).is_none(), "{why}");
        }
        // Too short: left alone, but still varies (a longer one would not be).
        let r = apply(response("text/plain", "short"), wanted("gzip"), 20);
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        // A 204 has no body to compress.
        let mut r = response("text/plain", long);
        *r.status_mut() = StatusCode::NO_CONTENT;
        assert!(
            apply(r, wanted("gzip"), 20)
                .headers()
                .get(header::VARY)
                .is_none()
        );
        // No acceptable coding: identity, with Vary.
        let r = apply(response("text/plain", long), wanted("gzip;q=0"), 20);
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(r.headers()[header::VARY], "accept-encoding");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "2000");
    }
}
