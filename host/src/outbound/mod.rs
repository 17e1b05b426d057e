//! Plugins' outbound calls: the standard `wasi:http/outgoing-handler`, as wasmtime-wasi-http
//! implements it, with every request sent here ([`Hooks::send_request`]) under the plugin's
//! grants and limits.
//!
//! - A request whose authority is a granted upstream's name (`http://users/users/7`) goes
//!   through that upstream: its balancing, health, circuit, retries, TLS and pools. Its `Host`
//!   is the upstream's `host_header` policy, as for a proxied request.
//! - A request to a granted origin (`https://idp.example.com`) goes to it as itself, through
//!   [`origin::Client`]: a name must resolve to public addresses only.
//! - Anything else is refused with `HTTP-request-denied` before any socket opens.
//!
//! Limits (`outbound_*` on `[wasm]` or the plugin): the whole call, head and body, within
//! `outbound_timeout_ms` (and within the guest's own request options, when shorter); a
//! request's plugins may have `outbound_in_flight` calls in flight at once and make
//! `outbound_per_request` in all; response bodies up to `outbound_body_bytes`. Both bodies
//! are read whole: the request's first, so an upstream can retry it, and the response's
//! before its head is handed over.
//!
//! Time a plugin waits on a call does not count against its `call_timeout_ms`: the epoch
//! deadline only counts while the guest runs (see `plugins::state::HostState::ticks_left`).

pub mod origin;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body::Body;
use http_body_util::BodyExt as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{Limits, Origin, OutboundGrant};
use crate::destination::{Destination, Destinations, HostSource, set_host};
use crate::upstream::Outgoing;
use crate::upstream::ProxyError;

/// How a call ended, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived (whatever its status).
    Ok,
    /// Not granted, or granted but resolving to an address that is not.
    Denied,
    /// Over `outbound_in_flight` or `outbound_per_request`.
    Limited,
    Timeout,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Self::Ok,
        Self::Denied,
        Self::Limited,
        Self::Timeout,
        Self::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Limited => "limited",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
        }
    }
}

/// One destination's metric handles, fetched once at load.
#[derive(Clone)]
pub struct Handles {
    /// The destination as `/metrics` and the log name it: `upstream:users`, an origin, or
    /// `ungranted`.
    pub name: Arc<str>,
    by_outcome: [Counter; 5],
    duration: Histogram,
}

impl Handles {
    pub fn new(metrics: &crate::metrics::Metrics, plugin: &str, destination: &str) -> Self {
        let (by_outcome, duration) = metrics.outbound(plugin, destination);
        Self {
            name: destination.into(),
            by_outcome,
            duration,
        }
    }

    fn record(&self, outcome: Outcome, took: Duration) {
        self.by_outcome[outcome as usize].inc();
        if outcome != Outcome::Denied && outcome != Outcome::Limited {
            self.duration.observe(took.as_secs_f64());
        }
    }
}

/// The limits of one plugin's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub timeout: Duration,
    pub in_flight: u32,
    pub per_request: u32,
    pub body_bytes: u64,
}

impl CallLimits {
    pub fn new(l: &Limits) -> Self {
        use crate::config::{
            OUTBOUND_BODY_BYTES, OUTBOUND_IN_FLIGHT, OUTBOUND_PER_REQUEST, OUTBOUND_TIMEOUT_MS,
        };
        Self {
            timeout: Duration::from_millis(l.outbound_timeout_ms.unwrap_or(OUTBOUND_TIMEOUT_MS)),
            in_flight: l.outbound_in_flight.unwrap_or(OUTBOUND_IN_FLIGHT),
            per_request: l.outbound_per_request.unwrap_or(OUTBOUND_PER_REQUEST),
            body_bytes: l.outbound_body_bytes.unwrap_or(OUTBOUND_BODY_BYTES),
        }
    }
}

/// Where one pipeline entry's calls may go, resolved at load.
pub struct Outbound {
    pub plugin: Arc<str>,
    pub route: Arc<str>,
    upstreams: Vec<(Arc<str>, Arc<Destination>, Handles)>,
    origins: Vec<(Origin, Handles)>,
    ungranted: Handles,
    pub limits: CallLimits,
    /// Present when some origin is granted.
    client: Option<Arc<origin::Client>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("plugin", &self.plugin)
            .field(
                "upstreams",
                &self.upstreams.iter().map(|u| &u.0).collect::<Vec<_>>(),
            )
            .field(
                "origins",
                &self.origins.iter().map(|o| &o.0).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .finish()
    }
}

