//! `oauth2-introspect`: authenticates requests with an OAuth2 bearer token that an
//! authorization server vouches for, by RFC 7662 token introspection.
//!
//! The token of `Authorization: Bearer <token>` is sent to the configured introspection
//! endpoint (a `POST` through [`outbound`], authenticated with the gateway's own client
//! credentials); the answer's `active`, `exp`, `nbf`, `scope` and, when configured, `iss` and
//! `aud` are checked, and the route's required scopes must all be held. A granted request
//! carries the `consumer`, `scope` and `client_id` vars on. An active answer is cached in kv,
//! shared by every instance, until the token's `exp` or `cache_max_ms`, whichever is sooner;
//! what a route requires is checked against the cached answer on every request.
//!
//! See README.md for the config reference.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmgate_sdk::outbound::{self, Response};
use wasmgate_sdk::{
    ConfigError, Decision, Error, Plugin, Registration, Reply, Request, clock, kv, log,
};

#[cfg(test)]
mod tests;

/// The longest `timeout_ms` accepted (the gateway's `outbound_timeout_ms` still bounds it).
const MAX_TIMEOUT_MS: u64 = 60_000;
/// The longest `cache_max_ms` accepted: one day.
const MAX_CACHE_MS: u64 = 86_400_000;
/// The most scopes a route may require.
const MAX_REQUIRED_SCOPES: usize = 64;

/// The plugin's config; see the README.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The RFC 7662 endpoint: an absolute `http(s)` URL whose host is a granted upstream's
    /// name or a granted origin.
    pub introspection_url: Option<String>,
    /// The gateway's client id at the authorization server.
    pub client_id: Option<String>,
    /// Its secret; from `config_files`, so that it is not in the config itself. Surrounding
    /// whitespace (a file's last newline) is trimmed.
    pub client_secret: Option<String>,
    /// How the credentials are sent: `basic` (RFC 6749 §2.3.1's `client_secret_basic`) or
    /// `post` (`client_secret_post`, in the form).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Every one of these must be in the token's `scope`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// When set, the answer's `iss` must be this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, the answer's `aud` (a string or a list) must hold this.
    #[serde(default)]
    pub audience: Option<String>,
    /// The answer's field whose value becomes the `consumer` var; unset: `sub`, or `username`
    /// when there is no `sub`.
    #[serde(default)]
    pub consumer_field: Option<String>,
    /// The longest an active answer is reused for (0: every request is introspected).
    #[serde(default = "default_cache_max_ms")]
    pub cache_max_ms: u64,
    /// The longest one introspection may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A longer token is refused without a call.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// The `realm` of the `WWW-Authenticate` challenge.
    #[serde(default)]
    pub realm: Option<String>,
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic`, id and secret form-encoded first (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form.
    Post,
}

fn default_cache_max_ms() -> u64 {
    300_000
}

fn default_timeout_ms() -> u64 {
    2_000
}

fn default_max_token_bytes() -> usize {
    4096
}

/// What the plugin keeps of an active introspection answer: the fields it checks and the
/// ones it hands on. It is also what the kv cache holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Active {
    /// `exp`, in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf_ms: Option<u64>,
    #[serde(default)]
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consumer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    aud: Vec<String>,
}

/// Why a request is not let through.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// 401 with a bare challenge: no bearer token.
    Missing,
    /// 401 `invalid_token`, with the reason.
    Invalid(&'static str),
    /// 403 `insufficient_scope`.
    Scope,
    /// 503: the endpoint did not give a usable answer.
    Unavailable,
}

/// The plugin, configured for one route.
#[derive(Debug)]
pub struct Introspect {
    url: String,
    /// `Authorization: Basic ...`, built at load (`basic` only).
    authorization: Option<String>,
    /// The form up to the token: `token_type_hint=access_token&` and, for `post`, the
    /// credentials; the token, encoded, is appended per call.
    form_head: String,
    required_scopes: Vec<String>,
    issuer: Option<String>,
    audience: Option<String>,
    consumer_field: Option<String>,
    cache_max_ms: u64,
    timeout: std::time::Duration,
    max_token_bytes: usize,
    /// The cache key's prefix, from the endpoint, the credentials and `consumer_field`, so
    /// that two configs of the plugin against different servers (or as different clients, or
    /// reading the consumer from different fields) never read each other's answers.
    cache_prefix: String,
    /// The `WWW-Authenticate` challenge's start: `Bearer` or `Bearer realm="..."`.
    challenge: String,
    /// The 403's challenge, naming the required scopes.
    scope_challenge: String,
}

impl Plugin for Introspect {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let url = c.introspection_url.ok_or_else(|| {
            ConfigError::at(
                "introspection_url",
                "required: the authorization server's RFC 7662 endpoint",
            )
        })?;
        outbound::check_url(&url).map_err(|why| {
            ConfigError::at(
                "introspection_url",
                format!("{why}: give the endpoint's absolute URL"),
            )
        })?;
        let client_id = c
            .client_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ConfigError::at("client_id", "required: the gateway's client id"))?;
        let secret = c.client_secret.as_deref().map(str::trim).unwrap_or("");
        if secret.is_empty() {
            return Err(ConfigError::at(
                "client_secret",
                "required: the gateway's client secret (give it through config_files)",
            ));
        }
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("token_type_hint", "access_token");
        let authorization = match c.client_auth {
            ClientAuth::Basic => {
                let encode =
                    |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
                let pair: String = [encode(&client_id), encode(secret)].join(":");
                Some(format!("Basic {}", BASE64.encode(pair)))
            }
            ClientAuth::Post => {
                form.append_pair("client_id", &client_id);
                form.append_pair("client_secret", secret);
                None
            }
        };
        let mut form_head = form.finish();
        form_head.push_str("&token=");

        if c.required_scopes.len() > MAX_REQUIRED_SCOPES {
            return Err(ConfigError::at(
                "required_scopes",
                format!("at most {MAX_REQUIRED_SCOPES}"),
            ));
        }
        for (i, scope) in c.required_scopes.iter().enumerate() {
            if !is_scope_token(scope) {
                return Err(ConfigError::at(
                    format!("required_scopes[{i}]"),
                    "a scope is one or more visible ASCII characters, no space, `\"` or `\\` (RFC 6749 §3.3)",
                ));
            }
        }
        for (key, value) in [
            ("issuer", &c.issuer),
            ("audience", &c.audience),
            ("consumer_field", &c.consumer_field),
        ] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::at(key, "must not be empty"));
            }
        }
        if c.cache_max_ms > MAX_CACHE_MS {
            return Err(ConfigError::at(
                "cache_max_ms",
                format!("at most {MAX_CACHE_MS} (one day)"),
            ));
        }
        if c.timeout_ms == 0 || c.timeout_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::at(
                "timeout_ms",
                format!("from 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        if c.max_token_bytes == 0 {
            return Err(ConfigError::at("max_token_bytes", "must be greater than 0"));
        }
        let challenge = match &c.realm {
            None => "Bearer".to_string(),
            Some(realm) if is_quotable(realm) => format!("Bearer realm=\"{realm}\""),
            Some(_) => {
                return Err(ConfigError::at(
                    "realm",
                    "visible ASCII and spaces only, no `\"` or `\\`",
                ));
            }
        };
        let scope_challenge = if c.required_scopes.is_empty() {
            format!("{challenge}, error=\"insufficient_scope\"")
        } else {
            format!(
                "{challenge}, error=\"insufficient_scope\", scope=\"{}\"",
                c.required_scopes.join(" ")
            )
        };
        let cache_prefix = format!(
            "active:{}:",
            &sha256_hex(&[
                &url,
                &client_id,
                secret,
                c.consumer_field.as_deref().unwrap_or("")
            ])[..16]
        );
        Ok(Self {
            url,
            authorization,
            form_head,
            required_scopes: c.required_scopes,
            issuer: c.issuer,
            audience: c.audience,
            consumer_field: c.consumer_field,
            cache_max_ms: c.cache_max_ms,
            timeout: std::time::Duration::from_millis(c.timeout_ms),
            max_token_bytes: c.max_token_bytes,
            cache_prefix,
            challenge,
            scope_challenge,
        })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        match self.authorize(req) {
            Ok(active) => {
                if let Some(consumer) = &active.consumer {
                    req.set_var("consumer", consumer);
                }
                req.set_var("scope", &active.scope);
                if let Some(client_id) = &active.client_id {
                    req.set_var("client_id", client_id);
                }
                Ok(Decision::Continue)
            }
            Err(refusal) => self.refuse(refusal),
        }
    }
}

