//! Every error a client can see, turned into a JSON response in exactly one place, or into a
//! gRPC status when the client spoke gRPC. Clients get a stable code and a short message; the
//! detail goes to the log, never into the body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body, BodyError, CollectError};
use crate::client_body::ClientBodyError;
use crate::upstream::ProxyError;

/// What went wrong, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    NotFound,
    BadRequest,
    /// The client's body did not come in time.
    RequestTimeout,
    PayloadTooLarge,
    PluginFailed,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamBadResponse,
    /// Every target of the upstream is out of balancing.
    UpstreamUnavailable,
}

impl GatewayError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::PluginFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamUnreachable | Self::UpstreamBadResponse => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable `error` field.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest => "bad_request",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PluginFailed => "plugin_error",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamBadResponse => "bad_gateway",
            Self::UpstreamUnavailable => "upstream_unavailable",
        }
    }

    /// The human `message` field: fixed text, never internal detail.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotFound => "no route matches this request",
            Self::BadRequest => "the request is malformed",
            Self::RequestTimeout => "the request body did not arrive in time",
            Self::PayloadTooLarge => "the body is larger than this route accepts",
            Self::PluginFailed => "a plugin failed while handling the request",
            Self::UpstreamUnreachable => "the upstream service could not be reached",
            Self::UpstreamTimeout => "the upstream service did not answer in time",
            Self::UpstreamBadResponse => "the upstream service sent an invalid response",
            Self::UpstreamUnavailable => "no instance of the upstream service is available",
        }
    }

    /// The gRPC status code for a gRPC client (the mapping Envoy and gRPC's own HTTP mapping
    /// use: what cannot be reached is `UNAVAILABLE`, what took too long `DEADLINE_EXCEEDED`).
    pub fn grpc_status(self) -> u8 {
        match self {
            Self::NotFound => 12,                              // UNIMPLEMENTED
            Self::BadRequest | Self::PluginFailed => 13,       // INTERNAL
            Self::RequestTimeout | Self::UpstreamTimeout => 4, // DEADLINE_EXCEEDED
            Self::PayloadTooLarge => 8,                        // RESOURCE_EXHAUSTED
            Self::UpstreamUnreachable | Self::UpstreamBadResponse | Self::UpstreamUnavailable => 14, // UNAVAILABLE
        }
    }

    /// The JSON answer. It carries the error as an extension, so that [`for_grpc`] can give a
    /// gRPC client its status instead.
    pub fn into_response(self) -> Response<Body> {
        let json = format!(
            r#"{{"error":"{}","message":"{}"}}"#,
            self.code(),
            self.message()
        );
        let mut resp = Response::new(body::full(Bytes::from(json)));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.extensions_mut().insert(self);
        resp
    }

    /// A gRPC "trailers-only" answer: HTTP 200 whose headers end the stream with the status.
    fn into_grpc_response(self) -> Response<Body> {
        let mut resp = Response::new(body::empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // The messages are plain ASCII: nothing to percent-encode.
        h.insert("grpc-message", HeaderValue::from_static(self.message()));
        resp
    }
}

/// Whether a request speaks gRPC (`application/grpc`, with or without a `+format`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The answer as a gRPC client must get it: the gateway's own error becomes a gRPC status
/// (what the upstream or a plugin said passes as it is).
pub fn for_grpc(resp: Response<Body>) -> Response<Body> {
    match resp.extensions().get::<GatewayError>() {
        Some(e) => e.into_grpc_response(),
        None => resp,
    }
}

impl From<&ClientBodyError> for GatewayError {
    fn from(e: &ClientBodyError) -> Self {
        match e {
            ClientBodyError::TimedOut(_) => Self::RequestTimeout,
            // An aborted client reads no answer; the status is for the access log.
            ClientBodyError::Aborted(_) | ClientBodyError::Malformed(_) => Self::BadRequest,
        }
    }
}

impl From<&ProxyError> for GatewayError {
    fn from(e: &ProxyError) -> Self {
        match e {
            ProxyError::ClientBody(e) => e.into(),
            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_) | ProxyError::Handshake(_) => {
                Self::UpstreamUnreachable
            }
            ProxyError::Timeout(_) => Self::UpstreamTimeout,
            ProxyError::Upstream(_) => Self::UpstreamBadResponse,
            ProxyError::NoTarget | ProxyError::CircuitOpen => Self::UpstreamUnavailable,
        }
    }
}

/// A client's body that a plugin wanted in memory.
impl From<&CollectError> for GatewayError {
    fn from(e: &CollectError) -> Self {
        match e {
            CollectError::TooLarge(_) => Self::PayloadTooLarge,
            CollectError::TimedOut(_) => Self::RequestTimeout,
            CollectError::Body(BodyError::Client(e)) => e.into(),
            CollectError::Body(BodyError::Upstream(_)) => Self::UpstreamBadResponse,
            // Only a response on its way out is compressed, never one collected.
            CollectError::Body(BodyError::Compression(_)) => Self::UpstreamBadResponse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn whose_fault_decides_the_status() {
        let timed_out = ProxyError::ClientBody(ClientBodyError::TimedOut(Duration::from_secs(1)));
        assert_eq!(GatewayError::from(&timed_out).status(), 408);
        assert_eq!(
            GatewayError::from(&ProxyError::Timeout(Duration::from_secs(1))).status(),
            504
        );
        assert_eq!(
            GatewayError::from(&ProxyError::Upstream(
                crate::upstream::UpstreamError::Truncated
            ))
            .status(),
            502
        );
        assert_eq!(
            GatewayError::from(&CollectError::TimedOut(Duration::from_secs(1))).status(),
            408
        );
        assert_eq!(GatewayError::from(&CollectError::TooLarge(1)).status(), 413);
    }

    #[test]
    fn a_grpc_client_gets_a_status_not_json() {
        let resp = for_grpc(GatewayError::UpstreamUnreachable.into_response());
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let upstream = for_grpc(Response::new(body::empty()));
        assert!(upstream.headers().get("grpc-status").is_none());
    }
}
