//! `headers`: sets, adds and removes request and response headers, with values templated from
//! the request, and optionally gives every request an `X-Request-ID`.
//!
//! Templates are parsed once, at init; a request only fills them in. See README.md for the
//! config reference.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::{
    ConfigError, Decision, Error, HostError, Plugin, Registration, Request, Response, log,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    /// Replace a header with one value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Add a value, keeping those already there.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove headers by name.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub request: Ops,
    #[serde(default)]
    pub response: Ops,
    /// Give each request an id: keep a valid one from the client, or generate a UUID.
    #[serde(default)]
    pub request_id: bool,
    /// The header that carries the id.
    #[serde(default = "default_id_header")]
    pub request_id_header: String,
}

fn default_id_header() -> String {
    "x-request-id".into()
}

/// One piece of a templated value.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    ClientIp,
    RequestId,
    Route,
    Method,
    Path,
    Header(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Part>);

impl Template {
    fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or("unclosed `${`")?;
            let name = &after[..end];
            parts.push(match name {
                "client_ip" => Part::ClientIp,
                "request_id" => Part::RequestId,
                "route" => Part::Route,
                "method" => Part::Method,
                "path" => Part::Path,
                _ => match name.split_once('.') {
                    Some(("header", h)) if valid_name(h) => Part::Header(h.to_ascii_lowercase()),
                    Some(("var", v)) if !v.is_empty() => Part::Var(v.to_owned()),
                    _ => return Err(format!("unknown variable `${{{name}}}`")),
                },
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        for p in &parts {
            if let Part::Text(t) = p
                && !valid_value(t)
            {
                return Err("value contains CR, LF, NUL or another control byte".into());
            }
        }
        Ok(Template(parts))
    }

    /// Whether every part is fixed for the life of a request, whatever later plugins do (the
    /// method, path, headers and vars are not: a later plugin may change them), so that the
    /// value can be rendered in the request phase even for the response.
    fn fixed_per_request(&self) -> bool {
        self.0.iter().all(|p| {
            matches!(
                p,
                Part::Text(_) | Part::ClientIp | Part::RequestId | Part::Route
            )
        })
    }

    fn render(&self, req: &Request<'_>, cx: &mut RenderCx) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::ClientIp => {
                    out.push_str(cx.client_ip.get_or_insert_with(|| req.client_addr()))
                }
                Part::RequestId => out.push_str(cx.id.get_or_insert_with(|| req.id())),
                Part::Route => out.push_str(cx.route.get_or_insert_with(|| req.route())),
                Part::Method => out.push_str(&req.method()),
                Part::Path => out.push_str(&req.path()),
                Part::Header(h) => out.push_str(&req.header(h).unwrap_or_default()),
                Part::Var(v) => out.push_str(&req.var(v).unwrap_or_default()),
            }
        }
        out
    }
}

