//! [`send_all`] on wasm: `wasi:http/outgoing-handler` through the `wasip2` crate's bindings.
//!
//! Every request is handed to the host first; then one `wasi:io/poll.poll` at a time waits on
//! whatever each call is waiting for (its response head, the next bytes of its body, its
//! deadline), and the calls that are ready move on. Resources are dropped children first, as
//! `wasi:http` requires: pollables before what they watch, a body's stream before the body.

use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme, http_error_code,
};
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::{InputStream, StreamError};

use super::{Error, Request, Response, check};

/// Bytes asked of a body stream per read.
const READ_CHUNK: u64 = 64 * 1024;
/// Most bytes `blocking-write-and-flush` takes per call.
const WRITE_CHUNK: usize = 4096;

pub(super) fn send_all(requests: Vec<Request>) -> Vec<Result<Response, Error>> {
    let mut calls: Vec<Call> = requests.iter().map(Call::start).collect();
    while calls.iter().any(|c| !matches!(c.state, State::Done(_))) {
        wait(&mut calls);
    }
    calls
        .into_iter()
        .map(|c| match c.state {
            State::Done(result) => result,
            State::Head(_) | State::Body(_) => unreachable!("every call is done"),
        })
        .collect()
}

/// One call under way.
struct Call {
    state: State,
    /// When the request's own timeout runs out (monotonic clock, nanoseconds).
    deadline: Option<u64>,
}

enum State {
    /// Waiting for the response head.
    Head(FutureIncomingResponse),
    /// Reading the body.
    Body(Reading),
    Done(Result<Response, Error>),
}

/// A response whose body is being read. Fields drop in order: the stream is the body's child.
struct Reading {
    stream: InputStream,
    body: IncomingBody,
    response: IncomingResponse,
    status: u16,
    headers: Vec<(String, String)>,
    bytes: Vec<u8>,
}

impl Call {
    fn start(req: &Request) -> Call {
        let deadline = req
            .timeout
            .map(|t| monotonic_clock::now().saturating_add(nanos(t)));
        let state = match begin(req) {
            Ok(future) => State::Head(future),
            Err(e) => State::Done(Err(e)),
        };
        Call { state, deadline }
    }
}

/// Hands the request to the host, then writes its body (which the host reads meanwhile).
fn begin(req: &Request) -> Result<FutureIncomingResponse, Error> {
    let target = check(req)?;
    let invalid = |what: &str| Error::InvalidRequest(format!("{what} refused by wasi:http"));
    let mut entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    // The body is known whole: its length goes with it, so no upstream has to take a chunked
    // body (and one that requires a length for a POST gets `0`).
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        let length = req.body.len().to_string().into_bytes();
        entries.push(("content-length".to_string(), length));
    }
    let headers = Fields::from_list(&entries).map_err(|_| invalid("headers"))?;
    let outgoing = OutgoingRequest::new(headers);
    outgoing
        .set_method(&method(&req.method))
        .map_err(|()| invalid("method"))?;
    let scheme = if target.tls {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(target.authority))
        .map_err(|()| invalid("authority"))?;
    outgoing
        .set_path_with_query(Some(target.path_with_query))
        .map_err(|()| invalid("path"))?;
    let body = if req.body.is_empty() {
        None
    } else {
        Some(
            outgoing
                .body()
                .map_err(|()| Error::Other("request body unavailable".into()))?,
        )
    };
    let options = req.timeout.map(|t| {
        let options = RequestOptions::new();
        // An `err` means the host does not support that timeout; the deadline still holds.
        let _ = options.set_connect_timeout(Some(nanos(t)));
        let _ = options.set_first_byte_timeout(Some(nanos(t)));
        let _ = options.set_between_bytes_timeout(Some(nanos(t)));
        options
    });
    let future = outgoing_handler::handle(outgoing, options).map_err(from_code)?;
    if let Some(body) = body {
        write_body(body, &req.body);
    }
    Ok(future)
}

/// Writes and finishes a request body. A failure here shows in the call's response (the host
/// answers the call with what went wrong), so it is not reported twice.
fn write_body(body: OutgoingBody, bytes: &[u8]) {
    if let Ok(stream) = body.write() {
        for chunk in bytes.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Waits until some call can move, and moves every one that can.
fn wait(calls: &mut [Call]) {
    // For each pollable: its call, and whether it is that call's deadline.
    let mut owners = Vec::new();
    let mut pollables: Vec<Pollable> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let pollable = match &call.state {
            State::Head(future) => future.subscribe(),
            State::Body(reading) => reading.stream.subscribe(),
            State::Done(_) => continue,
        };
        pollables.push(pollable);
        owners.push((i, false));
        if let Some(at) = call.deadline {
            pollables.push(monotonic_clock::subscribe_instant(at));
            owners.push((i, true));
        }
    }
    let ready = {
        let list: Vec<&Pollable> = pollables.iter().collect();
        poll(&list)
    };
    drop(pollables);
    // A call's progress comes before its deadline in `owners`, so a call that completed as
    // its deadline passed keeps its answer.
    for index in ready {
        let Some(&(i, is_deadline)) = owners.get(index as usize) else {
            continue;
        };
        let call = &mut calls[i];
        if matches!(call.state, State::Done(_)) {
            continue;
        }
        let state = std::mem::replace(&mut call.state, State::Done(Err(Error::Timeout)));
        if !is_deadline {
            call.state = step(state);
        }
        // Else the call stays timed out, and what it held is dropped with `state`.
    }
}

/// Moves a call on by what is ready for it.
fn step(state: State) -> State {
    match state {
        State::Head(future) => match future.get() {
            None => State::Head(future),
            Some(Err(())) => State::Done(Err(Error::Other("response taken twice".into()))),
            Some(Ok(Err(code))) => State::Done(Err(from_code(code))),
            Some(Ok(Ok(response))) => {
                drop(future);
                match start_reading(response) {
                    Ok(reading) => drain(reading),
                    Err(e) => State::Done(Err(e)),
                }
            }
        },
        State::Body(reading) => drain(reading),
        done @ State::Done(_) => done,
    }
}

fn start_reading(response: IncomingResponse) -> Result<Reading, Error> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let unavailable = || Error::Other("response body unavailable".into());
    let body = response.consume().map_err(|()| unavailable())?;
    let stream = body.stream().map_err(|()| unavailable())?;
    Ok(Reading {
        stream,
        body,
        response,
        status,
        headers,
        bytes: Vec::new(),
    })
}

