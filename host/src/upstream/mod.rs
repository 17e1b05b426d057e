//! Upstreams: where requests go once the pipeline lets them through. [`Upstream::send`] is
//! the one way in; what it does, in order, lives one policy a module:
//!
//! - `breaker`: an open circuit answers with the fallback (or a 503) at once;
//! - `balance` picks a target of the current `endpoint::Set` (which `discovery` may replace),
//!   skipping those `health` checks found down and those `outlier` ejected, unless so few
//!   are left that `panic_below_percent` sends to all;
//! - the request goes out over HTTP/1.1 (`h1`, a keep-alive pool per worker thread in
//!   `pool`) or HTTP/2 (`h2`, one multiplexed connection per target per worker);
//! - its outcome is counted by the target's ejection, the breaker and the counts
//!   `/admin/upstreams` and `/metrics` show, and `retry` decides whether to try again,
//!   elsewhere.
//!
//! Nothing here imports `body` or `error`: requests come in as an [`Outgoing`] body,
//! responses leave as an [`UpstreamBody`], and failures as a [`ProxyError`] that says whose
//! fault it was.

pub mod balance;
pub mod breaker;
pub mod discovery;
pub mod endpoint;
mod h1;
mod h2;
pub mod health;
pub mod outlier;
mod pool;
pub mod retry;
pub mod status;
mod stream;
pub(crate) mod tls;
mod tunnel;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};

use self::endpoint::{Endpoint, InFlight, Set};
pub use self::h1::{MAX_INTERIM, Outgoing, UpstreamError};
use self::pool::{Lifetimes, SendOptions, WorkerPool};
use self::retry::Failure;
pub use self::tunnel::{TunnelEnd, UpstreamSide, run as tunnel};
use crate::client_body::ClientBodyError;
use crate::config::{Balance, HashOn, HealthCheckConfig, UpstreamConfig, UpstreamProtocol};
use crate::fault::Fault;
use crate::wire::{Peer, Target, parse_target};

/// Tells the upstream which attempt a retried request is (2 for the first retry); never
/// passed on to clients.
pub static X_WASMGATE_ATTEMPTS: HeaderName = HeaderName::from_static("x-wasmgate-attempts");

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
    /// Every target is out (down or ejected): nothing was sent.
    #[error("no target is available")]
    NoTarget,
    /// The circuit is open: nothing was sent.
    #[error("the circuit is open")]
    CircuitOpen,
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
            | Self::NoTarget
            | Self::CircuitOpen => Fault::Upstream,
        }
    }

    /// What a failed attempt was, for retrying it: `None` when it was not the upstream's
    /// doing.
    fn failure(&self) -> Option<Failure> {
        match self {
            Self::ClientBody(_) | Self::NoTarget | Self::CircuitOpen => None,
            Self::Connect(_) if self.fault() == Fault::Gateway => None,
            Self::Connect(_) | Self::Handshake(_) | Self::ConnectTimeout(_) => {
                Some(Failure::Connect)
            }
            Self::Timeout(_) => Some(Failure::Timeout),
            Self::Upstream(_) => Some(Failure::Reset),
        }
    }
}

/// A named upstream: its targets and what it knows of them, its policies for failure, its
/// timeouts, and its connections.
pub struct Upstream {
    pub name: Arc<str>,
    /// What it was built from (see [`fingerprint`]).
    fingerprint: String,
    cfg: UpstreamConfig,
    /// `[dns]`, for discovery.
    dns: Option<crate::config::DnsConfig>,
    base: std::path::PathBuf,
    /// The targets balanced over now.
    set: ArcSwap<Set>,
    /// For `https://` targets: the client config every target's TLS shares.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// What `balance = "hash"` hashes.
    hash_on: Option<HashOn>,
    /// `[passive]`: targets left out for failing.
    outliers: Option<outlier::Outliers>,
    health: Option<Arc<HealthCheckConfig>>,
    /// Targets the health checker has down now.
    down: AtomicUsize,
    breaker: Option<breaker::Breaker>,
    /// The circuit breaker's fallback: status, headers, body.
    fallback: Option<(StatusCode, HeaderMap, Bytes)>,
    retry: Option<retry::Policy>,
    pub retries: AtomicU64,
    /// Time to the response head, retries included.
    latency: prometheus_client::metrics::histogram::Histogram,
    timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    transport: Transport,
    /// Connection sets: one per worker, and the health checker's.
    slots: usize,
    /// Whether its health checks and discovery run.
    started: AtomicBool,
}

