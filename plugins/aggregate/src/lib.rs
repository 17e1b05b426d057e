//! `aggregate`: answers a request itself, from several services at once. Each part its config
//! names is one `GET`; all of them are sent together ([`outbound::send_all`]), and their JSON
//! bodies are merged into one object, each under its part's name:
//!
//! ```toml
//! [routes.pipeline.config.parts]
//! user = { url = "http://users/users/${var.consumer}", required = true }
//! orders = { url = "http://orders/orders?user=${var.consumer}", timeout_ms = 500 }
//! ```
//!
//! answers `{"user": {...}, "orders": [...], "errors": []}`. A part that fails becomes `null`
//! and is listed in `errors`; a required part that fails makes the answer a 502. URLs are
//! templates (the `wasmgate-rules` grammar the headers plugin uses), every value percent-encoded.
//! See README.md for the config reference.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wasmgate_sdk::outbound::{self, Response};
use wasmgate_sdk::rules::header_rules::{Part as Piece, Source, Template, Variable};
use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Registration, Reply, Request, log};

/// What a value is encoded as in a URL: everything but RFC 3986's unreserved characters, so a
/// value is one path segment or one query value whatever it holds (`/`, `?`, `&`, `#`, `%`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The key of the failed parts' list in the answer, so no part may take it.
const ERRORS: &str = "errors";

/// The longest `timeout_ms` a part may ask for (the gateway's `outbound_timeout_ms` still
/// bounds every call).
const MAX_TIMEOUT_MS: u64 = 300_000;

/// The plugin's config; see the README.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Part name → where to fetch it.
    pub parts: BTreeMap<String, PartConfig>,
}

/// One part: `{ url = "...", required = true, timeout_ms = 500 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartConfig {
    /// A URL template: `http://` or `https://`, a host written out, then a path and query
    /// that may hold `${...}`.
    pub url: String,
    /// Whether the answer is a 502 when this part fails.
    #[serde(default)]
    pub required: bool,
    /// The part's own timeout (the gateway's `outbound_timeout_ms` applies when shorter).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A part, checked.
#[derive(Debug)]
struct Part {
    name: String,
    url: Template,
    required: bool,
    timeout: Option<Duration>,
}

/// Why a part is `null`: what the client is told, and what the log is.
#[derive(Debug)]
struct Failure {
    reason: String,
    detail: String,
}

impl Failure {
    fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// The aggregator, configured for one route.
#[derive(Debug)]
pub struct Aggregate {
    /// In name order, as the answer lists them.
    parts: Vec<Part>,
}

impl Plugin for Aggregate {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.parts.is_empty() {
            return Err(ConfigError::at("parts", "name at least one part"));
        }
        let mut parts = Vec::with_capacity(config.parts.len());
        for (name, part) in config.parts {
            let at = |key: &str| format!("parts.{name}{key}");
            if name.is_empty() {
                return Err(ConfigError::at("parts", "a part's name must not be empty"));
            }
            if name == ERRORS {
                return Err(ConfigError::at(
                    at(""),
                    "`errors` is where the answer lists failed parts: name the part otherwise",
                ));
            }
            let url = url_template(&part.url).map_err(|why| ConfigError::at(at(".url"), why))?;
            let timeout = match part.timeout_ms {
                Some(0) => return Err(ConfigError::at(at(".timeout_ms"), "must be at least 1")),
                Some(ms) if ms > MAX_TIMEOUT_MS => {
                    return Err(ConfigError::at(
                        at(".timeout_ms"),
                        format!("at most {MAX_TIMEOUT_MS}"),
                    ));
                }
                ms => ms.map(Duration::from_millis),
            };
            parts.push(Part {
                name,
                url,
                required: part.required,
                timeout,
            });
        }
        Ok(Self { parts })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let mut outcomes: Vec<Option<Result<Value, Failure>>> =
            self.parts.iter().map(|_| None).collect();
        let mut calls = Vec::new();
        let mut sent = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            match render(&part.url, req) {
                Ok(url) => {
                    let mut call = outbound::Request::get(url).header("accept", "application/json");
                    if let Some(timeout) = part.timeout {
                        call = call.timeout(timeout);
                    }
                    calls.push(call);
                    sent.push(i);
                }
                Err(missing) => outcomes[i] = Some(Err(Failure::new(missing.clone(), missing))),
            }
        }
        let urls: Vec<String> = calls.iter().map(|c| c.url.clone()).collect();
        for ((i, answer), url) in sent.into_iter().zip(outbound::send_all(calls)).zip(urls) {
            let outcome = read(answer);
            if let Err(failure) = &outcome {
                log::warn(&format!(
                    "aggregate: part {} ({url}) {}",
                    self.parts[i].name, failure.detail
                ));
            }
            outcomes[i] = Some(outcome);
        }

