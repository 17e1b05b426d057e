//! Upstreams: where requests go once the pipeline lets them through. Each upstream picks its
//! targets round robin, owns its timeouts, and keeps a keep-alive connection pool per worker
//! thread (`pool`). Nothing here imports `body` or `error`: requests come in as an
//! [`Outgoing`] body, responses leave as an [`UpstreamBody`], and failures as a
//! [`ProxyError`] that says whose fault it was.

mod h1;
mod pool;
mod stream;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};

pub use self::h1::{MAX_INTERIM, Outgoing, UpstreamBody, UpstreamError};
use self::pool::{Lifetimes, SendOptions, WorkerPool};
use crate::client_body::ClientBodyError;
use crate::config::UpstreamConfig;
use crate::fault::Fault;
use crate::wire::{Peer, Target, parse_target};

/// Why a request forwarded upstream got no response, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client's body failed while it was being sent upstream.
    #[error(transparent)]
    ClientBody(ClientBodyError),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("connect timed out after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    #[error("no response within {} ms of sending the request", .0.as_millis())]
    Timeout(Duration),
    #[error(transparent)]
    Upstream(UpstreamError),
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::RequestBody(e) => Self::ClientBody(e),
            UpstreamError::TimedOut(t) => Self::Timeout(t),
            e => Self::Upstream(e),
        }
    }
}

impl ProxyError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::ClientBody(_) => Fault::Client,
            // Out of file descriptors or local ports: the gateway's own limits.
            Self::Connect(e) if matches!(e.raw_os_error(), Some(23 | 24 | 99)) => Fault::Gateway,
            Self::Connect(_)
            | Self::Handshake(_)
            | Self::ConnectTimeout(_)
            | Self::Timeout(_)
            | Self::Upstream(_) => Fault::Upstream,
        }
    }
}

/// A named upstream: its targets, the next one to use, its timeouts, and one connection pool
/// per worker thread.
pub struct Upstream {
    pub name: Arc<str>,
    targets: Vec<Target>,
    /// For each target, what its TLS needs when it is `https://`.
    tls: Vec<Option<tls::TlsTarget>>,
    next: AtomicUsize,
    timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    pools: Vec<Arc<WorkerPool>>,
}

impl Upstream {
    /// The upstream `cfg` describes; its files (`ca_file`, `client_cert`) are relative to
    /// `base`.
    pub fn new(
        name: &str,
        cfg: &UpstreamConfig,
        workers: usize,
        base: &std::path::Path,
    ) -> Result<Self, String> {
        let targets = cfg
            .targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        let config = if targets.iter().any(|t| t.tls) {
            Some(tls::client_config(name, cfg, base)?)
        } else {
            None
        };
        let tls = targets
            .iter()
            .map(|t| match (&config, t.tls) {
                (Some(config), true) => Ok(Some(tls::TlsTarget {
                    config: config.clone(),
                    name: tls::server_name(cfg, t.authority.host())?,
                })),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let lifetimes = Lifetimes {
            idle: Duration::from_millis(cfg.idle_timeout_ms),
            max: Duration::from_millis(cfg.max_connection_lifetime_ms),
        };
        Ok(Self {
            name: name.into(),
            targets,
            tls,
            next: AtomicUsize::new(0),
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            read_timeout: Duration::from_millis(cfg.read_timeout_ms),
            pools: (0..workers.max(1))
                .map(|_| Arc::new(WorkerPool::new(lifetimes)))
                .collect(),
        })
    }

    /// Sends a request (whose URI holds only path and query) to the next target and waits for
    /// the response headers. The body streams in both directions. A failure is logged here,
    /// with its fault; `error.rs` turns it into the client's answer.
    pub async fn send(
        &self,
        mut req: Request<Outgoing>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        let target = &self.targets[index];
        if req.uri().scheme().is_some() {
            // An absolute-form request: keep only what the upstream needs.
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }
        *req.version_mut() = http::Version::HTTP_11;
        req.headers_mut().insert(header::HOST, target.host.clone());
        let pool = &self.pools[crate::wire::worker_index() % self.pools.len()];
        let opts = SendOptions {
            target: index,
            addr: &target.addr,
            tls: self.tls[index].as_ref(),
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            read_timeout: self.read_timeout,
        };
        match pool.send(opts, req).await {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp)
            }
            Err(e) => {
                self.log_failure(target, &e);
                Err(e)
            }
        }
    }

