//! Every error a client can see, turned into a JSON response in exactly one place. Clients get
//! a stable code and a short message; the detail goes to the log, never into the body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// What went wrong, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    NotFound,
    BadRequest,
    PayloadTooLarge,
    PluginFailed,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamBadResponse,
}

impl GatewayError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::PluginFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamUnreachable | Self::UpstreamBadResponse => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The machine-readable `error` field.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest => "bad_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PluginFailed => "plugin_error",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamBadResponse => "bad_gateway",
        }
    }

    /// The human `message` field: fixed text, never internal detail.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotFound => "no route matches this request",
            Self::BadRequest => "the request is malformed",
            Self::PayloadTooLarge => "the body is larger than this route accepts",
            Self::PluginFailed => "a plugin failed while handling the request",
            Self::UpstreamUnreachable => "the upstream service could not be reached",
            Self::UpstreamTimeout => "the upstream service did not answer in time",
            Self::UpstreamBadResponse => "the upstream service sent an invalid response",
        }
    }

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
        resp
    }
}