/// What one call has already asked the host, so a value used by several templates costs one
/// host call. `id` is the request id header's value when the plugin manages one.
#[derive(Default)]
struct RenderCx {
    id: Option<String>,
    client_ip: Option<String>,
    route: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A client-sent request id is kept when it is short and plain.
fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[derive(Debug)]
struct CompiledOps {
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
    remove: Vec<String>,
}

impl CompiledOps {
    fn compile(ops: Ops, at: &str) -> Result<Self, ConfigError> {
        let compile_map = |map: BTreeMap<String, String>, kind: &str| {
            map.into_iter()
                .map(|(name, value)| {
                    let key = format!("{at}.{kind}.{name}");
                    if !valid_name(&name) {
                        return Err(ConfigError::at(key, "not a valid header name"));
                    }
                    let t = Template::parse(&value).map_err(|e| ConfigError::at(key, e))?;
                    Ok((name.to_ascii_lowercase(), t))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let set = compile_map(ops.set, "set")?;
        let add = compile_map(ops.add, "add")?;
        for (i, name) in ops.remove.iter().enumerate() {
            if !valid_name(name) {
                return Err(ConfigError::at(
                    format!("{at}.remove[{i}]"),
                    "not a valid header name",
                ));
            }
        }
        Ok(Self {
            set,
            add,
            remove: ops
                .remove
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        })
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    fn fixed_per_request(&self) -> bool {
        self.set
            .iter()
            .chain(&self.add)
            .all(|(_, t)| t.fixed_per_request())
    }

    /// Renders the set and add templates: (name, value, append).
    fn render<'a>(&'a self, req: &Request<'_>, cx: &mut RenderCx) -> Vec<(&'a str, String, bool)> {
        let set = self.set.iter().map(|(n, t)| (n, t, false));
        let add = self.add.iter().map(|(n, t)| (n, t, true));
        set.chain(add)
            .map(|(n, t, append)| (n.as_str(), t.render(req, cx), append))
            .collect()
    }
}

/// Where header changes go: the request, the response, or the response changes queued in the
/// request phase.
trait Target {
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove(&mut self, name: &str) -> Result<(), HostError>;
}

struct ToRequest<'r, 'a>(&'r mut Request<'a>);

impl Target for ToRequest<'_, '_> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.set_header(name, value)
    }
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.append_header(name, value)
    }
    fn remove(&mut self, name: &str) -> Result<(), HostError> {
        self.0.remove_header(name);
        Ok(())
    }
}

/// The response, through changes the host applies where the response phase would run.
struct ToQueuedResponse<'r, 'a>(&'r mut Request<'a>);

impl Target for ToQueuedResponse<'_, '_> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.set_response_header(name, value)
    }
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.append_response_header(name, value)
    }
    fn remove(&mut self, name: &str) -> Result<(), HostError> {
        self.0.remove_response_header(name)
    }
}

impl Target for Response<'_> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.set_header(name, value)
    }
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.append_header(name, value)
    }
    fn remove(&mut self, name: &str) -> Result<(), HostError> {
        self.remove_header(name);
        Ok(())
    }
}

/// Writes the rendered values, skipping (with a log line) each one that is not valid header
/// text or that the host refuses.
fn write_all(rendered: Vec<(&str, String, bool)>, target: &mut dyn Target) {
    for (name, value, append) in rendered {
        if !valid_value(&value) {
            log::warn(&format!(
                "header `{name}` not set: its value would contain invalid bytes"
            ));
            continue;
        }
        let written = if append {
            target.append(name, &value)
        } else {
            target.set(name, &value)
        };
        if let Err(e) = written {
            log::warn(&format!("header `{name}` not set: {e}"));
        }
    }
}

impl Headers {
    /// The response changes, in order: the request id, removals, then the set and add values
    /// (rendered beforehand: rendering reads the request, which a queued target borrows).
    fn respond_to(
        &self,
        id: Option<&str>,
        rendered: Vec<(&str, String, bool)>,
        target: &mut dyn Target,
    ) -> Result<(), HostError> {
        if let (Some(header), Some(id)) = (&self.request_id, id) {
            target.set(header, id)?;
        }
        for name in &self.response.remove {
            target.remove(name)?;
        }
        write_all(rendered, target);
        Ok(())
    }
}

pub struct Headers {
    request: CompiledOps,
    response: CompiledOps,
    request_id: Option<String>,
    /// The response changes only use values fixed for the request's life: they are queued in
    /// the request phase, and the plugin needs no response phase (one call per request, not
    /// two).
    response_from_request: bool,
}

const ID_VAR: &str = "headers.request_id";

