//! `cors`: Cross-Origin Resource Sharing at the gateway. Preflights are answered here and never
//! reach the upstream; other requests from an allowed origin get the CORS headers on their
//! response.
//!
//! The config is parsed once, at init: origins into a set and patterns, lists into the header
//! values they are sent as. Per request the plugin reads `Origin` and matches it. It has no
//! response phase: the headers of an allowed request are queued from the request phase
//! ([`Request::set_response_header`]), and the gateway itself, from [header
//! rules](wasmgate_sdk::header_rules) declared at init, takes the upstream's own CORS headers
//! off every response and adds `Vary: Origin`. See README.md for the config reference.

mod origin;

#[cfg(test)]
mod tests;

use serde::Deserialize;
use wasmgate_sdk::header_rules::{self, Phase};
use wasmgate_sdk::rules::http::{is_header_name, is_token};
use wasmgate_sdk::{ConfigError, Decision, Error, HostError, Plugin, Registration, Reply, Request};

pub use origin::MAX_ORIGINS;
use origin::{Allow, Origins};

/// Most entries `methods`, `allowed_headers` and `exposed_headers` each take.
pub const MAX_NAMES: usize = 64;
/// The largest `max_age_seconds`: one day (browsers cap it lower: Chromium at two hours).
pub const MAX_AGE_SECONDS: u32 = 86_400;

const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const ALLOW_METHODS: &str = "access-control-allow-methods";
const ALLOW_HEADERS: &str = "access-control-allow-headers";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const MAX_AGE: &str = "access-control-max-age";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";

/// The CORS response headers this plugin owns: the upstream's are taken off every response.
const OWNED: [&str; 6] = [
    ALLOW_ORIGIN,
    ALLOW_CREDENTIALS,
    ALLOW_METHODS,
    ALLOW_HEADERS,
    EXPOSE_HEADERS,
    MAX_AGE,
];

/// A preflight's answer depends on these request headers.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Methods browsers upper-case themselves (Fetch's "normalize"); others go out as written.
const NORMALIZED_METHODS: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Required: exact origins, `"*"`, `"null"` or patterns (`https://*.example.com`).
    #[serde(default)]
    pub origins: Option<Vec<String>>,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

/// A list of methods or header names: `["*"]`, or the names and the header value they are
/// sent as.
#[derive(Debug)]
enum Names {
    Any,
    Listed { names: Vec<String>, joined: String },
}

impl Names {
    /// Parses the list at `key`; `check` vets one entry (a message, or `None` when it is fine).
    fn parse(
        key: &str,
        entries: &[String],
        credentials: bool,
        check: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if entries.len() > MAX_NAMES {
            return Err(ConfigError::at(
                key,
                format!("{} entries, more than the {MAX_NAMES} taken", entries.len()),
            ));
        }
        if let Some(i) = entries.iter().position(|e| e == "*") {
            let at = format!("{key}[{i}]");
            if entries.len() > 1 {
                return Err(ConfigError::at(at, "\"*\" must be the only entry"));
            }
            no_wildcard_with_credentials(&at, credentials)?;
            return Ok(Names::Any);
        }
        for (i, entry) in entries.iter().enumerate() {
            if let Some(why) = check(entry) {
                return Err(ConfigError::at(format!("{key}[{i}]"), why));
            }
        }
        Ok(Names::Listed {
            joined: entries.join(", "),
            names: entries.to_vec(),
        })
    }
}

/// The one rule for every wildcard: with credentials, browsers read `*` as a literal name (and
/// refuse it as an origin), and a wildcard that the plugin turned into an echo would hand any
/// origin's scripts the user's cookies. So `credentials = true` takes none.
fn no_wildcard_with_credentials(at: &str, credentials: bool) -> Result<(), ConfigError> {
    if credentials {
        return Err(ConfigError::at(
            at,
            "\"*\" cannot be used with credentials = true: list what is allowed",
        ));
    }
    Ok(())
}

fn check_method(method: &str) -> Option<String> {
    if !is_token(method) {
        return Some(format!("{method:?} is not an HTTP method"));
    }
    let upper = method.to_ascii_uppercase();
    if upper != method && NORMALIZED_METHODS.contains(&upper.as_str()) {
        return Some(format!(
            "browsers send {method:?} as {upper:?}: write it upper-case"
        ));
    }
    None
}

fn check_header(name: &str) -> Option<String> {
    (!is_header_name(name)).then(|| format!("{name:?} is not a header name"))
}

/// The CORS policy of one route.
pub struct Cors {
    origins: Origins,
    credentials: bool,
    methods: Names,
    /// `allowed_headers`, lower-case when listed.
    headers: Names,
    /// The `Access-Control-Expose-Headers` value, when there is one.
    exposed: Option<String>,
    /// The `Access-Control-Max-Age` value, when there is one.
    max_age: Option<String>,
}

