//! The bounds on one client connection that hyper does not keep itself: how long it may sit
//! idle between requests, how long it may take to send a head, and how long a response write
//! may wait for a client that stopped reading.
//!
//! hyper's own header-read timer starts as soon as it waits for a head, which on a keep-alive
//! connection is right after the last response, so it cannot tell idle time from a slow head.
//! [`ClientIo`] wraps the socket and knows which is which from [`Cycle`], which the service
//! updates: busy from the moment a head is parsed until its response body is dropped, idle
//! from then until the next byte arrives, reading a head from that byte on.
//!
//! A connection that switched protocols (a 101, for a WebSocket) is a tunnel from then on:
//! its reads have no deadline here, the tunnel keeps its own idle timeout.
//!
//! An HTTP/2 connection has many requests at once, so it has no such phases: once it is
//! [`Cycle::multiplex`]ed, reads have no deadline (the TLS handshake before it had the head
//! deadline), and [`Cycle::until_done`] tells when the connection has been idle past the
//! keep-alive timeout or has served its share of requests, for it to be closed with GOAWAY.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BodyError};
use crate::silence::Silence;

/// Where a connection is between requests. The low two bits are the phase, the rest counts
/// changes, so the socket side sees every change even when the phase is the same again.
#[derive(Debug, Default)]
pub struct Cycle {
    state: AtomicU64,
    served: AtomicU64,
    /// hyper may wait to read while a response is still being written (a streamed body); it
    /// must be woken when the response ends, to wait again with the idle deadline armed.
    reader: Mutex<Option<Waker>>,
    /// HTTP/2: requests in flight, and a wake-up for [`Cycle::until_done`].
    multiplexed: AtomicBool,
    active: AtomicUsize,
    changed: tokio::sync::Notify,
}

const HEAD: u64 = 0;
const BUSY: u64 = 1;
const IDLE: u64 = 2;
/// Switched to another protocol (a WebSocket tunnel), which keeps its own idle deadline.
const TUNNEL: u64 = 3;

impl Cycle {
    /// Moves to `phase`; returns the new state.
    fn set(&self, phase: u64) -> u64 {
        let changes = (self.state.load(Ordering::Relaxed) >> 2) + 1;
        let state = changes << 2 | phase;
        self.state.store(state, Ordering::Relaxed);
        state
    }

