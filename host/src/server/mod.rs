//! Listeners and connections: accept, speak TLS when the listener has it, serve HTTP/1.1 with
//! keep-alive or HTTP/2 (by ALPN on TLS, or h2c with prior knowledge), and drain on shutdown.
//!
//! The gateway runs thread-per-core, like nginx's workers: each worker thread has its own
//! single-threaded runtime, its own `SO_REUSEPORT` listener on the shared address, and its own
//! upstream connection pools. A request never leaves the thread that accepted it, so there is
//! no cross-thread hand-off or wake-up on the hot path.

pub mod admit;
pub mod conn;
pub mod handler;
pub mod proxy_protocol;
pub mod redirect;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, Version, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use bytes::Bytes;

pub use self::conn::Connections;
use self::conn::{ClientIo, ConnBody, Cycle, Slot};
use self::tls::TlsInfo;
use crate::body::Body;
use crate::config::Http2Config;
use crate::wire::TrustedProxies;

use crate::wire::Peer;

/// What a request's handler knows of the connection it came on.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The client (or the proxy a PROXY header spoke for).
    pub peer: Peer,
    /// Set on a TLS listener.
    pub tls: Option<Arc<TlsInfo>>,
    /// The connection's place among the listener's open connections: a tunnel, which
    /// outlives hyper's part of the connection, holds it until it closes.
    pub slot: Arc<Slot>,
}

/// The current TLS config of a listener, looked up for each new connection (a reload may
/// have replaced the certificates).
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// How a listener speaks.
#[derive(Clone, Default)]
pub struct Protocols {
    /// TLS, with HTTP/2 or HTTP/1.1 by ALPN.
    pub tls: Option<TlsSource>,
    /// HTTP/2 with prior knowledge beside HTTP/1.1, on a plain listener.
    pub h2c: bool,
    pub http2: Http2Config,
}

/// Binds `count` listening sockets to one address with `SO_REUSEPORT`, so the kernel spreads
/// connections over the workers. Port 0 picks a free port once; the others join it.
///
/// `SO_REUSEPORT` would also let a second gateway bind the same port and silently take part
/// of its traffic, so a socket without it is bound first: it fails if anything listens there.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        if let Err(e) = probe.bind(&addr.into()) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{addr} is already in use (is another gateway running?)"),
                ));
            }
            return Err(e);
        }
    }
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut bind_to = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(bind_to),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind_to.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        bind_to = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Connection settings that protect the gateway from slow or greedy clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// From a head's first byte (or the connection's start) to its end.
    pub header_read_timeout: Duration,
    /// Idle time between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// How long a write may wait for a client that does not read.
    pub send_timeout: Duration,
    pub drain_timeout: Duration,
    /// Requests per connection; the last one's response carries `Connection: close`.
    pub max_requests: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Every connection opens with a PROXY protocol header (accepted from trusted peers only).
    pub proxy_protocol: bool,
}

impl ConnLimits {
    pub fn from_config(s: &crate::config::ServerConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            keepalive_timeout: Duration::from_millis(s.keepalive_timeout_ms),
            send_timeout: Duration::from_millis(s.send_timeout_ms),
            drain_timeout: Duration::from_millis(s.drain_timeout_ms),
            max_requests: s.max_requests_per_connection,
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            proxy_protocol: s.proxy_protocol,
        }
    }

    /// hyper's connection builders for these limits.
    fn builders(&self, h2: &Http2Config) -> Builders {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        let mut http1 = http1::Builder::new();
        http1_settings!(&mut http1, self);
        http1
            .max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes.max(64 * 1024));
        // The auto builder has no head bound of its own: its read buffer bounds the head.
        http1_settings!(auto.http1(), self);
        auto.http1()
            .max_buf_size(self.max_header_bytes.max(8 * 1024));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2_settings!(&mut http2, self, h2);
        http2_settings!(auto.http2(), self, h2);
        Builders { http1, http2, auto }
    }
}

