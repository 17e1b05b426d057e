//! `jwt-auth`: authenticates requests with a JSON Web Token, checks its claims and roles, and
//! hands its claims on to the upstream (as headers) and to later plugins (as vars).
//!
//! Configured keys are decoded and verifiers built once, at init; keys from `jwks_url` when a
//! set is fetched (see `remote`). A verified token's outcome is cached under the token, so a
//! repeated token costs a hash, a map lookup and a clock read. Time is the host's clock, never
//! the component's own. See README.md for the config reference.

mod cache;
mod keys;
mod remote;
mod source;
mod verify;

#[cfg(test)]
mod tests;

/// The token parser and its keys, for the fuzz targets (`fuzz/fuzz_targets/jwt.rs`). Not an
/// API: nothing here is stable.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::keys::{Key, from_secret};
    pub use crate::verify::{Invalid, Verified, signature};
}

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};
use wasmgate_sdk::rules::http::is_host_managed;
use wasmgate_sdk::{
    ConfigError, Decision, Error, Plugin, Registration, Reply, Request, clock, log,
};

use cache::Cache;
use keys::Key;
use remote::{Remote, Update};
use source::Source;
use verify::{Invalid, claim_text, matches_any, numeric_date_ms};

/// At most this many `jwt.<claim>` vars per request: the host keeps a bounded number of vars
/// for the whole pipeline.
pub const MAX_CLAIM_VARS: usize = 64;
/// The largest `leeway_seconds`: one day.
pub const MAX_LEEWAY_SECONDS: u64 = 86_400;
/// `jwks_refresh_ms` when not given: five minutes.
pub const DEFAULT_JWKS_REFRESH_MS: u64 = 300_000;
/// The largest `jwks_refresh_ms`: one day.
pub const MAX_JWKS_REFRESH_MS: u64 = 86_400_000;
/// `min_refresh_ms` when not given (or `jwks_refresh_ms`, when that is shorter).
pub const DEFAULT_MIN_REFRESH_MS: u64 = 10_000;
/// The smallest `min_refresh_ms` and `jwks_refresh_ms`.
pub const MIN_REFRESH_MS: u64 = 100;
/// `jwks_timeout_ms` when not given.
pub const DEFAULT_JWKS_TIMEOUT_MS: u64 = 2_000;
/// The largest `jwks_timeout_ms`: the fetch holds up the request that makes it.
pub const MAX_JWKS_TIMEOUT_MS: u64 = 60_000;

/// One value or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Required: the algorithms a token may be signed with.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// An HMAC secret (its UTF-8 bytes), for HS256/384/512.
    #[serde(default)]
    pub secret: Option<String>,
    /// A PEM public key: RSA, EC (P-256, P-384) or Ed25519.
    #[serde(default)]
    pub public_key: Option<String>,
    /// A JWK set: an object with `keys`, or JSON text of one (as `config_files` gives it).
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Where to fetch a JWK set from, through the gateway's outbound calls.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How old fetched keys may get before a request refreshes them.
    #[serde(default)]
    pub jwks_refresh_ms: Option<u64>,
    /// The least time between two fetch attempts, across the plugin's instances.
    #[serde(default)]
    pub min_refresh_ms: Option<u64>,
    /// The fetch's own timeout.
    #[serde(default)]
    pub jwks_timeout_ms: Option<u64>,
    /// Where to read the token: `header:NAME`, `cookie:NAME`, `query:NAME`, or a list tried in
    /// order.
    #[serde(default)]
    pub token_source: Option<OneOrMany>,
    #[serde(default)]
    pub leeway_seconds: u64,
    #[serde(default)]
    pub issuer: Option<OneOrMany>,
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default)]
    pub required_roles: Vec<String>,
    /// The claim holding the token's permissions (a list, or one space-separated string).
    #[serde(default = "default_permissions_claim")]
    pub permissions_claim: String,
    /// Every one of these must be held (a held `orders:*` holds `orders:read`).
    #[serde(default)]
    pub required_permissions: Vec<String>,
    /// Claim name to upstream header name.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

fn default_roles_claim() -> String {
    "roles".into()
}