    /// The response is done: the connection is idle until the next request's first byte.
    fn idle(&self) {
        if self.state.load(Ordering::Relaxed) & 3 == TUNNEL {
            return;
        }
        if self.multiplexed.load(Ordering::Relaxed) {
            if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
                self.set(IDLE);
                self.changed.notify_one();
            }
            return;
        }
        self.set(IDLE);
        if let Some(w) = self.reader.lock().take() {
            w.wake();
        }
    }

    /// A head was parsed: the service has the request (`h2`: an HTTP/2 stream, which makes
    /// the connection multiplexed if it was not yet). Returns how many requests this
    /// connection has now been given, this one included, and the request's place in the
    /// cycle, to be dropped when its response is done (or abandoned).
    pub fn start_request(self: &Arc<Self>, h2: bool) -> (u64, Finished) {
        if h2 {
            self.multiplex();
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        self.set(BUSY);
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if h2 {
            self.changed.notify_one();
        }
        (served, Finished(self.clone()))
    }

    /// The connection is switching protocols (its response is a 101): from here on its reads
    /// have no deadline, and what it carries is no longer HTTP.
    fn tunnel(&self) {
        self.set(TUNNEL);
    }

    /// The connection speaks HTTP/2: its reads have no deadline from here on.
    pub fn multiplex(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    /// For an HTTP/2 connection: resolves once no request has been in flight for the
    /// keep-alive timeout, or once the connection has been given `max_requests`.
    pub async fn until_done(&self, limits: &super::ConnLimits) {
        loop {
            let changed = self.changed.notified();
            if !self.multiplexed.load(Ordering::Relaxed) {
                // An HTTP/1.1 connection (h2c not taken up) keeps its deadlines in `ClientIo`.
                changed.await;
                continue;
            }
            if self.served.load(Ordering::Relaxed) >= limits.max_requests {
                return;
            }
            if self.active.load(Ordering::Relaxed) == 0 {
                let seen = self.state.load(Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(limits.keepalive_timeout) => {
                        if self.active.load(Ordering::Relaxed) == 0
                            && self.state.load(Ordering::Relaxed) == seen
                        {
                            return;
                        }
                    }
                    _ = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// The client socket, with the idle, head and send deadlines.
pub struct ClientIo {
    io: TcpStream,
    /// Bytes read before hyper took over (after a PROXY header), served first.
    prefix: Bytes,
    cycle: Arc<Cycle>,
    /// The cycle state last seen, and when it began: the read deadline counts from then.
    seen: u64,
    since: Instant,
    head_timeout: Duration,
    idle_timeout: Duration,
    /// Made at the first wait and moved on after that, so a connection allocates it once.
    read_timer: Option<Pin<Box<Sleep>>>,
    /// Whether `read_timer` holds the deadline of the state in `seen`.
    read_armed: bool,
    /// How long a write may wait for a client that does not read.
    send: Silence,
}

impl ClientIo {
    pub fn new(
        io: TcpStream,
        prefix: Bytes,
        cycle: Arc<Cycle>,
        limits: &super::ConnLimits,
    ) -> Self {
        Self {
            io,
            prefix,
            seen: cycle.state.load(Ordering::Relaxed),
            cycle,
            since: Instant::now(),
            head_timeout: limits.header_read_timeout,
            idle_timeout: limits.keepalive_timeout,
            read_timer: None,
            read_armed: false,
            send: Silence::new(limits.send_timeout),
        }
    }
}

fn arm(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) -> &mut Pin<Box<Sleep>> {
    match timer {
        Some(t) => {
            t.as_mut().reset(deadline);
            t
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if this.cycle.multiplexed.load(Ordering::Relaxed) {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let state = this.cycle.state.load(Ordering::Relaxed);
        if state != this.seen {
            this.begin(state);
        }
        let phase = state & 3;
        if phase == TUNNEL {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if phase == IDLE && buf.filled().len() > before {
                    // The first byte of the next request: from here it is a head being read.
                    let head = this.cycle.set(HEAD);
                    this.begin(head);
                }
                Poll::Ready(r)
            }
            Poll::Pending if phase == BUSY => {
                let mut reader = this.cycle.reader.lock();
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Pending => {
                let (limit, what) = if phase == HEAD {
                    (this.head_timeout, "the request head took too long")
                } else {
                    (this.idle_timeout, "idle past the keep-alive timeout")
                };
                let timer = if this.read_armed {
                    this.read_timer.as_mut().expect("armed")
                } else {
                    this.read_armed = true;
                    arm(&mut this.read_timer, this.since + limit)
                };
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(timed_out(what)))
            }
        }
    }
}

impl ClientIo {
    /// A new state of the cycle: its deadline counts from now, and is armed at the first wait.
    fn begin(&mut self, state: u64) {
        self.seen = state;
        self.since = Instant::now();
        self.read_armed = false;
    }

    fn poll_send<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match write(Pin::new(&mut self.io), cx) {
            Poll::Ready(r) => {
                self.send.progress();
                Poll::Ready(r)
            }
            Poll::Pending => {
                ready!(self.send.poll_expired(cx));
                Poll::Ready(Err(timed_out("the client stopped reading the response")))
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_send(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_send(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One request in its connection's [`Cycle`]: dropped when its response is done, or when
/// the request is abandoned before it had one (an HTTP/2 stream reset by the client).
pub struct Finished(Arc<Cycle>);

impl Finished {
    /// The request's response is a 101: see [`Cycle::tunnel`].
    pub fn tunnel(&self) {
        self.0.tunnel();
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.idle();
    }
}

/// A response body that marks its request finished once hyper is done with it (it drops the
/// body when the last frame is written, or when the connection fails).
pub struct ConnBody {
    inner: Body,
    _finished: Finished,
}

impl ConnBody {
    pub fn new(inner: Body, finished: Finished) -> Self {
        Self {
            inner,
            _finished: finished,
        }
    }
}

impl http_body::Body for ConnBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Client connections open at once, across the workers of one listener.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    max: usize,
    refused: AtomicU64,
    /// When a refusal was last logged (seconds since `epoch`), so a flood logs once a second.
    last_warned: AtomicU64,
    epoch: Instant,
}

/// One open connection's place in [`Connections`], given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
            last_warned: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        })
    }

    /// A place for a new connection, or `None` (and a warning at most once a second) when
    /// `max` are open.
    pub fn try_open(self: &Arc<Self>, listener: &str) -> Option<Slot> {
        let prev = self.open.fetch_add(1, Ordering::Relaxed);
        if prev < self.max {
            return Some(Slot(self.clone()));
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.epoch.elapsed().as_secs();
        let last = self.last_warned.swap(now, Ordering::Relaxed);
        if last != now {
            tracing::warn!(
                listener,
                max_connections = self.max,
                refused_so_far = refused,
                "connection limit reached: new connections are closed until some end"
            );
        }
        None
    }
}
