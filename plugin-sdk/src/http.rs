//! The request and response a hook sees. Each wraps a backend: the host's resource on wasm,
//! the mock host natively.

use crate::HostError;

/// What a [`Request`] is a view of (the WIT `request` resource, or a mock).
pub(crate) trait RequestBackend {
    fn method(&self) -> String;
    fn set_method(&mut self, method: &str) -> Result<(), HostError>;
    fn path(&self) -> String;
    fn set_path(&mut self, path: &str) -> Result<(), HostError>;
    fn query(&self) -> Option<String>;
    fn set_query(&mut self, query: Option<&str>) -> Result<(), HostError>;
    fn header(&self, name: &str) -> Option<String>;
    fn header_values(&self, name: &str) -> Vec<String>;
    fn headers(&self) -> Vec<(String, String)>;
    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove_header(&mut self, name: &str);
    fn client_addr(&self) -> String;
    fn tls(&self) -> Option<crate::TlsInfo>;
    fn route(&self) -> String;
    fn set_upstream(&mut self, name: &str) -> Result<(), HostError>;
    fn id(&self) -> String;
    fn body(&self) -> Result<Vec<u8>, HostError>;
    fn set_body(&mut self, body: &[u8]) -> Result<(), HostError>;
    fn limit_response_body(&mut self, max_bytes: usize) -> Result<(), HostError>;
    fn var(&self, name: &str) -> Option<String>;
    fn set_var(&mut self, name: &str, value: &str);
    /// A queued response header change: `Some(value)` sets or appends, `None` removes.
    fn queue_response_header(
        &mut self,
        name: &str,
        value: Option<&str>,
        append: bool,
    ) -> Result<(), HostError>;
    /// A queued response header set to a variable's value at the time it is applied.
    fn queue_response_header_from_var(&mut self, name: &str, var: &str) -> Result<(), HostError>;
}

/// What a [`Response`] is a view of (the WIT `response` resource, or a mock).
pub(crate) trait ResponseBackend {
    fn status(&self) -> u16;
    fn set_status(&mut self, status: u16) -> Result<(), HostError>;
    fn header(&self, name: &str) -> Option<String>;
    fn header_values(&self, name: &str) -> Vec<String>;
    fn headers(&self) -> Vec<(String, String)>;
    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove_header(&mut self, name: &str);
    fn body(&self) -> Result<Vec<u8>, HostError>;
    fn set_body(&mut self, body: &[u8]) -> Result<(), HostError>;
}

/// The client's request, lent to a hook for the length of one call. The host owns it; every
/// read is a call to the host and returns a copy.
///
/// Header names are case-insensitive and come back lower-case. A name must pass
/// [`rules::http::is_header_name`](crate::rules::http::is_header_name) (else
/// [`HostError::InvalidName`]) and a value
/// [`rules::http::is_header_value`](crate::rules::http::is_header_value) (else
/// [`HostError::InvalidValue`]). Setting a header the host manages (one of
/// [`rules::http::HOST_MANAGED_HEADERS`](crate::rules::http::HOST_MANAGED_HEADERS):
/// `content-length` and the hop-by-hop headers) is [`HostError::NotAllowed`]. In the
/// response phase the request is read-only: changes are refused with
/// [`HostError::NotAllowed`], but vars can still be set.
pub struct Request<'a> {
    inner: &'a mut dyn RequestBackend,
}

impl<'a> Request<'a> {
    pub(crate) fn new(inner: &'a mut dyn RequestBackend) -> Self {
        Self { inner }
    }

    /// The method (`GET`, `POST`, ...).
    pub fn method(&self) -> String {
        self.inner.method()
    }

    /// Changes the method. [`HostError::InvalidValue`] unless it is an HTTP token.
    pub fn set_method(&mut self, method: &str) -> Result<(), HostError> {
        self.inner.set_method(method)
    }

    /// The path, percent-encoded as received, without the query.
    pub fn path(&self) -> String {
        self.inner.path()
    }

    /// Changes the path sent upstream (percent-encoded, starting with `/`, no query).
    /// [`HostError::InvalidValue`] when it does not parse.
    pub fn set_path(&mut self, path: &str) -> Result<(), HostError> {
        self.inner.set_path(path)
    }