        let mut merged = Map::new();
        let mut errors = Vec::new();
        let mut required_failed = None;
        for (part, outcome) in self.parts.iter().zip(outcomes) {
            let outcome = outcome.unwrap_or_else(|| Err(Failure::new("failed", "not sent")));
            match outcome {
                Ok(value) => {
                    merged.insert(part.name.clone(), value);
                }
                Err(failure) => {
                    merged.insert(part.name.clone(), Value::Null);
                    errors.push(json!({ "part": part.name, "error": failure.reason }));
                    if part.required && required_failed.is_none() {
                        required_failed = Some((&part.name, failure.reason));
                    }
                }
            }
        }
        if let Some((name, reason)) = required_failed {
            let body = json!({
                "error": "bad_gateway",
                "message": format!("required part {name} failed: {reason}"),
                "part": name,
                "errors": errors,
            });
            return Ok(Reply::json(502, &body)?.into());
        }
        merged.insert(ERRORS.to_string(), Value::Array(errors));
        Ok(Reply::json(200, &merged)?.into())
    }
}

/// A part's answer as its value, or why it has none.
fn read(answer: Result<Response, outbound::Error>) -> Result<Value, Failure> {
    let resp = answer.map_err(|e| {
        let reason = match e {
            outbound::Error::Timeout => "timeout",
            outbound::Error::Denied => "denied",
            outbound::Error::Limited => "limited",
            outbound::Error::BodyTooLarge => "body too large",
            _ => "failed",
        };
        Failure::new(reason, e.to_string())
    })?;
    if !resp.is_success() {
        let reason = format!("status {}", resp.status);
        return Err(Failure::new(reason.clone(), format!("answered {reason}")));
    }
    resp.json()
        .map_err(|e| Failure::new("not JSON", format!("answered a body that is not JSON: {e}")))
}

/// Checks a part's URL template: an absolute `http(s)` URL whose destination is written out,
/// so that no request can send a part anywhere else.
fn url_template(url: &str) -> Result<Template, String> {
    let template = Template::parse(url).map_err(|e| e.to_string())?;
    let head = match template.parts().first() {
        Some(Piece::Text(text)) => text.as_str(),
        _ => "",
    };
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| {
            head.get(..scheme.len())
                .filter(|h| h.eq_ignore_ascii_case(scheme))
                .map(|_| &head[scheme.len()..])
        })
        .ok_or("must start with http:// or https://")?;
    let authority = match rest.find(['/', '?']) {
        Some(end) if rest[end..].starts_with('?') => {
            return Err("write a path before the query (http://host/?...)".into());
        }
        Some(end) => &rest[..end],
        None if template.parts().len() == 1 => rest,
        None => {
            return Err("the host must be written out: end it with `/` before any `${...}`".into());
        }
    };
    if authority.is_empty() {
        return Err("no host".into());
    }
    if authority.contains('@') {
        return Err("no user name or password in the URL".into());
    }
    for piece in template.parts() {
        if let Piece::Text(text) = piece
            && !text.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
        {
            return Err(
                "the URL's text must be visible ASCII, percent-encoded, with no fragment".into(),
            );
        }
    }
    Ok(template)
}

/// A part's URL for this request, or why it has none (the first value missing).
fn render(url: &Template, req: &Request<'_>) -> Result<String, String> {
    let values = Values {
        req,
        missing: RefCell::new(None),
    };
    let mut out = String::new();
    url.render(&values, &mut out);
    match values.missing.into_inner() {
        Some(missing) => Err(missing),
        None => Ok(out),
    }
}

/// Template values read from the request, percent-encoded. A var or header that is unset (or
/// empty) is noted as missing: a URL built without it would ask for something else.
struct Values<'r, 'a> {
    req: &'r Request<'a>,
    missing: RefCell<Option<String>>,
}

impl Source for Values<'_, '_> {
    fn push(&self, variable: &Variable, out: &mut String) {
        let value = match variable {
            Variable::ClientIp => Ok(self.req.client_addr()),
            Variable::RequestId => Ok(self.req.id()),
            Variable::Route => Ok(self.req.route()),
            Variable::Method => Ok(self.req.method()),
            Variable::Path => Ok(self.req.path()),
            Variable::Header(name) => self
                .req
                .header(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("header {name} is not set")),
            Variable::Var(name) => self
                .req
                .var(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("var {name} is not set")),
        };
        match value {
            Ok(value) => out.extend(utf8_percent_encode(&value, COMPONENT)),
            Err(missing) => {
                let mut first = self.missing.borrow_mut();
                if first.is_none() {
                    *first = Some(missing);
                }
            }
        }
    }
}

wasmgate_sdk::export!(Aggregate);

#[cfg(test)]
mod tests;