fn default_permissions_claim() -> String {
    "permissions".into()
}

fn default_consumer_claim() -> String {
    "sub".into()
}

fn default_cache_size() -> usize {
    10_000
}

fn default_max_token_bytes() -> usize {
    8 * 1024
}

/// A claim named in the config: a top-level name, or, when no claim has that exact name, a
/// dotted path into nested objects (`realm_access.roles`).
#[derive(Debug)]
struct ClaimPath {
    name: String,
    path: Vec<String>,
}

impl ClaimPath {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            path: name.split('.').map(str::to_string).collect(),
        }
    }

    fn get<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(v) = claims.get(&self.name) {
            return Some(v);
        }
        if self.path.len() < 2 {
            return None;
        }
        let (first, rest) = self.path.split_first()?;
        rest.iter()
            .try_fold(claims.get(first)?, |v, segment| v.as_object()?.get(segment))
    }
}

/// A role pattern: exact, or a prefix when it ends in `*` (`admin:*`).
#[derive(Debug)]
enum Role {
    Exact(String),
    Prefix(String),
}

impl Role {
    fn new(text: &str) -> Self {
        match text.strip_suffix('*') {
            Some(prefix) => Role::Prefix(prefix.to_string()),
            None => Role::Exact(text.to_string()),
        }
    }

    /// Whether a token holding `held` satisfies this required role. Either side may be a
    /// wildcard: a token with `admin:*` holds `admin:read`, and a requirement of `admin:*` is
    /// met by any `admin:` role.
    fn satisfied_by(&self, held: &str) -> bool {
        if let Some(held_prefix) = held.strip_suffix('*') {
            let required = match self {
                Role::Exact(r) => r.as_str(),
                Role::Prefix(p) => p.as_str(),
            };
            if required.starts_with(held_prefix) {
                return true;
            }
        }
        match self {
            Role::Exact(r) => r == held,
            Role::Prefix(p) => held.starts_with(p.as_str()),
        }
    }
}

/// What a verified token leads to; this is what the cache keeps.
enum Outcome {
    Granted(Grant),
    /// Valid, but without any of the required roles.
    Forbidden(&'static str),
}

struct Grant {
    /// Index into `JwtAuth::claim_headers`, and the value to set.
    headers: Vec<(usize, String)>,
    consumer: Option<String>,
    /// `jwt.<claim>` and its value.
    vars: Vec<(String, String)>,
}

pub struct JwtAuth {
    algorithms: Vec<Algorithm>,
    /// The configured keys: `secret`, `public_key`, `jwks`.
    keys: Vec<Key>,
    /// The keys from `jwks_url`.
    remote: Option<Remote>,
    sources: Vec<Source>,
    leeway_ms: i64,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    required_claims: Vec<ClaimPath>,
    roles_claim: ClaimPath,
    required_roles: Vec<Role>,
    permissions_claim: ClaimPath,
    required_permissions: Vec<String>,
    /// (claim, lower-cased header name).
    claim_headers: Vec<(ClaimPath, String)>,
    consumer_claim: ClaimPath,
    max_token_bytes: usize,
    cache: Cache<Outcome>,
}

/// `jwks_url` and the settings that go with it.
fn remote_settings(
    url: Option<String>,
    refresh: Option<u64>,
    min_refresh: Option<u64>,
    timeout: Option<u64>,
) -> Result<Option<remote::Settings>, ConfigError> {
    let Some(url) = url else {
        for (key, given) in [
            ("jwks_refresh_ms", refresh.is_some()),
            ("min_refresh_ms", min_refresh.is_some()),
            ("jwks_timeout_ms", timeout.is_some()),
        ] {
            if given {
                return Err(ConfigError::at(key, "applies only with `jwks_url`"));
            }
        }
        return Ok(None);
    };
    remote::check_url(&url).map_err(|why| ConfigError::at("jwks_url", why))?;
    let refresh = refresh.unwrap_or(DEFAULT_JWKS_REFRESH_MS);
    if !(MIN_REFRESH_MS..=MAX_JWKS_REFRESH_MS).contains(&refresh) {
        return Err(ConfigError::at(
            "jwks_refresh_ms",
            format!("must be from {MIN_REFRESH_MS} to {MAX_JWKS_REFRESH_MS} (one day)"),
        ));
    }
    let min_refresh = min_refresh.unwrap_or(DEFAULT_MIN_REFRESH_MS.min(refresh));
    if min_refresh < MIN_REFRESH_MS {
        return Err(ConfigError::at(
            "min_refresh_ms",
            format!("must be at least {MIN_REFRESH_MS}"),
        ));
    }
    if min_refresh > refresh {
        return Err(ConfigError::at(
            "min_refresh_ms",
            format!("must be at most `jwks_refresh_ms` ({refresh})"),
        ));
    }
    let timeout = timeout.unwrap_or(DEFAULT_JWKS_TIMEOUT_MS);
    if !(1..=MAX_JWKS_TIMEOUT_MS).contains(&timeout) {
        return Err(ConfigError::at(
            "jwks_timeout_ms",
            format!("must be from 1 to {MAX_JWKS_TIMEOUT_MS}"),
        ));
    }
    // All three are at most a day, so they fit.
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(Some(remote::Settings {
        url,
        refresh_ms: ms(refresh),
        min_refresh_ms: ms(min_refresh),
        timeout: Duration::from_millis(timeout),
    }))
}

fn strings(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(key, "must not be an empty list"));
    }
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            return Err(ConfigError::at(format!("{key}[{i}]"), "must not be empty"));
        }
    }
    Ok(list)
}

