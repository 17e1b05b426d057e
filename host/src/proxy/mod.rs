//! Upstreams: where requests go once the pipeline lets them through. Each upstream picks its
//! targets round robin, owns its timeouts, and keeps a keep-alive connection pool per worker
//! thread (`pool`).

mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};

use self::pool::{SendError, WorkerPool};
use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

/// A parsed upstream target (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: Authority,
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header requests to this target carry.
    host: HeaderValue,
}

/// Checks and parses a target URL.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => {}
        Some(other) => return Err(format!("scheme `{other}` is not supported (use http://)")),
        None => return Err(format!("`{s}` needs a scheme, as in http://{s}")),
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{s}` has no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "`{s}`: a target is scheme://host:port, without a path"
        ));
    }
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("`{s}`: {e}"))?;
    Ok(Target {
        authority,
        addr,
        host,
    })
}

/// A named upstream: its targets, the next one to use, its timeouts, and one connection pool
/// per worker thread.
pub struct Upstream {
    pub name: Arc<str>,
    targets: Vec<Target>,
    next: AtomicUsize,
    timeout: Duration,
    connect_timeout: Duration,
    pools: Vec<WorkerPool>,
}

impl Upstream {
    pub fn new(name: &str, cfg: &UpstreamConfig, workers: usize) -> Result<Self, String> {
        let targets = cfg
            .targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.into(),
            targets,
            next: AtomicUsize::new(0),
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            pools: (0..workers.max(1)).map(|_| WorkerPool::default()).collect(),
        })
    }

    /// Sends a request (whose URI holds only path and query) to the next target and waits for
    /// the response headers. The body streams in both directions.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        let target = &self.targets[index];
        if req.uri().scheme().is_some() {
            // An absolute-form request: keep only what the upstream needs.
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }
        *req.version_mut() = http::Version::HTTP_11;
        req.headers_mut().insert(header::HOST, target.host.clone());
        let pool = &self.pools[crate::server::worker_index() % self.pools.len()];
        let sent = pool.send(index, &target.addr, self.connect_timeout, req);
        match tokio::time::timeout(self.timeout, sent).await {
            Err(_) => {
                tracing::warn!(upstream = %self.name, target = %target.authority, timeout_ms = self.timeout.as_millis() as u64, "upstream timed out");
                Err(GatewayError::UpstreamTimeout)
            }
            Ok(Err(SendError::Connect(e))) => {
                tracing::warn!(upstream = %self.name, target = %target.authority, error = %e, "upstream request failed: cannot connect");
                Err(GatewayError::UpstreamUnreachable)
            }
            Ok(Err(SendError::Request(e))) => {
                tracing::warn!(upstream = %self.name, target = %target.authority, error = %error_chain(&e), "upstream request failed");
                Err(GatewayError::UpstreamBadResponse)
            }
            Ok(Ok(resp)) => {
                let (mut parts, incoming) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, body::Body::Left(incoming)))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

/// Whether a header describes one connection (RFC 9110 §7.6.1) and is never forwarded.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str() == "proxy-connection"
}

/// Removes hop-by-hop headers, including any named in `Connection`. Most messages carry none,
/// so one pass over the names present decides whether anything needs removing.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove("proxy-connection");
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Prepares a client's request headers for the upstream: drops hop-by-hop headers and the
/// client's Host (the client sets the target's), and sets the X-Forwarded-* headers.
pub fn forwarded_headers(headers: &mut HeaderMap, client: SocketAddr) {
    strip_hop_by_hop(headers);
    let mut xff = String::with_capacity(48);
    if let Some(prev) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    {
        use std::fmt::Write;
        let _ = write!(xff, "{}", client.ip());
    }
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        assert!(parse_target("http://127.0.0.1:9000").is_ok());
        assert!(
            parse_target("127.0.0.1:9000")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            parse_target("https://x")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            parse_target("http://x/path")
                .unwrap_err()
                .contains("without a path")
        );
    }

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
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        forwarded_headers(&mut h, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get(header::HOST).is_none());
    }
}
