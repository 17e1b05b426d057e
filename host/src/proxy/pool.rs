//! Keep-alive connections to upstream targets, one pool per worker thread.
//!
//! Only the worker that owns a pool sends on its connections, so its lock is never contended
//! and no request crosses threads. A connection is out of the pool while it carries a request
//! and its response; it comes back when the response body has been read to its end and the
//! connection can carry another (see `h1`), and is dropped otherwise.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::h1::{self, Conn, Outgoing};
use crate::body::Body;

/// Most idle connections a worker keeps per upstream; past this, finished connections close.
const MAX_IDLE: usize = 256;

#[derive(Default)]
pub struct WorkerPool {
    idle: Mutex<Vec<(usize, Conn)>>,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    Request(h1::Error),
}

impl WorkerPool {
    /// The most recently used idle connection to `target` that is still fit to send on;
    /// connections found closed on the way are dropped.
    fn checkout(&self, target: usize) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some(i) = idle.iter().rposition(|(t, _)| *t == target) {
            let (_, mut conn) = idle.remove(i);
            if conn.still_idle() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn put(&self, target: usize, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push((target, conn));
        }
    }

    /// Sends a request (origin-form URI, Host set) to `target` at `addr`, on an idle
    /// connection when there is one, and returns once the response head is in. A connection
    /// that turns out closed before the response started (the upstream closed it while idle)
    /// is replaced by a new one when the request can safely be sent again: an idempotent
    /// method and a body still in hand.
    pub async fn send(
        self: &Arc<Self>,
        target: usize,
        addr: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
        req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        let (parts, body) = req.into_parts();
        let uri_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut body = Outgoing::new(body);
        while let Some(mut conn) = self.checkout(target) {
            match conn
                .round_trip(&parts.method, uri_target, &parts.headers, &mut body)
                .await
            {
                Ok(head) => {
                    let resp = h1::into_response(conn, head, self.clone(), target, read_timeout);
                    return Ok(resp);
                }
                Err(h1::Error::Closed) if idempotent(&parts.method) && body.replayable() => {}
                Err(e) => return Err(SendError::Request(e)),
            }
        }
        let mut conn = connect(addr, connect_timeout).await?;
        let head = conn
            .round_trip(&parts.method, uri_target, &parts.headers, &mut body)
            .await
            .map_err(SendError::Request)?;
        Ok(h1::into_response(
            conn,
            head,
            self.clone(),
            target,
            read_timeout,
        ))
    }
}

/// RFC 9110 §9.2.2.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

async fn connect(addr: &str, timeout: Duration) -> Result<Conn, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(SendError::Connect(format!(
                "connect timed out after {timeout:?}"
            )));
        }
        Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(Conn::new(stream))
}
