//! One request's journey: match a route, run its pipeline, forward upstream (or take the
//! route's own answer), run the response phase, answer. Routes without plugins take a path that
//! never touches the plugin machinery.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::client_body::ClientBody;
use crate::config::{EscapedSlashes, HashOn};
use crate::destination::{self, Destination, HostSource};
use crate::error::GatewayError;
use crate::gateway::{Fixed, Gateway, Route, Target};
use crate::pipeline::{BodyRead, Exchange, Pipeline, RequestOutcome, ResponseState};
use crate::server::Downstream;
use crate::server::admit::{admit, host_of};
use crate::upstream::{self, Outgoing, Upstream};
use crate::wire::Peer;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>, down: Downstream) -> Response<Body> {
    if crate::error::is_grpc(req.headers()) {
        crate::error::for_grpc(route_and_serve(gw, req, down).await)
    } else {
        route_and_serve(gw, req, down).await
    }
}

async fn route_and_serve(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    down: Downstream,
) -> Response<Body> {
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
            .find(&crate::router::Request::of(&parts, host.as_deref()))
            .cloned();
        (route, table.escaped_slashes)
    };
    let Some(route) = route else {
        gw.shared.metrics.unmatched();
        return GatewayError::NotFound.into_response();
    };
    let compress = route.compress.map(|min| {
        (
            crate::compress::Wanted::of(&parts.method, &parts.headers),
            min,
        )
    });
    let resp = match websocket_upgrade(&mut parts, &route) {
        Some(on_upgrade) => {
            let req = Request::from_parts(parts, incoming);
            upgrade(&gw, &route, req, down, escaped, on_upgrade).await
        }
        None => {
            let req = Request::from_parts(parts, incoming);
            match (&route.pipeline, &route.target) {
                (None, Target::Upstream(d)) => forward(&gw, &route, d, req, down).await,
                (None, Target::Respond(fixed)) => fixed.response(),
                (Some(p), _) => with_pipeline(&gw, &route, p, req, down, escaped).await,
            }
        }
    };
    let resp = match compress {
        Some((wanted, min)) => crate::compress::apply(resp, wanted, min),
        None => resp,
    };
    route.metrics.record(resp.status(), started.elapsed());
    resp
}

/// The plain proxy path: no buffering, no copies.
async fn forward(
    gw: &Gateway,
    route: &Route,
    dest: &Destination,
    req: Request<Incoming>,
    down: Downstream,
) -> Response<Body> {
    let (mut parts, incoming) = req.into_parts();
    let https = down.tls.is_some();
    let key = affinity(
        &dest.upstream,
        &parts.headers,
        parts.uri.path(),
        &[],
        || {
            if down.peer.trusted() {
                gw.shared.trusted.client(&down.peer, &parts.headers)
            } else {
                down.peer.clone()
            }
        },
    );
    prepare_upstream_request(route, &mut parts.uri, &mut parts.headers, &down.peer, https);
    let policy = HostSource::Policy(&dest.host_header);
    destination::set_host(&mut parts.headers, policy);
    let body = Outgoing::stream(ClientBody::new(incoming, route.body_read_timeout));
    match dest
        .upstream
        .send(Request::from_parts(parts, body), key, route.timeout)
        .await
    {
        Ok(r) => r.map(Body::Upstream),
        Err(e) => GatewayError::from(&e).into_response(),
    }
}

/// A request's hash key, when the upstream it goes to balances by `hash_on`: the request as
/// the client sent it or the request phase left it (header, path), a var a plugin set, or the
/// client's address (`client`, asked for only then).
fn affinity(
    upstream: &Upstream,
    headers: &HeaderMap,
    path: &str,
    vars: &[(String, String)],
    client: impl FnOnce() -> Peer,
) -> Option<u64> {
    let key = |bytes: &[u8]| Some(upstream::balance::Balancer::key(bytes));
    match upstream.hash_on()? {
        HashOn::ClientIp => key(client().ip_str().as_bytes()),
        HashOn::Header(name) => key(headers.get(name)?.as_bytes()),
        HashOn::Var(name) => key(vars.iter().find(|(k, _)| k == name)?.1.as_bytes()),
        HashOn::Path => key(path.as_bytes()),
    }
}