impl Introspect {
    /// The token's active answer, checked against this route's requirements.
    fn authorize(&self, req: &Request<'_>) -> Result<Active, Refusal> {
        let token = bearer(req).ok_or(Refusal::Missing)?;
        let token = token.as_str();
        if token.len() > self.max_token_bytes {
            return Err(Refusal::Invalid("the token is too long"));
        }
        if !is_b64token(token) {
            return Err(Refusal::Invalid("the token is not a bearer token"));
        }
        let now = clock::now_millis();
        let key = format!("{}{}", self.cache_prefix, sha256_hex(&[token]));
        let active = match self.cached(&key) {
            Some(active) => active,
            None => {
                let active = self.introspect(token)?;
                self.remember(&key, &active, now);
                active
            }
        };
        self.check(&active, now)?;
        Ok(active)
    }

    fn cached(&self, key: &str) -> Option<Active> {
        if self.cache_max_ms == 0 {
            return None;
        }
        serde_json::from_slice(&kv::get(key)?).ok()
    }

    /// Caches an active answer until its `exp` or `cache_max_ms`, whichever is sooner.
    fn remember(&self, key: &str, active: &Active, now: u64) {
        let until_exp = active
            .exp_ms
            .map_or(u64::MAX, |exp| exp.saturating_sub(now));
        let ttl = self.cache_max_ms.min(until_exp);
        if ttl == 0 {
            return;
        }
        let Ok(value) = serde_json::to_vec(active) else {
            return;
        };
        if let Err(e) = kv::set(key, &value, Some(ttl)) {
            log::warn(&format!("oauth2-introspect: an answer was not cached: {e}"));
        }
    }