/// A granted destination of one request.
enum To<'a> {
    Upstream(&'a Destination, &'a Handles),
    Origin(&'a origin::Client, &'a Handles),
}

impl<'a> To<'a> {
    fn handles(&self) -> &'a Handles {
        match self {
            To::Upstream(_, h) | To::Origin(_, h) => h,
        }
    }
}

impl Outbound {
    /// `grants` resolved against the config's upstreams (each with its own `host_header`).
    /// A grant naming an upstream that is not there is a config error found before this.
    pub fn new(
        plugin: Arc<str>,
        route: Arc<str>,
        grants: &[OutboundGrant],
        destinations: &Destinations,
        limits: CallLimits,
        client: Option<Arc<origin::Client>>,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        let mut upstreams = Vec::new();
        let mut origins = Vec::new();
        for g in grants {
            let handles = Handles::new(metrics, &plugin, &g.to_string());
            match g {
                OutboundGrant::Upstream(name) => {
                    if let Some((name, d)) = destinations.get_key_value(name.as_str()) {
                        upstreams.push((name.clone(), d.clone(), handles));
                    }
                }
                OutboundGrant::Origin(o) => origins.push((o.clone(), handles)),
            }
        }
        Self {
            ungranted: Handles::new(metrics, &plugin, "ungranted"),
            plugin,
            route,
            upstreams,
            origins,
            limits,
            client,
        }
    }

    /// What `uri` is granted as, if it is.
    fn destination(&self, uri: &Uri) -> Option<To<'_>> {
        let authority = uri.authority()?;
        if authority.port().is_none()
            && let Some((_, d, h)) = self
                .upstreams
                .iter()
                .find(|(name, _, _)| authority.host().eq_ignore_ascii_case(name))
        {
            return Some(To::Upstream(d, h));
        }
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let (host, port) = (authority.host(), authority.port_u16());
        let client = self.client.as_deref()?;
        self.origins
            .iter()
            .find(|(o, _)| o.is(tls, host, port))
            .map(|(_, h)| To::Origin(client, h))
    }

    /// Sends one call, within `deadline`.
    async fn send(
        self: Arc<Self>,
        req: Request<WasiBody>,
        deadline: Instant,
    ) -> Result<Response<WasiBody>, Error> {
        let started = Instant::now();
        let Some(to) = self.destination(req.uri()) else {
            self.ungranted.record(Outcome::Denied, Duration::ZERO);
            tracing::warn!(route = &*self.route, plugin = &*self.plugin, uri = %req.uri(), "outbound call refused: not granted");
            return Err(Error::HttpRequestDenied);
        };
        let handles = to.handles();
        let body_bytes = self.limits.body_bytes;
        let sent = tokio::time::timeout_at(deadline, async {
            let (mut parts, body) = req.into_parts();
            let body = whole(body, body_bytes)
                .await
                .map_err(|e| e.unwrap_or(Error::HttpRequestBodySize(Some(body_bytes))))?;
            match to {
                To::Upstream(d, _) => {
                    // The name the plugin used is not a host: the upstream's policy decides.
                    parts.headers.remove(header::HOST);
                    set_host(&mut parts.headers, HostSource::Policy(&d.host_header));
                    let left = deadline.saturating_duration_since(Instant::now());
                    let req = Request::from_parts(parts, Outgoing::Bytes(body));
                    let resp = d
                        .upstream
                        .send(req, None, Some(left))
                        .await
                        .map_err(|e| from_proxy(&e))?;
                    read_response(resp, body_bytes).await
                }
                To::Origin(client, _) => {
                    let resp = client
                        .send(Request::from_parts(parts, body))
                        .await
                        .map_err(|(e, why)| {
                            tracing::warn!(
                                route = &*self.route,
                                plugin = &*self.plugin,
                                destination = &*handles.name,
                                why,
                                "outbound call to an origin failed"
                            );
                            e
                        })?;
                    read_response(resp, body_bytes).await
                }
            }
        })
        .await;
        let result = match sent {
            Ok(r) => r,
            Err(_) => Err(Error::ConnectionReadTimeout),
        };
        let took = started.elapsed();
        match &result {
            Ok(resp) => {
                handles.record(Outcome::Ok, took);
                tracing::debug!(
                    route = &*self.route,
                    plugin = &*self.plugin,
                    destination = &*handles.name,
                    status = resp.status().as_u16(),
                    ms = took.as_millis() as u64,
                    "outbound call"
                );
            }
            Err(Error::HttpRequestDenied) => {
                handles.record(Outcome::Denied, took);
                tracing::warn!(
                    route = &*self.route,
                    plugin = &*self.plugin,
                    destination = &*handles.name,
                    "outbound call refused: the name resolves to an address that is not granted"
                );
            }
            Err(e) => {
                let outcome =
                    if matches!(e, Error::ConnectionReadTimeout | Error::ConnectionTimeout) {
                        Outcome::Timeout
                    } else {
                        Outcome::Failed
                    };
                handles.record(outcome, took);
                tracing::warn!(route = &*self.route, plugin = &*self.plugin, destination = &*handles.name, error = %e, ms = took.as_millis() as u64, "outbound call failed");
            }
        }
        result
    }
}

