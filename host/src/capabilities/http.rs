//! Implements `wasmgate:plugin/http`: the borrowed `request` and `response` resources.
//!
//! The handles carry no state. A plugin can only hold them during a phase call, and for that
//! call the store holds the one exchange in flight, so every method reads and writes it
//! directly: no table entry and no copy per call. Everything a plugin writes is validated
//! here, before the host keeps it, and every call refused is counted for the log
//! (`plugins::refusals`).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, StatusCode};
use wasmgate_rules::http::{
    FINAL_STATUS, MAX_RESPONSE_EDITS, MAX_VAR_BYTES, MAX_VARS, is_host_header,
};
use wasmtime::Result;
use wasmtime::component::Resource;

use crate::pipeline::header_rules::is_host;
use crate::pipeline::{Exchange, HeaderEdit, Phase, ResponseEdit};
use crate::plugins::bindings::wasmgate::plugin::http::{
    ClientCert, Host, HostRequest, HostResponse, TlsInfo, UpstreamError,
};
use crate::plugins::bindings::{ErrorCode, Reply};
use crate::plugins::refusals::Refusal;
use crate::plugins::state::HostState;

/// The `request` resource: stands for the exchange in flight.
pub struct RequestHandle;
/// The `response` resource: stands for the exchange's response in flight.
pub struct ResponseHandle;

/// Headers the host manages itself ([`wasmgate_rules::http::HOST_MANAGED_HEADERS`]).
fn is_framing(name: &HeaderName) -> bool {
    wasmgate_rules::http::is_host_managed(name.as_str())
}

fn value_string(v: &HeaderValue) -> String {
    match v.to_str() {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
    }
}

fn get_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(value_string)
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().map(value_string).collect()
}

fn all_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), value_string(v)))
        .collect()
}

/// Checks a header a plugin wants to write.
pub fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ErrorCode> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ErrorCode::InvalidName)?;
    if is_framing(&name) {
        return Err(ErrorCode::NotAllowed);
    }
    let value = HeaderValue::from_str(value).map_err(|_| ErrorCode::InvalidValue)?;
    Ok((name, value))
}

fn write_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
    append: bool,
) -> Result<(), ErrorCode> {
    let (name, value) = parse_header(name, value)?;
    if append {
        headers.append(name, value);
    } else {
        headers.insert(name, value);
    }
    Ok(())
}

/// A plugin's `set-header host`: the `Host` the upstream is sent, over the route's
/// `host_header`. It must be a host, and cannot reach an HTTP/2 upstream.
fn set_host(ex: &mut Exchange, value: &str) -> Result<(), ErrorCode> {
    let value = HeaderValue::from_str(value).map_err(|_| ErrorCode::InvalidValue)?;
    if !is_host(&value) {
        return Err(ErrorCode::InvalidValue);
    }
    if ex.to_h2() {
        return Err(ErrorCode::NotAllowed);
    }
    ex.host_written();
    ex.request.headers.insert(header::HOST, value);
    Ok(())
}

fn remove_header(headers: &mut HeaderMap, name: &str) {
    if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
        && !is_framing(&name)
    {
        headers.remove(name);
    }
}

fn read_body(allowed: bool, body: &Option<Bytes>) -> Result<Vec<u8>, ErrorCode> {
    if !allowed {
        return Err(ErrorCode::BodyNotDeclared);
    }
    Ok(body.as_deref().unwrap_or_default().to_vec())
}

/// What a refused call's log line says of it: the call, its argument (cut short) and why.
pub(crate) fn refused(call: &str, arg: &str, e: ErrorCode) -> String {
    let why = match e {
        ErrorCode::InvalidName => "invalid-name",
        ErrorCode::InvalidValue => "invalid-value",
        ErrorCode::BodyNotDeclared => "body-not-declared",
        ErrorCode::BodyTooLarge => "body-too-large",
        ErrorCode::NotAllowed => "not-allowed",
    };
    format!("{call} {:?}: {why}", wasmgate_rules::log::cut(arg, 64))
}

impl Host for HostState {}