/// hyper's HTTP/1 settings for the limits (on its own builder, or the one inside `auto`).
macro_rules! http1_settings {
    ($b:expr, $limits:expr) => {{
        #[allow(unused_mut)]
        let mut b = $b;
        b.keep_alive(true)
            .timer(TokioTimer::new())
            // `ClientIo` keeps the head and idle deadlines apart; hyper's timer cannot.
            .header_read_timeout(None);
        // hyper keeps up to 100 header slots on the stack; any other count puts them on the
        // heap for every request.
        if $limits.max_headers != 100 {
            b.max_headers($limits.max_headers);
        }
    }};
}
use http1_settings;

/// hyper's HTTP/2 settings: the stream and header bounds, and the rapid-reset defences.
macro_rules! http2_settings {
    ($b:expr, $limits:expr, $h2:expr) => {{
        $b.timer(TokioTimer::new())
            .max_concurrent_streams($h2.max_concurrent_streams)
            .max_header_list_size($limits.max_header_bytes as u32)
            .max_pending_accept_reset_streams($h2.max_pending_resets)
            .max_local_error_reset_streams($h2.max_error_resets);
    }};
}
use http2_settings;

/// One listener's hyper builders, made once.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// HTTP/1.1 or HTTP/2 by the connection's first bytes (h2c).
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    /// Serves HTTP/1.1 on `io` until the connection ends (or, once the listener drains, its
    /// request in flight is done).
    async fn serve_http1<I, S>(
        &self,
        io: I,
        service: S,
        draining: &mut watch::Receiver<bool>,
    ) -> Result<(), hyper::Error>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = ConnBody>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // With upgrades: a 101 hands the socket to the handler's tunnel.
        let conn = self.http1.serve_connection(io, service).with_upgrades();
        drive(conn, draining, std::future::pending(), |c| {
            c.graceful_shutdown()
        })
        .await
    }
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and waits up to the
/// drain timeout for open requests to finish.
#[allow(clippy::too_many_arguments)]
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnLimits,
    protocols: Protocols,
    connections: Arc<Connections>,
    trust: Arc<TrustedProxies>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Request<Incoming>, Downstream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // Each connection holds a receiver: `closed` below waits for the last one to end.
    let (drain, draining) = watch::channel(false);
    let builders = Arc::new(limits.builders(&protocols.http2));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, never exit.
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = connections.try_open(name) else {
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    name,
                    slot: Arc::new(slot),
                    stream,
                    addr: peer,
                    limits,
                    tls: protocols.tls.as_ref().and_then(|t| t()),
                    h2c: protocols.h2c,
                    trust: trust.clone(),
                    handle: handle.clone(),
                };
                let draining = draining.clone();
                let builders = builders.clone();
                tokio::spawn(async move {
                    conn.serve(&builders, draining).await;
                });
            }
        }
    }
    drop(listener);
    drop(draining);
    let _ = drain.send(true);
    tokio::select! {
        _ = drain.closed() => tracing::info!(listener = name, "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(listener = name, timeout_ms = limits.drain_timeout.as_millis() as u64, "drain timed out; closing open connections");
        }
    }
}

/// One accepted connection, on its way to hyper.
struct Connection<F> {
    name: &'static str,
    slot: Arc<Slot>,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    h2c: bool,
    trust: Arc<TrustedProxies>,
    handle: F,
}

