//! Outbound HTTP calls from a plugin, through the standard `wasi:http/outgoing-handler`: to an
//! upstream of the gateway's config by its name (`http://users/users/7` goes through the
//! upstream `users`), or to an origin as itself (`https://idp.example.com/keys`).
//!
//! The gateway refuses the component at load unless its `[plugins.NAME]` table grants the
//! `"outbound"` capability, and refuses every call (with [`Error::Denied`]) to a destination
//! its `outbound` list does not name:
//!
//! ```toml
//! [plugins.aggregate]
//! path = "plugins/aggregate.wasm"
//! capabilities = ["log", "outbound"]
//! outbound = ["upstream:users", "https://idp.example.com"]
//! ```
//!
//! A component imports `wasi:http` only when it calls this module, so a plugin that never
//! does needs no grant.
//!
//! ```
//! use std::time::Duration;
//! use wasmgate_sdk::outbound::{self, Request};
//! # use wasmgate_sdk::testing::outbound as mock;
//! # mock::on("http://users/users/7").respond(200, r#"{"name":"alice"}"#);
//! # mock::on("http://orders/orders?user=7").respond(200, "[]");
//!
//! // One call.
//! let user = outbound::get("http://users/users/7")?;
//! assert_eq!(user.status, 200);
//!
//! // Several, sent at once and waited for together: as long as the slowest, not the sum.
//! let answers = outbound::send_all(vec![
//!     Request::get("http://users/users/7"),
//!     Request::get("http://orders/orders?user=7").timeout(Duration::from_millis(500)),
//! ]);
//! let orders: Vec<serde_json::Value> = answers[1].as_ref().unwrap().json()?;
//! assert!(orders.is_empty());
//! # Ok::<(), wasmgate_sdk::Error>(())
//! ```
//!
//! ## Limits
//!
//! The gateway bounds each plugin's calls (`outbound_*` on `[wasm]` or the plugin's table): a
//! call within `outbound_timeout_ms` (2 s by default), and within the request's own
//! [`Request::timeout`] when that is shorter ([`Error::Timeout`]); at most 8 calls in flight
//! at once per client request and 16 in all ([`Error::Limited`] past them); response bodies up
//! to 1 MiB ([`Error::BodyTooLarge`]).
//!
//! Natively, calls go to the mock host, which answers what a test scripts with
//! [`testing::outbound`](crate::testing::outbound) and holds calls to the same limits.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmgate_rules::http::{is_header_name, is_header_value, is_token};

#[cfg(target_arch = "wasm32")]
mod wasi;

/// Request headers `wasi:http` does not let a guest send (wasmtime-wasi-http's
/// `DEFAULT_FORBIDDEN_HEADERS`, which the gateway keeps); a request with one is
/// [`Error::InvalidRequest`]. A `content-length` is replaced by the body's own length: the SDK
/// sends it with every body, and with an empty one on `POST`, `PUT` and `PATCH`.
pub const FORBIDDEN_HEADERS: [&str; 9] = [
    "connection",
    "host",
    "http2-settings",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// An outbound request, built up and handed to [`send`] or [`send_all`].
///
/// ```
/// use std::time::Duration;
/// use wasmgate_sdk::outbound::Request;
/// let req = Request::post("http://users/users")
///     .header("x-tenant", "acme")
///     .json(&serde_json::json!({ "name": "alice" }))
///     .unwrap()
///     .timeout(Duration::from_millis(300));
/// assert_eq!(req.method, "POST");
/// assert_eq!(req.body, br#"{"name":"alice"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`, `POST`, ...): an HTTP token.
    pub method: String,
    /// An absolute `http://` or `https://` URL, percent-encoded; its authority is a granted
    /// upstream's name or a granted origin. A fragment is not sent.
    pub url: String,
    /// Headers, in order (none of [`FORBIDDEN_HEADERS`]).
    pub headers: Vec<(String, String)>,
    /// The body (empty: none).
    pub body: Vec<u8>,
    /// The longest the whole call, head and body, may take; the gateway's
    /// `outbound_timeout_ms` applies when it is shorter, or when this is `None`.
    pub timeout: Option<Duration>,
}