fn prepare_upstream_request(
    route: &Route,
    uri: &mut http::Uri,
    headers: &mut HeaderMap,
    client: &Peer,
    https: bool,
) {
    if let Some(rewrite) = &route.rewrite
        && let Some(path) = rewrite.apply(uri.path())
    {
        *uri = crate::server::admit::origin_form(&path, uri.query());
    }
    if route.compress.is_some() {
        // The gateway compresses, after the response phase: the upstream sends identity.
        headers.remove(header::ACCEPT_ENCODING);
    }
    upstream::forwarded_headers(headers, client, https);
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
    let mut ex = exchange(gw, route, parts, down, escaped);

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
        RequestOutcome::Forward => match next_of(route, &ex) {
            Next::Upstream(dest) => {
                let key = exchange_affinity(&dest.upstream, &ex);
                let upstream_req =
                    upstream_request(route, &dest, &mut ex, streaming.take(), response_phase);
                match dest.upstream.send(upstream_req, key, route.timeout).await {
                    Ok(r) => r.map(Body::Upstream).into_parts(),
                    Err(e) => GatewayError::from(&e).into_response().into_parts(),
                }
            }
            Next::Respond(fixed) => fixed.response().into_parts(),
        },
    };

    if !response_phase {
        return Response::from_parts(parts, resp_body);
    }

    let mut state = ResponseState { parts, body: None };
    let mut streaming_resp = None;
    let read = match pipeline.response_body_read(ran, &ex, route.body_limit) {
        BodyRead::Not => Ok(body::UpTo::Larger(resp_body)),
        BodyRead::Whole(limit) => body::collect(resp_body, limit, None)
            .await
            .map(body::UpTo::Whole)
            .map_err(|e| e.to_string()),
        BodyRead::UpTo(limit) => body::collect_up_to(resp_body, limit)
            .await
            .inspect(|read| ex.response_body_passed = matches!(read, body::UpTo::Larger(_)))
            .map_err(|e| e.to_string()),
    };
    match read {
        Ok(body::UpTo::Whole(b)) => {
            state.parts.headers.remove(header::CONTENT_LENGTH);
            state.body = Some(b);
        }
        Ok(body::UpTo::Larger(b)) => streaming_resp = Some(b),
        Err(e) => {
            tracing::warn!(fault = "upstream", route = %route.name, request_id = %ex.id, error = %e, "upstream body could not be buffered for the response phase");
            return GatewayError::UpstreamBadResponse.into_response();
        }
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

/// What the pipeline's plugins see of a request.
fn exchange(
    gw: &Gateway,
    route: &Route,
    parts: http::request::Parts,
    down: Downstream,
    escaped: EscapedSlashes,
) -> Box<Exchange> {
    let mut ex = Box::new(Exchange::new(
        parts,
        down.peer,
        route.name.clone(),
        route.body_limit,
    ));
    ex.escaped_slashes = escaped;
    ex.tls = down.tls;
    ex.destinations = Some(route.destinations.clone());
    ex.route_h2 = route.destination().is_some_and(|d| d.h2);
    if ex.peer.trusted() {
        ex.client = gw.shared.trusted.client(&ex.peer, &ex.request.headers);
    }
    ex
}

/// For an HTTP/1.1 request to switch to WebSocket (`Connection: upgrade`, `Upgrade:
/// websocket`) on a route whose upstream can take it: the future that yields the client's
/// connection once the 101 is sent. Any other request to switch protocols is passed on as
/// an ordinary request, without its `Upgrade`.
fn websocket_upgrade(
    parts: &mut http::request::Parts,
    route: &Route,
) -> Option<hyper::upgrade::OnUpgrade> {
    let wants = parts.version == http::Version::HTTP_11
        && has_token(&parts.headers, header::CONNECTION, "upgrade")
        && has_token(&parts.headers, header::UPGRADE, "websocket")
        && route
            .destination()
            .is_some_and(|d| d.upstream.can_upgrade());
    if !wants {
        return None;
    }
    parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
}

/// Whether a comma-separated header holds `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A WebSocket upgrade: the request phase runs as for any request (a plugin may refuse it,
/// or change its headers); the upstream is then asked to switch on a connection of its own.
/// Its 101 goes back to the client, and the two connections become one tunnel. The response
/// phase does not run: after a 101 there is no HTTP response left to see.
async fn upgrade(
    gw: &Gateway,
    route: &Route,
    req: Request<Incoming>,
    down: Downstream,
    escaped: EscapedSlashes,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    if !hyper::body::Body::is_end_stream(&incoming) {
        // The bytes after the head belong to the new protocol, not to a body.
        return GatewayError::BadRequest.into_response();
    }
    let protocol = parts
        .headers
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("websocket"));
    let slot = down.slot.clone();
    let peer = down.peer.clone();
    let mut ex = exchange(gw, route, parts, down, escaped);
    if let Some(pipeline) = &route.pipeline {
        if pipeline.needs_request_body() {
            ex.request_body = Some(Bytes::new());
        }
        let (back, _, outcome) = pipeline.on_request(ex, &gw.shared.metrics).await;
        ex = back;
        match outcome {
            RequestOutcome::Failed => return GatewayError::PluginFailed.into_response(),
            RequestOutcome::Reply(parts, bytes) => {
                return Response::from_parts(parts, body::full(bytes));
            }
            RequestOutcome::Forward => {}
        }
    }
    let dest = match next_of(route, &ex) {
        Next::Upstream(dest) => dest,
        Next::Respond(fixed) => return fixed.response(),
    };
    let upstream = &dest.upstream;
    let key = exchange_affinity(upstream, &ex);
    let req = upstream_request(route, &dest, &mut ex, None, false);
    if !upstream.can_upgrade() {
        // A plugin chose an HTTP/2 upstream: the handshake goes as an ordinary request,
        // without its `Upgrade`, as it would on a route to that upstream.
        return match upstream.send(req, key, route.timeout).await {
            Ok(r) => r.map(Body::Upstream),
            Err(e) => GatewayError::from(&e).into_response(),
        };
    }
    let (parts, _) = req.into_parts();
    let switch = upstream
        .upgrade(Request::from_parts(parts, ()), protocol, key)
        .await;
    let (resp, far) = match switch {
        Ok(upstream::Switch::Switched(resp, far)) => (resp, far),
        Ok(upstream::Switch::Refused(resp)) => return resp.map(Body::Upstream),
        Err(e) => return GatewayError::from(&e).into_response(),
    };
    let (route_name, idle) = (route.name.clone(), route.websocket_idle);
    let request_id = ex.id;
    tokio::spawn(async move {
        let client = match on_upgrade.await {
            Ok(c) => hyper_util::rt::TokioIo::new(c),
            Err(e) => {
                tracing::debug!(route = %route_name, request_id = %request_id, error = %e, "client left before the tunnel opened");
                return;
            }
        };
        let end = upstream::tunnel(client, far, idle).await;
        let client = peer.ip_str();
        match end {
            upstream::TunnelEnd::Closed { .. } => {
                tracing::debug!(route = %route_name, request_id = %request_id, client, end = %end, "websocket tunnel closed");
            }
            // Cut by the gateway, or failed: worth an operator's look.
            _ => {
                tracing::info!(route = %route_name, request_id = %request_id, client, end = %end, "websocket tunnel closed");
            }
        }
        drop(slot);
    });
    resp.map(|()| body::empty())
}