impl Plugin for JwtAuth {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let Some(names) = c.algorithms else {
            return Err(ConfigError::at(
                "algorithms",
                "required: the algorithms tokens may be signed with, e.g. [\"RS256\"]",
            ));
        };
        if names.is_empty() {
            return Err(ConfigError::at("algorithms", "must not be empty"));
        }
        let mut algorithms = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(alg) = keys::parse_algorithm(name) else {
                let msg = if name.eq_ignore_ascii_case("none") {
                    "`none` (unsigned tokens) is never accepted".to_string()
                } else {
                    let all: Vec<&str> =
                        keys::SUPPORTED.iter().map(|a| keys::alg_name(*a)).collect();
                    format!("unknown algorithm `{name}`; supported: {}", all.join(", "))
                };
                return Err(ConfigError::at(format!("algorithms[{i}]"), msg));
            };
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }

        let mut keys = Vec::new();
        if let Some(secret) = &c.secret {
            keys.push(keys::from_secret(secret, &algorithms)?);
        }
        if let Some(pem) = &c.public_key {
            keys.push(keys::from_pem(pem, &algorithms)?);
        }
        if let Some(jwks) = &c.jwks {
            keys.extend(keys::from_jwks(jwks, &algorithms)?);
        }
        let remote = remote_settings(
            c.jwks_url,
            c.jwks_refresh_ms,
            c.min_refresh_ms,
            c.jwks_timeout_ms,
        )?
        .map(Remote::new);
        if keys.is_empty() && remote.is_none() {
            return Err(ConfigError::new(
                "no key: give `secret`, `public_key`, `jwks` or `jwks_url`",
            ));
        }
        // Keys from `jwks_url` arrive later: what they verify is known only then.
        let needing_a_key = if remote.is_some() {
            &[][..]
        } else {
            &algorithms[..]
        };
        for (i, alg) in needing_a_key.iter().enumerate() {
            if !keys.iter().any(|k| k.algorithms().any(|a| a == *alg)) {
                let i = names
                    .iter()
                    .position(|n| n == keys::alg_name(*alg))
                    .unwrap_or(i);
                return Err(ConfigError::at(
                    format!("algorithms[{i}]"),
                    format!(
                        "no configured key verifies {}: an HS algorithm needs `secret` (or an `oct` JWK), the others a public key of their type",
                        keys::alg_name(*alg)
                    ),
                ));
            }
        }

        let sources = match c.token_source {
            None => vec![Source::Bearer],
            Some(OneOrMany::One(s)) => {
                vec![Source::parse(&s).map_err(|e| ConfigError::at("token_source", e))?]
            }
            Some(OneOrMany::Many(list)) => {
                if list.is_empty() {
                    return Err(ConfigError::at("token_source", "must not be an empty list"));
                }
                let mut out = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    out.push(
                        Source::parse(s)
                            .map_err(|e| ConfigError::at(format!("token_source[{i}]"), e))?,
                    );
                }
                out
            }
        };

        if c.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(ConfigError::at(
                "leeway_seconds",
                format!("at most {MAX_LEEWAY_SECONDS} (one day)"),
            ));
        }
        let issuers = c
            .issuer
            .map(|i| strings("issuer", i.into_vec()))
            .transpose()?;
        let audiences = c
            .audience
            .map(|a| strings("audience", a.into_vec()))
            .transpose()?;
        for (i, claim) in c.required_claims.iter().enumerate() {
            if claim.is_empty() {
                return Err(ConfigError::at(
                    format!("required_claims[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if c.roles_claim.is_empty() {
            return Err(ConfigError::at("roles_claim", "must not be empty"));
        }
        if c.consumer_claim.is_empty() {
            return Err(ConfigError::at("consumer_claim", "must not be empty"));
        }
        let mut required_roles = Vec::new();
        for (i, role) in c.required_roles.iter().enumerate() {
            if role.is_empty() {
                return Err(ConfigError::at(
                    format!("required_roles[{i}]"),
                    "must not be empty",
                ));
            }
            required_roles.push(Role::new(role));
        }
        if c.permissions_claim.is_empty() {
            return Err(ConfigError::at("permissions_claim", "must not be empty"));
        }
        for (i, p) in c.required_permissions.iter().enumerate() {
            if p.is_empty() {
                return Err(ConfigError::at(
                    format!("required_permissions[{i}]"),
                    "must not be empty",
                ));
            }
        }
        let mut claim_headers: Vec<(ClaimPath, String)> = Vec::new();
        for (claim, header) in &c.claims_to_headers {
            let at = format!("claims_to_headers.{claim}");
            if claim.is_empty() {
                return Err(ConfigError::at(at, "the claim name must not be empty"));
            }
            if !source::is_token(header) {
                return Err(ConfigError::at(
                    at,
                    format!("`{header}` is not a valid header name"),
                ));
            }
            let header = header.to_ascii_lowercase();
            if is_host_managed(&header) {
                return Err(ConfigError::at(
                    at,
                    format!("`{header}` is managed by the gateway"),
                ));
            }
            if claim_headers.iter().any(|(_, h)| *h == header) {
                return Err(ConfigError::at(
                    at,
                    format!("`{header}` is already set from another claim"),
                ));
            }
            claim_headers.push((ClaimPath::new(claim), header));
        }
        if c.max_token_bytes == 0 {
            return Err(ConfigError::at("max_token_bytes", "must be greater than 0"));
        }

        Ok(Self {
            algorithms,
            keys,
            remote,
            sources,
            leeway_ms: i64::try_from(c.leeway_seconds * 1000).unwrap_or(i64::MAX),
            issuers,
            audiences,
            required_claims: c
                .required_claims
                .iter()
                .map(|s| ClaimPath::new(s))
                .collect(),
            roles_claim: ClaimPath::new(&c.roles_claim),
            required_roles,
            permissions_claim: ClaimPath::new(&c.permissions_claim),
            required_permissions: c.required_permissions,
            claim_headers,
            consumer_claim: ClaimPath::new(&c.consumer_claim),
            max_token_bytes: c.max_token_bytes,
            cache: Cache::new(c.cache_size),
        })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let Some(token) = self.sources.iter().find_map(|s| s.read(req)) else {
            return unauthorized(None);
        };
        if token.len() > self.max_token_bytes {
            return unauthorized(Some(&Invalid::TooLarge));
        }
        let now = i64::try_from(clock::now_millis()).unwrap_or(i64::MAX);
        // Before the cache: a token verified by a key since removed must not be served from it.
        if let Some(remote) = &mut self.remote
            && remote.due(now)
        {
            let update = remote.refresh(now, &self.algorithms);
            if update == Update::Removed {
                self.cache.clear();
            }
        }
        if let Some(outcome) = self.cache.get(&token, now) {
            return respond(req, &self.claim_headers, outcome);
        }
        match self.check_or_refetch(&token, now) {
            Ok((outcome, expires_at)) => {
                let decision = respond(req, &self.claim_headers, &outcome);
                self.cache.insert(token, outcome, expires_at);
                decision
            }
            Err(Invalid::UnknownKey) if self.remote.as_ref().is_some_and(|r| !r.has_keys()) => {
                keys_unavailable()
            }
            Err(invalid) => {
                if log::enabled(log::Level::Debug) {
                    log::debug(&format!("token refused: {}", invalid.message()));
                }
                unauthorized(Some(&invalid))
            }
        }
    }
}

impl JwtAuth {
    /// [`check`](Self::check), and when no key is found for the token and keys come from
    /// `jwks_url`, again with newer keys: a set another instance fetched, else one fetched now
    /// (unless an attempt was made within `min_refresh_ms`).
    fn check_or_refetch(&mut self, token: &str, now: i64) -> Result<(Outcome, i64), Invalid> {
        type Step = fn(&mut Remote, i64, &[Algorithm]) -> Update;
        let mut result = self.check(token, now);
        for step in [Remote::read_shared as Step, Remote::fetch_if_allowed] {
            if !matches!(result, Err(Invalid::UnknownKey)) {
                break;
            }
            let Some(remote) = self.remote.as_mut() else {
                break;
            };
            let update = step(remote, now, &self.algorithms);
            if update == Update::Removed {
                self.cache.clear();
            }
            if update != Update::Same {
                result = self.check(token, now);
            }
        }
        result
    }

    /// Verifies a token at `now` (ms) against the keys in hand and decides what it grants;
    /// with the instant the decision stops holding (the token's `exp` plus the leeway).
    fn check(&self, token: &str, now: i64) -> Result<(Outcome, i64), Invalid> {
        let fetched = self.remote.as_ref().map_or(&[][..], Remote::keys);
        let verify::Verified { claims } =
            verify::signature(token, &self.algorithms, self.keys.iter().chain(fetched))?;

        let exp = numeric_date_ms(&claims, "exp")?;
        let nbf = numeric_date_ms(&claims, "nbf")?;
        let expires_at = exp.map_or(i64::MAX, |e| e.saturating_add(self.leeway_ms));
        if now >= expires_at {
            return Err(Invalid::Expired);
        }
        if let Some(nbf) = nbf
            && now.saturating_add(self.leeway_ms) < nbf
        {
            return Err(Invalid::NotYetValid);
        }
        if let Some(issuers) = &self.issuers
            && !matches!(claims.get("iss"), Some(Value::String(iss)) if issuers.contains(iss))
        {
            return Err(Invalid::Issuer);
        }
        if let Some(audiences) = &self.audiences
            && !matches_any(claims.get("aud"), audiences)
        {
            return Err(Invalid::Audience);
        }
        for claim in &self.required_claims {
            if claim.get(&claims).is_none_or(Value::is_null) {
                return Err(Invalid::MissingClaim(claim.name.clone()));
            }
        }

        if !self.required_roles.is_empty() && !self.has_required_role(&claims) {
            return Ok((
                Outcome::Forbidden("the token lacks a required role"),
                expires_at,
            ));
        }
        if !self.required_permissions.is_empty() && !self.holds_permissions(&claims) {
            return Ok((
                Outcome::Forbidden("the token lacks a required permission"),
                expires_at,
            ));
        }

        let headers = self
            .claim_headers
            .iter()
            .enumerate()
            .filter_map(|(i, (claim, _))| {
                let text = header_text(claim.get(&claims)?)?;
                is_header_value(&text).then_some((i, text))
            })
            .collect();
        let consumer = self.consumer_claim.get(&claims).and_then(claim_text);
        let vars = claims
            .iter()
            .filter_map(|(name, value)| Some((format!("jwt.{name}"), claim_text(value)?)))
            .take(MAX_CLAIM_VARS)
            .collect();
        Ok((
            Outcome::Granted(Grant {
                headers,
                consumer,
                vars,
            }),
            expires_at,
        ))
    }

    fn has_required_role(&self, claims: &Map<String, Value>) -> bool {
        let held = held(self.roles_claim.get(claims));
        self.required_roles
            .iter()
            .any(|r| held.iter().any(|h| r.satisfied_by(h)))
    }

    /// Whether every required permission is held. A wildcard counts on the held side only: a
    /// held `orders:*` (or `*`) holds `orders:read`, while a required `admin:*` is held only
    /// as `admin:*` itself (or a wider held wildcard).
    fn holds_permissions(&self, claims: &Map<String, Value>) -> bool {
        let held = held(self.permissions_claim.get(claims));
        self.required_permissions.iter().all(|r| {
            held.iter().any(|h| {
                h == r
                    || h.strip_suffix('*')
                        .is_some_and(|prefix| r.starts_with(prefix))
            })
        })
    }
}

fn respond(
    req: &mut Request<'_>,
    claim_headers: &[(ClaimPath, String)],
    outcome: &Outcome,
) -> Result<Decision, Error> {
    match outcome {
        Outcome::Granted(grant) => {
            apply(req, claim_headers, grant);
            Ok(Decision::Continue)
        }
        Outcome::Forbidden(message) => forbidden(message),
    }
}

fn apply(req: &mut Request<'_>, claim_headers: &[(ClaimPath, String)], grant: &Grant) {
    // Whatever the client sent under these names is dropped, so a header the upstream sees
    // comes from a verified claim or not at all.
    for (_, header) in claim_headers {
        req.remove_header(header);
    }
    for (i, value) in &grant.headers {
        if let Some((_, header)) = claim_headers.get(*i)
            && let Err(e) = req.set_header(header, value)
        {
            log::warn(&format!("claim header {header} not set: {e}"));
        }
    }
    if let Some(consumer) = &grant.consumer {
        req.set_var("consumer", consumer);
    }
    for (name, value) in &grant.vars {
        req.set_var(name, value);
    }
}

/// Visible ASCII, spaces and tabs: stricter than the host, which passes bytes past ASCII, so a
/// claim's non-ASCII text is left out rather than sent upstream as raw UTF-8.
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn unauthorized(invalid: Option<&Invalid>) -> Result<Decision, Error> {
    // RFC 6750 §3.1: a request without credentials gets a bare challenge; a bad token gets
    // `invalid_token`.
    let (challenge, error, message) = match invalid {
        None => (
            "Bearer".to_string(),
            "missing_token",
            "a bearer token is required".to_string(),
        ),
        Some(invalid) => {
            let message = invalid.message();
            let description: String = message
                .chars()
                .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
                .collect();
            (
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
                "invalid_token",
                message,
            )
        }
    };
    let reply = Reply::json(
        401,
        &serde_json::json!({ "error": error, "message": message }),
    )?
    .header("www-authenticate", challenge);
    Ok(Decision::Respond(reply))
}

/// No key could be tried because the keys from `jwks_url` have never been fetched: the
/// gateway's fault, not the token's.
fn keys_unavailable() -> Result<Decision, Error> {
    let reply = Reply::json(
        503,
        &serde_json::json!({
            "error": "keys_unavailable",
            "message": "the keys to verify the token are not available yet; try again later",
        }),
    )?;
    Ok(Decision::Respond(reply))
}

/// The roles or permissions a claim holds: a list of strings, or one space-separated string
/// (like OAuth's `scope`).
fn held(claim: Option<&Value>) -> Vec<&str> {
    match claim {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

/// A claim as a header value: its text form, or a list of text forms joined by commas
/// (`["admin", "ops"]` is `admin,ops`); none for objects, `null` or a list holding one.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(claim_text)
            .collect::<Option<Vec<_>>>()
            .map(|texts| texts.join(",")),
        other => claim_text(other),
    }
}

fn forbidden(message: &str) -> Result<Decision, Error> {
    let reply = Reply::json(
        403,
        &serde_json::json!({ "error": "forbidden", "message": message }),
    )?
    .header("www-authenticate", "Bearer error=\"insufficient_scope\"");
    Ok(Decision::Respond(reply))
}

wasmgate_sdk::export!(JwtAuth);
