//! A mock host, so a plugin's logic is tested natively with `cargo test`: no wasm, no runtime.
//! (Native targets only.)
//!
//! - [`init`] builds a plugin from a JSON config through the same parsing path as the wasm
//!   `init`, so config errors name the same keys.
//! - [`MockRequest`] and [`MockResponse`] stand in for the host's request and response, with
//!   the host's checks and limits, taken from the crate the host enforces them with
//!   ([`rules`](crate::rules)): header names must be HTTP tokens ([`HostError::InvalidName`]),
//!   values must not hold control bytes other than tab ([`HostError::InvalidValue`]), the
//!   headers the host manages are its own ([`HostError::NotAllowed`]), statuses are final
//!   ones, the request is read-only in the response phase, queued response headers and
//!   variables are capped as on the host.
//! - [`on_request`] and [`on_response`] run a hook as the host would (skipping it when the
//!   plugin's registration says so), and check a reply the hook answers with as the host
//!   does.
//! - The key-value store, the rate limiter and the log bound keys, values and lines as the
//!   host does.
//! - [`outbound`] answers [outbound calls](crate::outbound) as a test scripts them, holds them
//!   to the gateway's limits, and records what was sent and what was sent together.
//! - The capability modules ([`log`](crate::log), [`clock`](crate::clock), [`kv`](crate::kv),
//!   [`rate_limit`](crate::rate_limit), [`outbound`](crate::outbound)) talk to mock state that
//!   is per thread, so tests (which `cargo test` runs on threads of their own) do not see each
//!   other's. [`reset`] clears it.
//!
//! ```
//! use wasmgate_sdk::{testing, kv};
//! testing::set_now_millis(10_000);
//! kv::set("k", b"v", Some(500)).unwrap();
//! testing::advance_millis(499);
//! assert!(kv::get("k").is_some());
//! testing::advance_millis(1);
//! assert!(kv::get("k").is_none());
//! ```

use std::any::TypeId;
use std::collections::BTreeMap;

use wasmgate_rules::header_rules::{Source, Variable, is_request_id};
use wasmgate_rules::http::{
    FINAL_STATUS, MAX_RESPONSE_EDITS, MAX_VAR_BYTES, MAX_VARS, is_header_name, is_header_value,
    is_host_header, is_host_managed, is_token,
};

use crate::config::parse_config;
use crate::http::{RequestBackend, ResponseBackend};
use crate::log::Level;
use crate::{ConfigError, Decision, Error, HostError, Plugin, Request, Response, TlsInfo};

pub use host::KvLimits;

pub mod outbound;

/// Builds a plugin from a JSON config, as the wasm `init` does (`null` and `{}` mean no
/// config). Also checks that [`Plugin::registration`] does not panic.
///
/// ```
/// # use wasmgate_sdk::{Plugin, ConfigError};
/// # #[derive(serde::Deserialize)] struct Config { rate: u32 }
/// # struct Limit;
/// # impl Plugin for Limit {
/// #     type Config = Config;
/// #     fn new(_: Config) -> Result<Self, ConfigError> { Ok(Limit) }
/// # }
/// let err = wasmgate_sdk::testing::init::<Limit>(serde_json::json!({ "rate": -1 })).err().unwrap();
/// assert_eq!(err.key.as_deref(), Some("rate"));
/// ```
///
/// The [header rules](crate::header_rules) `new` declares are kept for the plugin's type, and
/// [`on_request`] and [`on_response`] apply them: with two plugins of one type, the rules of
/// the one built last.
pub fn init<P: Plugin>(config: serde_json::Value) -> Result<P, ConfigError> {
    let config = parse_config::<P::Config>(&config.to_string())?;
    host::begin_declaring();
    let plugin = P::new(config);
    host::end_declaring(TypeId::of::<P>(), plugin.is_ok());
    let plugin = plugin?;
    let _ = plugin.registration();
    Ok(plugin)
}

/// Runs `plugin.on_request` on a mock request, as the host would: skipped (returning
/// [`Decision::Continue`]) when the plugin's registration has `on_request: false`.
///
/// Response header changes the hook queues ([`Request::set_response_header`] and its
/// siblings) are kept on the request and applied by [`on_response`]; when the hook answers
/// with its own reply they are dropped, as the host drops them.
///
/// A reply is checked as the host checks it (see [`Reply`](crate::Reply)): a status that is not
/// final, a header the host would refuse or a body over the request's
/// [`with_body_limit`](MockRequest::with_body_limit) is an [`Error`], as it is a plugin failure
/// of kind `bad_output` on the host; a `content-length` in it is dropped.
pub fn on_request<P: Plugin>(plugin: &mut P, req: &mut MockRequest) -> Result<Decision, Error> {
    req.phase = Phase::Request;
    for rule in host::rules(TypeId::of::<P>()).request {
        rule.apply_to_request(req);
    }
    if !plugin.registration().on_request {
        return Ok(Decision::Continue);
    }
    outbound::enter_request(req.outbound_calls);
    let decision = plugin.on_request(&mut Request::new(req));
    req.outbound_calls = outbound::leave_request();
    if let Ok(Decision::Respond(_)) = decision {
        req.response_edits.clear();
    }
    check_decision(decision, req.body_limit)
}

/// Checks a hook's reply as the host does before it sends it.
fn check_decision(
    decision: Result<Decision, Error>,
    body_limit: Option<usize>,
) -> Result<Decision, Error> {
    let Decision::Respond(mut reply) = decision? else {
        return Ok(Decision::Continue);
    };
    let bad = |what: String| Err(Error::new(format!("bad output: {what}")));
    if !FINAL_STATUS.contains(&reply.status) {
        return bad(format!(
            "status {} is not a final HTTP status (200-599)",
            reply.status
        ));
    }
    if body_limit.is_some_and(|limit| reply.body.len() > limit) {
        return bad(format!(
            "body of {} bytes exceeds the route's limit",
            reply.body.len()
        ));
    }
    // A reply may state its own length; the host frames it anyway.
    reply
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
    if let Some((name, _)) = reply
        .headers
        .iter()
        .find(|(n, v)| check_header(n, v).is_err())
    {
        return bad(format!("header {name:?} is invalid or host-managed"));
    }
    Ok(Decision::Respond(reply))
}

/// Runs `plugin.on_response` on a mock request and response, as the host would: first the
/// response header changes the request phase queued are applied to `resp` (and taken off
/// `req`), then the hook runs, skipped (returning [`Decision::Continue`]) when the plugin's
/// registration has `on_response: false`. The request is read-only meanwhile (changes are
/// [`HostError::NotAllowed`]; vars can be set). A bound the request phase put on the response
/// body ([`Request::limit_response_body`]) holds for `resp`'s body as the host holds it: past
/// the bound [`Response::body`] is [`HostError::BodyTooLarge`], and a bound of 0 makes it
/// [`HostError::BodyNotDeclared`].
pub fn on_response<P: Plugin>(
    plugin: &mut P,
    req: &mut MockRequest,
    resp: &mut MockResponse,
) -> Result<Decision, Error> {
    req.phase = Phase::Response;
    for rule in host::rules(TypeId::of::<P>()).response {
        rule.apply_to_response(req, resp);
    }
    for edit in std::mem::take(&mut req.response_edits) {
        match edit {
            ResponseEdit::Set(n, v) => set_header(&mut resp.headers, &n, &v)?,
            ResponseEdit::Append(n, v) => append_header(&mut resp.headers, &n, &v)?,
            ResponseEdit::Remove(n) => remove_header(&mut resp.headers, &n),
            ResponseEdit::SetFromVar(n, var) => {
                if let Some(v) = req.vars.get(&var) {
                    // An invalid value leaves the header as it is, as on the host.
                    let _ = set_header(&mut resp.headers, &n, v);
                }
            }
        }
    }
    if !plugin.registration().on_response {
        return Ok(Decision::Continue);
    }
    let body_limit = req.body_limit;
    outbound::enter_request(req.outbound_calls);
    resp.bound = req.response_body_bound;
    let decision = plugin.on_response(&mut Request::new(req), &mut Response::new(resp));
    resp.bound = None;
    req.outbound_calls = outbound::leave_request();
    check_decision(decision, body_limit)
}

