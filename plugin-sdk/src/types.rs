//! The values plugins and the host hand each other.

use std::fmt;

use serde::Serialize;

/// The TLS session a request came on ([`Request::tls`](crate::Request::tls)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The client's certificate, when it presented one (mutual TLS).
    pub client_cert: Option<ClientCert>,
}

/// A client certificate that verified against the gateway's `server.tls.client_ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's distinguished name, as RFC 4514 text (`CN=alice, O=Example`).
    pub subject: String,
    /// Its subject alternative names: DNS names, IP addresses, `email:` addresses, URIs.
    pub sans: Vec<String>,
}

/// What a plugin, configured for one route, needs from the host. Returned by
/// [`Plugin::registration`](crate::Plugin::registration).
///
/// Ask for bodies only when the plugin reads or replaces them: a declared body is buffered
/// whole, which costs memory and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Registration {
    /// Call [`Plugin::on_request`](crate::Plugin::on_request) (skipped when false).
    pub on_request: bool,
    /// Call [`Plugin::on_response`](crate::Plugin::on_response) (skipped when false).
    pub on_response: bool,
    /// Buffer the request body so [`Request::body`](crate::Request::body) and
    /// [`Request::set_body`](crate::Request::set_body) work.
    pub request_body: bool,
    /// Buffer the response body so [`Response::body`](crate::Response::body) and
    /// [`Response::set_body`](crate::Response::set_body) work.
    pub response_body: bool,
}

impl Default for Registration {
    /// Both hooks, no bodies.
    fn default() -> Self {
        Self::new()
    }
}

impl Registration {
    /// Both hooks, no bodies (the same as [`Registration::default`]).
    pub const fn new() -> Self {
        Self {
            on_request: true,
            on_response: true,
            request_body: false,
            response_body: false,
        }
    }

    /// Only `on_request`, no bodies.
    pub const fn request_only() -> Self {
        Self {
            on_response: false,
            ..Self::new()
        }
    }

    /// Only `on_response`, no bodies.
    pub const fn response_only() -> Self {
        Self {
            on_request: false,
            ..Self::new()
        }
    }

    /// Neither hook: the plugin does its work in `new` only (or is switched off by its config).
    pub const fn none() -> Self {
        Self {
            on_request: false,
            on_response: false,
            request_body: false,
            response_body: false,
        }
    }

    /// The same, with the request body buffered.
    pub const fn with_request_body(self) -> Self {
        Self {
            request_body: true,
            ..self
        }
    }

    /// The same, with the response body buffered.
    pub const fn with_response_body(self) -> Self {
        Self {
            response_body: true,
            ..self
        }
    }
}

/// Why the host refused a call (the WIT `error-code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostError {
    /// A header name that is not a valid HTTP token.
    InvalidName,
    /// A value with bytes HTTP forbids (CR, LF, NUL), or a method, path, query or status that
    /// does not parse.
    InvalidValue,
    /// The plugin did not ask for this body in its [`Registration`].
    BodyNotDeclared,
    /// The body is larger than the route allows.
    BodyTooLarge,
    /// The call makes no sense in this phase (changing the request once the upstream
    /// answered), or touches what only the host may (the headers in
    /// [`rules::http::HOST_MANAGED_HEADERS`](crate::rules::http::HOST_MANAGED_HEADERS)).
    NotAllowed,
    /// [`Request::set_upstream`](crate::Request::set_upstream) named an upstream the
    /// gateway's config does not have (the WIT `upstream-error.unknown`).
    UnknownUpstream,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::InvalidName => "invalid header name",
            HostError::InvalidValue => "invalid value",
            HostError::BodyNotDeclared => "body not declared in the plugin's registration",
            HostError::BodyTooLarge => "body larger than the route allows",
            HostError::NotAllowed => "not allowed here",
            HostError::UnknownUpstream => "no upstream of that name",
        })
    }
}

impl std::error::Error for HostError {}

/// A plugin failure, returned from a hook. The host logs it and fails the request (how is
/// the route's business); its text reaches the host, not the client.
///
/// Build one from a `&str`, a `String`, a [`HostError`], a [`KvError`](crate::kv::KvError) or a
/// `serde_json::Error`, so `?` works on all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<HostError> for Error {
    fn from(err: HostError) -> Self {
        Self::new(format!("host refused the call: {err}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::new(format!("json: {err}"))
    }
}

impl From<crate::kv::KvError> for Error {
    fn from(err: crate::kv::KvError) -> Self {
        Self::new(format!("kv: {err}"))
    }
}

/// What happens after a hook: go on along the pipeline, or answer the client now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on: the next plugin, then the upstream (request phase) or the client (response
    /// phase).
    Continue,
    /// Answer the client with this reply instead. In the request phase the upstream is not
    /// called; in the response phase it replaces the response.
    Respond(Reply),
}

impl Decision {
    /// Whether this is [`Decision::Continue`].
    pub fn is_continue(&self) -> bool {
        matches!(self, Decision::Continue)
    }

    /// The reply, when this is [`Decision::Respond`].
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Decision::Continue => None,
            Decision::Respond(reply) => Some(reply),
        }
    }
}

impl From<Reply> for Decision {
    fn from(reply: Reply) -> Self {
        Decision::Respond(reply)
    }
}

/// A complete response a plugin answers with, instead of the upstream's.
///
/// ```
/// use wasmgate_sdk::Reply;
/// let reply = Reply::new(429).header("retry-after", "3").body("slow down\n");
/// assert_eq!(reply.status, 429);
/// assert_eq!(reply.body, b"slow down\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code: a final one
    /// ([`rules::http::FINAL_STATUS`](crate::rules::http::FINAL_STATUS)), else the host
    /// refuses the reply.
    pub status: u16,
    /// Headers, in order, checked as [`Request`](crate::Request)'s are. The host frames the
    /// reply itself: a `content-length` here is dropped, and any other header it manages
    /// ([`rules::http::HOST_MANAGED_HEADERS`](crate::rules::http::HOST_MANAGED_HEADERS))
    /// makes the reply refused.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
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

    /// A reply with `value` serialized as the JSON body, and `content-type: application/json`.
    /// Fails only when `value` cannot be serialized (a map with non-string keys, say).
    ///
    /// ```
    /// use wasmgate_sdk::Reply;
    /// let reply = Reply::json(403, &serde_json::json!({ "error": "forbidden" })).unwrap();
    /// assert_eq!(reply.headers, [("content-type".to_string(), "application/json".to_string())]);
    /// assert_eq!(reply.body, br#"{"error":"forbidden"}"#);
    /// ```
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(Self::new(status)
            .header("content-type", "application/json")
            .body(body))
    }

    /// A reply with a plain-text body and `content-type: text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into())
    }
}