/// What an upstream's failure is to the plugin.
fn from_proxy(e: &ProxyError) -> Error {
    match e {
        ProxyError::ConnectTimeout(_) => Error::ConnectionTimeout,
        ProxyError::Timeout(_) => Error::ConnectionReadTimeout,
        ProxyError::Connect(_) => Error::ConnectionRefused,
        ProxyError::Handshake(_) => Error::TlsProtocolError,
        ProxyError::NoTarget | ProxyError::CircuitOpen => Error::DestinationUnavailable,
        ProxyError::ClientBody(_) | ProxyError::Upstream(_) => Error::HttpProtocolError,
    }
}

/// A body read whole, up to `limit` bytes: `Err(None)` past it, else the body's own error.
async fn whole<B>(body: B, limit: u64) -> Result<Bytes, Option<Error>>
where
    B: Body<Data = Bytes, Error = Error>,
{
    match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(e.downcast::<Error>().ok().map(|e| *e)),
    }
}

/// A response with its body read whole, up to `limit` bytes. The plugin gets the head only
/// once the body is in, so every failure is the call's own error code (wasi:http reports a
/// body stream's failure without one).
async fn read_response<B>(resp: Response<B>, limit: u64) -> Result<Response<WasiBody>, Error>
where
    B: Body<Data = Bytes>,
{
    let (parts, body) = resp.into_parts();
    let body = whole(body.map_err(|_| Error::HttpResponseIncomplete), limit)
        .await
        .map_err(|e| e.unwrap_or(Error::HttpResponseBodySize(Some(limit))))?;
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// The calls one request's plugins have made and have in flight, created by its first call.
#[derive(Debug, Default)]
pub struct Calls {
    in_flight: AtomicU32,
    made: AtomicU32,
}

impl Calls {
    /// Counts a new call, unless it would go over `limits`.
    fn admit(self: &Arc<Self>, limits: &CallLimits) -> Option<InFlight> {
        if self.made.fetch_add(1, Ordering::Relaxed) >= limits.per_request {
            return None;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= limits.in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.made.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight(self.clone()))
    }
}

/// A call in flight, until its response head (or its failure).
struct InFlight(Arc<Calls>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The wasi:http hooks of one plugin instance.
#[derive(Default)]
pub struct Hooks {
    /// The instance's grants; `None` when it has none (every call is refused).
    pub outbound: Option<Arc<Outbound>>,
    /// The calls of the request being handled: lent by the exchange for each phase call.
    pub calls: Option<Arc<Calls>>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let Some(out) = self.outbound.clone() else {
            tracing::warn!(uri = %request.uri(), "outbound call refused: the plugin has no `outbound` grants");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let calls = self.calls.get_or_insert_with(Default::default);
        let Some(in_flight) = calls.admit(&out.limits) else {
            let handles = out
                .destination(request.uri())
                .map_or(&out.ungranted, |to| to.handles());
            handles.record(Outcome::Limited, Duration::ZERO);
            tracing::warn!(
                route = &*out.route,
                plugin = &*out.plugin,
                in_flight = out.limits.in_flight,
                per_request = out.limits.per_request,
                "outbound call refused: over the request's limit of calls"
            );
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        // The guest's own timeouts, when shorter than the plugin's.
        let mut timeout = out.limits.timeout;
        if let Some(o) = options {
            let asked = o
                .connect_timeout
                .unwrap_or(Duration::MAX)
                .saturating_add(o.first_byte_timeout.unwrap_or(Duration::MAX));
            timeout = timeout.min(asked);
        }
        let deadline = Instant::now() + timeout;
        Box::new(async move {
            let resp = out.send(request, deadline).await;
            drop(in_flight);
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                Box::new(async { Ok(()) });
            resp.map(|r| (r, done))
        })
    }
}