/// Sets the mock clock (milliseconds since the Unix epoch). Until a test sets it, the mock
/// clock is the real one.
pub fn set_now_millis(now: u64) {
    host::set_now_millis(now)
}

/// Moves the mock clock forward (starting from the real time if it was not set).
pub fn advance_millis(millis: u64) {
    host::advance_millis(millis)
}

/// The lines logged on this thread so far, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    host::logs()
}

/// Keeps only log lines at `level` or above (and makes [`log::enabled`](crate::log::enabled)
/// say so). Default: everything.
pub fn set_log_level(level: Level) {
    host::set_log_level(level)
}

/// Sets the limits of the mock key-value store. Default: the host's key and value sizes, and
/// no entry count ([`KvLimits::default`]).
pub fn set_kv_limits(limits: KvLimits) {
    host::set_kv_limits(limits)
}

/// Clears this thread's mock host: the clock goes back to real time, and the store, limiters,
/// logs, outbound scripts and requests, and limits are emptied.
pub fn reset() {
    host::reset();
    outbound::reset();
}

/// A response header change queued in the request phase (already checked).
#[derive(Debug, Clone)]
enum ResponseEdit {
    Set(String, String),
    Append(String, String),
    Remove(String),
    SetFromVar(String, String),
}

/// Which hook a mock request is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

/// A request for [`on_request`] and [`on_response`], built up front and inspected afterwards.
///
/// Build it with `with_*` methods; read it (after a hook ran) with the plain ones. Header
/// names are case-insensitive and stored lower-case.
///
/// ```
/// use wasmgate_sdk::testing::MockRequest;
/// let req = MockRequest::new("GET", "/items?page=2")
///     .with_header("Accept", "application/json")
///     .with_client_addr("10.1.2.3")
///     .with_var("consumer", "alice");
/// assert_eq!(req.path(), "/items");
/// assert_eq!(req.query(), Some("page=2"));
/// assert_eq!(req.header("accept"), Some("application/json"));
/// assert_eq!(req.var("consumer"), Some("alice"));
/// ```
#[derive(Debug, Clone)]
pub struct MockRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_access: bool,
    body_limit: Option<usize>,
    client_addr: String,
    tls: Option<TlsInfo>,
    route: String,
    id: String,
    vars: BTreeMap<String, String>,
    /// The config's upstreams, when the test names them; any name is one otherwise.
    upstreams: Option<Vec<String>>,
    /// What `set_upstream` chose.
    upstream: Option<String>,
    response_edits: Vec<ResponseEdit>,
    /// The id a `request_id` header rule gave the request.
    request_id: Option<String>,
    /// Outbound calls its hooks made, against the gateway's per-request limit.
    outbound_calls: usize,
    /// The bound `limit_response_body` set.
    response_body_bound: Option<usize>,
    phase: Phase,
}

impl MockRequest {
    /// A request with this method and target (`/path` or `/path?query`). Defaults: no
    /// headers, empty body (readable), client `127.0.0.1`, route `test`, id `test-request`,
    /// no vars.
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_string(), Some(query.to_string())),
            None => (target.to_string(), None),
        };
        Self {
            method: method.to_string(),
            path,
            query,
            headers: Vec::new(),
            body: Vec::new(),
            body_access: true,
            body_limit: None,
            client_addr: "127.0.0.1".to_string(),
            tls: None,
            route: "test".to_string(),
            id: "test-request".to_string(),
            vars: BTreeMap::new(),
            upstreams: None,
            upstream: None,
            response_edits: Vec::new(),
            request_id: None,
            outbound_calls: 0,
            response_body_bound: None,
            phase: Phase::Request,
        }
    }

    /// Adds a header (not checked: a test may hand a plugin anything a client could send).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Whether [`Request::body`] and [`Request::set_body`] work (as when the registration
    /// declares `request_body`), or fail with [`HostError::BodyNotDeclared`]. Default: true.
    pub fn with_body_access(mut self, allowed: bool) -> Self {
        self.body_access = allowed;
        self
    }

    /// The route's body limit: [`Request::body`] and [`Request::set_body`] fail with
    /// [`HostError::BodyTooLarge`] past it. Default: none.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// Sets the client's address.
    pub fn with_client_addr(mut self, addr: &str) -> Self {
        self.client_addr = addr.to_string();
        self
    }

    /// The TLS session the request came on (default: none, a plain connection).
    pub fn with_tls(mut self, tls: TlsInfo) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the route name.
    pub fn with_route(mut self, route: &str) -> Self {
        self.route = route.to_string();
        self
    }

    /// Sets the request id.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// Sets a per-request var, as an earlier plugin would.
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// The upstreams the gateway's config has, which [`Request::set_upstream`] may choose;
    /// any other name is [`HostError::UnknownUpstream`]. Default: any name is taken.
    pub fn with_upstreams(mut self, names: &[&str]) -> Self {
        self.upstreams = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// The upstream the plugin chose with [`Request::set_upstream`]; `None` sends the
    /// request to the route's.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The bound the plugin put on the response body with
    /// [`Request::limit_response_body`], if it did.
    pub fn response_body_bound(&self) -> Option<usize> {
        self.response_body_bound
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name).collect()
    }

    /// All headers, in order, names lower-case.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// A per-request var.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Every per-request var.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The client's address.
    pub fn client_addr(&self) -> &str {
        &self.client_addr
    }

    /// The route name.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The request id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Response header changes are queued in the request phase only, at most
    /// [`MAX_RESPONSE_EDITS`].
    fn room_for_response_edit(&self) -> Result<(), HostError> {
        self.writable()?;
        if self.response_edits.len() >= MAX_RESPONSE_EDITS {
            return Err(HostError::NotAllowed);
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), HostError> {
        match self.phase {
            Phase::Request => Ok(()),
            Phase::Response => Err(HostError::NotAllowed),
        }
    }
}

impl RequestBackend for MockRequest {
    fn method(&self) -> String {
        self.method.clone()
    }

    fn set_method(&mut self, method: &str) -> Result<(), HostError> {
        self.writable()?;
        if !is_token(method) {
            return Err(HostError::InvalidValue);
        }
        self.method = method.to_string();
        Ok(())
    }

    fn path(&self) -> String {
        self.path.clone()
    }

    fn set_path(&mut self, path: &str) -> Result<(), HostError> {
        self.writable()?;
        if !is_valid_path(path) {
            return Err(HostError::InvalidValue);
        }
        // The host's normaliser, with its default for escaped slashes (refuse them).
        let normal = wasmgate_uri::normalise_path(path, wasmgate_uri::EscapedSlashes::Reject)
            .map_err(|_| HostError::InvalidValue)?;
        self.path = normal.into_owned();
        Ok(())
    }

    fn query(&self) -> Option<String> {
        self.query.clone()
    }

    fn set_query(&mut self, query: Option<&str>) -> Result<(), HostError> {
        self.writable()?;
        if let Some(query) = query
            && !is_valid_query(query)
        {
            return Err(HostError::InvalidValue);
        }
        self.query = query.map(str::to_string);
        Ok(())
    }

    fn header(&self, name: &str) -> Option<String> {
        header_values(&self.headers, name)
            .next()
            .map(str::to_string)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
            .map(str::to_string)
            .collect()
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.writable()?;
        if is_host_header(name) && !is_host(value) {
            return Err(HostError::InvalidValue);
        }
        set_header(&mut self.headers, name, value)
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.writable()?;
        if is_host_header(name) {
            return Err(HostError::NotAllowed);
        }
        append_header(&mut self.headers, name, value)
    }

    fn remove_header(&mut self, name: &str) {
        if self.writable().is_ok() {
            remove_header(&mut self.headers, name)
        }
    }

