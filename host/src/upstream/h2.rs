//! HTTP/2 to upstream targets (`protocol = "h2"`), through hyper's client: ALPN `h2` on
//! `https://` targets, prior knowledge (h2c) on `http://` ones.
//!
//! Each worker keeps one connection per target and multiplexes its requests over it, so an
//! upstream sees `workers × targets` connections however many requests are in flight. A
//! connection found closed, or past its idle or maximum lifetime, is replaced on the next
//! request; the old one finishes the streams it carries and closes. Trailers pass both ways,
//! as frames of the bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::pool::{Lifetimes, SendOptions, connect};
use super::{Outgoing, ProxyError, UpstreamError};
use crate::client_body::ClientBodyError;
use crate::silence::Silence;

/// How an upstream opens and keeps its HTTP/2 connections.
pub struct Client {
    lifetimes: Lifetimes,
    builder: hyper::client::conn::http2::Builder<TokioExecutor>,
}

/// One target's connections: a slot per worker (and one for health checks), each holding at
/// most one connection.
pub struct Slots(Box<[tokio::sync::Mutex<Option<Open>>]>);

impl Slots {
    pub fn new(n: usize) -> Self {
        Self((0..n).map(|_| tokio::sync::Mutex::new(None)).collect())
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slots({})", self.0.len())
    }
}

/// A live connection: its request handle and its age.
struct Open {
    send: SendRequest<RequestBody>,
    opened: Instant,
    last_used: Instant,
}

impl Client {
    pub fn new(lifetimes: Lifetimes) -> Self {
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // A peer that stops answering pings is dead: its streams fail rather than hang.
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(false)
            .adaptive_window(true);
        Self { lifetimes, builder }
    }

    /// A request handle for the target: the live connection's in `opts.slot` of its slots, or
    /// a new connection's. Requests that find no connection wait for the one being opened (all
    /// within the connect timeout) rather than each opening their own.
    pub async fn handle(
        &self,
        slots: &Slots,
        opts: &SendOptions<'_>,
    ) -> Result<SendRequest<RequestBody>, ProxyError> {
        let acquire = async {
            let mut slot = slots.0[opts.slot % slots.0.len()].lock().await;
            let now = Instant::now();
            if let Some(open) = slot.as_mut()
                && !open.send.is_closed()
                && open.opened + self.lifetimes.max > now
                && open.last_used + self.lifetimes.idle > now
            {
                open.last_used = now;
                return Ok(open.send.clone());
            }
            *slot = None;
            let stream = connect(opts.addr, opts.tls, opts.connect_timeout).await?;
            if opts.tls.is_some() && !stream.negotiated_h2() {
                return Err(ProxyError::Handshake(std::io::Error::other(
                    "the target did not agree to HTTP/2 (ALPN h2)",
                )));
            }
            let (send, conn) = self
                .builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ProxyError::Upstream(UpstreamError::H2(e)))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/2 upstream connection ended with an error");
                }
            });
            *slot = Some(Open {
                send: send.clone(),
                opened: now,
                last_used: now,
            });
            Ok(send)
        };
        match tokio::time::timeout(opts.connect_timeout, acquire).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::ConnectTimeout(opts.connect_timeout)),
        }
    }

    /// Sends `req` (origin-form URI) on `send` (see [`Client::handle`]) to `authority`, and
    /// returns once the response head is in. `opts.timeout` runs from the end of the request
    /// body: a streaming call's response may wait for its client to finish.
    pub async fn send(
        mut send: SendRequest<RequestBody>,
        opts: &SendOptions<'_>,
        scheme: &http::uri::Scheme,
        authority: &http::uri::Authority,
        req: Request<Outgoing>,
    ) -> Result<Response<H2Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(scheme.clone());
        uri.authority = Some(authority.clone());
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = Version::HTTP_2;
        // `:authority` names the target; a Host beside it would only repeat it.
        parts.headers.remove(http::header::HOST);
        let watch = Arc::new(Watch::default());
        let body = RequestBody {
            inner: body,
            watch: watch.clone(),
        };
        if send.ready().await.is_err() {
            return Err(ProxyError::Upstream(UpstreamError::Closed));
        }
        let timeout = opts.timeout;
        let sent = send.send_request(Request::from_parts(parts, body));
        let deadline = async {
            watch.ended.notified().await;
            tokio::time::sleep(timeout).await;
        };
        let result = tokio::select! {
            r = sent => r,
            () = deadline => return Err(ProxyError::Timeout(timeout)),
        };
        match result {
            Ok(resp) => Ok(resp.map(|inner| H2Body {
                inner,
                stall: Silence::new(opts.read_timeout),
            })),
            Err(e) => match watch.failed.lock().take() {
                Some(client) => Err(ProxyError::ClientBody(client)),
                None => Err(ProxyError::Upstream(UpstreamError::H2(e))),
            },
        }
    }
}

/// What the request body tells the sender: that it ended (the response timeout starts), or
/// that the client's body failed (the failure is the client's, not the upstream's).
#[derive(Default)]
struct Watch {
    ended: Notify,
    failed: Mutex<Option<ClientBodyError>>,
}

/// The request body as hyper sends it.
pub struct RequestBody {
    inner: Outgoing,
    watch: Arc<Watch>,
}

/// What hyper is told when the client's body failed; the failure itself is in [`Watch`].
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed")]
pub struct ClientBodyFailed;

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyFailed>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Outgoing::Bytes(b) if b.is_empty() => Poll::Ready(None),
            Outgoing::Bytes(b) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(b))))),
            Outgoing::Stream(s) => Pin::new(s).poll_frame(cx),
        };
        match polled {
            Poll::Ready(None) => {
                this.watch.ended.notify_one();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                *this.watch.failed.lock() = Some(e);
                Poll::Ready(Some(Err(ClientBodyFailed)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if at_end(&this.inner) {
                    this.watch.ended.notify_one();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = at_end(&self.inner);
        if end {
            self.watch.ended.notify_one();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Outgoing::Bytes(b) => SizeHint::with_exact(b.len() as u64),
            Outgoing::Stream(s) => s.size_hint(),
        }
    }
}

fn at_end(body: &Outgoing) -> bool {
    match body {
        Outgoing::Bytes(b) => b.is_empty(),
        Outgoing::Stream(s) => s.is_end_stream(),
    }
}

/// A response body from an HTTP/2 upstream, cut off when the upstream sends nothing for
/// `read_timeout`. Trailers come as its last frame.
pub struct H2Body {
    inner: Incoming,
    stall: Silence,
}

impl std::fmt::Debug for H2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Body").finish_non_exhaustive()
    }
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall.progress();
                Poll::Ready(frame.map(|f| f.map_err(UpstreamError::H2)))
            }
            Poll::Pending => {
                std::task::ready!(this.stall.poll_expired(cx));
                let read_timeout = this.stall.limit();
                tracing::warn!(
                    fault = "upstream",
                    read_timeout_ms = read_timeout.as_millis() as u64,
                    "HTTP/2 upstream response body stalled; its stream is reset"
                );
                Poll::Ready(Some(Err(UpstreamError::Stalled(read_timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