/// Reads what the body has, without waiting: done at its end or on an error, else still
/// reading.
fn drain(mut reading: Reading) -> State {
    loop {
        match reading.stream.read(READ_CHUNK) {
            Ok(chunk) if chunk.is_empty() => return State::Body(reading),
            Ok(chunk) => reading.bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => {
                let Reading {
                    stream,
                    body,
                    response,
                    status,
                    headers,
                    bytes,
                } = reading;
                drop(stream);
                drop(body);
                drop(response);
                return State::Done(Ok(Response {
                    status,
                    headers,
                    body: bytes,
                }));
            }
            Err(StreamError::LastOperationFailed(e)) => {
                let err = match http_error_code(&e) {
                    Some(code) => from_code(code),
                    None => Error::Other(format!("reading the body: {}", e.to_debug_string())),
                };
                return State::Done(Err(err));
            }
        }
    }
}

fn method(method: &str) -> Method {
    match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The SDK's reading of a `wasi:http` error code.
fn from_code(code: ErrorCode) -> Error {
    use ErrorCode as C;
    match code {
        C::HttpRequestDenied => Error::Denied,
        C::ConnectionLimitReached => Error::Limited,
        C::DnsTimeout
        | C::ConnectionTimeout
        | C::ConnectionReadTimeout
        | C::ConnectionWriteTimeout
        | C::HttpResponseTimeout => Error::Timeout,
        C::HttpResponseBodySize(_) => Error::BodyTooLarge,
        C::HttpRequestMethodInvalid | C::HttpRequestUriInvalid | C::HttpRequestUriTooLong => {
            Error::InvalidRequest(code_name(&code))
        }
        other => Error::Other(code_name(&other)),
    }
}

/// An error code's name as the WIT spells it, with its detail when it carries text.
fn code_name(code: &ErrorCode) -> String {
    use ErrorCode as C;
    let name = match code {
        C::DnsTimeout => "DNS-timeout",
        C::DnsError(e) => {
            return match (&e.rcode, e.info_code) {
                (Some(rcode), _) => format!("DNS-error ({rcode})"),
                (None, Some(info)) => format!("DNS-error (info code {info})"),
                (None, None) => "DNS-error".to_string(),
            };
        }
        C::DestinationNotFound => "destination-not-found",
        C::DestinationUnavailable => "destination-unavailable",
        C::DestinationIpProhibited => "destination-IP-prohibited",
        C::DestinationIpUnroutable => "destination-IP-unroutable",
        C::ConnectionRefused => "connection-refused",
        C::ConnectionTerminated => "connection-terminated",
        C::ConnectionTimeout => "connection-timeout",
        C::ConnectionReadTimeout => "connection-read-timeout",
        C::ConnectionWriteTimeout => "connection-write-timeout",
        C::ConnectionLimitReached => "connection-limit-reached",
        C::TlsProtocolError => "TLS-protocol-error",
        C::TlsCertificateError => "TLS-certificate-error",
        C::TlsAlertReceived(_) => "TLS-alert-received",
        C::HttpRequestDenied => "HTTP-request-denied",
        C::HttpRequestLengthRequired => "HTTP-request-length-required",
        C::HttpRequestBodySize(_) => "HTTP-request-body-size",
        C::HttpRequestMethodInvalid => "HTTP-request-method-invalid",
        C::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
        C::HttpRequestUriTooLong => "HTTP-request-URI-too-long",
        C::HttpRequestHeaderSectionSize(_) => "HTTP-request-header-section-size",
        C::HttpRequestHeaderSize(_) => "HTTP-request-header-size",
        C::HttpRequestTrailerSectionSize(_) => "HTTP-request-trailer-section-size",
        C::HttpRequestTrailerSize(_) => "HTTP-request-trailer-size",
        C::HttpResponseIncomplete => "HTTP-response-incomplete",
        C::HttpResponseHeaderSectionSize(_) => "HTTP-response-header-section-size",
        C::HttpResponseHeaderSize(_) => "HTTP-response-header-size",
        C::HttpResponseBodySize(_) => "HTTP-response-body-size",
        C::HttpResponseTrailerSectionSize(_) => "HTTP-response-trailer-section-size",
        C::HttpResponseTrailerSize(_) => "HTTP-response-trailer-size",
        C::HttpResponseTransferCoding(_) => "HTTP-response-transfer-coding",
        C::HttpResponseContentCoding(_) => "HTTP-response-content-coding",
        C::HttpResponseTimeout => "HTTP-response-timeout",
        C::HttpUpgradeFailed => "HTTP-upgrade-failed",
        C::HttpProtocolError => "HTTP-protocol-error",
        C::LoopDetected => "loop-detected",
        C::ConfigurationError => "configuration-error",
        C::InternalError(Some(detail)) => return format!("internal-error: {detail}"),
        C::InternalError(None) => "internal-error",
    };
    name.to_string()
}