impl<F, Fut> Connection<F>
where
    F: Fn(Request<Incoming>, Downstream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    async fn serve(mut self, b: &Builders, mut draining: watch::Receiver<bool>) {
        let name = self.name;
        let addr = self.addr;
        let (peer, prefix) = if self.limits.proxy_protocol {
            if !self.trust.contains(addr.ip()) {
                tracing::warn!(listener = name, peer = %addr, "connection refused: a PROXY protocol header is accepted from server.trusted_proxies only");
                return;
            }
            match proxy_protocol::read_header(&mut self.stream, self.limits.header_read_timeout)
                .await
            {
                Ok(opened) => (
                    self.trust.peer(opened.client.unwrap_or(addr.ip())),
                    opened.rest,
                ),
                Err(e) => {
                    tracing::warn!(listener = name, peer = %addr, error = %e, "connection refused: no valid PROXY protocol header");
                    return;
                }
            }
        } else {
            (self.trust.peer(addr.ip()), Bytes::new())
        };
        let cycle = Arc::new(Cycle::default());
        // The head deadline runs from here: a TLS handshake is part of the first head.
        let io = ClientIo::new(self.stream, prefix, cycle.clone(), &self.limits);
        let serving = Serving {
            cycle: cycle.clone(),
            max_requests: self.limits.max_requests,
            handle: self.handle,
        };
        let ended: Result<(), Box<dyn std::error::Error + Send + Sync>> = match self.tls {
            Some(config) => {
                let stream = match tokio_rustls::TlsAcceptor::from(config).accept(io).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(listener = name, peer = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let session = stream.get_ref().1;
                let h2 = session.alpn_protocol() == Some(b"h2");
                let down = Downstream {
                    peer,
                    tls: Some(Arc::new(TlsInfo::of(session))),
                    slot: self.slot,
                };
                let io = TokioIo::new(stream);
                if h2 {
                    cycle.multiplex();
                    let conn = b.http2.serve_connection(io, serving.service(down));
                    drive(conn, &mut draining, cycle.until_done(&self.limits), |c| {
                        c.graceful_shutdown()
                    })
                    .await
                    .map_err(Into::into)
                } else {
                    b.serve_http1(io, serving.service(down), &mut draining)
                        .await
                        .map_err(Into::into)
                }
            }
            None => {
                let down = Downstream {
                    peer,
                    tls: None,
                    slot: self.slot,
                };
                let io = TokioIo::new(io);
                if self.h2c {
                    let conn = b
                        .auto
                        .serve_connection_with_upgrades(io, serving.service(down));
                    drive(conn, &mut draining, cycle.until_done(&self.limits), |c| {
                        c.graceful_shutdown()
                    })
                    .await
                } else {
                    b.serve_http1(io, serving.service(down), &mut draining)
                        .await
                        .map_err(Into::into)
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(listener = name, peer = %addr, error = %e, "connection ended with an error");
        }
    }
}

/// What each request on one connection is served with.
struct Serving<F> {
    cycle: Arc<Cycle>,
    max_requests: u64,
    handle: F,
}

impl<F, Fut> Serving<F>
where
    F: Fn(Request<Incoming>, Downstream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    fn service(
        self,
        down: Downstream,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<ConnBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<ConnBody>, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let Self {
            cycle,
            max_requests,
            handle,
        } = self;
        service_fn(move |req: Request<Incoming>| {
            let h2 = req.version() == Version::HTTP_2;
            let (served, finished) = cycle.start_request(h2);
            let fut = handle(req, down.clone());
            async move {
                let (mut parts, body) = fut.await.into_parts();
                let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS && !h2;
                if switching {
                    finished.tunnel();
                }
                // HTTP/2 has no `Connection` header: `Cycle::until_done` sends GOAWAY instead.
                if served >= max_requests && !h2 && !switching {
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(Response::from_parts(parts, ConnBody::new(body, finished)))
            }
        })
    }
}

/// Runs a hyper connection to its end. When the listener drains, or `done` resolves (an idle
/// or used-up HTTP/2 connection), the connection is told to shut down gracefully: requests
/// in flight finish, no new ones start.
async fn drive<C, E>(
    conn: C,
    draining: &mut watch::Receiver<bool>,
    done: impl Future<Output = ()>,
    shutdown: impl Fn(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = pin!(conn);
    let mut done = pin!(done);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = draining.changed(), if !closing => {
                shutdown(conn.as_mut());
                closing = true;
            }
            _ = done.as_mut(), if !closing => {
                shutdown(conn.as_mut());
                closing = true;
            }
        }
    }
}