impl Plugin for Cors {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let credentials = config.credentials;
        let entries = config
            .origins
            .ok_or_else(|| ConfigError::at("origins", "required: the origins allowed"))?;
        let origins = Origins::parse(&entries)?;
        if origins.is_any() {
            no_wildcard_with_credentials("origins[0]", credentials)?;
        }
        if config.methods.is_empty() {
            return Err(ConfigError::at("methods", "list at least one method"));
        }
        let methods = Names::parse("methods", &config.methods, credentials, check_method)?;
        let lower: Vec<String> = config
            .allowed_headers
            .iter()
            .map(|h| {
                if h == "*" {
                    h.clone()
                } else {
                    h.to_ascii_lowercase()
                }
            })
            .collect();
        let headers = Names::parse("allowed_headers", &lower, credentials, check_header)?;
        let exposed = match Names::parse(
            "exposed_headers",
            &config.exposed_headers,
            credentials,
            check_header,
        )? {
            Names::Any => Some("*".to_owned()),
            Names::Listed { joined, .. } => (!joined.is_empty()).then_some(joined),
        };
        if let Some(age) = config.max_age_seconds
            && age > MAX_AGE_SECONDS
        {
            return Err(ConfigError::at(
                "max_age_seconds",
                format!("at most {MAX_AGE_SECONDS} (one day)"),
            ));
        }
        declare_response_rules()?;
        Ok(Self {
            origins,
            credentials,
            methods,
            headers,
            exposed,
            max_age: config.max_age_seconds.map(|age| age.to_string()),
        })
    }

    /// Request phase only: what a response gets is known there.
    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let origin = req.header("origin");
        let requested = if req.method() == "OPTIONS" {
            req.header(REQUEST_METHOD)
        } else {
            None
        };
        match (origin, requested) {
            (origin, Some(method)) => Ok(Decision::Respond(self.preflight(
                req,
                origin.as_deref(),
                &method,
            ))),
            (Some(origin), None) => {
                self.allow_response(req, &origin)?;
                Ok(Decision::Continue)
            }
            (None, None) => Ok(Decision::Continue),
        }
    }
}

/// Every response of the route: the upstream's own CORS headers go, and `Vary: Origin` is
/// added (after any `Vary` already there), since whether CORS headers are sent depends on it.
/// The gateway applies these where the plugin's response phase would run, before the headers
/// queued for an allowed origin.
fn declare_response_rules() -> Result<(), ConfigError> {
    let refused =
        |e: HostError| ConfigError::new(format!("the gateway refused a header rule: {e}"));
    for name in OWNED {
        header_rules::remove_header(Phase::Response, name).map_err(refused)?;
    }
    header_rules::append_header(Phase::Response, "vary", "Origin").map_err(refused)
}

/// A refused preflight: 403, and no CORS headers, so the browser fails the request.
fn refuse(why: &str) -> Reply {
    Reply::text(403, format!("CORS preflight refused: {why}\n")).header("vary", PREFLIGHT_VARY)
}

impl Cors {
    /// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`): 204 with the
    /// policy when the origin, the method and every requested header are allowed, else 403.
    fn preflight(&self, req: &Request<'_>, origin: Option<&str>, method: &str) -> Reply {
        let Some((origin, allow)) = origin.and_then(|o| Some((o, self.origins.allows(o)?))) else {
            return refuse("origin not allowed");
        };
        let allow_methods = match &self.methods {
            Names::Any if is_token(method) => method.to_owned(),
            Names::Listed { names, joined } if names.iter().any(|m| m == method) => joined.clone(),
            _ => return refuse("method not allowed"),
        };
        let requested = req.header(REQUEST_HEADERS).unwrap_or_default();
        let mut names = requested
            .split(',')
            .map(|n| n.trim_matches([' ', '\t']))
            .filter(|n| !n.is_empty());
        let allow_headers = match &self.headers {
            Names::Any if names.all(is_header_name) => {
                requested.trim_matches([' ', '\t']).to_owned()
            }
            Names::Listed {
                names: allowed,
                joined,
            } if names.all(|n| allowed.iter().any(|a| a.eq_ignore_ascii_case(n))) => joined.clone(),
            _ => return refuse("header not allowed"),
        };
        let mut reply = Reply::new(204).header(ALLOW_ORIGIN, allow_origin(allow, origin));
        if self.credentials {
            reply = reply.header(ALLOW_CREDENTIALS, "true");
        }
        reply = reply.header(ALLOW_METHODS, allow_methods);
        if !allow_headers.is_empty() {
            reply = reply.header(ALLOW_HEADERS, allow_headers);
        }
        if let Some(age) = &self.max_age {
            reply = reply.header(MAX_AGE, age.as_str());
        }
        reply.header("vary", PREFLIGHT_VARY)
    }

    /// Queues the CORS headers of a response to an allowed origin; an origin that is not
    /// allowed gets none.
    fn allow_response(&self, req: &mut Request<'_>, origin: &str) -> Result<(), HostError> {
        let Some(allow) = self.origins.allows(origin) else {
            return Ok(());
        };
        req.set_response_header(ALLOW_ORIGIN, allow_origin(allow, origin))?;
        if self.credentials {
            req.set_response_header(ALLOW_CREDENTIALS, "true")?;
        }
        if let Some(exposed) = &self.exposed {
            req.set_response_header(EXPOSE_HEADERS, exposed)?;
        }
        Ok(())
    }
}

fn allow_origin(allow: Allow, origin: &str) -> &str {
    match allow {
        Allow::Any => "*",
        Allow::Echo => origin,
    }
}

wasmgate_sdk::export!(Cors);
