//! Upstreams: where requests go once the pipeline lets them through. Each upstream picks its
//! targets by its balancer (`balance`), owns its timeouts, and speaks HTTP/1.1 (`h1`, a keep-alive pool per
//! worker thread in `pool`) or HTTP/2 (`h2`, one multiplexed connection per target per
//! worker). Nothing here imports `body` or `error`: requests come in as an [`Outgoing`] body,
//! responses leave as an [`UpstreamBody`], and failures as a [`ProxyError`] that says whose
//! fault it was.

pub mod balance;
mod h1;
mod h2;
pub mod outlier;
mod pool;
mod stream;
mod tls;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};

use self::balance::{Balancer, InFlight};
pub use self::h1::{MAX_INTERIM, Outgoing, UpstreamError};
use self::pool::{Lifetimes, SendOptions, WorkerPool};
pub use self::tunnel::{TunnelEnd, UpstreamSide, run as tunnel};
use crate::client_body::ClientBodyError;
use crate::config::{HashOn, UpstreamConfig, UpstreamProtocol};
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
    /// Every target is out (ejected): nothing was sent.
    #[error("no target is available")]
    NoTarget,
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
            | Self::Upstream(_)
            | Self::NoTarget => Fault::Upstream,
        }
    }
}

/// A named upstream: its targets, the next one to use, its timeouts, and one connection pool
/// per worker thread.
pub struct Upstream {
    pub name: Arc<str>,
    /// What it was built from (see [`fingerprint`]).
    fingerprint: String,
    targets: Vec<Target>,
    /// For each target, what its TLS needs when it is `https://`.
    tls: Vec<Option<tls::TlsTarget>>,
    balancer: Balancer,
    /// What `balance = "hash"` hashes.
    hash_on: Option<HashOn>,
    /// `[passive]`: targets left out for failing.
    outliers: Option<outlier::Outliers>,
    timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    transport: Transport,
}

/// How an upstream's requests travel, with one set of connections per worker thread.
enum Transport {
    Http1(Vec<Arc<WorkerPool>>),
    H2(Vec<h2::WorkerConns>),
}

/// What an upstream said to a request to switch protocols.
pub enum Switch {
    /// 101: the response to pass on, and the connection, which now speaks the new protocol.
    Switched(Response<()>, UpstreamSide),
    /// Any other answer, passed on as it is.
    Refused(Response<UpstreamBody>),
}