impl Request {
    /// A request with this method and URL, no headers, no body, no timeout of its own.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request (give it a [`body`](Request::body) or [`json`](Request::json)).
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header (kept next to any of the same name).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets `value`, serialized, as the body, with `content-type: application/json`. Fails
    /// only when `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sets the call's own timeout (see [`Request::timeout`](Request#structfield.timeout)).
    /// It is also handed to the gateway as the `wasi:http` request options' connect,
    /// first-byte and between-bytes timeouts.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The answer to an outbound call, body read whole. Any status is a `Response`: check
/// [`Response::is_success`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, in order, names lower-case. A value that is not UTF-8 is read lossily.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status, no headers and an empty body (for tests, with
    /// [`OutboundScript::respond_with`](crate::testing::outbound::OutboundScript::respond_with)).
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The same, with a header added (its name lower-cased).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The same, with this body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body, parsed as JSON (whatever the `content-type` says).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why an outbound call failed, from the `wasi:http` `error-code` the gateway gave it (or from
/// the SDK, for a request it could not send). `Display` reads after "outbound call":
/// "timed out", "denied: ...".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The gateway refused the destination: it is not among the plugin's `outbound` grants
    /// (`HTTP-request-denied`).
    Denied,
    /// One call too many for the client's request: past the calls in flight at once or in
    /// all (`connection-limit-reached`).
    Limited,
    /// The call did not complete in time: the request's [`timeout`](Request::timeout) or the
    /// gateway's `outbound_timeout_ms` (`connection-timeout`, `connection-read-timeout`,
    /// `connection-write-timeout`, `HTTP-response-timeout`, `DNS-timeout`).
    Timeout,
    /// The response body is larger than the gateway allows (`HTTP-response-body-size`).
    BodyTooLarge,
    /// The request could not be sent as it is: a URL that is not absolute `http(s)`, a
    /// method that is not a token, a header that is invalid or forbidden
    /// (`HTTP-request-method-invalid`, `HTTP-request-URI-invalid`, ...).
    InvalidRequest(String),
    /// Any other failure, by its `error-code` name (`connection-refused`,
    /// `destination-unavailable`, `HTTP-protocol-error`, ...).
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied => f.write_str("denied: not among the plugin's outbound grants"),
            Error::Limited => f.write_str("refused: over the request's limit of outbound calls"),
            Error::Timeout => f.write_str("timed out"),
            Error::BodyTooLarge => f.write_str("refused: response body larger than allowed"),
            Error::InvalidRequest(why) => write!(f, "invalid: {why}"),
            Error::Other(code) => write!(f, "failed: {code}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Error {
    fn from(err: Error) -> Self {
        crate::Error::new(format!("outbound call {err}"))
    }
}

/// Sends a `GET` to `url` and reads the whole answer.
pub fn get(url: &str) -> Result<Response, Error> {
    send(Request::get(url))
}

/// Sends one request and reads the whole answer.
pub fn send(request: Request) -> Result<Response, Error> {
    send_all(vec![request])
        .pop()
        .unwrap_or_else(|| Err(Error::Other("no answer".to_string())))
}

/// Sends every request at once and waits for them together (`wasi:io/poll` over every call
/// still under way), so the whole takes as long as the slowest call, not the sum. The answers
/// come back in the order of the requests; one call failing does not affect the others.
pub fn send_all(requests: Vec<Request>) -> Vec<Result<Response, Error>> {
    imp::send_all(requests)
}

/// Checks a URL as [`send`] needs it, for a plugin to check the URLs of its config at load:
/// an absolute `http://` or `https://` URL of visible ASCII, with a host, no user name or
/// password, a path before any query. A fragment is refused here (it would not be sent).
///
/// ```
/// use wasmgate_sdk::outbound::check_url;
/// assert!(check_url("http://idp/.well-known/jwks.json").is_ok());
/// assert_eq!(check_url("idp/keys"), Err("not an absolute http:// or https:// URL"));
/// assert_eq!(check_url("https://idp/keys#x"), Err("a fragment (it is not sent)"));
/// ```
pub fn check_url(url: &str) -> Result<(), &'static str> {
    if url.contains('#') {
        return Err("a fragment (it is not sent)");
    }
    split_url(url).map(|_| ())
}

/// Where a checked request goes (read on wasm; the mock only checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) struct Target<'a> {
    pub(crate) tls: bool,
    pub(crate) authority: &'a str,
    /// Starts with `/`; no fragment.
    pub(crate) path_with_query: &'a str,
}

