//! Header rules a pipeline entry's plugin declared in `init` (`wasmgate:plugin/header-rules`),
//! made by the host on every request at the entry's place in the pipeline, with no call into
//! the plugin. Fixed values are checked and built once, at load; a template is rendered into
//! one buffer per request and checked before it is written.

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use wasmgate_rules::header_rules::{Part, Source, Template, Variable, is_request_id};

use super::Exchange;

/// A declared header value.
#[derive(Debug, Clone)]
pub enum Value {
    /// Known at load: the template had no variable, or only ones fixed when it was declared
    /// (the route).
    Fixed(HeaderValue),
    /// `${client_ip}` alone: the client's address, already a header value.
    ClientIp,
    Template(Template),
}

impl Value {
    /// Builds a declared value for a route: `${route}` is filled in now, and what is left
    /// decides how the value is made per request. `None` when a fixed value is not a valid
    /// header value.
    pub fn new(template: Template, route: &str) -> Option<Self> {
        let template = template.fill(&Variable::Route, route);
        if let Some(text) = template.as_text() {
            return HeaderValue::from_str(text).ok().map(Self::Fixed);
        }
        match template.parts() {
            [Part::Variable(Variable::ClientIp)] => Some(Self::ClientIp),
            _ => Some(Self::Template(template)),
        }
    }
}

/// One declared change.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Replace the header's values with this one, or with `append`, add it.
    Write {
        name: HeaderName,
        value: Value,
        append: bool,
    },
    Remove(HeaderName),
    /// Keep the client's id in this header when it is plain, else write a new UUID there.
    RequestId(HeaderName),
}

/// What one pipeline entry declared, per phase, in order.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub request: Vec<Rule>,
    pub response: Vec<Rule>,
}

impl HeaderRules {
    pub fn len(&self) -> usize {
        self.request.len() + self.response.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a request rule sets or removes `host` (the `Host` the upstream is sent).
    pub fn writes_host(&self) -> bool {
        self.request.iter().any(|r| match r {
            Rule::Write { name, .. } | Rule::Remove(name) => name == header::HOST,
            Rule::RequestId(_) => false,
        })
    }

    /// Makes the request rules' changes to the request.
    pub fn apply_to_request(&self, ex: &mut Exchange, buf: &mut String) {
        apply(&self.request, true, ex, buf, |ex| {
            Some(&mut ex.request.headers)
        });
    }

    /// Makes the response rules' changes to the response (which the response phase has).
    pub fn apply_to_response(&self, ex: &mut Exchange, buf: &mut String) {
        apply(&self.response, false, ex, buf, |ex| {
            ex.response.as_mut().map(|r| &mut r.parts.headers)
        });
    }
}

/// Makes `rules`' changes to the headers `target` picks out of the exchange (the request's when
/// `request`). A value is rendered before the headers are borrowed: templates read the
/// request.
fn apply(
    rules: &[Rule],
    request: bool,
    ex: &mut Exchange,
    buf: &mut String,
    target: fn(&mut Exchange) -> Option<&mut HeaderMap>,
) {
    for rule in rules {
        match rule {
            Rule::Write {
                name,
                value,
                append,
            } => {
                let value = render(value, ex, buf);
                if request && *name == header::HOST {
                    // The `Host` the upstream is sent: a value that is not a host is left out.
                    match value {
                        Some(v) if is_host(&v) => {
                            ex.host_written();
                            ex.request.headers.insert(header::HOST, v);
                        }
                        _ => {}
                    }
                    continue;
                }
                if let (Some(value), Some(headers)) = (value, target(ex)) {
                    write(headers, name, value, *append);
                }
            }
            Rule::Remove(name) => {
                if request && *name == header::HOST {
                    ex.host_written();
                }
                if let Some(headers) = target(ex) {
                    headers.remove(name);
                }
            }
            // Declared for the request phase only: the id goes on the request.
            Rule::RequestId(name) => {
                let id = match ex.request.headers.get(name) {
                    Some(id) if id.to_str().is_ok_and(is_request_id) => id.clone(),
                    _ => new_request_id(),
                };
                ex.request.headers.insert(name.clone(), id.clone());
                ex.request_id = Some(id);
            }
        }
    }
}

fn write(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue, append: bool) {
    if append {
        headers.append(name.clone(), value);
    } else {
        headers.insert(name.clone(), value);
    }
}

/// The value a rule writes now; `None` when a template rendered bytes a header cannot hold.
fn render(value: &Value, ex: &Exchange, buf: &mut String) -> Option<HeaderValue> {
    match value {
        Value::Fixed(v) => Some(v.clone()),
        Value::ClientIp => Some(ex.client.ip().clone()),
        Value::Template(t) => {
            buf.clear();
            t.render(&ExchangeSource(ex), buf);
            HeaderValue::from_str(buf).ok()
        }
    }
}

/// Whether a value may be the `Host` the upstream is sent: a host name or address, with an
/// optional port, as a client's own `Host` must be.
pub fn is_host(value: &HeaderValue) -> bool {
    matches!(wasmgate_uri::parse_host(value.as_bytes()), Ok(Some(_)))
}

/// A new request id: a random (version 4) UUID.
fn new_request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// A template's variables, read from the exchange as it is now.
struct ExchangeSource<'a>(&'a Exchange);

impl Source for ExchangeSource<'_> {
    fn push(&self, variable: &Variable, out: &mut String) {
        let ex = self.0;
        match variable {
            Variable::ClientIp => out.push_str(ex.client.ip_str()),
            Variable::RequestId => match &ex.request_id {
                // Always text: a client's id is kept only when plain.
                Some(id) => out.push_str(id.to_str().unwrap_or_default()),
                None => {
                    let _ = write!(out, "{}", ex.id);
                }
            },
            Variable::Route => out.push_str(&ex.route),
            Variable::Method => out.push_str(ex.request.method.as_str()),
            Variable::Path => out.push_str(ex.request.uri.path()),
            Variable::Header(h) => {
                if let Some(v) = ex.request.headers.get(h.as_str()) {
                    out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            Variable::Var(name) => out.push_str(ex.var(name).unwrap_or_default()),
        }
    }
}