/// How an upstream's requests travel.
enum Transport {
    /// One pool per connection set.
    Http1(Vec<Arc<WorkerPool>>),
    /// The connections are the endpoints' own (`Endpoint::h2`).
    H2(h2::Client),
}

/// What an upstream said to a request to switch protocols.
pub enum Switch {
    /// 101: the response to pass on, and the connection, which now speaks the new protocol.
    Switched(Response<()>, UpstreamSide),
    /// Any other answer, passed on as it is.
    Refused(Response<UpstreamBody>),
}

/// An upstream's response body, as whichever protocol reads it, or the fallback's. The
/// request counts as in flight to its target until the body is done with.
#[derive(Debug)]
pub struct UpstreamBody {
    wire: Wire,
    _in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum Wire {
    H1(h1::H1Body),
    H2(h2::H2Body),
    /// The fallback's body, until it is taken.
    Fixed(Option<Bytes>),
}

impl http_body::Body for Wire {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            Self::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            Self::H2(b) => std::pin::Pin::new(b).poll_frame(cx),
            Self::Fixed(b) => std::task::Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(http_body::Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(b) => b.is_end_stream(),
            Self::H2(b) => b.is_end_stream(),
            Self::Fixed(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::H1(b) => b.size_hint(),
            Self::H2(b) => b.size_hint(),
            Self::Fixed(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, UpstreamError>>> {
        std::pin::Pin::new(&mut self.get_mut().wire).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.wire.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.wire.size_hint()
    }
}

/// How many attempts a request took, in its response's extensions when more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

/// What became of one attempt, for the target's and the breaker's counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Status5xx,
    Failed,
    /// Not the upstream's doing (the client's body failed): not counted against it.
    NotCounted,
}

impl Upstream {
    /// The upstream `cfg` describes; its files (`ca_file`, `client_cert`, `discovery.file`)
    /// are relative to `base`.
    pub fn new(
        name: &str,
        cfg: &UpstreamConfig,
        fingerprint: String,
        dns: Option<&crate::config::DnsConfig>,
        latency: prometheus_client::metrics::histogram::Histogram,
        workers: usize,
        base: &std::path::Path,
    ) -> Result<Self, String> {
        let slots = workers.max(1) + 1;
        let targets = match cfg.discovery.as_ref().and_then(|d| d.file.as_ref()) {
            Some(file) => discovery::read_file(&base.join(file))?,
            None => cfg.targets.clone(),
        };
        let parsed = targets
            .iter()
            .map(|t| parse_target(&t.url))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if parsed.iter().any(|t| t.tls)
            || cfg.discovery.as_ref().is_some_and(|d| d.file.is_some())
        {
            Some(tls::client_config(name, cfg, base)?)
        } else {
            None
        };
        let lifetimes = Lifetimes {
            idle: Duration::from_millis(cfg.idle_timeout_ms),
            max: Duration::from_millis(cfg.max_connection_lifetime_ms),
        };
        let fallback = match cfg
            .circuit_breaker
            .as_ref()
            .and_then(|c| c.fallback.as_ref())
        {
            Some(f) => {
                let (status, headers) = f.parts()?;
                Some((
                    status,
                    headers.into_iter().collect(),
                    Bytes::from(f.body.clone()),
                ))
            }
            None => None,
        };
        let up = Self {
            name: name.into(),
            fingerprint,
            base: base.to_owned(),
            set: ArcSwap::from_pointee(Set::new(cfg.balance, Vec::new())),
            tls,
            outliers: cfg
                .passive
                .as_ref()
                .map(|p| outlier::Outliers::new(p, outlier::RealClock::default())),
            health: cfg.health_check.clone().map(Arc::new),
            down: AtomicUsize::new(0),
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .map(|c| breaker::Breaker::new(c, outlier::RealClock::default())),
            fallback,
            retry: cfg
                .retry
                .as_ref()
                .map(|r| retry::Policy::new(r, outlier::RealClock::default())),
            retries: AtomicU64::new(0),
            latency,
            hash_on: match cfg.balance {
                Balance::Hash => Some(cfg.hash_on.clone().unwrap_or(HashOn::ClientIp)),
                _ => None,
            },
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            read_timeout: Duration::from_millis(cfg.read_timeout_ms),
            transport: match cfg.protocol {
                UpstreamProtocol::Http1 => Transport::Http1(
                    (0..slots)
                        .map(|_| Arc::new(WorkerPool::new(lifetimes)))
                        .collect(),
                ),
                UpstreamProtocol::H2 => Transport::H2(h2::Client::new(lifetimes)),
            },
            slots,
            started: AtomicBool::new(false),
            cfg: cfg.clone(),
            dns: dns.cloned(),
        };
        let endpoints = targets
            .iter()
            .zip(parsed)
            .map(|(t, parsed)| up.endpoint(t.url.as_str().into(), parsed, t.weight))
            .collect::<Result<Vec<_>, String>>()?;
        up.replace_targets(endpoints);
        Ok(up)
    }

    /// A new endpoint for one target of this upstream.
    fn endpoint(
        &self,
        url: Arc<str>,
        target: Target,
        weight: u32,
    ) -> Result<Arc<Endpoint>, String> {
        let tls = match (&self.tls, target.tls) {
            (Some(config), true) => Some(tls::TlsTarget {
                config: config.clone(),
                name: tls::server_name(&self.cfg, target.authority.host())?,
            }),
            (None, true) => return Err(format!("{url}: https:// targets need TLS settings")),
            _ => None,
        };
        let h2 = matches!(self.transport, Transport::H2(_)).then(|| h2::Slots::new(self.slots));
        Ok(Arc::new(Endpoint::new(url, target, tls, weight, h2)))
    }

    /// Balances over `endpoints` from now on.
    fn replace_targets(&self, endpoints: Vec<Arc<Endpoint>>) {
        if let Some(o) = &self.outliers {
            o.recount(endpoints.iter().map(|e| &e.outlier));
        }
        let down = endpoints.iter().filter(|e| e.health.is_down()).count();
        self.down.store(down, Ordering::Relaxed);
        self.set
            .store(Arc::new(Set::new(self.cfg.balance, endpoints)));
    }

    /// The targets balanced over now.
    pub fn targets(&self) -> Arc<Set> {
        self.set.load_full()
    }

    /// What it was built from: an upstream built from the same is the same upstream.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What `balance = "hash"` hashes, if the upstream balances so.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.hash_on.as_ref()
    }

    /// The circuit's state, when it has a breaker.
    pub fn circuit(&self) -> Option<breaker::State> {
        self.breaker.as_ref().map(breaker::Breaker::state)
    }

    /// How long a target stays ejected, from now, if it is.
    pub fn ejected_for(&self, ep: &Endpoint) -> Option<Duration> {
        self.outliers.as_ref()?.ejected_for(&ep.outlier)
    }

    /// Whether the upstream checks its targets' health.
    pub fn checks_health(&self) -> bool {
        self.health.is_some()
    }

    /// Starts its health checks and discovery on `rt`, once for its lifetime; a table that
    /// keeps the upstream does not start them again.
    pub fn start(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(cfg) = &self.health {
            rt.spawn(health::run(Arc::downgrade(self), cfg.clone()));
        }
        if let Some(d) = &self.cfg.discovery {
            rt.spawn(discovery::run(
                Arc::downgrade(self),
                d.clone(),
                self.dns.clone(),
                self.base.clone(),
            ));
        }
    }

    /// The connection set health checks use.
    fn checker_slot(&self) -> usize {
        self.slots - 1
    }

    /// The health checker took a target down (`true`) or brought it up.
    fn health_changed(&self, down: bool) {
        if down {
            self.down.fetch_add(1, Ordering::Relaxed);
        } else {
            self.down.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sends a request (whose URI holds only path and query) to the target the balancer picks
    /// (by `key` under `balance = "hash"`, see [`balance::Balancer::key`]) and waits for the
    /// response headers; the body streams in both directions. A failed attempt is retried as
    /// `[retry]` allows, on another target when there is one, all within `deadline` when
    /// given. Failures are logged here, with their fault; `error.rs` turns them into the
    /// client's answer.
    pub async fn send(
        &self,
        req: Request<Outgoing>,
        key: Option<u64>,
        deadline: Option<Duration>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let (mut parts, mut body) = req.into_parts();
        origin_form(&mut parts.uri);
        let started = tokio::time::Instant::now();
        let deadline = deadline.map(|d| (started + d, d));
        let set = self.set.load_full();
        let in_hand = body.replayable();
        let own_host = !parts.headers.contains_key(header::HOST);
        let worker = crate::wire::worker_index() % (self.slots - 1);
        if let Some(r) = &self.retry {
            r.request();
        }
        // Whether attempt `n` may be followed by another, which needs the headers again.
        let may_retry = |n: u32| self.retry.as_ref().is_some_and(|p| n <= p.attempts());
        let mut tried: Vec<usize> = Vec::new();
        let mut attempt = 1u32;
        loop {
            let admitted = match &self.breaker {
                None => breaker::Admit::Pass,
                Some(b) => {
                    let (admit, change) = b.admit();
                    self.log_circuit(change);
                    if admit == breaker::Admit::Reject {
                        return self.unavailable(ProxyError::CircuitOpen);
                    }
                    admit
                }
            };
            let Some(index) = self.choose(&set, key, &tried) else {
                if let Some(b) = &self.breaker {
                    // A probe that found nowhere to go gives its turn back as a failure.
                    self.log_circuit(b.record(admitted, false));
                }
                return self.unavailable(ProxyError::NoTarget);
            };
            let ep = &set.endpoints[index];
            let in_flight = ep.start();
            if own_host && matches!(self.transport, Transport::Http1(_)) {
                parts.headers.insert(header::HOST, ep.target.host.clone());
            }
            let mut timeout = self.timeout;
            if let Some((at, total)) = deadline {
                let left = at.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(ProxyError::Timeout(total));
                }
                timeout = timeout.min(left);
            }
            let sent = self
                .exchange(
                    ep,
                    worker,
                    &mut parts,
                    &mut body,
                    timeout,
                    may_retry(attempt),
                )
                .await;
            let outcome = match &sent {
                Ok(resp) if resp.status().is_server_error() => Outcome::Status5xx,
                Ok(_) => Outcome::Ok,
                Err(e) if e.fault() == Fault::Upstream => Outcome::Failed,
                Err(_) => Outcome::NotCounted,
            };
            self.count(ep, outcome, admitted);
            let failure = match &sent {
                Ok(resp) if outcome == Outcome::Status5xx => {
                    Some(Failure::Status(resp.status().as_u16()))
                }
                Ok(_) => None,
                Err(e) => e.failure(),
            };
            if let Err(e) = &sent {
                self.log_failure(&ep.target, e, attempt);
                ep.set_last_error(error_chain(e));
            }
            let retry = match (&self.retry, failure) {
                (Some(policy), Some(failure)) => {
                    let still_in_hand = in_hand || failure == Failure::Connect;
                    policy
                        .retries(attempt, failure, &parts.method, still_in_hand)
                        .then(|| policy.backoff(attempt))
                        .filter(|wait| {
                            deadline.is_none_or(|(at, _)| tokio::time::Instant::now() + *wait < at)
                        })
                }
                _ => None,
            };
            let Some(wait) = retry else {
                if outcome != Outcome::NotCounted {
                    self.latency.observe(started.elapsed().as_secs_f64());
                }
                return match sent {
                    Ok(mut resp) => {
                        strip_hop_by_hop(resp.headers_mut());
                        resp.headers_mut().remove(&X_WASMGATE_ATTEMPTS);
                        if attempt > 1 {
                            resp.extensions_mut().insert(Attempts(attempt));
                        }
                        Ok(resp.map(|wire| UpstreamBody {
                            wire,
                            _in_flight: Some(in_flight),
                        }))
                    }
                    Err(e) => Err(e),
                };
            };
            drop((sent, in_flight));
            self.retries.fetch_add(1, Ordering::Relaxed);
            tried.push(index);
            attempt += 1;
            tracing::debug!(
                upstream = &*self.name,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            parts
                .headers
                .insert(X_WASMGATE_ATTEMPTS.clone(), HeaderValue::from(attempt));
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// One exchange with one target over connection set `slot`: what every attempt and
    /// health probe does. The body is borrowed, and untouched when no connection could be
    /// made; `parts` keep their headers for another attempt when `again` (HTTP/1.1 borrows
    /// them anyway; HTTP/2 copies them only then).
    async fn exchange(
        &self,
        ep: &Endpoint,
        slot: usize,
        parts: &mut http::request::Parts,
        body: &mut Outgoing,
        timeout: Duration,
        again: bool,
    ) -> Result<Response<Wire>, ProxyError> {
        let opts = SendOptions {
            target: ep.id,
            slot,
            addr: &ep.target.addr,
            tls: ep.tls.as_ref(),
            connect_timeout: self.connect_timeout.min(timeout),
            timeout,
            read_timeout: self.read_timeout,
        };
        match &self.transport {
            Transport::Http1(pools) => {
                parts.version = http::Version::HTTP_11;
                pools[slot]
                    .send(&opts, parts, body)
                    .await
                    .map(|r| r.map(Wire::H1))
            }
            Transport::H2(client) => {
                let slots = ep
                    .h2
                    .as_ref()
                    .expect("an h2 upstream's endpoints have slots");
                let send = client.handle(slots, &opts).await?;
                let scheme = if ep.target.tls {
                    http::uri::Scheme::HTTPS
                } else {
                    http::uri::Scheme::HTTP
                };
                let body = match body {
                    Outgoing::Bytes(b) => Outgoing::Bytes(b.clone()),
                    stream => std::mem::replace(stream, Outgoing::Bytes(Bytes::new())),
                };
                let mut req = Request::new(body);
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.headers_mut() = if again {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                h2::Client::send(send, &opts, &scheme, &ep.target.authority, req)
                    .await
                    .map(|r| r.map(Wire::H2))
            }
        }
    }

    /// A usable target not tried yet, or any usable one; every target when too few are
    /// usable and `panic_below_percent` says so.
    fn choose(&self, set: &Set, key: Option<u64>, tried: &[usize]) -> Option<usize> {
        let load = |t: usize| set.endpoints[t].in_flight();
        let usable = |t: usize| self.usable(set, t);
        if self.panicking(set) {
            return set.balancer.pick(key, |_| true, load);
        }
        if !tried.is_empty()
            && let Some(t) = set
                .balancer
                .pick(key, |t| !tried.contains(&t) && usable(t), load)
        {
            return Some(t);
        }
        set.balancer.pick(key, usable, load)
    }

    fn usable(&self, set: &Set, t: usize) -> bool {
        let ep = &set.endpoints[t];
        !ep.health.is_down()
            && self.outliers.as_ref().is_none_or(|o| {
                o.usable(&ep.outlier, || {
                    tracing::info!(upstream = &*self.name, target = %ep.target.authority, "target returned from ejection");
                })
            })
    }

    /// Whether so few targets are usable that every one is used. Counted only when some
    /// target is out.
    fn panicking(&self, set: &Set) -> bool {
        let pct = self.cfg.panic_below_percent as usize;
        let n = set.endpoints.len();
        if pct == 0 || n == 0 {
            return false;
        }
        let out = self.down.load(Ordering::Relaxed)
            + self.outliers.as_ref().map_or(0, outlier::Outliers::ejected);
        if out == 0 {
            return false;
        }
        let usable = (0..n).filter(|t| self.usable(set, *t)).count();
        usable * 100 < pct * n
    }

    /// Counts an attempt's outcome: the target's counts, its ejection, the breaker.
    fn count(&self, ep: &Endpoint, outcome: Outcome, admitted: breaker::Admit) {
        let counter = match outcome {
            Outcome::Ok => &ep.counts.ok,
            Outcome::Status5xx => &ep.counts.error_status,
            Outcome::Failed => &ep.counts.failed,
            Outcome::NotCounted => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ok = outcome == Outcome::Ok;
        if let Some(b) = &self.breaker {
            self.log_circuit(b.record(admitted, ok));
        }
        let Some(o) = &self.outliers else { return };
        if ok {
            o.success(&ep.outlier);
        } else if let Some(outlier::Change::Ejected { failures, for_ms }) =
            o.failure(&ep.outlier, self.set.load().endpoints.len())
        {
            tracing::warn!(
                upstream = &*self.name,
                target = %ep.target.authority,
                consecutive_failures = failures,
                eject_ms = for_ms,
                "target ejected"
            );
        }
    }

    fn log_circuit(&self, change: Option<breaker::Change>) {
        let upstream = &*self.name;
        match change {
            None => {}
            Some(breaker::Change::Opened { failed, of }) => {
                tracing::warn!(upstream, failed, requests = of, "circuit opened")
            }
            Some(breaker::Change::HalfOpened) => {
                tracing::info!(upstream, "circuit half-open: probing")
            }
            Some(breaker::Change::Reopened) => {
                tracing::warn!(upstream, "circuit opened again: a probe failed")
            }
            Some(breaker::Change::Closed) => tracing::info!(upstream, "circuit closed"),
        }
    }

    /// The answer when nothing can be sent: the fallback when there is one.
    fn unavailable(&self, why: ProxyError) -> Result<Response<UpstreamBody>, ProxyError> {
        let Some((status, headers, body)) = &self.fallback else {
            tracing::debug!(upstream = &*self.name, error = %why, "nothing sent");
            return Err(why);
        };
        let mut resp = Response::new(UpstreamBody {
            wire: Wire::Fixed(Some(body.clone())),
            _in_flight: None,
        });
        *resp.status_mut() = *status;
        *resp.headers_mut() = headers.clone();
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(resp)
    }

    /// Whether requests to switch protocols can be passed on: HTTP/1.1 upstreams only (an
    /// HTTP/2 upstream is sent such a request as an ordinary one).
    pub fn can_upgrade(&self) -> bool {
        matches!(self.transport, Transport::Http1(_))
    }

    /// Sends a request to switch protocols (`Upgrade: websocket`, no body) on a connection of
    /// its own, and reads the answer within the upstream's timeout. The `Connection` and
    /// `Upgrade` headers are set here, on the request and on a 101. It is not retried.
    pub async fn upgrade(
        &self,
        mut req: Request<()>,
        protocol: HeaderValue,
        key: Option<u64>,
    ) -> Result<Switch, ProxyError> {
        let Transport::Http1(pools) = &self.transport else {
            unreachable!("checked by can_upgrade");
        };
        let admitted = match &self.breaker {
            None => breaker::Admit::Pass,
            Some(b) => {
                let (admit, change) = b.admit();
                self.log_circuit(change);
                if admit == breaker::Admit::Reject {
                    return self
                        .unavailable(ProxyError::CircuitOpen)
                        .map(Switch::Refused);
                }
                admit
            }
        };
        let set = self.set.load_full();
        let Some(index) = self.choose(&set, key, &[]) else {
            return self.unavailable(ProxyError::NoTarget).map(Switch::Refused);
        };
        let ep = &set.endpoints[index];
        let in_flight = ep.start();
        origin_form(req.uri_mut());
        let headers = req.headers_mut();
        headers
            .entry(header::HOST)
            .or_insert_with(|| ep.target.host.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
        let answered = async {
            let stream =
                pool::connect(&ep.target.addr, ep.tls.as_ref(), self.connect_timeout).await?;
            let mut conn = h1::Conn::new(stream);
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let head = conn
                .upgrade(req.method(), pq, req.headers(), self.timeout)
                .await?;
            Ok::<_, ProxyError>((conn, head))
        };
        let (conn, mut head) = match answered.await {
            Ok(answered) => answered,
            Err(e) => {
                let outcome = if e.fault() == Fault::Upstream {
                    Outcome::Failed
                } else {
                    Outcome::NotCounted
                };
                self.count(ep, outcome, admitted);
                self.log_failure(&ep.target, &e, 1);
                ep.set_last_error(error_chain(&e));
                return Err(e);
            }
        };
        let outcome = if head.status.is_server_error() {
            Outcome::Status5xx
        } else {
            Outcome::Ok
        };
        self.count(ep, outcome, admitted);
        let switched = head.status == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = head.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut head.headers);
        if !switched {
            // A refusal, passed on; its connection is not kept.
            head.reuse = false;
            let pool = &pools[crate::wire::worker_index() % (self.slots - 1)];
            let resp = h1::into_response(conn, head, pool, ep.id, self.read_timeout);
            return Ok(Switch::Refused(resp.map(|b| UpstreamBody {
                wire: Wire::H1(b),
                _in_flight: Some(in_flight),
            })));
        }
        let Some(upgrade) = upgrade else {
            let e = ProxyError::Upstream(UpstreamError::Invalid(wasmgate_h1::Invalid(
                "a 101 without Upgrade",
            )));
            self.log_failure(&ep.target, &e, 1);
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
                _in_flight: Some(in_flight),
            },
        ))
    }

    fn log_failure(&self, target: &Target, e: &ProxyError, attempt: u32) {
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
                tracing::warn!(fault, upstream, %target, attempt, timeout_ms = t.as_millis() as u64, "upstream timed out")
            }
            ProxyError::Handshake(_) => {
                tracing::warn!(fault, upstream, %target, attempt, error = %error_chain(e), "upstream request failed: TLS handshake")
            }
            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_) => {
                tracing::warn!(fault, upstream, %target, attempt, error = %error_chain(e), "upstream request failed: cannot connect")
            }
            ProxyError::NoTarget | ProxyError::CircuitOpen => {
                tracing::debug!(fault, upstream, error = %e, "nothing sent")
            }
            ProxyError::Upstream(_) => {
                tracing::warn!(fault, upstream, %target, attempt, error = %error_chain(e), "upstream request failed")
            }
        }
    }
}

/// An absolute-form request URI keeps only what the upstream needs.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_some() {
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        *uri = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
}

/// What an upstream is built from: its settings and the bytes of the TLS files they name. Two
/// configs whose upstream has the same fingerprint describe the same upstream.
pub fn fingerprint(
    cfg: &UpstreamConfig,
    dns: Option<&crate::config::DnsConfig>,
    base: &std::path::Path,
) -> String {
    let mut material = format!("{cfg:?}{dns:?}").into_bytes();
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
