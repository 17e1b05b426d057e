//! `[server.redirect]`: a plain listener whose every answer sends the client to the same host
//! and target on HTTPS, as nginx's `return 301 https://$host$request_uri` does.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::config::EscapedSlashes;
use crate::error::GatewayError;
use crate::server::admit::{admit, host_of};

#[derive(Debug, Clone, Copy)]
pub struct Redirect {
    status: StatusCode,
    /// The HTTPS listener's port, written into `Location` unless it is 443.
    https_port: Option<u16>,
    escaped: EscapedSlashes,
}

impl Redirect {
    pub fn new(status: u16, https_port: u16, escaped: EscapedSlashes) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            https_port: (https_port != 443).then_some(https_port),
            escaped,
        }
    }

    /// The redirect for `req`; a request without a valid host (there is nowhere to send it)
    /// or with a path that has no normal form gets 400.
    pub fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, _) = req.into_parts();
        if admit(&mut parts, self.escaped).is_err() {
            return GatewayError::BadRequest.into_response();
        }
        let Some(host) = host_of(&parts) else {
            return GatewayError::BadRequest.into_response();
        };
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let location = match self.https_port {
            Some(port) => format!("https://{host}:{port}{target}"),
            None => format!("https://{host}{target}"),
        };
        // The host passed `parse_host` and the target was parsed as a URI: visible ASCII.
        let Ok(location) = HeaderValue::try_from(location) else {
            return GatewayError::BadRequest.into_response();
        };
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(header::LOCATION, location);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        resp
    }
}