impl HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.request.method.as_str().to_owned())
    }

    fn set_method(
        &mut self,
        _: Resource<RequestHandle>,
        method: String,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let result = if ex.phase != Phase::Request {
            Err(ErrorCode::NotAllowed)
        } else {
            match Method::from_bytes(method.as_bytes()) {
                Ok(m) => {
                    ex.request.method = m;
                    Ok(())
                }
                Err(_) => Err(ErrorCode::InvalidValue),
            }
        };
        Ok(self.refusals.check(Refusal::Method, result, |e| {
            refused("set-method", &method, e)
        }))
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.request.uri.path().to_owned())
    }

    fn set_path(
        &mut self,
        _: Resource<RequestHandle>,
        path: String,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let result = if ex.phase != Phase::Request {
            Err(ErrorCode::NotAllowed)
        } else if path.contains(['?', '#']) {
            Err(ErrorCode::InvalidValue)
        } else {
            // The same normal form as the request's own path, so what the upstream sees is
            // never a path the gateway did not check (`/a/../admin` is `/admin`).
            match wasmgate_uri::normalise_path(&path, ex.escaped_slashes) {
                Err(_) => Err(ErrorCode::InvalidValue),
                Ok(normal) => {
                    let pq = match ex.request.uri.query() {
                        Some(q) => format!("{normal}?{q}"),
                        None => normal.into_owned(),
                    };
                    ex.set_path_and_query(&pq)
                }
            }
        };
        Ok(self
            .refusals
            .check(Refusal::Path, result, |e| refused("set-path", &path, e)))
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Result<Option<String>> {
        Ok(self.exchange()?.request.uri.query().map(str::to_owned))
    }

    fn set_query(
        &mut self,
        _: Resource<RequestHandle>,
        query: Option<String>,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let result = if ex.phase != Phase::Request {
            Err(ErrorCode::NotAllowed)
        } else if query.as_deref().is_some_and(|q| q.contains('#')) {
            Err(ErrorCode::InvalidValue)
        } else {
            let path = ex.request.uri.path();
            let pq = match query.as_deref() {
                Some(q) if !q.is_empty() => format!("{path}?{q}"),
                _ => path.to_owned(),
            };
            ex.set_path_and_query(&pq)
        };
        Ok(self.refusals.check(Refusal::Path, result, |e| {
            refused("set-query", query.as_deref().unwrap_or_default(), e)
        }))
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Option<String>> {
        Ok(get_header(&self.exchange()?.request.headers, &name))
    }

    fn header_values(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Vec<String>> {
        Ok(header_values(&self.exchange()?.request.headers, &name))
    }

    fn headers(&mut self, _: Resource<RequestHandle>) -> Result<Vec<(String, String)>> {
        Ok(all_headers(&self.exchange()?.request.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let result = if ex.phase != Phase::Request {
            Err(ErrorCode::NotAllowed)
        } else if is_host_header(&name) {
            set_host(ex, &value)
        } else {
            write_header(&mut ex.request.headers, &name, &value, false)
        };
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("request.set-header", &name, e)
        }))
    }

    fn append_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let result = if ex.phase != Phase::Request || is_host_header(&name) {
            Err(ErrorCode::NotAllowed)
        } else {
            write_header(&mut ex.request.headers, &name, &value, true)
        };
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("request.append-header", &name, e)
        }))
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) -> Result<()> {
        let ex = self.exchange()?;
        if ex.phase == Phase::Request {
            if is_host_header(&name) {
                ex.host_written();
            }
            remove_header(&mut ex.request.headers, &name);
        }
        Ok(())
    }

    fn client_addr(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.client.ip_str().to_owned())
    }

    fn tls(&mut self, _: Resource<RequestHandle>) -> Result<Option<TlsInfo>> {
        Ok(self.exchange()?.tls.as_deref().map(|t| TlsInfo {
            server_name: t.sni.as_deref().map(str::to_owned),
            client_cert: t.client.as_ref().map(|c| ClientCert {
                subject: c.subject.clone(),
                sans: c.sans.clone(),
            }),
        }))
    }

    fn route(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.route.to_string())
    }

    fn set_upstream(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
    ) -> Result<Result<(), UpstreamError>> {
        let ex = self.exchange()?;
        let found = ex.destinations.as_ref().and_then(|d| d.get(name.as_str()));
        let result = match found {
            _ if ex.phase != Phase::Request => Err(UpstreamError::NotAllowed),
            None => Err(UpstreamError::Unknown),
            // The `Host` a plugin wrote would not reach an HTTP/2 upstream.
            Some(d) if d.h2 && ex.client_host.is_some() => Err(UpstreamError::NotAllowed),
            Some(d) => {
                ex.chosen = Some(d.clone());
                Ok(())
            }
        };
        Ok(self.refusals.check(Refusal::Upstream, result, |e| {
            let why = match e {
                UpstreamError::Unknown => "no upstream of that name",
                UpstreamError::NotAllowed => "not-allowed",
            };
            format!(
                "set-upstream {:?}: {why}",
                wasmgate_rules::log::cut(&name, 64)
            )
        }))
    }

    fn id(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.id.to_string())
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Result<Result<Vec<u8>, ErrorCode>> {
        let ex = self.exchange()?;
        let result = read_body(ex.allow_request_body, &ex.request_body);
        Ok(self
            .refusals
            .check(Refusal::Body, result, |e| refused("request.body", "", e)))
    }

    fn set_body(
        &mut self,
        _: Resource<RequestHandle>,
        body: Vec<u8>,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let len = body.len();
        let result = if !ex.allow_request_body {
            Err(ErrorCode::BodyNotDeclared)
        } else if ex.phase != Phase::Request {
            Err(ErrorCode::NotAllowed)
        } else if len > ex.body_limit {
            Err(ErrorCode::BodyTooLarge)
        } else {
            ex.request_body = Some(Bytes::from(body));
            Ok(())
        };
        Ok(self.refusals.check(Refusal::Body, result, |e| {
            refused("request.set-body", &format!("{len} bytes"), e)
        }))
    }

    fn limit_response_body(
        &mut self,
        _: Resource<RequestHandle>,
        max_bytes: u64,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let result = if ex.phase != Phase::Request {
            Err(ErrorCode::NotAllowed)
        } else {
            ex.bound_response_body(usize::try_from(max_bytes).unwrap_or(usize::MAX));
            Ok(())
        };
        Ok(self.refusals.check(Refusal::Body, result, |e| {
            refused("request.limit-response-body", &max_bytes.to_string(), e)
        }))
    }

    fn get_var(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Option<String>> {
        Ok(self.exchange()?.var(&name).map(str::to_owned))
    }

    fn set_var(&mut self, _: Resource<RequestHandle>, name: String, value: String) -> Result<()> {
        let ex = self.exchange()?;
        let size = name.len() + value.len();
        if size > MAX_VAR_BYTES {
            self.refusals.note(Refusal::SetVar, || {
                let name = wasmgate_rules::log::cut(&name, 64);
                format!("variable {name:?} of {size} bytes, over {MAX_VAR_BYTES}; ignored")
            });
        } else if let Some(slot) = ex.vars.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else if ex.vars.len() < MAX_VARS {
            ex.vars.push((name, value));
        } else {
            self.refusals.note(Refusal::SetVar, || {
                let name = wasmgate_rules::log::cut(&name, 64);
                format!("variable {name:?} past the {MAX_VARS} a request may carry; ignored")
            });
        }
        Ok(())
    }

    fn set_response_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), ErrorCode>> {
        let result = self.queue_response_edit(&name, QueuedValue::Set(&value));
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("set-response-header", &name, e)
        }))
    }

    fn append_response_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), ErrorCode>> {
        let result = self.queue_response_edit(&name, QueuedValue::Append(&value));
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("append-response-header", &name, e)
        }))
    }

    fn remove_response_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
    ) -> Result<Result<(), ErrorCode>> {
        let result = self.queue_response_edit(&name, QueuedValue::Remove);
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("remove-response-header", &name, e)
        }))
    }

    fn set_response_header_from_var(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        var: String,
    ) -> Result<Result<(), ErrorCode>> {
        let result = self.queue_response_edit(&name, QueuedValue::Var(var));
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("set-response-header-from-var", &name, e)
        }))
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> Result<()> {
        Ok(())
    }
}