/// Where a request the pipeline has seen goes.
enum Next<'a> {
    Upstream(Arc<Destination>),
    /// The route's own answer, which the response phase sees as an upstream's.
    Respond(&'a Fixed),
}

/// The upstream a plugin chose, else the route's target.
fn next_of<'a>(route: &'a Route, ex: &Exchange) -> Next<'a> {
    match (&ex.chosen, &route.target) {
        (Some(d), _) | (None, Target::Upstream(d)) => Next::Upstream(d.clone()),
        (None, Target::Respond(fixed)) => Next::Respond(fixed),
    }
}

/// [`affinity`] for a request the pipeline has seen.
fn exchange_affinity(upstream: &Upstream, ex: &Exchange) -> Option<u64> {
    let r = &ex.request;
    affinity(upstream, &r.headers, r.uri.path(), &ex.vars, || {
        ex.client.clone()
    })
}

/// The request to send upstream, built from the exchange. When a response phase will run, the
/// exchange keeps a copy of the request headers so plugins can still read them.
fn upstream_request(
    route: &Route,
    dest: &Destination,
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
    let host = match &ex.client_host {
        // A plugin's `Host` wins; `X-Forwarded-Host` still names the client's.
        Some(client) => {
            let written = parts.headers.remove(header::HOST);
            if let Some(client) = client {
                parts.headers.insert(header::HOST, client.clone());
            }
            HostSource::Written(written)
        }
        // The route's own destination already has the route's `host_header`.
        None => HostSource::Policy(route.host_override.as_ref().unwrap_or(&dest.host_header)),
    };
    prepare_upstream_request(route, &mut parts.uri, &mut parts.headers, &ex.peer, https);
    destination::set_host(&mut parts.headers, host);
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