/// An upstream's response body, as whichever protocol reads it. The request counts as in
/// flight to its target until the body is done with.
#[derive(Debug)]
pub struct UpstreamBody {
    wire: Wire,
    _in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum Wire {
    H1(h1::H1Body),
    H2(h2::H2Body),
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, UpstreamError>>> {
        match &mut self.get_mut().wire {
            Wire::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            Wire::H2(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.wire {
            Wire::H1(b) => b.is_end_stream(),
            Wire::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.wire {
            Wire::H1(b) => b.size_hint(),
            Wire::H2(b) => b.size_hint(),
        }
    }
}

impl Upstream {
    /// The upstream `cfg` describes; its files (`ca_file`, `client_cert`) are relative to
    /// `base`.
    pub fn new(
        name: &str,
        cfg: &UpstreamConfig,
        fingerprint: String,
        workers: usize,
        base: &std::path::Path,
    ) -> Result<Self, String> {
        let targets = cfg
            .targets
            .iter()
            .map(|t| parse_target(&t.url))
            .collect::<Result<Vec<_>, _>>()?;
        let weighted: Vec<(&str, u32)> = cfg
            .targets
            .iter()
            .map(|t| (t.url.as_str(), t.weight))
            .collect();
        let balancer = Balancer::new(cfg.balance, &weighted);
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
            fingerprint,
            tls,
            balancer,
            outliers: cfg
                .passive
                .as_ref()
                .map(|p| outlier::Outliers::new(p, targets.len(), outlier::RealClock::default())),
            hash_on: match cfg.balance {
                crate::config::Balance::Hash => {
                    Some(cfg.hash_on.clone().unwrap_or(HashOn::ClientIp))
                }
                _ => None,
            },
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            read_timeout: Duration::from_millis(cfg.read_timeout_ms),
            transport: match cfg.protocol {
                UpstreamProtocol::Http1 => Transport::Http1(
                    (0..workers.max(1))
                        .map(|_| Arc::new(WorkerPool::new(lifetimes)))
                        .collect(),
                ),
                UpstreamProtocol::H2 => Transport::H2(
                    (0..workers.max(1))
                        .map(|_| h2::WorkerConns::new(targets.len(), lifetimes))
                        .collect(),
                ),
            },
            targets,
        })
    }

    /// What it was built from: an upstream built from the same is the same upstream.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What `balance = "hash"` hashes, if the upstream balances so.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.hash_on.as_ref()
    }

    /// Sends a request (whose URI holds only path and query) to the target the balancer picks
    /// (by `key` under `balance = "hash"`, see [`Balancer::key`]) and waits for the response
    /// headers. The body streams in both directions. A failure is logged here, with its
    /// fault; `error.rs` turns it into the client's answer.
    pub async fn send(
        &self,
        mut req: Request<Outgoing>,
        key: Option<u64>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let (index, target, opts, in_flight) = self.pick(req.uri_mut(), key)?;
        let worker = crate::wire::worker_index();
        let sent = match &self.transport {
            Transport::Http1(pools) => {
                *req.version_mut() = http::Version::HTTP_11;
                req.headers_mut()
                    .entry(header::HOST)
                    .or_insert_with(|| target.host.clone());
                let pool = &pools[worker % pools.len()];
                pool.send(opts, req).await.map(|r| r.map(Wire::H1))
            }
            Transport::H2(conns) => {
                let scheme = if target.tls {
                    http::uri::Scheme::HTTPS
                } else {
                    http::uri::Scheme::HTTP
                };
                let conns = &conns[worker % conns.len()];
                conns
                    .send(opts, &scheme, &target.authority, req)
                    .await
                    .map(|r| r.map(Wire::H2))
            }
        };
        match &sent {
            Ok(resp) if resp.status().is_server_error() => self.failed(index),
            Ok(_) => self.succeeded(index),
            Err(e) if e.fault() == Fault::Upstream => self.failed(index),
            Err(_) => {}
        }
        match sent {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp.map(|wire| UpstreamBody {
                    wire,
                    _in_flight: in_flight,
                }))
            }
            Err(e) => {
                self.log_failure(target, &e);
                Err(e)
            }
        }
    }

    /// The target the balancer picks among those not ejected, how to send to it, and the
    /// request's place in its load. An absolute-form request URI keeps only what the
    /// upstream needs.
    fn pick(
        &self,
        uri: &mut Uri,
        key: Option<u64>,
    ) -> Result<(usize, &Target, SendOptions<'_>, Option<InFlight>), ProxyError> {
        let usable = |t: usize| {
            self.outliers.as_ref().is_none_or(|o| {
                o.usable(t, || {
                    tracing::info!(upstream = &*self.name, target = %self.targets[t].authority, "target returned from ejection");
                })
            })
        };
        let Some(index) = self.balancer.pick(key, usable) else {
            tracing::debug!(
                upstream = &*self.name,
                "no target available: every target is ejected"
            );
            return Err(ProxyError::NoTarget);
        };
        let in_flight = self.balancer.start(index);
        let target = &self.targets[index];
        if uri.scheme().is_some() {
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            *uri = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }
        let opts = SendOptions {
            target: index,
            addr: &target.addr,
            tls: self.tls[index].as_ref(),
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            read_timeout: self.read_timeout,
        };
        Ok((index, target, opts, in_flight))
    }

    fn succeeded(&self, target: usize) {
        if let Some(o) = &self.outliers {
            o.success(target);
        }
    }

    fn failed(&self, target: usize) {
        let Some(o) = &self.outliers else { return };
        if let Some(outlier::Change::Ejected { failures, for_ms }) = o.failure(target) {
            tracing::warn!(
                upstream = &*self.name,
                target = %self.targets[target].authority,
                consecutive_failures = failures,
                eject_ms = for_ms,
                "target ejected"
            );
        }
    }

    /// Whether requests to switch protocols can be passed on: HTTP/1.1 upstreams only (an
    /// HTTP/2 upstream is sent such a request as an ordinary one).
    pub fn can_upgrade(&self) -> bool {
        matches!(self.transport, Transport::Http1(_))
    }

    /// Sends a request to switch protocols (`Upgrade: websocket`, no body) on a connection of
    /// its own, and reads the answer within the upstream's timeout. The `Connection` and
    /// `Upgrade` headers are set here, on the request and on a 101.
    pub async fn upgrade(
        &self,
        mut req: Request<()>,
        protocol: HeaderValue,
        key: Option<u64>,
    ) -> Result<Switch, ProxyError> {
        let Transport::Http1(pools) = &self.transport else {
            unreachable!("checked by can_upgrade");
        };
        let (index, target, opts, in_flight) = self.pick(req.uri_mut(), key)?;
        let headers = req.headers_mut();
        headers
            .entry(header::HOST)
            .or_insert_with(|| target.host.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
        let answered = async {
            let stream = pool::connect(opts.addr, opts.tls, opts.connect_timeout).await?;
            let mut conn = h1::Conn::new(stream);
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let head = conn
                .upgrade(req.method(), pq, req.headers(), opts.timeout)
                .await?;
            Ok::<_, ProxyError>((conn, head))
        };
        let (conn, mut head) = match answered.await {
            Ok(answered) => answered,
            Err(e) => {
                if e.fault() == Fault::Upstream {
                    self.failed(index);
                }
                self.log_failure(target, &e);
                return Err(e);
            }
        };
        if head.status.is_server_error() {
            self.failed(index);
        } else {
            self.succeeded(index);
        }
        let switched = head.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = head.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut head.headers);
        if !switched {
            // A refusal, passed on; its connection is not kept.
            head.reuse = false;
            let pool = &pools[crate::wire::worker_index() % pools.len()];
            let resp = h1::into_response(conn, head, pool, opts.target, opts.read_timeout);
            return Ok(Switch::Refused(resp.map(|b| UpstreamBody {
                wire: Wire::H1(b),
                _in_flight: in_flight,
            })));
        }
        let Some(upgrade) = upgrade else {
            let e = ProxyError::Upstream(UpstreamError::Invalid(wasmgate_h1::Invalid(
                "a 101 without Upgrade",
            )));
            self.log_failure(target, &e);
            return Err(e);
        };
        let mut resp = Response::new(());
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(header::UPGRADE, upgrade);
        let (io, early) = conn.into_tunnel();
        Ok(Switch::Switched(
            resp,
            UpstreamSide {
                io,
                early,
                _in_flight: in_flight,
            },
        ))
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
            ProxyError::NoTarget => {
                tracing::debug!(fault, upstream, "no target available")
            }
            ProxyError::Upstream(_) => {
                tracing::warn!(fault, upstream, %target, error = %error_chain(e), "upstream request failed")
            }
        }
    }
}

