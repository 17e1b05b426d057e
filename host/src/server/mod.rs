//! Listeners and connections: accept, serve HTTP/1.1 with keep-alive, and drain on shutdown.
//!
//! The gateway runs thread-per-core, like nginx's workers: each worker thread has its own
//! single-threaded runtime, its own `SO_REUSEPORT` listener on the shared address, and its own
//! upstream connection pools. A request never leaves the thread that accepted it, so there is
//! no cross-thread hand-off or wake-up on the hot path.

pub mod handler;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::Body;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The client end of a connection: its IP as header text, rendered once per connection for
/// `X-Forwarded-For` and the plugins' `client-addr` rather than once per request.
#[derive(Debug, Clone)]
pub struct Peer {
    ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Self { ip }
    }

    /// The IP address, as a header value.
    pub fn ip(&self) -> &HeaderValue {
        &self.ip
    }

    /// The IP address, as text.
    pub fn ip_str(&self) -> &str {
        self.ip.to_str().unwrap_or_default()
    }
}

/// The index of the worker thread running this code (0 outside workers).
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

pub(crate) fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// Binds `count` listening sockets to one address with `SO_REUSEPORT`, so the kernel spreads
/// connections over the workers. Port 0 picks a free port once; the others join it.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
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
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and waits up to the
/// drain timeout for open requests to finish.
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
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
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let client = Peer::new(peer);
                let service = service_fn(move |req| {
                    let fut = handle(req, client.clone());
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(listener = name, peer = %peer, error = %e, "connection ended with an error");
                    }
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