    /// The query string without the leading `?`, if there is one.
    pub fn query(&self) -> Option<String> {
        self.inner.query()
    }

    /// Replaces the query string (without the leading `?`); `None` removes it.
    /// [`HostError::InvalidValue`] when it does not parse.
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), HostError> {
        self.inner.set_query(query)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.inner.header_values(name)
    }

    /// All headers, in order, names lower-case.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.inner.headers()
    }

    /// Replaces every value of a header with one value.
    ///
    /// `host` is the `Host` the upstream is sent, over the route's `host_header`: it must be a
    /// host name or address with an optional port ([`HostError::InvalidValue`]), and is
    /// [`HostError::NotAllowed`] on a request to an HTTP/2 upstream (which sends its target
    /// as `:authority`).
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.inner.set_header(name, value)
    }

    /// Adds a value to a header, keeping the ones already there. `host` takes one value:
    /// appending to it is [`HostError::NotAllowed`].
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.inner.append_header(name, value)
    }

    /// Removes every value of a header (nothing happens when it is absent, or one the host
    /// owns). Removing `host` sends the upstream its target's own.
    pub fn remove_header(&mut self, name: &str) {
        self.inner.remove_header(name)
    }

    /// The client's IP address, as text.
    pub fn client_addr(&self) -> String {
        self.inner.client_addr()
    }

    /// The TLS session the request came on: the SNI name and, with mutual TLS, the client's
    /// certificate. `None` on a plain connection. (Contract 0.1.4: the gateway must be at
    /// least that version.)
    pub fn tls(&self) -> Option<crate::TlsInfo> {
        self.inner.tls()
    }

    /// The name of the route that matched.
    pub fn route(&self) -> String {
        self.inner.route()
    }

    /// Sends the request to the upstream `name` (one of the gateway config's `[upstreams]`)
    /// instead of the route's: header routing, canaries, A/B splits. Its balancer, hash key,
    /// timeouts and protocol apply, and the `Host` it is sent follows the route's
    /// `host_header`, else the chosen upstream's. A later call replaces the choice.
    ///
    /// [`HostError::UnknownUpstream`] when the config has no such upstream (the request keeps
    /// the one it had); [`HostError::NotAllowed`] in the response phase, and for an HTTP/2
    /// upstream once a plugin wrote `host`. (Contract 0.1.5: the gateway must be at least that
    /// version.)
    pub fn set_upstream(&mut self, name: &str) -> Result<(), HostError> {
        self.inner.set_upstream(name)
    }

    /// The host's id for this request, unique within the process.
    pub fn id(&self) -> String {
        self.inner.id()
    }

    /// The whole request body. [`HostError::BodyNotDeclared`] unless the registration asked
    /// for `request_body`; [`HostError::BodyTooLarge`] past the route's limit.
    pub fn body(&self) -> Result<Vec<u8>, HostError> {
        self.inner.body()
    }

    /// Replaces the request body (the host fixes the framing headers). Needs `request_body` in
    /// the registration, like [`Request::body`].
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        self.inner.set_body(body)
    }

    /// Bounds the response body the host buffers for this plugin's
    /// [`on_response`](crate::Plugin::on_response), on this request (the registration must
    /// ask for `response_body`): a body of at most `max_bytes` is buffered as usual; a larger
    /// one, known by its `content-length` or once more than `max_bytes` of it has arrived,
    /// goes to the client streamed, and [`Response::body`] fails with
    /// [`HostError::BodyTooLarge`]. `0` declines the body: nothing is buffered for this plugin
    /// and [`Response::body`] fails with [`HostError::BodyNotDeclared`]. Without this call a
    /// body past the route's limit fails the request. A cache passes large responses through
    /// uncached this way. Request phase only, else [`HostError::NotAllowed`]. (Contract
    /// 0.1.6: the gateway must be at least that version.)
    pub fn limit_response_body(&mut self, max_bytes: usize) -> Result<(), HostError> {
        self.inner.limit_response_body(max_bytes)
    }

    /// A per-request variable, shared along the pipeline and into the response phase (an auth
    /// plugin sets `consumer`; a later plugin reads it).
    pub fn var(&self, name: &str) -> Option<String> {
        self.inner.var(name)
    }

    /// Sets a per-request variable (see [`Request::var`]). The host ignores a variable whose
    /// name and value together exceed
    /// [`rules::http::MAX_VAR_BYTES`](crate::rules::http::MAX_VAR_BYTES), and a new name once
    /// the request holds [`rules::http::MAX_VARS`](crate::rules::http::MAX_VARS) (changing
    /// one it holds still works).
    pub fn set_var(&mut self, name: &str, value: &str) {
        self.inner.set_var(name, value)
    }

    /// Sets a header on this request's response, from the request phase: the host applies it
    /// where this plugin's response phase would run (after later plugins' response phases,
    /// before this plugin's own and earlier plugins'), without calling the plugin again. A
    /// plugin whose response changes are all known in the request phase can leave
    /// `on_response` out of its [`Registration`](crate::Registration) and save that call.
    /// Not applied to a reply this plugin answers with itself. The checks are
    /// [`Response::set_header`]'s; in the response phase, or past
    /// [`rules::http::MAX_RESPONSE_EDITS`](crate::rules::http::MAX_RESPONSE_EDITS) queued
    /// changes per request, [`HostError::NotAllowed`].
    pub fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.inner.queue_response_header(name, Some(value), false)
    }

    /// Adds a value to a header of this request's response, from the request phase (see
    /// [`Request::set_response_header`]).
    pub fn append_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.inner.queue_response_header(name, Some(value), true)
    }

    /// Removes a header from this request's response, from the request phase (see
    /// [`Request::set_response_header`]). A header the host owns is
    /// [`HostError::NotAllowed`].
    pub fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        self.inner.queue_response_header(name, None, false)
    }

    /// Sets a header on this request's response to the value variable `var` has when the
    /// change is applied (see [`Request::set_response_header`]), so plugins that run later can
    /// still decide it. If the variable is unset then, or its value is not a valid header
    /// value, the header is left as it is. The name is checked now.
    pub fn set_response_header_from_var(&mut self, name: &str, var: &str) -> Result<(), HostError> {
        self.inner.queue_response_header_from_var(name, var)
    }
}

