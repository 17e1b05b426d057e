//! The admin listener: `GET /health`, `GET /metrics` (Prometheus text), `GET /admin/routes`,
//! `GET /admin/status` (the live config and the last reload) and `POST /admin/reload` (reload
//! now: 200, or 400 with the errors while the previous config stays live).
//! It binds to loopback by default; on any other address it needs `admin.token_file`, and
//! then every request must carry that bearer token.

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
    token: Option<Arc<str>>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(token) = &token
        && !authorized(&req, token)
    {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","message":"the admin API needs a bearer token"}"#.into(),
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if req.uri().path() == "/admin/reload" {
        if req.method() != Method::POST {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","message":"/admin/reload takes POST"}"#.into(),
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
            r#"{"error":"method_not_allowed","message":"this admin endpoint takes GET or HEAD"}"#
                .into(),
        );
    }
    match req.uri().path() {
        "/health" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/metrics" => {
            let mut live = vec![crate::upstream::status::registry(
                &gw.table.load().upstreams,
            )];
            live.extend(gw.shared.redis.as_ref().map(|r| r.registry()));
            let mut resp = Response::new(body::full(gw.shared.metrics.encode(&live)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/admin/routes" => json(StatusCode::OK, gw.routes_json().to_string()),
        "/admin/upstreams" => json(
            StatusCode::OK,
            crate::upstream::status::json(&gw.table.load().upstreams).to_string(),
        ),
        "/admin/status" => {
            let mut status = reload.status_json();
            status["state"] = gw.shared.redis.as_ref().map_or_else(
                || serde_json::json!({ "backend": "memory" }),
                |r| r.status_json(),
            );
            json(StatusCode::OK, status.to_string())
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","message":"no such admin endpoint: GET /health, /metrics, /admin/routes, /admin/upstreams or /admin/status, POST /admin/reload"}"#
                .into(),
        ),
    }
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let want = token.as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
