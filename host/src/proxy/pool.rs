//! Keep-alive connections to upstream targets, one pool per worker thread.
//!
//! A connection's I/O task runs on the worker's own runtime, and only that worker ever sends on
//! it, so the pool's lock is never contended and no request crosses threads. A connection goes
//! back to the pool as soon as the response headers arrive; it is reused once hyper reports it
//! idle again (the body finished), and dropped once it closes.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::body::Body;

/// Most connections a worker keeps per upstream; past this, finished connections are closed.
const MAX_PER_WORKER: usize = 256;

struct Conn {
    target: usize,
    sender: SendRequest<Body>,
}

#[derive(Default)]
pub struct WorkerPool {
    conns: Mutex<Vec<Conn>>,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    Request(hyper::Error),
}

impl WorkerPool {
    fn take_ready(&self, target: usize) -> Option<SendRequest<Body>> {
        let mut conns = self.conns.lock();
        conns.retain(|c| !c.sender.is_closed());
        let i = conns
            .iter()
            .position(|c| c.target == target && c.sender.is_ready())?;
        Some(conns.swap_remove(i).sender)
    }

    fn put(&self, target: usize, sender: SendRequest<Body>) {
        let mut conns = self.conns.lock();
        if conns.len() < MAX_PER_WORKER {
            conns.push(Conn { target, sender });
        }
    }

    /// Sends a request (origin-form URI, Host set) to `target` at `addr`, on an idle
    /// connection when there is one. A request that an idle connection could not take (it
    /// closed under us) is sent on a new connection instead: it was never written.
    pub async fn send(
        &self,
        target: usize,
        addr: &str,
        connect_timeout: Duration,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, SendError> {
        while let Some(mut sender) = self.take_ready(target) {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.put(target, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut sender = connect(addr, connect_timeout).await?;
        let resp = sender.send_request(req).await.map_err(SendError::Request)?;
        self.put(target, sender);
        Ok(resp)
    }
}

async fn connect(addr: &str, timeout: Duration) -> Result<SendRequest<Body>, SendError> {
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
    let (sender, conn) = http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