    fn client_addr(&self) -> String {
        self.client_addr.clone()
    }

    fn tls(&self) -> Option<TlsInfo> {
        self.tls.clone()
    }

    fn route(&self) -> String {
        self.route.clone()
    }

    fn set_upstream(&mut self, name: &str) -> Result<(), HostError> {
        self.writable()?;
        if self
            .upstreams
            .as_ref()
            .is_some_and(|known| !known.iter().any(|u| u == name))
        {
            return Err(HostError::UnknownUpstream);
        }
        self.upstream = Some(name.to_string());
        Ok(())
    }

    fn id(&self) -> String {
        self.id.clone()
    }

    fn body(&self) -> Result<Vec<u8>, HostError> {
        read_body(&self.body, self.body_access, self.body_limit)
    }

    fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        if !self.body_access {
            return Err(HostError::BodyNotDeclared);
        }
        self.writable()?;
        write_body(&mut self.body, body, self.body_limit)
    }

    fn limit_response_body(&mut self, max_bytes: usize) -> Result<(), HostError> {
        self.writable()?;
        self.response_body_bound = Some(max_bytes);
        Ok(())
    }

    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn set_var(&mut self, name: &str, value: &str) {
        // Ignored past the host's caps, as the host ignores it.
        if name.len() + value.len() > MAX_VAR_BYTES {
            return;
        }
        if let Some(slot) = self.vars.get_mut(name) {
            value.clone_into(slot);
        } else if self.vars.len() < MAX_VARS {
            self.vars.insert(name.to_string(), value.to_string());
        }
    }

    fn queue_response_header(
        &mut self,
        name: &str,
        value: Option<&str>,
        append: bool,
    ) -> Result<(), HostError> {
        self.room_for_response_edit()?;
        let edit = match value {
            Some(value) => {
                let name = check_header(name, value)?;
                if append {
                    ResponseEdit::Append(name, value.to_string())
                } else {
                    ResponseEdit::Set(name, value.to_string())
                }
            }
            None => ResponseEdit::Remove(check_header(name, "")?),
        };
        self.response_edits.push(edit);
        Ok(())
    }

    fn queue_response_header_from_var(&mut self, name: &str, var: &str) -> Result<(), HostError> {
        self.room_for_response_edit()?;
        let name = check_header(name, "")?;
        if var.len() > MAX_VAR_BYTES {
            return Err(HostError::InvalidValue);
        }
        self.response_edits
            .push(ResponseEdit::SetFromVar(name, var.to_string()));
        Ok(())
    }
}

/// A response for [`on_response`], built up front and inspected afterwards.
///
/// ```
/// use wasmgate_sdk::testing::MockResponse;
/// let resp = MockResponse::new(200).with_header("Content-Type", "text/plain").with_body("hi");
/// assert_eq!(resp.header("content-type"), Some("text/plain"));
/// assert_eq!(resp.body(), b"hi");
/// ```
#[derive(Debug, Clone)]
pub struct MockResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_access: bool,
    body_limit: Option<usize>,
    /// The request's `limit_response_body` bound, while its `on_response` runs.
    bound: Option<usize>,
}

impl MockResponse {
    /// A response with this status, no headers and an empty body (readable).
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            body_access: true,
            body_limit: None,
            bound: None,
        }
    }

    /// Adds a header (not checked).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Whether [`Response::body`] and [`Response::set_body`] work (as when the registration
    /// declares `response_body`), or fail with [`HostError::BodyNotDeclared`]. Default: true.
    pub fn with_body_access(mut self, allowed: bool) -> Self {
        self.body_access = allowed;
        self
    }

    /// The route's body limit: [`Response::body`] and [`Response::set_body`] fail with
    /// [`HostError::BodyTooLarge`] past it. Default: none.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name).collect()
    }

    /// All headers, in order, names lower-case.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl ResponseBackend for MockResponse {
    fn status(&self) -> u16 {
        self.status
    }

    fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        if !FINAL_STATUS.contains(&status) {
            return Err(HostError::InvalidValue);
        }
        self.status = status;
        Ok(())
    }

    fn header(&self, name: &str) -> Option<String> {
        header_values(&self.headers, name)
            .next()
            .map(str::to_string)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
            .map(str::to_string)
            .collect()
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        set_header(&mut self.headers, name, value)
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        append_header(&mut self.headers, name, value)
    }

    fn remove_header(&mut self, name: &str) {
        remove_header(&mut self.headers, name)
    }

    fn body(&self) -> Result<Vec<u8>, HostError> {
        match self.bound {
            Some(0) => Err(HostError::BodyNotDeclared),
            Some(bound) if self.body_access && self.body.len() > bound => {
                Err(HostError::BodyTooLarge)
            }
            _ => read_body(&self.body, self.body_access, self.body_limit),
        }
    }

    fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        if !self.body_access || self.bound == Some(0) {
            return Err(HostError::BodyNotDeclared);
        }
        write_body(&mut self.body, body, self.body_limit)
    }
}

fn header_values<'h>(
    headers: &'h [(String, String)],
    name: &str,
) -> impl Iterator<Item = &'h str> + use<'h> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// Whether a value may be the `Host` the upstream is sent, as the host checks it.
fn is_host(value: &str) -> bool {
    matches!(wasmgate_uri::parse_host(value.as_bytes()), Ok(Some(_)))
}

/// The lower-case name, if `name: value` may be set.
fn check_header(name: &str, value: &str) -> Result<String, HostError> {
    if !is_header_name(name) {
        return Err(HostError::InvalidName);
    }
    if is_host_managed(name) {
        return Err(HostError::NotAllowed);
    }
    if !is_header_value(value) {
        return Err(HostError::InvalidValue);
    }
    Ok(name.to_ascii_lowercase())
}

fn set_header(
    headers: &mut Vec<(String, String)>,
    name: &str,
    value: &str,
) -> Result<(), HostError> {
    let name = check_header(name, value)?;
    headers.retain(|(n, _)| *n != name);
    headers.push((name, value.to_string()));
    Ok(())
}

fn append_header(
    headers: &mut Vec<(String, String)>,
    name: &str,
    value: &str,
) -> Result<(), HostError> {
    let name = check_header(name, value)?;
    headers.push((name, value.to_string()));
    Ok(())
}

fn remove_header(headers: &mut Vec<(String, String)>, name: &str) {
    if !is_host_managed(name) {
        let name = name.to_ascii_lowercase();
        headers.retain(|(n, _)| *n != name);
    }
}

fn read_body(body: &[u8], access: bool, limit: Option<usize>) -> Result<Vec<u8>, HostError> {
    if !access {
        return Err(HostError::BodyNotDeclared);
    }
    if limit.is_some_and(|limit| body.len() > limit) {
        return Err(HostError::BodyTooLarge);
    }
    Ok(body.to_vec())
}

fn write_body(body: &mut Vec<u8>, new: &[u8], limit: Option<usize>) -> Result<(), HostError> {
    if limit.is_some_and(|limit| new.len() > limit) {
        return Err(HostError::BodyTooLarge);
    }
    *body = new.to_vec();
    Ok(())
}