impl Plugin for Headers {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if !valid_name(&config.request_id_header) {
            return Err(ConfigError::at(
                "request_id_header",
                "not a valid header name",
            ));
        }
        let response = CompiledOps::compile(config.response, "response")?;
        Ok(Self {
            request: CompiledOps::compile(config.request, "request")?,
            response_from_request: response.fixed_per_request(),
            response,
            request_id: config
                .request_id
                .then(|| config.request_id_header.to_ascii_lowercase()),
        })
    }

    fn registration(&self) -> Registration {
        let response_work = !self.response.is_empty() || self.request_id.is_some();
        Registration {
            on_request: !self.request.is_empty()
                || self.request_id.is_some()
                || (response_work && self.response_from_request),
            on_response: response_work && !self.response_from_request,
            request_body: false,
            response_body: false,
        }
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let mut cx = RenderCx::default();
        if let Some(header) = &self.request_id {
            let id = match req.header(header) {
                Some(id) if valid_request_id(&id) => id,
                _ => uuid::Uuid::new_v4().to_string(),
            };
            req.set_header(header, &id)?;
            if !self.response_from_request {
                req.set_var(ID_VAR, &id);
            }
            cx.id = Some(id);
        }
        for name in &self.request.remove {
            req.remove_header(name);
        }
        let rendered = self.request.render(req, &mut cx);
        write_all(rendered, &mut ToRequest(req));
        if self.response_from_request {
            let rendered = self.response.render(req, &mut cx);
            self.respond_to(cx.id.as_deref(), rendered, &mut ToQueuedResponse(req))?;
        }
        Ok(Decision::Continue)
    }

    fn on_response(
        &mut self,
        req: &mut Request<'_>,
        resp: &mut Response<'_>,
    ) -> Result<Decision, Error> {
        let mut cx = RenderCx {
            id: req.var(ID_VAR),
            ..RenderCx::default()
        };
        let rendered = self.response.render(req, &mut cx);
        self.respond_to(cx.id.as_deref(), rendered, resp)?;
        Ok(Decision::Continue)
    }
}

