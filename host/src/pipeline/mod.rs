//! Running a route's plugins: the request phase in pipeline order, the response phase in
//! reverse, over one `Exchange` that carries the request, its variables and the response.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, request, response};

use crate::capabilities::http::reply_into_parts;
use crate::config::{EscapedSlashes, OnError};
use crate::destination::{Destination, Destinations};
use crate::metrics::Metrics;
use crate::plugins::bindings::{Decision, Registration};
use crate::plugins::pool::{Failure, Instances};
use crate::plugins::refusals::RequestRefusals;
use crate::wire::Peer;

pub mod header_rules;
use self::header_rules::HeaderRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

/// A request id, unique within the process: a random prefix drawn at start and a counter.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(u64);

impl RequestId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(rand::random);
        write!(f, "{prefix:08x}{:016x}", self.0)
    }
}

/// How the response body is read before the response phase (`Pipeline::response_body_read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// Not read: it streams on.
    Not,
    /// Read whole; a body past this many bytes fails the request.
    Whole(usize),
    /// Read when it is at most this many bytes; a larger one streams on.
    UpTo(usize),
}

/// The response as the response phase sees it.
pub struct ResponseState {
    pub parts: response::Parts,
    /// The whole body when it was buffered or replaced; `None` while it streams.
    pub body: Option<Bytes>,
}

/// A response header change a plugin queued in its request phase.
#[derive(Debug)]
pub enum HeaderEdit {
    Set(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
    Remove(HeaderName),
    /// Set to the value the variable has when the change is applied; left alone when it is
    /// unset or not a valid header value.
    SetFromVar(HeaderName, String),
}

impl HeaderEdit {
    fn apply(self, headers: &mut HeaderMap, vars: &[(String, String)]) {
        match self {
            Self::Set(n, v) => {
                headers.insert(n, v);
            }
            Self::Append(n, v) => {
                headers.append(n, v);
            }
            Self::Remove(n) => {
                headers.remove(n);
            }
            Self::SetFromVar(n, var) => {
                let value = vars
                    .iter()
                    .find(|(name, _)| *name == var)
                    .and_then(|(_, v)| HeaderValue::from_str(v).ok());
                if let Some(v) = value {
                    headers.insert(n, v);
                }
            }
        }
    }
}

/// A queued response header change, and the pipeline entry that queued it: it is applied where
/// that entry's response phase runs.
#[derive(Debug)]
pub struct ResponseEdit {
    pub stage: usize,
    pub edit: HeaderEdit,
}

/// Everything plugins can see and change about one request.
pub struct Exchange {
    pub request: request::Parts,
    /// The whole request body, when a plugin asked for it.
    pub request_body: Option<Bytes>,
    pub response: Option<ResponseState>,
    pub vars: Vec<(String, String)>,
    /// Response header changes queued in the request phase, in the order they were made.
    pub response_edits: Vec<ResponseEdit>,
    /// The pipeline entry being called (its index).
    pub stage: usize,
    /// The client the request comes from (see `wire::TrustedProxies::client`).
    pub client: Peer,
    /// The connection's peer, which `X-Forwarded-For` names as the last hop.
    pub peer: Peer,
    /// The connection's TLS session, on a TLS listener.
    pub tls: Option<Arc<crate::server::tls::TlsInfo>>,
    pub route: Arc<str>,
    pub id: RequestId,
    /// The id a `request-id` header rule gave the request, which `${request_id}` renders.
    pub request_id: Option<HeaderValue>,
    pub phase: Phase,
    /// Set per call from the running plugin's registration.
    pub allow_request_body: bool,
    pub allow_response_body: bool,
    pub body_limit: usize,
    /// How a path a plugin sets is normalised: as the request's own was.
    pub escaped_slashes: EscapedSlashes,
    /// Host calls the plugins made that were refused; logged when the request ends.
    pub refusals: RequestRefusals,
    /// Every upstream of the request's config, which `set-upstream` chooses from.
    pub destinations: Option<Arc<Destinations>>,
    /// The upstream a plugin chose with `set-upstream`, instead of the route's.
    pub chosen: Option<Arc<Destination>>,
    /// Whether the route's own upstream speaks HTTP/2.
    pub route_h2: bool,
    /// Set once a plugin or a header rule first wrote `host`: the `Host` the client sent
    /// (none from an HTTP/1.0 client without one), which `X-Forwarded-Host` still names while
    /// the upstream is sent the plugin's.
    pub client_host: Option<Option<HeaderValue>>,
    /// The plugins' outbound calls so far, from the first.
    pub outbound: Option<Arc<crate::outbound::Calls>>,
    /// The bounds plugins put on the response body they read (`limit-response-body`): the
    /// stage and its bound in bytes, the latest call of a stage winning.
    pub response_body_bounds: Vec<(usize, usize)>,
    /// Whether the response body went on streamed, past every bound, rather than buffered.
    pub response_body_passed: bool,
}

impl Exchange {
    pub fn new(request: request::Parts, client: Peer, route: Arc<str>, body_limit: usize) -> Self {
        Self {
            request,
            request_body: None,
            response: None,
            vars: Vec::new(),
            response_edits: Vec::new(),
            stage: 0,
            peer: client.clone(),
            client,
            tls: None,
            route,
            id: RequestId::next(),
            request_id: None,
            phase: Phase::Request,
            allow_request_body: false,
            allow_response_body: false,
            body_limit,
            escaped_slashes: EscapedSlashes::default(),
            refusals: RequestRefusals::default(),
            destinations: None,
            chosen: None,
            route_h2: false,
            client_host: None,
            outbound: None,
            response_body_bounds: Vec::new(),
            response_body_passed: false,
        }
    }

