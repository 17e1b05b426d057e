//! Keep-alive connections to upstream targets, one pool per worker thread.
//!
//! Only the worker that owns a pool sends on its connections, so its lock is never contended
//! and no request crosses threads. A connection is out of the pool while it carries a request
//! and its response; it comes back when the response body has been read to its end and the
//! connection can carry another (see `h1`), and is dropped otherwise. An idle connection is
//! closed once it has been idle for `idle_timeout` or open for `max_lifetime`, whichever
//! comes first, by a sweeper task that runs only while the pool holds connections.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::{Method, Response};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::stream::Stream;
use super::tls::TlsTarget;
use tokio::sync::Notify;

use super::ProxyError;
use super::h1::{self, Conn, H1Body, Outgoing, UpstreamError};

/// Most idle connections a worker keeps per upstream; past this, finished connections close.
const MAX_IDLE: usize = 256;

/// How long connections may live in a pool.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Longest a connection may sit idle.
    pub idle: Duration,
    /// Longest a connection may stay open, counted from its connect.
    pub max: Duration,
}

pub struct WorkerPool {
    idle: Mutex<Idle>,
    lifetimes: Lifetimes,
    /// Wakes the sweeper early for a connection that expires before its next wake-up.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Idle {
    /// `(endpoint id, connection, idle since)`, the most recently returned last.
    conns: Vec<(u64, Conn, Instant)>,
    /// When the sweeper wakes next; `None` when no sweeper runs.
    next_sweep: Option<Instant>,
}

/// What one send needs to know besides the request.
pub struct SendOptions<'a> {
    /// The endpoint's id (see `endpoint`).
    pub target: u64,
    /// Which of the upstream's connection sets: the worker's, or the health checker's.
    pub slot: usize,
    pub addr: &'a str,
    /// Set for an `https://` target.
    pub tls: Option<&'a TlsTarget>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub read_timeout: Duration,
}

impl WorkerPool {
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            idle: Mutex::default(),
            lifetimes,
            wake: Arc::default(),
        }
    }

    /// When a connection idle since `since` must be closed.
    fn expiry(&self, conn: &Conn, since: Instant) -> Instant {
        (since + self.lifetimes.idle).min(conn.opened + self.lifetimes.max)
    }

    /// The most recently used idle connection to `target` that is still fit to send on;
    /// connections found closed or expired on the way are dropped.
    fn checkout(&self, target: u64) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let now = Instant::now();
        while let Some(i) = idle.conns.iter().rposition(|(t, _, _)| *t == target) {
            let (_, mut conn, since) = idle.conns.remove(i);
            if self.expiry(&conn, since) > now && conn.still_idle() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn put(self: &Arc<Self>, target: u64, conn: Conn) {
        let now = Instant::now();
        if conn.opened + self.lifetimes.max <= now {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.conns.len() >= MAX_IDLE {
            return;
        }
        let expiry = self.expiry(&conn, now);
        idle.conns.push((target, conn, now));
        match idle.next_sweep {
            Some(next) if expiry < next => self.wake.notify_one(),
            Some(_) => {}
            None => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    idle.next_sweep = Some(expiry);
                    rt.spawn(sweep(Arc::downgrade(self), self.wake.clone()));
                }
            }
        }
    }

    /// Sends a request (origin-form URI, Host set) to the target `opts` names, on an idle
    /// connection when there is one, and returns once the response head is in. A connection
    /// that turns out closed before the response started (the upstream closed it while idle)
    /// is replaced by a new one, once, when the request can safely be sent again: an
    /// idempotent method and a body still in hand. The body is borrowed: when no connection
    /// could be made, it has not been touched and can be sent elsewhere.
    pub async fn send(
        self: &Arc<Self>,
        opts: &SendOptions<'_>,
        parts: &http::request::Parts,
        body: &mut Outgoing,
    ) -> Result<Response<H1Body>, ProxyError> {
        let uri_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(mut conn) = self.checkout(opts.target) {
            match conn
                .round_trip(
                    &parts.method,
                    uri_target,
                    &parts.headers,
                    body,
                    opts.timeout,
                )
                .await
            {
                Ok(head) => {
                    return Ok(h1::into_response(
                        conn,
                        head,
                        self,
                        opts.target,
                        opts.read_timeout,
                    ));
                }
                Err(UpstreamError::Closed) if idempotent(&parts.method) && body.replayable() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = Conn::new(connect(opts.addr, opts.tls, opts.connect_timeout).await?);
        let head = conn
            .round_trip(
                &parts.method,
                uri_target,
                &parts.headers,
                body,
                opts.timeout,
            )
            .await?;
        Ok(h1::into_response(
            conn,
            head,
            self,
            opts.target,
            opts.read_timeout,
        ))
    }
}

/// Closes idle connections as they expire; ends when the pool is empty or gone, and `put`
/// starts it again.
async fn sweep(pool: Weak<WorkerPool>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock();
            let now = Instant::now();
            idle.conns
                .retain(|(_, conn, since)| pool.expiry(conn, *since) > now);
            idle.next_sweep = idle.conns.iter().map(|(_, c, s)| pool.expiry(c, *s)).min();
            match idle.next_sweep {
                Some(next) => next,
                None => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = wake.notified() => {}
        }
    }
}

/// RFC 9110 §9.2.2.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A new connection to `addr`, with its TLS handshake for an `https://` target; `timeout`
/// bounds both.
pub(super) async fn connect(
    addr: &str,
    tls: Option<&TlsTarget>,
    timeout: Duration,
) -> Result<Stream, ProxyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProxyError::ConnectTimeout(timeout)),
        Ok(Err(e)) => return Err(ProxyError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::Plain(stream));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match tokio::time::timeout_at(deadline, connector.connect(tls.name.clone(), stream)).await {
        Err(_) => Err(ProxyError::ConnectTimeout(timeout)),
        Ok(Err(e)) => Err(ProxyError::Handshake(e)),
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
    }
}
