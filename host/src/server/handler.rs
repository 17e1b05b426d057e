//! One request's journey: match a route, run its pipeline, forward upstream, run the response
//! phase, answer. Routes without plugins take a path that never touches the plugin machinery.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::client_body::ClientBody;
use crate::config::EscapedSlashes;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Route};
use crate::pipeline::{Exchange, Pipeline, RequestOutcome, ResponseState};
use crate::proxy::{self, Outgoing};
use crate::server::Downstream;
use crate::server::admit::{admit, host_of};
use crate::wire::Peer;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>, down: Downstream) -> Response<Body> {
    let started = Instant::now();
    let (mut parts, incoming) = req.into_parts();
    let (route, escaped) = {
        let table = gw.table.load();
        if let Err(e) = admit(&mut parts, table.escaped_slashes) {
            tracing::debug!(client = down.peer.ip_str(), error = %e, "request refused before routing");
            // Whatever follows on this connection cannot be trusted to be framed as meant.
            let mut resp = GatewayError::BadRequest.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        let host = if table.router.any_host() {
            host_of(&parts)
        } else {
            None
        };
        let route = table
            .router
            .find(host.as_deref(), parts.uri.path(), &parts.method)
            .cloned();
        (route, table.escaped_slashes)
    };
    let Some(route) = route else {
        gw.shared.metrics.unmatched();
        return GatewayError::NotFound.into_response();
    };
    let req = Request::from_parts(parts, incoming);
    let resp = match &route.pipeline {
        None => forward(&route, req, down).await,
        Some(p) => with_pipeline(&gw, &route, p, req, down, escaped).await,
    };
    route.metrics.record(resp.status(), started.elapsed());
    resp
}

/// The plain proxy path: no buffering, no copies.
async fn forward(route: &Route, req: Request<Incoming>, down: Downstream) -> Response<Body> {
    let (mut parts, incoming) = req.into_parts();
    let https = down.tls.is_some();
    prepare_upstream_request(route, &mut parts.uri, &mut parts.headers, &down.peer, https);
    let body = Outgoing::stream(ClientBody::new(incoming, route.body_read_timeout));
    match route.upstream.send(Request::from_parts(parts, body)).await {
        Ok(r) => r.map(Body::Upstream),
        Err(e) => GatewayError::from(&e).into_response(),
    }
}

fn prepare_upstream_request(
    route: &Route,
    uri: &mut http::Uri,
    headers: &mut HeaderMap,
    client: &Peer,
    https: bool,
) {
    if let Some(prefix) = &route.strip {
        strip_prefix(uri, prefix);
    }
    proxy::forwarded_headers(headers, client, https);
}

/// `/api/users/7` less `/api/users` is `/7`; the prefix itself becomes `/`.
fn strip_prefix(uri: &mut http::Uri, prefix: &str) {
    let path = uri.path();
    let Some(rest) = path.strip_prefix(prefix) else {
        return;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return;
    }
    let new_path = if rest.is_empty() { "/" } else { rest };
    let pq = match uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.to_owned(),
    };
    if let Ok(pq) = pq.parse() {
        let mut parts = std::mem::take(uri).into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(parts) {
            *uri = u;
        }
    }
}

async fn with_pipeline(
    gw: &Gateway,
    route: &Route,
    pipeline: &Pipeline,
    req: Request<Incoming>,
    down: Downstream,
    escaped: EscapedSlashes,
) -> Response<Body> {
    let metrics = &gw.shared.metrics;
    let (parts, incoming) = req.into_parts();
    let mut ex = Box::new(Exchange::new(
        parts,
        down.peer,
        route.name.clone(),
        route.body_limit,
    ));
    ex.escaped_slashes = escaped;
    ex.tls = down.tls;
    if ex.peer.trusted() {
        ex.client = gw.shared.trusted.client(&ex.peer, &ex.request.headers);
    }

    let mut streaming = Some(incoming);
    if pipeline.needs_request_body() {
        let incoming = streaming.take().expect("body not yet taken");
        let timeout = route.body_read_timeout;
        let client_body = Body::Client(ClientBody::new(incoming, timeout));
        match body::collect(client_body, route.body_limit, Some(timeout)).await {
            Ok(b) => ex.request_body = Some(b),
            Err(e) => {
                tracing::info!(fault = "client", route = %route.name, request_id = %ex.id, error = %e, "client's request body could not be read");
                return GatewayError::from(&e).into_response();
            }
        }
    }

    let (back, ran, outcome) = pipeline.on_request(ex, metrics).await;
    ex = back;
    let response_phase = pipeline.has_response_phase(ran, &ex);

    let (parts, resp_body): (http::response::Parts, Body) = match outcome {
        RequestOutcome::Failed => return GatewayError::PluginFailed.into_response(),
        RequestOutcome::Reply(parts, bytes) => (parts, body::full(bytes)),
        RequestOutcome::Forward => {
            let upstream_req = upstream_request(route, &mut ex, streaming.take(), response_phase);
            match route.upstream.send(upstream_req).await {
                Ok(r) => r.map(Body::Upstream).into_parts(),
                Err(e) => GatewayError::from(&e).into_response().into_parts(),
            }
        }
    };

    if !response_phase {
        return Response::from_parts(parts, resp_body);
    }

    let mut state = ResponseState { parts, body: None };
    let mut streaming_resp = None;
    if pipeline.needs_response_body(ran) {
        match body::collect(resp_body, route.body_limit, None).await {
            Ok(b) => {
                state.parts.headers.remove(header::CONTENT_LENGTH);
                state.body = Some(b);
            }
            Err(e) => {
                tracing::warn!(fault = "upstream", route = %route.name, request_id = %ex.id, error = %e, "upstream body could not be buffered for the response phase");
                return GatewayError::UpstreamBadResponse.into_response();
            }
        }
    } else {
        streaming_resp = Some(resp_body);
    }
    ex.response = Some(state);

    let (mut ex, result) = pipeline.on_response(ex, ran, metrics).await;
    if result.is_err() {
        return GatewayError::PluginFailed.into_response();
    }
    let state = ex
        .response
        .take()
        .expect("response phase keeps the response");
    let body = match (state.body, streaming_resp) {
        (Some(b), _) => body::full(b),
        (None, Some(s)) => s,
        (None, None) => body::empty(),
    };
    Response::from_parts(state.parts, body)
}

/// The request to send upstream, built from the exchange. When a response phase will run, the
/// exchange keeps a copy of the request headers so plugins can still read them.
fn upstream_request(
    route: &Route,
    ex: &mut Exchange,
    streaming: Option<Incoming>,
    keep_copy: bool,
) -> Request<Outgoing> {
    let mut req = Request::new(());
    *req.method_mut() = ex.request.method.clone();
    *req.uri_mut() = ex.request.uri.clone();
    *req.headers_mut() = if keep_copy {
        ex.request.headers.clone()
    } else {
        std::mem::take(&mut ex.request.headers)
    };
    let (mut parts, _) = req.into_parts();
    let https = ex.tls.is_some();
    prepare_upstream_request(route, &mut parts.uri, &mut parts.headers, &ex.peer, https);
    let body = match (ex.request_body.take(), streaming) {
        (Some(bytes), _) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Outgoing::Bytes(bytes)
        }
        (None, Some(incoming)) => {
            Outgoing::stream(ClientBody::new(incoming, route.body_read_timeout))
        }
        (None, None) => Outgoing::Bytes(Bytes::new()),
    };
    Request::from_parts(parts, body)
}