    /// The bound stage `stage` put on the response body, if it set one.
    pub fn response_body_bound(&self, stage: usize) -> Option<usize> {
        self.response_body_bounds
            .iter()
            .rev()
            .find(|(s, _)| *s == stage)
            .map(|(_, bound)| *bound)
    }

    /// Sets the running stage's bound on the response body.
    pub fn bound_response_body(&mut self, bound: usize) {
        let stage = self.stage;
        self.response_body_bounds.retain(|(s, _)| *s != stage);
        self.response_body_bounds.push((stage, bound));
    }

    /// Whether the request goes to an HTTP/2 upstream, as things stand.
    pub fn to_h2(&self) -> bool {
        self.chosen.as_ref().map_or(self.route_h2, |d| d.h2)
    }

    /// Before `host` is written: keeps the client's `Host` the first time.
    pub fn host_written(&mut self) {
        if self.client_host.is_none() {
            self.client_host = Some(self.request.headers.get(http::header::HOST).cloned());
        }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn response(&mut self) -> wasmtime::Result<&mut ResponseState> {
        self.response
            .as_mut()
            .ok_or_else(|| wasmtime::format_err!("no response in this phase"))
    }
}

/// One pipeline entry.
pub struct Stage {
    pub plugin: Arc<str>,
    pub hash: Arc<str>,
    pub registration: Registration,
    /// Header changes the plugin declared in `init`, which the host makes itself.
    pub rules: HeaderRules,
    pub on_error: OnError,
    pub instances: Instances,
}

/// How the request phase ended.
pub enum RequestOutcome {
    /// Send the (possibly changed) request upstream.
    Forward,
    /// A plugin answered; this is its checked reply.
    Reply(response::Parts, Bytes),
    /// A plugin failed; the client gets a 500.
    Failed,
}

/// A route's plugins, in order.
pub struct Pipeline {
    /// Shared with the next config's table when the entry did not change.
    pub stages: Vec<Arc<Stage>>,
}

impl Pipeline {
    /// Whether any plugin reads the request body, which must then be buffered.
    pub fn needs_request_body(&self) -> bool {
        self.stages.iter().any(|s| s.registration.request_body)
    }

    /// Whether any of the first `ran` stages has a response phase or response header rules,
    /// or queued response header changes in `ex`.
    pub fn has_response_phase(&self, ran: usize, ex: &Exchange) -> bool {
        self.stages[..ran]
            .iter()
            .any(|s| s.registration.on_response || !s.rules.response.is_empty())
            || ex.response_edits.iter().any(|e| e.stage < ran)
    }

    /// How the response body is read for the response phases of the first `ran` stages:
    /// not at all when none of them reads it; whole, within `limit` (the route's), when one
    /// that reads it set no bound; else up to the largest bound they set (within `limit`),
    /// streamed on past it.
    pub fn response_body_read(&self, ran: usize, ex: &Exchange, limit: usize) -> BodyRead {
        let mut largest = None;
        for (i, s) in self.stages[..ran].iter().enumerate() {
            if !(s.registration.on_response && s.registration.response_body) {
                continue;
            }
            match ex.response_body_bound(i) {
                None => return BodyRead::Whole(limit),
                Some(0) => {}
                Some(bound) => largest = largest.max(Some(bound.min(limit))),
            }
        }
        largest.map_or(BodyRead::Not, BodyRead::UpTo)
    }