/// Checks a request as it must be to be sent (on wasm and in the mock alike), and splits its
/// URL.
pub(crate) fn check(req: &Request) -> Result<Target<'_>, Error> {
    let invalid = |why: String| Err(Error::InvalidRequest(why));
    if !is_token(&req.method) {
        return invalid(format!("method {:?} is not an HTTP token", req.method));
    }
    for (name, value) in &req.headers {
        if !is_header_name(name) {
            return invalid(format!("header name {name:?} is not an HTTP token"));
        }
        if FORBIDDEN_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return invalid(format!("header {name} is the gateway's to set"));
        }
        if !is_header_value(value) {
            return invalid(format!("header {name} has a control byte in its value"));
        }
    }
    split_url(&req.url).map_err(|why| Error::InvalidRequest(format!("url {:?}: {why}", req.url)))
}

/// `http(s)://authority[/path][?query][#fragment]`, visible ASCII only.
fn split_url(url: &str) -> Result<Target<'_>, &'static str> {
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("not visible ASCII (percent-encode the rest)");
    }
    let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else {
        return Err("not an absolute http:// or https:// URL");
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_with_query) = rest.split_at(end);
    if authority.is_empty() {
        return Err("no host");
    }
    if authority.contains('@') {
        return Err("a user name or password in the URL");
    }
    let path_with_query = match path_with_query {
        "" => "/",
        p if p.starts_with('?') => return Err("a query with no path (write /?...)"),
        p => p,
    };
    Ok(Target {
        tls,
        authority,
        path_with_query,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(target_arch = "wasm32")]
use wasi as imp;

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Error, Request, Response};

    pub(super) fn send_all(requests: Vec<Request>) -> Vec<Result<Response, Error>> {
        crate::testing::outbound::send_all(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let t = split_url("http://users/users/7?x=1#frag").unwrap();
        assert_eq!(
            (t.tls, t.authority, t.path_with_query),
            (false, "users", "/users/7?x=1")
        );
        let t = split_url("HTTPS://idp.example.com:8443").unwrap();
        assert_eq!(
            (t.tls, t.authority, t.path_with_query),
            (true, "idp.example.com:8443", "/")
        );
        assert_eq!(
            split_url("http://[::1]:80/a").unwrap().authority,
            "[::1]:80"
        );
        for bad in [
            "users/7",
            "ftp://users/7",
            "http:///x",
            "http://a b/",
            "http://u:p@users/",
            "http://users?x=1",
            "http://users/\u{e9}",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_checked_before_they_are_sent() {
        assert!(check(&Request::get("http://users/")).is_ok());
        let bad = [
            Request::new("GE T", "http://users/"),
            Request::get("http://users/").header("bad name", "v"),
            Request::get("http://users/").header("Host", "other"),
            Request::get("http://users/").header("x-a", "a\r\nb"),
            Request::get("users/7"),
        ];
        for req in bad {
            assert!(
                matches!(check(&req), Err(Error::InvalidRequest(_))),
                "{req:?}"
            );
        }
    }

    #[test]
    fn errors_read_after_outbound_call() {
        let err = crate::Error::from(Error::Timeout);
        assert_eq!(err.message(), "outbound call timed out");
        let err = crate::Error::from(Error::Other("connection-refused".into()));
        assert_eq!(err.message(), "outbound call failed: connection-refused");
    }

    #[test]
    fn responses_read_headers_and_json() {
        let resp = Response::new(201)
            .with_header("Content-Type", "application/json")
            .with_body(r#"{"id":7}"#);
        assert!(resp.is_success());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let v: serde_json::Value = resp.json().unwrap();
        assert_eq!(v["id"], 7);
        assert!(!Response::new(404).is_success());
    }
}
