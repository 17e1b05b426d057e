//! The admin listener: `GET /health`, `GET /metrics` (Prometheus text), `GET /admin/routes`,
//! `GET /admin/status` (the live config and the last reload) and `POST /admin/reload` (reload
//! now: 200, or 400 with the errors while the previous config stays live).
//! It is meant for operators only: bind it to a private address.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::gateway::Gateway;
use crate::reload;

pub async fn handle(
    gw: Arc<Gateway>,
    reload: reload::Handle,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path() == "/admin/reload" {
        if req.method() != Method::POST {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed"}"#.into(),
            );
        }
        let outcome = reload.reload().await;
        let status = if outcome.is_ok() {
            StatusCode::OK
        } else if outcome.outcome == "unavailable" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        let text = serde_json::to_string(&outcome).unwrap_or_default();
        return json(status, text);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#.into(),
        );
    }
    match req.uri().path() {
        "/health" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/metrics" => {
            let mut resp = Response::new(body::full(gw.shared.metrics.encode()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/admin/routes" => json(StatusCode::OK, gw.routes_json().to_string()),
        "/admin/status" => json(StatusCode::OK, reload.status_json().to_string()),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into()),
    }
}

fn json(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