    /// Runs the request phase. Returns the exchange, how many stages took part (their
    /// response phases run later, in reverse), and the outcome.
    pub async fn on_request(
        &self,
        mut ex: Box<Exchange>,
        metrics: &Metrics,
    ) -> (Box<Exchange>, usize, RequestOutcome) {
        ex.phase = Phase::Request;
        let mut buf = String::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if !stage.rules.request.is_empty() {
                stage.rules.apply_to_request(&mut ex, &mut buf);
            }
            if !stage.registration.on_request {
                continue;
            }
            ex.allow_request_body = stage.registration.request_body;
            ex.allow_response_body = false;
            ex.stage = i;
            let (back, result) = stage.instances.on_request(ex).await;
            ex = back;
            match result {
                Ok(Decision::Continue) => {}
                Ok(Decision::Respond(reply)) => match reply_into_parts(reply, ex.body_limit) {
                    Ok((parts, body)) => return (ex, i, RequestOutcome::Reply(parts, body)),
                    Err(e) => {
                        if fail(&ex, stage, &Failure::BadOutput(e.to_string()), metrics) {
                            return (ex, i, RequestOutcome::Failed);
                        }
                    }
                },
                Err(f) => {
                    if fail(&ex, stage, &f, metrics) {
                        return (ex, i, RequestOutcome::Failed);
                    }
                }
            }
        }
        (ex, self.stages.len(), RequestOutcome::Forward)
    }

    /// Runs the response phase of the first `ran` stages, in reverse. `ex.response` must be
    /// set. A plugin's reply replaces the response, and earlier plugins see the replacement.
    pub async fn on_response(
        &self,
        mut ex: Box<Exchange>,
        ran: usize,
        metrics: &Metrics,
    ) -> (Box<Exchange>, Result<(), ()>) {
        ex.phase = Phase::Response;
        let mut edits = std::mem::take(&mut ex.response_edits);
        let mut buf = String::new();
        for (i, stage) in self.stages[..ran].iter().enumerate().rev() {
            if !stage.rules.response.is_empty() {
                stage.rules.apply_to_response(&mut ex, &mut buf);
            }
            if edits.last().is_some_and(|e| e.stage >= i) {
                let from = edits.partition_point(|e| e.stage < i);
                let response = ex
                    .response
                    .as_mut()
                    .expect("the response phase has a response");
                for e in edits.drain(from..) {
                    if e.stage == i {
                        e.edit.apply(&mut response.parts.headers, &ex.vars);
                    }
                }
            }
            if !stage.registration.on_response {
                continue;
            }
            ex.stage = i;
            ex.allow_request_body = false;
            ex.allow_response_body =
                stage.registration.response_body && ex.response_body_bound(i) != Some(0);
            let (back, result) = stage.instances.on_response(ex).await;
            ex = back;
            match result {
                Ok(Decision::Continue) => {}
                Ok(Decision::Respond(reply)) => match reply_into_parts(reply, ex.body_limit) {
                    Ok((parts, body)) => {
                        ex.response = Some(ResponseState {
                            parts,
                            body: Some(body),
                        })
                    }
                    Err(e) => {
                        if fail(&ex, stage, &Failure::BadOutput(e.to_string()), metrics) {
                            return (ex, Err(()));
                        }
                    }
                },
                Err(f) => {
                    if fail(&ex, stage, &f, metrics) {
                        return (ex, Err(()));
                    }
                }
            }
        }
        (ex, Ok(()))
    }
}

/// Logs and counts a failure; returns whether it fails the request (`on_error = "deny"`).
fn fail(ex: &Exchange, stage: &Stage, failure: &Failure, metrics: &Metrics) -> bool {
    let deny = stage.on_error == OnError::Deny;
    tracing::error!(
        route = %ex.route,
        plugin = %stage.plugin,
        request_id = %ex.id,
        phase = ?ex.phase,
        kind = failure.kind(),
        error = %failure,
        on_error = if deny { "deny" } else { "skip" },
        "plugin failed"
    );
    metrics.plugin_error(&ex.route, &stage.plugin, failure.kind());
    deny
}