/// An origin-form path: `/`, then visible ASCII without `?` or `#`.
fn is_valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// A query: visible ASCII without `#` (may be empty).
fn is_valid_query(query: &str) -> bool {
    query.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

impl host::DeclaredRule {
    /// Makes a request rule's change, as the host does.
    fn apply_to_request(&self, req: &mut MockRequest) {
        match self {
            Self::Remove(name) => remove_header(&mut req.headers, name),
            Self::RequestId(name) => {
                let id = match header_values(&req.headers, name).next() {
                    Some(id) if is_request_id(id) => id.to_string(),
                    _ => new_uuid(),
                };
                let _ = set_header(&mut req.headers, name, &id);
                req.request_id = Some(id);
            }
            Self::Set(name, _) if is_host_header(name) => {
                let value = self.render(req);
                if is_host(&value) {
                    let _ = set_header(&mut req.headers, name, &value);
                }
            }
            Self::Set(..) | Self::Append(..) => {
                let value = self.render(req);
                self.write(&mut req.headers, &value);
            }
        }
    }

    /// Makes a response rule's change, as the host does.
    fn apply_to_response(&self, req: &MockRequest, resp: &mut MockResponse) {
        match self {
            Self::Remove(name) => remove_header(&mut resp.headers, name),
            // Declared for the request phase only.
            Self::RequestId(_) => {}
            Self::Set(..) | Self::Append(..) => self.write(&mut resp.headers, &self.render(req)),
        }
    }

    /// A set or append rule's value, rendered from the request.
    fn render(&self, req: &MockRequest) -> String {
        let mut value = String::new();
        if let Self::Set(_, t) | Self::Append(_, t) = self {
            t.render(req, &mut value);
        }
        value
    }

    /// Writes a set or append rule's value. One that is not a valid header value leaves the
    /// header as it is, as on the host.
    fn write(&self, headers: &mut Vec<(String, String)>, value: &str) {
        let _ = match self {
            Self::Set(name, _) => set_header(headers, name, value),
            Self::Append(name, _) => append_header(headers, name, value),
            Self::Remove(_) | Self::RequestId(_) => Ok(()),
        };
    }
}

/// A random (version 4) UUID, as the host makes for a request id.
fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Templates read the mock request as the host reads the real one.
impl Source for MockRequest {
    fn push(&self, variable: &Variable, out: &mut String) {
        match variable {
            Variable::ClientIp => out.push_str(&self.client_addr),
            Variable::RequestId => out.push_str(self.request_id.as_deref().unwrap_or(&self.id)),
            Variable::Route => out.push_str(&self.route),
            Variable::Method => out.push_str(&self.method),
            Variable::Path => out.push_str(&self.path),
            Variable::Header(h) => {
                out.push_str(header_values(&self.headers, h).next().unwrap_or_default())
            }
            Variable::Var(v) => out.push_str(self.vars.get(v).map_or("", String::as_str)),
        }
    }
}

/// The mock host's per-thread state, which the capability modules call natively.
pub(crate) mod host {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use wasmgate_rules::rate_limit::{MAX_KEY_BYTES, MAX_PERIOD_MS};

    use std::any::TypeId;

    use wasmgate_rules::header_rules::{MAX_RULES, Template};
    use wasmgate_rules::http::{is_header_name, is_host_managed};

    use crate::HostError;
    use crate::header_rules::Phase;
    use crate::kv::KvError;
    use crate::log::Level;
    use crate::rate_limit::{Quota, Verdict};

    /// A header rule a plugin declared, checked (the name lower-case).
    #[derive(Debug, Clone)]
    pub(crate) enum DeclaredRule {
        Set(String, Template),
        Append(String, Template),
        Remove(String),
        RequestId(String),
    }

    /// One plugin's rules, per phase.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Rules {
        pub(crate) request: Vec<DeclaredRule>,
        pub(crate) response: Vec<DeclaredRule>,
    }

    /// Limits of the mock key-value store (see [`set_kv_limits`](super::set_kv_limits)):
    /// past them, [`kv::set`](crate::kv::set) fails as the host's would.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KvLimits {
        /// Most live entries ([`KvError::Full`] past it).
        pub max_entries: usize,
        /// Longest key, in bytes ([`KvError::TooLarge`] past it).
        pub max_key_bytes: usize,
        /// Longest value, in bytes ([`KvError::TooLarge`] past it): the plugin's
        /// `kv_max_value_bytes` on the host.
        pub max_value_bytes: usize,
    }

    impl Default for KvLimits {
        /// The host's key and value sizes ([`rules::kv`](crate::rules::kv)), and no entry
        /// count: past its count the host evicts the least used entries instead of refusing,
        /// so a test that sets `max_entries` sees [`KvError::Full`] where the host would
        /// forget an older key.
        fn default() -> Self {
            Self {
                max_entries: usize::MAX,
                max_key_bytes: wasmgate_rules::kv::MAX_KEY_BYTES,
                max_value_bytes: wasmgate_rules::kv::MAX_VALUE_BYTES,
            }
        }
    }

    struct Entry {
        value: Vec<u8>,
        expires_at: Option<u64>,
    }

    #[derive(Hash, PartialEq, Eq)]
    struct BucketKey {
        name: String,
        quota: Quota,
        key: String,
    }

    struct State {
        now_millis: Option<u64>,
        kv: HashMap<String, Entry>,
        kv_limits: KvLimits,
        /// GCRA: each bucket's theoretical arrival time, in nanoseconds.
        buckets: HashMap<BucketKey, u128>,
        logs: Vec<(Level, String)>,
        log_level: Level,
        /// The rules being declared, during `init`.
        declaring: Option<Rules>,
        /// Each plugin type's rules, from its last `init`.
        rules: HashMap<TypeId, Rules>,
    }

    impl Default for State {
        fn default() -> Self {
            Self {
                now_millis: None,
                kv: HashMap::new(),
                kv_limits: KvLimits::default(),
                buckets: HashMap::new(),
                logs: Vec::new(),
                log_level: Level::Trace,
                declaring: None,
                rules: HashMap::new(),
            }
        }
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        STATE.with(|state| f(&mut state.borrow_mut()))
    }

    fn real_now_millis() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn now(state: &State) -> u64 {
        state.now_millis.unwrap_or_else(real_now_millis)
    }

    pub(crate) fn now_millis() -> u64 {
        with(|s| now(s))
    }

    pub(crate) fn monotonic_nanos() -> u64 {
        match with(|s| s.now_millis) {
            Some(millis) => millis.saturating_mul(1_000_000),
            None => {
                static START: OnceLock<Instant> = OnceLock::new();
                let nanos = START.get_or_init(Instant::now).elapsed().as_nanos();
                u64::try_from(nanos).unwrap_or(u64::MAX)
            }
        }
    }

    pub(super) fn set_now_millis(millis: u64) {
        with(|s| s.now_millis = Some(millis))
    }

    pub(super) fn advance_millis(millis: u64) {
        with(|s| s.now_millis = Some(now(s).saturating_add(millis)))
    }

    pub(crate) fn log_enabled(level: Level) -> bool {
        with(|s| level >= s.log_level)
    }

    pub(crate) fn log(level: Level, message: &str) {
        let message = wasmgate_rules::log::cut_line(message);
        if with(|s| {
            let keep = level >= s.log_level;
            if keep {
                s.logs.push((level, message.to_string()));
            }
            keep
        }) {
            eprintln!("[plugin {level}] {message}");
        }
    }

    pub(super) fn logs() -> Vec<(Level, String)> {
        with(|s| s.logs.clone())
    }

    pub(super) fn set_log_level(level: Level) {
        with(|s| s.log_level = level)
    }

    pub(super) fn set_kv_limits(limits: KvLimits) {
        with(|s| s.kv_limits = limits)
    }

    pub(super) fn reset() {
        with(|s| *s = State::default())
    }

    pub(super) fn begin_declaring() {
        with(|s| s.declaring = Some(Rules::default()))
    }

    /// Ends `init`: a plugin that was built keeps the rules it declared.
    pub(super) fn end_declaring(plugin: TypeId, built: bool) {
        with(|s| {
            let rules = s.declaring.take().unwrap_or_default();
            if built {
                s.rules.insert(plugin, rules);
            } else {
                s.rules.remove(&plugin);
            }
        })
    }

    pub(super) fn rules(plugin: TypeId) -> Rules {
        with(|s| s.rules.get(&plugin).cloned().unwrap_or_default())
    }

    /// Checks and keeps a rule, as the host does.
    pub(crate) fn declare(
        phase: Phase,
        name: &str,
        rule: impl FnOnce(String) -> Result<DeclaredRule, HostError>,
    ) -> Result<(), HostError> {
        with(|s| {
            let rules = s.declaring.as_mut().ok_or(HostError::NotAllowed)?;
            if rules.request.len() + rules.response.len() >= MAX_RULES {
                return Err(HostError::NotAllowed);
            }
            if !is_header_name(name) {
                return Err(HostError::InvalidName);
            }
            if is_host_managed(name) {
                return Err(HostError::NotAllowed);
            }
            let rule = rule(name.to_ascii_lowercase())?;
            match phase {
                Phase::Request => rules.request.push(rule),
                Phase::Response => rules.response.push(rule),
            }
            Ok(())
        })
    }

    pub(crate) fn kv_get(key: &str) -> Option<Vec<u8>> {
        with(|s| {
            let now = now(s);
            let expired = s.kv.get(key)?.expires_at.is_some_and(|at| now >= at);
            if expired {
                s.kv.remove(key);
                return None;
            }
            s.kv.get(key).map(|e| e.value.clone())
        })
    }

    pub(crate) fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        with(|s| {
            let now = now(s);
            if key.len() > s.kv_limits.max_key_bytes || value.len() > s.kv_limits.max_value_bytes {
                return Err(KvError::TooLarge);
            }
            s.kv.retain(|_, e| e.expires_at.is_none_or(|at| now < at));
            if !s.kv.contains_key(key) && s.kv.len() >= s.kv_limits.max_entries {
                return Err(KvError::Full);
            }
            let expires_at = ttl_ms.map(|ttl| now.saturating_add(ttl));
            s.kv.insert(
                key.to_string(),
                Entry {
                    value: value.to_vec(),
                    expires_at,
                },
            );
            Ok(())
        })
    }

    pub(crate) fn kv_delete(key: &str) {
        with(|s| {
            s.kv.remove(key);
        })
    }

    pub(crate) fn limiter_open(name: &str, quota: Quota) -> Result<(), String> {
        if name.len() > MAX_KEY_BYTES {
            return Err(format!("limiter name longer than {MAX_KEY_BYTES} bytes"));
        }
        if quota.count == 0 {
            return Err("quota count must be positive".to_string());
        }
        if quota.period_ms == 0 || quota.period_ms > MAX_PERIOD_MS {
            return Err("period-ms must be between 1 ms and a year".to_string());
        }
        if quota.burst == 0 {
            return Err("quota burst must be positive".to_string());
        }
        Ok(())
    }

    /// GCRA: each token is worth `interval` of time; a bucket is its theoretical arrival time
    /// (`tat`), and a request passes while `tat` stays within `burst` intervals of now.
    pub(crate) fn limiter_check(name: &str, quota: Quota, key: &str, cost: u32) -> Verdict {
        if cost == 0 {
            // As on the host, which cannot read a bucket without taking from it.
            return Verdict {
                allowed: true,
                limit: quota.burst,
                remaining: quota.burst,
                reset_after_ms: 0,
                retry_after_ms: 0,
            };
        }
        const NANOS_PER_MILLI: u128 = 1_000_000;
        let ceil_millis =
            |nanos: u128| u64::try_from(nanos.div_ceil(NANOS_PER_MILLI)).unwrap_or(u64::MAX);
        with(|s| {
            let now = u128::from(now(s)) * NANOS_PER_MILLI;
            let interval = (u128::from(quota.period_ms) * NANOS_PER_MILLI
                / u128::from(quota.count.max(1)))
            .max(1);
            let capacity = interval * u128::from(quota.burst);
            if key.len() > MAX_KEY_BYTES {
                // As on the host: refused, and never given a bucket.
                return Verdict {
                    allowed: false,
                    limit: quota.burst,
                    remaining: 0,
                    reset_after_ms: ceil_millis(capacity),
                    retry_after_ms: ceil_millis(interval).max(1),
                };
            }
            let bucket = BucketKey {
                name: name.to_string(),
                quota,
                key: key.to_string(),
            };
            let tat = s.buckets.get(&bucket).copied().unwrap_or(now).max(now);
            let new_tat = tat + interval * u128::from(cost);
            let remaining = |tat: u128| {
                let used = tat - now;
                u32::try_from(capacity.saturating_sub(used) / interval).unwrap_or(u32::MAX)
            };
            if new_tat - now <= capacity {
                if cost > 0 {
                    s.buckets.insert(bucket, new_tat);
                }
                Verdict {
                    allowed: true,
                    limit: quota.burst,
                    remaining: remaining(new_tat),
                    reset_after_ms: ceil_millis(new_tat - now),
                    retry_after_ms: 0,
                }
            } else {
                let retry_after_ms = if cost > quota.burst {
                    u64::MAX
                } else {
                    ceil_millis(new_tat - now - capacity)
                };
                Verdict {
                    allowed: false,
                    limit: quota.burst,
                    remaining: remaining(tat),
                    reset_after_ms: ceil_millis(tat - now),
                    retry_after_ms,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{Limiter, Quota};
    use crate::{Registration, Reply, clock, kv, log};

    struct Echo {
        registration: Registration,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct EchoConfig {
        request_only: bool,
    }

    impl Plugin for Echo {
        type Config = EchoConfig;

        fn new(config: EchoConfig) -> Result<Self, ConfigError> {
            let registration = if config.request_only {
                Registration::request_only()
            } else {
                Registration::default()
            };
            Ok(Echo { registration })
        }

        fn registration(&self) -> Registration {
            self.registration
        }

        fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
            if let Some(name) = req.header("x-set") {
                req.set_header(&name, "v")?;
            }
            req.set_var("seen", "yes");
            Ok(Decision::Continue)
        }

        fn on_response(
            &mut self,
            req: &mut Request<'_>,
            resp: &mut Response<'_>,
        ) -> Result<Decision, Error> {
            resp.set_header("x-seen", &req.var("seen").unwrap_or_default())?;
            if req.path() == "/reply" {
                return Ok(Reply::new(418).into());
            }
            Ok(Decision::Continue)
        }
    }

    /// Queues response header changes from the request phase only.
    struct Queue;

    impl Plugin for Queue {
        type Config = ();

        fn new((): ()) -> Result<Self, ConfigError> {
            Ok(Queue)
        }

        fn registration(&self) -> Registration {
            Registration::request_only()
        }

        fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
            req.set_response_header("x-id", &req.id())?;
            req.append_response_header("x-multi", "2")?;
            req.remove_response_header("x-secret")?;
            if req.path() == "/reply" {
                return Ok(Reply::new(403).into());
            }
            Ok(Decision::Continue)
        }
    }

    #[test]
    fn queued_response_headers_apply_in_the_response_phase() {
        let mut plugin = init::<Queue>(serde_json::json!({})).unwrap();
        let mut req = MockRequest::new("GET", "/").with_id("r-1");
        assert_eq!(on_request(&mut plugin, &mut req), Ok(Decision::Continue));
        let mut resp = MockResponse::new(200)
            .with_header("x-multi", "1")
            .with_header("x-secret", "s");
        assert_eq!(
            on_response(&mut plugin, &mut req, &mut resp),
            Ok(Decision::Continue)
        );
        assert_eq!(resp.header("x-id"), Some("r-1"));
        assert_eq!(resp.header_values("x-multi"), vec!["1", "2"]);
        assert_eq!(resp.header("x-secret"), None);

        // Dropped with the plugin's own reply.
        let mut req = MockRequest::new("GET", "/reply");
        assert!(matches!(
            on_request(&mut plugin, &mut req),
            Ok(Decision::Respond(_))
        ));
        let mut resp = MockResponse::new(200);
        on_response(&mut plugin, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-id"), None);
    }

    #[test]
    fn queued_response_headers_are_checked_and_bounded() {
        let mut req = MockRequest::new("GET", "/");
        let mut r = Request::new(&mut req);
        assert_eq!(
            r.set_response_header("bad name", "v"),
            Err(HostError::InvalidName)
        );
        assert_eq!(
            r.set_response_header("x-a", "a\r\nb"),
            Err(HostError::InvalidValue)
        );
        assert_eq!(
            r.remove_response_header("content-length"),
            Err(HostError::NotAllowed)
        );
        for _ in 0..MAX_RESPONSE_EDITS {
            r.append_response_header("x-a", "1").unwrap();
        }
        assert_eq!(
            r.append_response_header("x-a", "1"),
            Err(HostError::NotAllowed)
        );

        let mut req = MockRequest::new("GET", "/");
        req.phase = Phase::Response;
        let mut r = Request::new(&mut req);
        assert_eq!(
            r.set_response_header("x-a", "1"),
            Err(HostError::NotAllowed)
        );
    }

    #[test]
    fn a_header_queued_from_a_var_takes_the_value_the_var_has_when_applied() {
        let mut req = MockRequest::new("GET", "/");
        let mut r = Request::new(&mut req);
        r.set_var("limit", "10");
        r.set_response_header_from_var("x-limit", "limit").unwrap();
        r.set_response_header_from_var("x-unset", "nothing")
            .unwrap();
        r.set_response_header_from_var("x-bad", "bad").unwrap();
        assert_eq!(
            r.set_response_header_from_var("bad name", "limit"),
            Err(HostError::InvalidName)
        );
        assert_eq!(
            r.set_response_header_from_var("content-length", "limit"),
            Err(HostError::NotAllowed)
        );
        // Changed after queueing, as a later plugin would.
        r.set_var("limit", "3");
        r.set_var("bad", "a\r\nb");
        let mut resp = MockResponse::new(200)
            .with_header("x-unset", "kept")
            .with_header("x-bad", "kept");
        on_response(&mut Queue, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-limit"), Some("3"));
        assert_eq!(resp.header("x-unset"), Some("kept"));
        assert_eq!(resp.header("x-bad"), Some("kept"));
    }

    fn request_error(plugin: &mut Echo, header: &str) -> Error {
        let mut req = MockRequest::new("GET", "/").with_header("x-set", header);
        on_request(plugin, &mut req).unwrap_err()
    }

    #[test]
    fn runs_hooks_on_mocks() {
        let mut plugin = init::<Echo>(serde_json::json!({})).unwrap();
        let mut req = MockRequest::new("GET", "/a?b=c").with_header("X-Set", "X-Out");
        assert_eq!(on_request(&mut plugin, &mut req), Ok(Decision::Continue));
        assert_eq!(req.header("x-out"), Some("v"));
        assert_eq!(req.header("X-OUT"), Some("v"));
        assert_eq!(req.var("seen"), Some("yes"));

        let mut resp = MockResponse::new(200);
        assert_eq!(
            on_response(&mut plugin, &mut req, &mut resp),
            Ok(Decision::Continue)
        );
        assert_eq!(resp.header("x-seen"), Some("yes"));
    }

    #[test]
    fn skips_hooks_the_registration_leaves_out() {
        let mut plugin = init::<Echo>(serde_json::json!({ "request_only": true })).unwrap();
        let mut req = MockRequest::new("GET", "/reply");
        let mut resp = MockResponse::new(200);
        assert_eq!(
            on_response(&mut plugin, &mut req, &mut resp),
            Ok(Decision::Continue)
        );
        assert_eq!(resp.header("x-seen"), None);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = init::<Echo>(serde_json::json!({ "request_only": 3 }))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("request_only"));
        let err = init::<Echo>(serde_json::json!({ "bogus": 3 }))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("bogus"));
        assert!(init::<Echo>(serde_json::Value::Null).is_ok());
    }

    #[test]
    fn validates_headers_like_the_host() {
        let mut plugin = init::<Echo>(serde_json::json!({})).unwrap();
        let expect = |e: HostError| Error::from(e);
        assert_eq!(
            request_error(&mut plugin, "bad name"),
            expect(HostError::InvalidName)
        );
        assert_eq!(
            request_error(&mut plugin, ""),
            expect(HostError::InvalidName)
        );
        assert_eq!(
            request_error(&mut plugin, "x:y"),
            expect(HostError::InvalidName)
        );
        for managed in wasmgate_rules::http::HOST_MANAGED_HEADERS {
            assert_eq!(
                request_error(&mut plugin, managed),
                expect(HostError::NotAllowed)
            );
        }
        assert_eq!(
            request_error(&mut plugin, "Content-Length"),
            expect(HostError::NotAllowed)
        );
        let longest = "x".repeat(wasmgate_rules::http::MAX_HEADER_NAME_BYTES);
        assert_eq!(
            request_error(&mut plugin, &format!("{longest}x")),
            expect(HostError::InvalidName)
        );

        let mut req = MockRequest::new("GET", "/");
        let mut r = Request::new(&mut req);
        assert_eq!(r.set_header("x-a", "a\r\nb"), Err(HostError::InvalidValue));
        assert_eq!(r.set_header("x-a", "a\nb"), Err(HostError::InvalidValue));
        assert_eq!(r.set_header("x-a", "a\0b"), Err(HostError::InvalidValue));
        assert_eq!(r.set_header("x-a", "ok value\t\u{e9}"), Ok(()));
        assert_eq!(r.append_header("X-A", "two"), Ok(()));
        assert_eq!(r.header_values("x-a"), ["ok value\t\u{e9}", "two"]);
        assert_eq!(r.set_header("x-a", "one"), Ok(()));
        assert_eq!(r.header_values("x-a"), ["one"]);
        r.remove_header("X-A");
        assert_eq!(r.header("x-a"), None);
        assert_eq!(r.headers(), Vec::<(String, String)>::new());
    }

    #[test]
    fn validates_method_path_query() {
        let mut req = MockRequest::new("GET", "/a");
        let mut r = Request::new(&mut req);
        assert_eq!(r.set_method("PATCH"), Ok(()));
        assert_eq!(r.set_method("GE T"), Err(HostError::InvalidValue));
        assert_eq!(r.set_method(""), Err(HostError::InvalidValue));
        assert_eq!(r.set_path("/b/%20c"), Ok(()));
        assert_eq!(r.set_path("b"), Err(HostError::InvalidValue));
        assert_eq!(r.set_path("/b c"), Err(HostError::InvalidValue));
        assert_eq!(r.set_path("/b?c"), Err(HostError::InvalidValue));
        assert_eq!(r.set_query(Some("x=1&y=2")), Ok(()));
        assert_eq!(r.set_query(Some("x=1#f")), Err(HostError::InvalidValue));
        assert_eq!(r.query().as_deref(), Some("x=1&y=2"));
        assert_eq!(r.set_query(None), Ok(()));
        assert_eq!(req.method(), "PATCH");
        assert_eq!(req.path(), "/b/%20c");
        assert_eq!(req.query(), None);
    }

    #[test]
    fn a_path_set_is_normalised_as_the_host_does() {
        let mut req = MockRequest::new("GET", "/a");
        let mut r = Request::new(&mut req);
        assert_eq!(r.set_path("/a/../b//%63"), Ok(()));
        assert_eq!(r.path(), "/b/c");
        assert_eq!(r.set_path("/a/..%2fb"), Err(HostError::InvalidValue));
        assert_eq!(r.set_path("/a/..;/b"), Err(HostError::InvalidValue));
        assert_eq!(req.path(), "/b/c");
    }

    #[test]
    fn request_is_read_only_in_the_response_phase() {
        let mut req = MockRequest::new("GET", "/").with_header("x-a", "1");
        req.phase = Phase::Response;
        let mut r = Request::new(&mut req);
        assert_eq!(r.set_path("/x"), Err(HostError::NotAllowed));
        assert_eq!(r.set_header("x-b", "1"), Err(HostError::NotAllowed));
        assert_eq!(r.set_body(b"x"), Err(HostError::NotAllowed));
        r.remove_header("x-a");
        r.set_var("v", "1");
        assert_eq!(req.header("x-a"), Some("1"));
        assert_eq!(req.var("v"), Some("1"));
    }

    #[test]
    fn bodies_need_access_and_respect_limits() {
        let mut req = MockRequest::new("POST", "/")
            .with_body("abc")
            .with_body_access(false);
        let mut r = Request::new(&mut req);
        assert_eq!(r.body(), Err(HostError::BodyNotDeclared));
        assert_eq!(r.set_body(b"x"), Err(HostError::BodyNotDeclared));

        let mut req = MockRequest::new("POST", "/")
            .with_body("abcd")
            .with_body_limit(3);
        let mut r = Request::new(&mut req);
        assert_eq!(r.body(), Err(HostError::BodyTooLarge));
        assert_eq!(r.set_body(b"xyzw"), Err(HostError::BodyTooLarge));
        assert_eq!(r.set_body(b"xy"), Ok(()));
        assert_eq!(r.body().as_deref(), Ok(&b"xy"[..]));

        let mut resp = MockResponse::new(200).with_body("ok");
        let mut r = Response::new(&mut resp);
        assert_eq!(r.set_status(199), Err(HostError::InvalidValue));
        assert_eq!(r.set_status(600), Err(HostError::InvalidValue));
        assert_eq!(r.set_status(404), Ok(()));
        assert_eq!(
            r.set_header("transfer-encoding", "chunked"),
            Err(HostError::NotAllowed)
        );
        assert_eq!(r.set_body(b"gone"), Ok(()));
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.body(), b"gone");
    }

    #[test]
    fn mock_request_splits_the_target() {
        let req = MockRequest::new("GET", "/p?a=1?b");
        assert_eq!((req.path(), req.query()), ("/p", Some("a=1?b")));
        let req = MockRequest::new("GET", "/p?");
        assert_eq!(req.query(), Some(""));
        let req = MockRequest::new("GET", "/p");
        assert_eq!(req.query(), None);
    }

    #[test]
    fn kv_honours_ttl_on_the_mock_clock() {
        set_now_millis(1_000);
        kv::set("a", b"1", Some(100)).unwrap();
        kv::set("b", b"2", None).unwrap();
        advance_millis(99);
        assert_eq!(kv::get("a").as_deref(), Some(&b"1"[..]));
        advance_millis(1);
        assert_eq!(kv::get("a"), None);
        assert_eq!(kv::get("b").as_deref(), Some(&b"2"[..]));
        kv::delete("b");
        assert_eq!(kv::get("b"), None);
        reset();
        assert_eq!(kv::get("b"), None);
    }

    #[test]
    fn kv_limits() {
        set_now_millis(0);
        set_kv_limits(KvLimits {
            max_entries: 2,
            max_key_bytes: 4,
            max_value_bytes: 3,
        });
        assert_eq!(kv::set("toolong", b"", None), Err(KvError::TooLarge));
        assert_eq!(kv::set("k", b"1234", None), Err(KvError::TooLarge));
        kv::set("a", b"1", Some(10)).unwrap();
        kv::set("b", b"1", None).unwrap();
        assert_eq!(kv::set("c", b"1", None), Err(KvError::Full));
        kv::set("b", b"2", None).unwrap(); // replacing is not growing
        advance_millis(10); // `a` expires, freeing room
        kv::set("c", b"1", None).unwrap();
    }

    use crate::kv::KvError;

    #[test]
    fn limiter_burst_then_refill() {
        set_now_millis(1_000_000);
        // 2 per second, burst 3: 3 at once, then one every 500 ms.
        let quota = Quota {
            count: 2,
            period_ms: 1_000,
            burst: 3,
        };
        let limiter = Limiter::open("l", quota).unwrap();
        for remaining in [2, 1, 0] {
            let v = limiter.check("k", 1);
            assert!(v.allowed);
            assert_eq!((v.limit, v.remaining, v.retry_after_ms), (3, remaining, 0));
        }
        let v = limiter.check("k", 1);
        assert!(!v.allowed);
        assert_eq!(
            (v.remaining, v.retry_after_ms, v.reset_after_ms),
            (0, 500, 1_500)
        );

        // Other keys, names and quotas have buckets of their own.
        assert!(limiter.check("other", 1).allowed);
        assert!(Limiter::open("m", quota).unwrap().check("k", 1).allowed);
        assert!(
            Limiter::open("l", quota.with_burst(4))
                .unwrap()
                .check("k", 1)
                .allowed
        );
        // The same name and quota share the bucket.
        assert!(!Limiter::open("l", quota).unwrap().check("k", 1).allowed);

        advance_millis(499);
        assert!(!limiter.check("k", 1).allowed);
        advance_millis(1);
        let v = limiter.check("k", 1);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
        assert!(!limiter.check("k", 1).allowed);

        advance_millis(10_000);
        let v = limiter.check("k", 2);
        assert!(v.allowed);
        assert_eq!((v.remaining, v.reset_after_ms), (1, 1_000));
        // A zero cost takes nothing and, as on the host, reports a full bucket.
        let v = limiter.check("k", 0);
        assert!(v.allowed);
        assert_eq!(v.remaining, 3);
        assert_eq!(
            limiter.check("k", 1).remaining,
            0,
            "the zero-cost check took nothing"
        );
        let v = limiter.check("k", 4);
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ms, u64::MAX);
    }

    #[test]
    fn limiter_burst_one_exactly() {
        set_now_millis(0);
        let limiter = Limiter::open("one", Quota::per_minute(1)).unwrap();
        assert!(limiter.check("k", 1).allowed);
        let v = limiter.check("k", 1);
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ms, 60_000);
    }

    #[test]
    fn limiter_refuses_zero_quotas() {
        for quota in [
            Quota {
                count: 0,
                period_ms: 1,
                burst: 1,
            },
            Quota {
                count: 1,
                period_ms: 0,
                burst: 1,
            },
            Quota {
                count: 1,
                period_ms: 1,
                burst: 0,
            },
        ] {
            assert!(Limiter::open("z", quota).is_err());
        }
    }

    #[test]
    fn mock_state_is_per_thread() {
        set_now_millis(5);
        kv::set("t", b"1", None).unwrap();
        log::warn("here");
        std::thread::spawn(|| {
            assert_eq!(kv::get("t"), None);
            assert!(logs().is_empty());
            assert!(clock::now_millis() > 5);
        })
        .join()
        .unwrap();
        assert_eq!(clock::now_millis(), 5);
        assert_eq!(clock::monotonic_nanos(), 5_000_000);
    }

    #[test]
    fn proxy_authorization_is_the_hosts_in_every_write() {
        let mut req = MockRequest::new("GET", "/").with_header("Proxy-Authorization", "Basic a");
        let mut r = Request::new(&mut req);
        let name = "Proxy-Authorization";
        assert_eq!(r.set_header(name, "Basic b"), Err(HostError::NotAllowed));
        assert_eq!(r.append_header(name, "Basic b"), Err(HostError::NotAllowed));
        r.remove_header(name);
        assert_eq!(r.set_response_header(name, "x"), Err(HostError::NotAllowed));
        assert_eq!(r.remove_response_header(name), Err(HostError::NotAllowed));
        assert_eq!(
            r.set_response_header_from_var(name, "v"),
            Err(HostError::NotAllowed)
        );
        assert_eq!(req.header_values("proxy-authorization"), ["Basic a"]);

        let mut resp = MockResponse::new(200).with_header(name, "Basic a");
        let mut r = Response::new(&mut resp);
        assert_eq!(r.set_header(name, "x"), Err(HostError::NotAllowed));
        assert_eq!(r.append_header(name, "x"), Err(HostError::NotAllowed));
        r.remove_header(name);
        assert_eq!(resp.header("proxy-authorization"), Some("Basic a"));
    }

    #[test]
    fn vars_are_capped_in_count_and_size_as_on_the_host() {
        use wasmgate_rules::http::{MAX_VAR_BYTES, MAX_VARS};
        let mut req = MockRequest::new("GET", "/");
        let mut r = Request::new(&mut req);
        // Name and value together: exactly the cap is kept, one byte more is ignored.
        r.set_var("big", &"v".repeat(MAX_VAR_BYTES - 3));
        r.set_var("bigger", &"v".repeat(MAX_VAR_BYTES - 5));
        assert_eq!(r.var("big").map(|v| v.len()), Some(MAX_VAR_BYTES - 3));
        assert_eq!(r.var("bigger"), None);
        // An oversized value leaves the old one in place.
        r.set_var("big", &"w".repeat(MAX_VAR_BYTES));
        assert_eq!(r.var("big").map(|v| v.len()), Some(MAX_VAR_BYTES - 3));

        for i in 1..MAX_VARS {
            r.set_var(&format!("v{i}"), "1");
        }
        r.set_var("one-too-many", "1");
        assert_eq!(r.var("one-too-many"), None);
        // Changing a var the request holds still works at the cap.
        r.set_var("v1", "2");
        assert_eq!(r.var("v1").as_deref(), Some("2"));
        assert_eq!(req.vars().len(), MAX_VARS);
    }

    /// Answers with the reply its config describes.
    struct Replies {
        reply: Reply,
    }

    impl Plugin for Replies {
        type Config = ();

        fn new((): ()) -> Result<Self, ConfigError> {
            Ok(Replies {
                reply: Reply::new(200),
            })
        }

        fn on_request(&mut self, _: &mut Request<'_>) -> Result<Decision, Error> {
            Ok(self.reply.clone().into())
        }

        fn on_response(
            &mut self,
            _: &mut Request<'_>,
            _: &mut Response<'_>,
        ) -> Result<Decision, Error> {
            Ok(self.reply.clone().into())
        }
    }

    #[test]
    fn replies_are_checked_as_the_host_checks_them() {
        let mut plugin = init::<Replies>(serde_json::Value::Null).unwrap();
        let mut outcome = |reply: Reply| {
            plugin.reply = reply;
            let mut req = MockRequest::new("GET", "/").with_body_limit(4);
            let in_request = on_request(&mut plugin, &mut req);
            let in_response = on_response(&mut plugin, &mut req, &mut MockResponse::new(200));
            assert_eq!(in_request, in_response);
            in_request
        };
        let refused = |r: Result<Decision, Error>, what: &str| match r {
            Err(e) => assert!(
                e.message().starts_with("bad output") && e.message().contains(what),
                "{e}"
            ),
            Ok(d) => panic!("{what}: {d:?} passed"),
        };
        refused(outcome(Reply::new(101)), "status 101");
        refused(outcome(Reply::new(600)), "status 600");
        refused(outcome(Reply::new(200).body("12345")), "5 bytes");
        refused(
            outcome(Reply::new(200).header("Proxy-Authorization", "Basic a")),
            "Proxy-Authorization",
        );
        refused(
            outcome(Reply::new(200).header("transfer-encoding", "chunked")),
            "transfer-encoding",
        );
        refused(outcome(Reply::new(200).header("bad name", "1")), "bad name");
        refused(outcome(Reply::new(200).header("x-a", "a\r\nb")), "x-a");

        // The host frames the reply: its own length is dropped, not refused.
        let framed = outcome(
            Reply::new(599)
                .header("Content-Length", "99")
                .header("x-a", "1")
                .body("1234"),
        );
        let expected = Reply::new(599).header("x-a", "1").body("1234");
        assert_eq!(framed, Ok(Decision::Respond(expected)));
    }

    #[test]
    fn log_lines_are_cut_as_on_the_host() {
        use wasmgate_rules::log::MAX_LINE_BYTES;
        // A two-byte character across the cut is dropped whole.
        let line = format!("{}\u{e9}tail", "a".repeat(MAX_LINE_BYTES - 1));
        log::info(&line);
        log::info("short");
        let logged = logs();
        assert_eq!(logged[0].1, "a".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(logged[1].1, "short");
    }

    #[test]
    fn kv_keeps_the_hosts_sizes_by_default() {
        use wasmgate_rules::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
        let key = "k".repeat(MAX_KEY_BYTES);
        kv::set(&key, &vec![0; MAX_VALUE_BYTES], None).unwrap();
        assert_eq!(kv::get(&key).map(|v| v.len()), Some(MAX_VALUE_BYTES));
        assert_eq!(
            kv::set(&format!("{key}k"), b"", None),
            Err(KvError::TooLarge)
        );
        assert_eq!(
            kv::set("k", &vec![0; MAX_VALUE_BYTES + 1], None),
            Err(KvError::TooLarge)
        );
    }

    #[test]
    fn limiter_names_keys_and_periods_are_capped_as_on_the_host() {
        use wasmgate_rules::rate_limit::{MAX_KEY_BYTES, MAX_PERIOD_MS};
        set_now_millis(0);
        let longest = "n".repeat(MAX_KEY_BYTES);
        let quota = Quota::per_second(10);
        assert!(Limiter::open(&longest, quota).is_ok());
        assert!(Limiter::open(&format!("{longest}n"), quota).is_err());
        let year = Quota {
            count: 1,
            period_ms: MAX_PERIOD_MS,
            burst: 1,
        };
        assert!(Limiter::open("y", year).is_ok());
        let longer = Quota {
            period_ms: MAX_PERIOD_MS + 1,
            ..year
        };
        assert!(Limiter::open("y", longer).is_err());

        let limiter = Limiter::open("k", quota).unwrap();
        assert!(limiter.check(&longest, 1).allowed);
        let v = limiter.check(&format!("{longest}k"), 1);
        assert!(!v.allowed);
        assert_eq!((v.limit, v.remaining, v.retry_after_ms), (10, 0, 100));
        // Refused every time, not only once its bucket is empty.
        assert!(!limiter.check(&format!("{longest}k"), 1).allowed);
    }

    #[test]
    fn a_bound_on_the_response_body_holds_in_on_response() {
        struct Bounded(usize);
        impl Plugin for Bounded {
            type Config = ();
            fn new(_: ()) -> Result<Self, ConfigError> {
                Ok(Self(0))
            }
            fn registration(&self) -> Registration {
                Registration {
                    response_body: true,
                    ..Registration::default()
                }
            }
            fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
                req.limit_response_body(self.0)?;
                Ok(Decision::Continue)
            }
            fn on_response(
                &mut self,
                _: &mut Request<'_>,
                resp: &mut Response<'_>,
            ) -> Result<Decision, Error> {
                let outcome = match resp.body() {
                    Ok(body) => format!("{} bytes", body.len()),
                    Err(e) => e.to_string(),
                };
                resp.set_header("x-body", &outcome)?;
                Ok(Decision::Continue)
            }
        }
        let mut plugin = init::<Bounded>(serde_json::json!(null)).unwrap();
        for (bound, body, outcome) in [
            (4, "abcd", "4 bytes"),
            (4, "abcde", "body larger than the route allows"),
            (0, "a", "body not declared in the plugin's registration"),
        ] {
            plugin.0 = bound;
            let mut req = MockRequest::new("GET", "/");
            on_request(&mut plugin, &mut req).unwrap();
            assert_eq!(req.response_body_bound(), Some(bound));
            let mut resp = MockResponse::new(200).with_body(body);
            on_response(&mut plugin, &mut req, &mut resp).unwrap();
            assert_eq!(resp.header("x-body"), Some(outcome));
            // Outside the hook, the test still reads the whole body.
            assert_eq!(resp.body(), body.as_bytes());
        }
        // Response phase: refused.
        let mut req = MockRequest::new("GET", "/");
        req.phase = Phase::Response;
        assert_eq!(
            Request::new(&mut req).limit_response_body(1),
            Err(HostError::NotAllowed)
        );
    }

    #[test]
    fn captures_logs() {
        log::info("one");
        log::debug("two");
        set_log_level(Level::Info);
        assert!(!log::enabled(Level::Debug));
        assert!(log::enabled(Level::Warn));
        log::debug("dropped");
        log::error("three");
        assert_eq!(
            logs(),
            [
                (Level::Info, "one".to_string()),
                (Level::Debug, "two".to_string()),
                (Level::Error, "three".to_string())
            ]
        );
        reset();
        assert!(logs().is_empty());
    }
}
