//! Listeners and connections: accept, serve HTTP/1.1 with keep-alive, and drain on shutdown.
//!
//! The gateway runs thread-per-core, like nginx's workers: each worker thread has its own
//! single-threaded runtime, its own `SO_REUSEPORT` listener on the shared address, and its own
//! upstream connection pools. A request never leaves the thread that accepted it, so there is
//! no cross-thread hand-off or wake-up on the hot path.

pub mod admit;
pub mod conn;
pub mod handler;
pub mod proxy_protocol;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use bytes::Bytes;

pub use self::conn::Connections;
use self::conn::{ClientIo, ConnBody, Cycle};
use crate::body::Body;
use crate::wire::TrustedProxies;

use crate::wire::Peer;

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

    /// hyper's HTTP/1 settings for these limits.
    fn http1(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        b.keep_alive(true)
            .timer(TokioTimer::new())
            // `ClientIo` keeps the head and idle deadlines apart; hyper's timer cannot.
            .header_read_timeout(None)
            .max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes.max(64 * 1024));
        // hyper keeps up to 100 header slots on the stack; any other count puts them on the
        // heap for every request.
        if self.max_headers != 100 {
            b.max_headers(self.max_headers);
        }
        b
    }
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and waits up to the
/// drain timeout for open requests to finish.
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnLimits,
    connections: Arc<Connections>,
    trust: Arc<TrustedProxies>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let http1 = Arc::new(limits.http1());
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
                    stream,
                    addr: peer,
                    limits,
                    trust: trust.clone(),
                    handle: handle.clone(),
                };
                let watcher = graceful.watcher();
                let http1 = http1.clone();
                tokio::spawn(async move {
                    conn.serve(&http1, watcher).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = name, "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(listener = name, timeout_ms = limits.drain_timeout.as_millis() as u64, "drain timed out; closing open connections");
        }
    }
}

/// One accepted connection, on its way to hyper.
struct Connection<F> {
    name: &'static str,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    limits: ConnLimits,
    trust: Arc<TrustedProxies>,
    handle: F,
}

impl<F, Fut> Connection<F>
where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    async fn serve(
        mut self,
        http1: &http1::Builder,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
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
        let io = ClientIo::new(self.stream, prefix, cycle.clone(), &self.limits);
        let max_requests = self.limits.max_requests;
        let handle = self.handle;
        let service = service_fn(move |req| {
            let served = cycle.start_request();
            let fut = handle(req, peer.clone());
            let cycle = cycle.clone();
            async move {
                let (mut parts, body) = fut.await.into_parts();
                if served >= max_requests {
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(Response::from_parts(parts, ConnBody::new(body, cycle)))
            }
        });
        let conn = watcher.watch(http1.serve_connection(TokioIo::new(io), service));
        if let Err(e) = conn.await {
            tracing::debug!(listener = name, peer = %addr, error = %e, "connection ended with an error");
        }
    }
}