    /// Asks the endpoint about `token`: its active answer, or why there is none.
    fn introspect(&self, token: &str) -> Result<Active, Refusal> {
        let mut body = String::with_capacity(self.form_head.len() + token.len() + 8);
        body.push_str(&self.form_head);
        body.extend(form_urlencoded::byte_serialize(token.as_bytes()));
        let mut call = outbound::Request::post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .timeout(self.timeout);
        if let Some(authorization) = &self.authorization {
            call = call.header("authorization", authorization.as_str());
        }
        let unavailable = |why: String| {
            log::warn(&format!("oauth2-introspect: {} {why}", self.url));
            Refusal::Unavailable
        };
        let resp = outbound::send(call).map_err(|e| unavailable(e.to_string()))?;
        if !resp.is_success() {
            let hint = if resp.status == 401 {
                ": the server refused the gateway's client credentials"
            } else {
                ""
            };
            return Err(unavailable(format!("answered {}{hint}", resp.status)));
        }
        parse_answer(&resp, self.consumer_field.as_deref()).map_err(unavailable)?
    }

    /// What this route requires of an active answer, at `now`.
    fn check(&self, active: &Active, now: u64) -> Result<(), Refusal> {
        if active.exp_ms.is_some_and(|exp| now >= exp) {
            return Err(Refusal::Invalid("the token has expired"));
        }
        if active.nbf_ms.is_some_and(|nbf| now < nbf) {
            return Err(Refusal::Invalid("the token is not valid yet"));
        }
        if let Some(issuer) = &self.issuer
            && active.iss.as_ref() != Some(issuer)
        {
            return Err(Refusal::Invalid("the token is from another issuer"));
        }
        if let Some(audience) = &self.audience
            && !active.aud.contains(audience)
        {
            return Err(Refusal::Invalid("the token is not meant for this audience"));
        }
        let held: Vec<&str> = active.scope.split_ascii_whitespace().collect();
        if !self
            .required_scopes
            .iter()
            .all(|s| held.contains(&s.as_str()))
        {
            return Err(Refusal::Scope);
        }
        Ok(())
    }

    fn refuse(&self, refusal: Refusal) -> Result<Decision, Error> {
        let (status, challenge, error, message) = match refusal {
            Refusal::Missing => (
                401,
                self.challenge.clone(),
                "missing_token",
                "a bearer token is required",
            ),
            Refusal::Invalid(why) => (
                401,
                format!(
                    "{}, error=\"invalid_token\", error_description=\"{why}\"",
                    self.challenge
                ),
                "invalid_token",
                why,
            ),
            Refusal::Scope => (
                403,
                self.scope_challenge.clone(),
                "insufficient_scope",
                "the token lacks a required scope",
            ),
            Refusal::Unavailable => {
                let body = json!({
                    "error": "temporarily_unavailable",
                    "message": "the token cannot be checked now",
                });
                return Ok(Reply::json(503, &body)?.header("retry-after", "1").into());
            }
        };
        let mut body = json!({ "error": error, "message": message });
        if status == 403 && !self.required_scopes.is_empty() {
            body["required_scopes"] = json!(self.required_scopes);
        }
        Ok(Reply::json(status, &body)?
            .header("www-authenticate", challenge)
            .into())
    }
}

/// Reads an RFC 7662 answer: `Ok(Err(..))` for a token that is not active, `Err` for an
/// answer that is not one.
fn parse_answer(
    resp: &Response,
    consumer_field: Option<&str>,
) -> Result<Result<Active, Refusal>, String> {
    let answer: serde_json::Map<String, Value> = resp
        .json()
        .map_err(|e| format!("answered a body that is not a JSON object: {e}"))?;
    match answer.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Err(Refusal::Invalid("the token is not active"))),
        _ => return Err("answered without a boolean `active`".into()),
    }
    let date = |name: &str| -> Result<Option<u64>, String> {
        match answer.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                // Saturating: a date past u64 milliseconds is as good as never.
                .map(|s| Some((s * 1000.0) as u64))
                .ok_or_else(|| format!("answered `{name}` = {n}, not a date")),
            Some(other) => Err(format!("answered `{name}` = {other}, not a date")),
        }
    };
    let text = |name: &str| match answer.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let consumer = match consumer_field {
        Some(field) => text(field),
        None => text("sub").or_else(|| text("username")),
    };
    let aud = match answer.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let active = Active {
        exp_ms: date("exp")?,
        nbf_ms: date("nbf")?,
        scope: text("scope").unwrap_or_default(),
        client_id: text("client_id"),
        consumer,
        iss: text("iss"),
        aud,
    };
    Ok(Ok(active))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(req: &Request<'_>) -> Option<String> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// RFC 6750 §2.1's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// RFC 6749 §3.3's `scope-token`: `1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// What may go between the quotes of a challenge's parameter.
fn is_quotable(s: &str) -> bool {
    s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// The SHA-256 of the parts, each followed by a NUL, in hex.
fn sha256_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("{:x}", hasher.finalize())
}

wasmgate_sdk::export!(Introspect);