/// What a queued response header change writes.
enum QueuedValue<'a> {
    Set(&'a str),
    Append(&'a str),
    Var(String),
    Remove,
}

impl HostState {
    /// Queues a response header change for the running stage: checked now, applied when the
    /// response phase reaches the stage (`Pipeline::on_response`).
    fn queue_response_edit(&mut self, name: &str, value: QueuedValue<'_>) -> Result<(), ErrorCode> {
        let Some(ex) = self.exchange.as_deref_mut() else {
            return Err(ErrorCode::NotAllowed);
        };
        if ex.phase != Phase::Request {
            return Err(ErrorCode::NotAllowed);
        }
        let stage = ex.stage;
        let queued = ex
            .response_edits
            .iter()
            .filter(|e| e.stage == stage)
            .count();
        if queued >= MAX_RESPONSE_EDITS {
            return Err(ErrorCode::NotAllowed);
        }
        let edit = match value {
            QueuedValue::Set(value) => {
                let (name, value) = parse_header(name, value)?;
                HeaderEdit::Set(name, value)
            }
            QueuedValue::Append(value) => {
                let (name, value) = parse_header(name, value)?;
                HeaderEdit::Append(name, value)
            }
            QueuedValue::Var(var) => {
                let (name, _) = parse_header(name, "")?;
                if var.len() > MAX_VAR_BYTES {
                    return Err(ErrorCode::InvalidValue);
                }
                HeaderEdit::SetFromVar(name, var)
            }
            QueuedValue::Remove => {
                let (name, _) = parse_header(name, "")?;
                HeaderEdit::Remove(name)
            }
        };
        ex.response_edits.push(ResponseEdit { stage, edit });
        Ok(())
    }
}

impl HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> Result<u16> {
        Ok(self.exchange()?.response()?.parts.status.as_u16())
    }

    fn set_status(
        &mut self,
        _: Resource<ResponseHandle>,
        status: u16,
    ) -> Result<Result<(), ErrorCode>> {
        let resp = self.exchange()?.response()?;
        let result = match valid_status(status) {
            Some(s) => {
                resp.parts.status = s;
                Ok(())
            }
            None => Err(ErrorCode::InvalidValue),
        };
        Ok(self.refusals.check(Refusal::Status, result, |e| {
            refused("set-status", &status.to_string(), e)
        }))
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<Option<String>> {
        Ok(get_header(
            &self.exchange()?.response()?.parts.headers,
            &name,
        ))
    }

    fn header_values(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<Vec<String>> {
        Ok(header_values(
            &self.exchange()?.response()?.parts.headers,
            &name,
        ))
    }

    fn headers(&mut self, _: Resource<ResponseHandle>) -> Result<Vec<(String, String)>> {
        Ok(all_headers(&self.exchange()?.response()?.parts.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), ErrorCode>> {
        let resp = self.exchange()?.response()?;
        let result = write_header(&mut resp.parts.headers, &name, &value, false);
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("response.set-header", &name, e)
        }))
    }

    fn append_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), ErrorCode>> {
        let resp = self.exchange()?.response()?;
        let result = write_header(&mut resp.parts.headers, &name, &value, true);
        Ok(self.refusals.check(Refusal::Header, result, |e| {
            refused("response.append-header", &name, e)
        }))
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<()> {
        remove_header(&mut self.exchange()?.response()?.parts.headers, &name);
        Ok(())
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> Result<Result<Vec<u8>, ErrorCode>> {
        let ex = self.exchange()?;
        let allowed = ex.allow_response_body;
        // A body past this plugin's bound: streamed on unread, or read for another plugin's
        // larger one.
        let bound = ex.response_body_bound(ex.stage);
        let passed = ex.response_body_passed;
        let resp = ex.response()?;
        let too_large = allowed
            && bound.is_some()
            && match &resp.body {
                None => passed,
                Some(b) => bound.is_some_and(|bound| b.len() > bound),
            };
        let result = if too_large {
            Err(ErrorCode::BodyTooLarge)
        } else {
            read_body(allowed, &resp.body)
        };
        Ok(self
            .refusals
            .check(Refusal::Body, result, |e| refused("response.body", "", e)))
    }

    fn set_body(
        &mut self,
        _: Resource<ResponseHandle>,
        body: Vec<u8>,
    ) -> Result<Result<(), ErrorCode>> {
        let ex = self.exchange()?;
        let len = body.len();
        let result = if !ex.allow_response_body {
            Err(ErrorCode::BodyNotDeclared)
        } else if len > ex.body_limit {
            Err(ErrorCode::BodyTooLarge)
        } else {
            let resp = ex.response()?;
            resp.body = Some(Bytes::from(body));
            resp.parts.headers.remove(header::CONTENT_LENGTH);
            Ok(())
        };
        Ok(self.refusals.check(Refusal::Body, result, |e| {
            refused("response.set-body", &format!("{len} bytes"), e)
        }))
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> Result<()> {
        Ok(())
    }
}

fn valid_status(status: u16) -> Option<StatusCode> {
    if FINAL_STATUS.contains(&status) {
        StatusCode::from_u16(status).ok()
    } else {
        None
    }
}

/// Why a plugin's reply was refused.
#[derive(Debug, thiserror::Error)]
pub enum BadReply {
    #[error("status {0} is not a final HTTP status (200-599)")]
    Status(u16),
    #[error("header {0:?} is invalid or host-managed")]
    Header(String),
    #[error("body of {0} bytes exceeds the route's limit")]
    Body(usize),
}

/// Turns a plugin's reply into a response, checking every part of it.
pub fn reply_into_parts(
    reply: Reply,
    body_limit: usize,
) -> std::result::Result<(http::response::Parts, Bytes), BadReply> {
    let status = valid_status(reply.status).ok_or(BadReply::Status(reply.status))?;
    if reply.body.len() > body_limit {
        return Err(BadReply::Body(reply.body.len()));
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    for (name, value) in &reply.headers {
        match parse_header(name, value) {
            Ok((n, v)) => {
                parts.headers.append(n, v);
            }
            // A reply may state its own length; the host frames it anyway.
            Err(ErrorCode::NotAllowed) if name.eq_ignore_ascii_case("content-length") => {}
            Err(_) => return Err(BadReply::Header(name.chars().take(64).collect())),
        }
    }
    Ok((parts, Bytes::from(reply.body)))
}

impl Exchange {
    fn set_path_and_query(&mut self, pq: &str) -> std::result::Result<(), ErrorCode> {
        let pq: PathAndQuery = pq.parse().map_err(|_| ErrorCode::InvalidValue)?;
        let mut parts = std::mem::take(&mut self.request.uri).into_parts();
        parts.path_and_query = Some(pq);
        self.request.uri = http::Uri::from_parts(parts).map_err(|_| ErrorCode::InvalidValue)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wasmgate_rules::http::{HOST_MANAGED_HEADERS, MAX_HEADER_NAME_BYTES};
    use wasmgate_rules::http::{is_header_name, is_header_value};

    use super::*;

    /// The host parses what a plugin writes with `http`'s types; the SDK's mock host and the
    /// plugins check with the rules crate. The two must agree, character for character.
    #[test]
    fn the_rules_agree_with_the_parsers_the_host_checks_with() {
        for c in (0..0x300).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("a{c}b")] {
                assert_eq!(
                    is_header_name(&s),
                    HeaderName::from_bytes(s.as_bytes()).is_ok(),
                    "name {s:?}"
                );
                assert_eq!(
                    is_header_value(&s),
                    HeaderValue::from_str(&s).is_ok(),
                    "value {s:?}"
                );
            }
        }
        for len in [0, 1, MAX_HEADER_NAME_BYTES, MAX_HEADER_NAME_BYTES + 1] {
            let name = "a".repeat(len);
            assert_eq!(
                is_header_name(&name),
                HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{len}"
            );
        }
    }

    #[test]
    fn host_managed_headers_are_refused_and_never_forwarded() {
        for name in HOST_MANAGED_HEADERS {
            let upper = name.to_ascii_uppercase();
            for n in [name, upper.as_str()] {
                assert!(
                    matches!(parse_header(n, "1"), Err(ErrorCode::NotAllowed)),
                    "{n}"
                );
            }
            // The proxy strips each of them on the way, but the length (which it sets) and
            // `Trailer` (which announces the trailers it passes on).
            if name != "content-length" && name != "trailer" {
                let parsed = HeaderName::from_static(name);
                assert!(crate::upstream::is_hop_by_hop(&parsed), "{name}");
            }
        }
        assert!(parse_header("x-proxy-authorization", "1").is_ok());

        let reply = |headers: &[(&str, &str)]| Reply {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: b"ok".to_vec(),
        };
        let refused = reply_into_parts(reply(&[("Proxy-Authorization", "Basic a")]), 10);
        assert!(matches!(refused, Err(BadReply::Header(_))), "{refused:?}");
        let (parts, _) = reply_into_parts(reply(&[("content-length", "99"), ("x-a", "1")]), 10)
            .expect("a reply's own length is dropped");
        assert_eq!(parts.headers.len(), 1);
    }
}