/// The upstream's response (or a plugin's reply) on its way back to the client, lent to
/// [`Plugin::on_response`](crate::Plugin::on_response) for the length of one call.
///
/// Headers behave as on [`Request`].
pub struct Response<'a> {
    inner: &'a mut dyn ResponseBackend,
}

impl<'a> Response<'a> {
    pub(crate) fn new(inner: &'a mut dyn ResponseBackend) -> Self {
        Self { inner }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status()
    }

    /// Changes the status code. [`HostError::InvalidValue`] outside 200 to 599
    /// ([`rules::http::FINAL_STATUS`](crate::rules::http::FINAL_STATUS)).
    pub fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        self.inner.set_status(status)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.inner.header_values(name)
    }

    /// All headers, in order, names lower-case.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.inner.headers()
    }

    /// Replaces every value of a header with one value.
    ///
    /// `host` is the `Host` the upstream is sent, over the route's `host_header`: it must be a
    /// host name or address with an optional port ([`HostError::InvalidValue`]), and is
    /// [`HostError::NotAllowed`] on a request to an HTTP/2 upstream (which sends its target
    /// as `:authority`).
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.inner.set_header(name, value)
    }

    /// Adds a value to a header, keeping the ones already there. `host` takes one value:
    /// appending to it is [`HostError::NotAllowed`].
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.inner.append_header(name, value)
    }

    /// Removes every value of a header (nothing happens when it is absent, or one the host
    /// owns). Removing `host` sends the upstream its target's own.
    pub fn remove_header(&mut self, name: &str) {
        self.inner.remove_header(name)
    }

    /// The whole response body. [`HostError::BodyNotDeclared`] unless the registration asked
    /// for `response_body`; [`HostError::BodyTooLarge`] past the route's limit.
    pub fn body(&self) -> Result<Vec<u8>, HostError> {
        self.inner.body()
    }

    /// Replaces the response body (the host fixes the framing headers). Needs `response_body`
    /// in the registration, like [`Response::body`].
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        self.inner.set_body(body)
    }
}