/// What an upstream is built from: its settings and the bytes of the TLS files they name. Two
/// configs whose upstream has the same fingerprint describe the same upstream.
pub fn fingerprint(cfg: &UpstreamConfig, base: &std::path::Path) -> String {
    let mut material = format!("{cfg:?}").into_bytes();
    let files = cfg
        .ca_file
        .iter()
        .chain(cfg.client_cert.iter().flat_map(|c| [&c.cert, &c.key]));
    for f in files {
        material.push(0);
        material.extend(std::fs::read(base.join(f)).unwrap_or_default());
    }
    crate::plugins::content_hash(&material)
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
/// the unregistered `Proxy-Connection` some clients still send. `Trailer` is not among them:
/// it announces the trailer fields, which pass through.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
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
/// client's Host (the client sets the target's), and sets the X-Forwarded-* headers. A
/// client that accepts trailers (`TE: trailers`, which gRPC requires) is still said to: the
/// gateway passes them on.
pub fn forwarded_headers(headers: &mut HeaderMap, client: &Peer, https: bool) {
    let trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
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
    fn te_trailers_alone_passes() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, Trailers"));
        h.insert(header::TRAILER, HeaderValue::from_static("grpc-status"));
        forwarded_headers(&mut h, &Peer::new("127.0.0.1:5000".parse().unwrap()), false);
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h[header::TRAILER], "grpc-status");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        forwarded_headers(&mut h, &Peer::new("127.0.0.1:5000".parse().unwrap()), false);
        assert!(h.get(header::TE).is_none());
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