    fn log_failure(&self, target: &Target, e: &ProxyError) {
        let (upstream, target) = (&*self.name, &target.authority);
        let fault = e.fault().as_str();
        match e {
            ProxyError::ClientBody(ClientBodyError::Aborted(_)) => {
                tracing::info!(fault, upstream, %target, error = %error_chain(e), "client aborted its upload")
            }
            ProxyError::ClientBody(ClientBodyError::TimedOut(t)) => {
                tracing::info!(fault, upstream, %target, body_read_timeout_ms = t.as_millis() as u64, "client's upload timed out")
            }
            ProxyError::ClientBody(ClientBodyError::Malformed(_)) => {
                tracing::info!(fault, upstream, %target, error = %error_chain(e), "client's upload is malformed")
            }
            ProxyError::Timeout(t) => {
                tracing::warn!(fault, upstream, %target, timeout_ms = t.as_millis() as u64, "upstream timed out")
            }
            ProxyError::Handshake(_) => {
                tracing::warn!(fault, upstream, %target, error = %error_chain(e), "upstream request failed: TLS handshake")
            }
            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_) => {
                tracing::warn!(fault, upstream, %target, error = %error_chain(e), "upstream request failed: cannot connect")
            }
            ProxyError::Upstream(_) => {
                tracing::warn!(fault, upstream, %target, error = %error_chain(e), "upstream request failed")
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // `#[error(transparent)]` and "{0}" wrappers repeat their source's text.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1), with
/// the unregistered `Proxy-Connection` some clients still send.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Whether a header describes one connection (RFC 9110 §7.6.1) and is never forwarded.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|h| h == name)
}

/// Removes hop-by-hop headers, including any named in `Connection`. Most messages carry at
/// most `Connection: keep-alive`, so one pass over the names present finds what to remove and
/// nothing else is looked up.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut gone: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    if gone.is_empty() {
        return;
    }
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // The two connection options that name no header field.
            if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                gone.push(name);
            }
        }
    }
    for name in gone {
        headers.remove(name);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Prepares a client's request headers for the upstream: drops hop-by-hop headers and the
/// client's Host (the client sets the target's), and sets the X-Forwarded-* headers.
pub fn forwarded_headers(headers: &mut HeaderMap, client: &Peer, https: bool) {
    strip_hop_by_hop(headers);
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(prev)) => {
            let appended = format!("{prev}, {}", client.ip_str());
            HeaderValue::try_from(appended).unwrap_or_else(|_| client.ip().clone())
        }
        _ => client.ip().clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // The host the request was routed by, never one the client sent beside it.
    match headers.remove(header::HOST) {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn every_hop_by_hop_header_is_dropped_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, close, X-Trace"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));

        // Nothing to strip: the map is left as it was.
        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn forwarded_for_is_the_client_ip_alone_when_new_or_unreadable() {
        let mut h = HeaderMap::new();
        forwarded_headers(&mut h, &Peer::new("[::1]:5000".parse().unwrap()), false);
        assert_eq!(h["x-forwarded-for"], "::1");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"10.0.0.1\xff").unwrap(),
        );
        forwarded_headers(&mut h, &Peer::new("127.0.0.1:5000".parse().unwrap()), false);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn a_client_forwarded_host_never_passes_without_a_host() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        forwarded_headers(&mut h, &Peer::new("127.0.0.1:5000".parse().unwrap()), false);
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        forwarded_headers(&mut h, &Peer::new("127.0.0.1:5000".parse().unwrap()), false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get(header::HOST).is_none());
    }
}