wasmgate_sdk::export!(Headers);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmgate_sdk::testing::{self, MockRequest, MockResponse};

    fn plugin(config: serde_json::Value) -> Headers {
        testing::init::<Headers>(config).expect("valid config")
    }

    #[test]
    fn templates_are_parsed_once_and_checked() {
        assert_eq!(
            Template::parse("a-${method}-${header.X-Y}").unwrap().0,
            vec![
                Part::Text("a-".into()),
                Part::Method,
                Part::Text("-".into()),
                Part::Header("x-y".into())
            ]
        );
        assert!(Template::parse("${nope}").is_err());
        assert!(Template::parse("${method").is_err());
        let err = testing::init::<Headers>(json!({"request": {"set": {"x-a": "${bogus}"}}}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("request.set.x-a"));
        let err = testing::init::<Headers>(json!({"response": {"set": {"bad name": "v"}}}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("response.set.bad name"));
        let err = testing::init::<Headers>(json!({"request": {"sett": {}}}))
            .err()
            .unwrap();
        assert!(err.message.contains("sett"), "{err:?}");
    }

    #[test]
    fn set_add_remove_with_templates() {
        let mut p = plugin(json!({
            "request": {
                "set": {"x-route": "${route}:${method}:${path}", "x-from": "${client_ip}"},
                "add": {"x-multi": "two"},
                "remove": ["X-Secret"]
            },
            "response": {"set": {"x-user-agent": "${header.user-agent}", "x-who": "${var.consumer}"}}
        }));
        let mut req = MockRequest::new("GET", "/a/b")
            .with_route("r1")
            .with_client_addr("10.1.2.3")
            .with_header("x-multi", "one")
            .with_header("x-secret", "s")
            .with_header("user-agent", "curl/8")
            .with_var("consumer", "alice");
        assert!(matches!(
            testing::on_request(&mut p, &mut req).unwrap(),
            Decision::Continue
        ));
        assert_eq!(req.header("x-route"), Some("r1:GET:/a/b"));
        assert_eq!(req.header("x-from"), Some("10.1.2.3"));
        assert_eq!(req.header_values("x-multi"), vec!["one", "two"]);
        assert_eq!(req.header("x-secret"), None);
        let mut resp = MockResponse::new(200);
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-user-agent"), Some("curl/8"));
        assert_eq!(resp.header("x-who"), Some("alice"));
    }

    #[test]
    fn header_injection_through_templates_is_refused_per_request() {
        let mut p = plugin(json!({"request": {"set": {"x-echo": "v=${var.evil}"}}}));
        let mut req = MockRequest::new("GET", "/").with_var("evil", "a\r\nx-injected: 1");
        assert!(matches!(
            testing::on_request(&mut p, &mut req).unwrap(),
            Decision::Continue
        ));
        assert_eq!(req.header("x-echo"), None);
        assert_eq!(req.header("x-injected"), None);
        assert!(testing::logs().iter().any(|(_, l)| l.contains("x-echo")));
    }

    #[test]
    fn request_ids_are_generated_kept_and_echoed() {
        let mut p = plugin(json!({"request_id": true}));
        let mut req = MockRequest::new("GET", "/");
        testing::on_request(&mut p, &mut req).unwrap();
        let id = req.header("x-request-id").expect("generated").to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        let mut resp = MockResponse::new(200);
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-request-id"), Some(id.as_str()));

        let mut req = MockRequest::new("GET", "/").with_header("x-request-id", "client-id-1");
        testing::on_request(&mut p, &mut req).unwrap();
        assert_eq!(req.header("x-request-id"), Some("client-id-1"));

        let mut req =
            MockRequest::new("GET", "/").with_header("x-request-id", "bad id with spaces");
        testing::on_request(&mut p, &mut req).unwrap();
        assert_ne!(req.header("x-request-id"), Some("bad id with spaces"));

        let mut p = plugin(json!({"request_id": true, "request_id_header": "X-Trace"}));
        let mut req = MockRequest::new("GET", "/");
        testing::on_request(&mut p, &mut req).unwrap();
        assert!(req.header("x-trace").is_some());
    }

    #[test]
    fn registration_follows_config() {
        let r = plugin(json!({"request": {"set": {"a": "b"}}})).registration();
        assert!(r.on_request && !r.on_response && !r.request_body);
        // Response changes from values fixed for the request are queued in the request phase.
        let r = plugin(json!({"request_id": true})).registration();
        assert!(r.on_request && !r.on_response);
        let r = plugin(
            json!({"response": {"set": {"x-s": "${route} ${client_ip}"}, "remove": ["server"]}}),
        )
        .registration();
        assert!(r.on_request && !r.on_response);
        // Headers, vars, the method and the path may change after this plugin's request phase.
        for template in ["${var.x}", "${header.x}", "${method}", "${path}"] {
            let r = plugin(json!({"response": {"add": {"x-s": template}}})).registration();
            assert!(!r.on_request && r.on_response, "{template}");
        }
    }

    #[test]
    fn fixed_response_changes_are_queued_in_the_request_phase() {
        let mut p = plugin(json!({
            "request_id": true,
            "response": {"set": {"x-served-by": "gw (${route}, ${client_ip})"}, "add": {"x-multi": "2"}, "remove": ["server"]}
        }));
        let mut req = MockRequest::new("GET", "/")
            .with_route("r1")
            .with_client_addr("10.0.0.9")
            .with_header("x-request-id", "abc-1");
        testing::on_request(&mut p, &mut req).unwrap();
        let mut resp = MockResponse::new(200)
            .with_header("server", "origin")
            .with_header("x-multi", "1")
            .with_header("x-served-by", "origin");
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-request-id"), Some("abc-1"));
        assert_eq!(resp.header_values("x-served-by"), vec!["gw (r1, 10.0.0.9)"]);
        assert_eq!(resp.header_values("x-multi"), vec!["1", "2"]);
        assert_eq!(resp.header("server"), None);
    }
}
