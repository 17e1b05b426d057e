//! `rate-limit`: refuses requests over one or more rate limits with 429, on GCRA limiters the
//! gateway holds, so every instance, worker and connection shares the same buckets.
//!
//! The config is checked and turned into quotas and a key source once, at init; a request
//! costs one key lookup and one host call per limit. See README.md for the config reference
//! and the sharing semantics.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmgate_sdk::log::{self, Level};
use wasmgate_sdk::rate_limit::{Limiter, Quota, Verdict};
use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Registration, Reply, Request};

/// Each limit is one host call per request; a handful is plenty for real policies.
const MAX_LIMITS: usize = 8;
/// Longest `scope`, header name or var name accepted in the config.
const MAX_NAME: usize = 256;
/// The host refuses longer keys and limiter names (as a refusal, for keys), so longer ones
/// are replaced by their SHA-256.
const MAX_HOST_KEY: usize = 1024;
/// Carries the numbers of the tightest limit so far between several rate-limit entries on one
/// route.
const STATUS_VAR: &str = "rate_limit.status";
/// The `RateLimit-*` headers, each set from a variable holding its value (see `on_request`).
const HEADER_VARS: [(&str, &str); 3] = [
    ("ratelimit-limit", "rate_limit.limit"),
    ("ratelimit-remaining", "rate_limit.remaining"),
    ("ratelimit-reset", "rate_limit.reset"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn millis(self) -> u64 {
        match self {
            Per::Second => 1_000,
            Per::Minute => 60_000,
            Per::Hour => 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// Answer 400: a client cannot dodge a per-key limit by leaving the key out.
    #[default]
    Reject,
    /// Limit the request by its client IP instead, in buckets of their own.
    ClientIp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub rate: u32,
    pub per: Per,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub rate: Option<u32>,
    pub per: Option<Per>,
    pub burst: Option<u32>,
    pub limits: Option<Vec<LimitConfig>>,
    #[serde(default = "default_key")]
    pub key: String,
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    pub scope: Option<String>,
}

fn default_key() -> String {
    "client_ip".into()
}

/// Where a request's bucket key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySource {
    ClientIp,
    /// Lower-case header name.
    Header(String),
    Var(String),
    Route,
    Global,
}

impl KeySource {
    fn parse(spec: &str) -> Result<Self, String> {
        let bad_name = |what: &str| {
            format!("`{spec}`: the {what} name must be 1 to {MAX_NAME} bytes of valid characters")
        };
        match spec {
            "client_ip" => Ok(Self::ClientIp),
            "route" => Ok(Self::Route),
            "global" => Ok(Self::Global),
            _ => match spec.split_once(':') {
                Some(("header", name)) => {
                    if name.len() <= MAX_NAME && is_token(name) {
                        Ok(Self::Header(name.to_ascii_lowercase()))
                    } else {
                        Err(bad_name("header"))
                    }
                }
                Some(("var", name)) => {
                    if !name.is_empty()
                        && name.len() <= MAX_NAME
                        && !name.chars().any(char::is_control)
                    {
                        Ok(Self::Var(name.to_owned()))
                    } else {
                        Err(bad_name("var"))
                    }
                }
                _ => Err(format!(
                    "unknown key `{spec}`: expected client_ip, header:NAME, var:NAME, route or global"
                )),
            },
        }
    }

    /// The canonical spelling, part of the limiter name so differently keyed limits never
    /// share buckets.
    fn spec(&self) -> String {
        match self {
            Self::ClientIp => "client_ip".into(),
            Self::Header(name) => format!("header:{name}"),
            Self::Var(name) => format!("var:{name}"),
            Self::Route => "route".into(),
            Self::Global => "global".into(),
        }
    }

    fn can_be_missing(&self) -> bool {
        matches!(self, Self::Header(_) | Self::Var(_))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks one limit; `at` is the key prefix for errors (`""` or `limits[1].`).
fn quota(rate: u32, per: Per, burst: Option<u32>, at: &str) -> Result<Quota, ConfigError> {
    if rate == 0 {
        return Err(ConfigError::at(format!("{at}rate"), "must be at least 1"));
    }
    if burst == Some(0) {
        return Err(ConfigError::at(format!("{at}burst"), "must be at least 1"));
    }
    Ok(Quota {
        count: rate,
        period_ms: per.millis(),
        burst: burst.unwrap_or(rate),
    })
}

fn quotas(config: &Config) -> Result<Vec<Quota>, ConfigError> {
    let single = config.rate.is_some() || config.per.is_some() || config.burst.is_some();
    let Some(limits) = &config.limits else {
        let Some(rate) = config.rate else {
            let message = if single {
                "required with `per` and `burst`"
            } else {
                "no limit configured: set `rate` and `per` (and optionally `burst`), or `limits`"
            };
            return Err(ConfigError::at("rate", message));
        };
        let Some(per) = config.per else {
            return Err(ConfigError::at(
                "per",
                "required with `rate`: second, minute or hour",
            ));
        };
        return Ok(vec![quota(rate, per, config.burst, "")?]);
    };
    if single {
        return Err(ConfigError::at(
            "limits",
            "use either `limits` or `rate`/`per`/`burst`, not both",
        ));
    }
    if limits.is_empty() {
        return Err(ConfigError::at("limits", "must hold at least one limit"));
    }
    if limits.len() > MAX_LIMITS {
        return Err(ConfigError::at(
            "limits",
            format!("at most {MAX_LIMITS} limits"),
        ));
    }
    let mut quotas: Vec<Quota> = Vec::with_capacity(limits.len());
    for (i, l) in limits.iter().enumerate() {
        let q = quota(l.rate, l.per, l.burst, &format!("limits[{i}]."))?;
        if let Some(j) = quotas.iter().position(|earlier| *earlier == q) {
            // The same quota under the same name is the same bucket: it would be charged twice.
            return Err(ConfigError::at(
                format!("limits[{i}]"),
                format!("repeats limits[{j}]"),
            ));
        }
        quotas.push(q);
    }
    // A refused request keeps the tokens it took from the limits checked before the one that
    // refused it (the host cannot give them back). Checking the fastest-refilling limits first
    // means those are the only ones a refusal can charge, and the scarce slow ones are charged
    // only for requests that pass.
    quotas.sort_by_key(|q| (interval_nanos(q), q.burst));
    Ok(quotas)
}

fn interval_nanos(q: &Quota) -> u128 {
    u128::from(q.period_ms) * 1_000_000 / u128::from(q.count)
}

/// A key or limiter name the host accepts: itself, or its SHA-256 when it is too long.
fn bounded(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.len() <= MAX_HOST_KEY {
        return s;
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    Cow::Owned(out)
}

/// What the `RateLimit-*` headers report: the limit closest to refusing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    limit: u32,
    remaining: u32,
    reset_ms: u64,
}

impl Status {
    fn of(v: &Verdict) -> Self {
        Self {
            limit: v.limit,
            remaining: v.remaining,
            reset_ms: v.reset_after_ms,
        }
    }

    /// Fewer requests left is closer to refusing; on a tie, the longer wait to refill.
    fn closer_than(&self, other: &Self) -> bool {
        (self.remaining, std::cmp::Reverse(self.reset_ms))
            < (other.remaining, std::cmp::Reverse(other.reset_ms))
    }

    fn tighter(self, other: Option<Self>) -> Self {
        match other {
            Some(o) if o.closer_than(&self) => o,
            _ => self,
        }
    }

    fn encode(&self) -> String {
        format!("{} {} {}", self.limit, self.remaining, self.reset_ms)
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let status = Self {
            limit: parts.next()?.parse().ok()?,
            remaining: parts.next()?.parse().ok()?,
            reset_ms: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(status)
    }

    fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", seconds_up(self.reset_ms).to_string()),
        ]
    }
}

fn seconds_up(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// The limiters of one route, opened on its first request (the route name is not known at
/// init).
#[derive(Debug)]
struct Buckets {
    route: String,
    main: Vec<Limiter>,
    /// For requests without a key under `on_missing_key = "client_ip"`: buckets of their own,
    /// so a client IP never lands in the bucket of a header or var value that spells the same.
    fallback: Vec<Limiter>,
}

#[derive(Debug)]
pub struct RateLimit {
    quotas: Vec<Quota>,
    key: KeySource,
    on_missing_key: OnMissingKey,
    /// The config's `scope`; `None` scopes the limiters to the route.
    scope: Option<String>,
    /// The 400 body for a request without its key.
    missing_body: Vec<u8>,
    buckets: Option<Buckets>,
}

impl RateLimit {
    fn open(&self, route: String) -> Result<Buckets, Error> {
        let scope = match &self.scope {
            Some(scope) => format!("scope={scope}"),
            None => format!("route={route}"),
        };
        let base = format!("{scope}|{}", self.key.spec());
        let open_all = |name: String| -> Result<Vec<Limiter>, Error> {
            let name = bounded(Cow::Owned(name));
            if log::enabled(Level::Debug) {
                log::debug(&format!(
                    "opening {} limiter(s) named `{name}`",
                    self.quotas.len()
                ));
            }
            self.quotas
                .iter()
                .map(|q| {
                    Limiter::open(&name, *q)
                        .map_err(|e| Error::new(format!("opening limiter `{name}`: {e}")))
                })
                .collect()
        };
        let fallback = if self.key.can_be_missing() && self.on_missing_key == OnMissingKey::ClientIp
        {
            open_all(format!("{base}|missing:client_ip"))?
        } else {
            Vec::new()
        };
        Ok(Buckets {
            main: open_all(base)?,
            fallback,
            route,
        })
    }
}

impl Plugin for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let quotas = quotas(&config)?;
        let key = KeySource::parse(&config.key).map_err(|e| ConfigError::at("key", e))?;
        if let Some(scope) = &config.scope
            && (scope.is_empty() || scope.len() > MAX_NAME || scope.chars().any(char::is_control))
        {
            return Err(ConfigError::at(
                "scope",
                format!("must be 1 to {MAX_NAME} bytes without control characters"),
            ));
        }
        let missing_body = serde_json::to_vec(&serde_json::json!({
            "error": "bad_request",
            "message": format!("missing rate limit key ({})", key.spec()),
        }))
        .map_err(|e| ConfigError::new(e.to_string()))?;
        Ok(Self {
            quotas,
            key,
            on_missing_key: config.on_missing_key,
            scope: config.scope,
            missing_body,
            buckets: None,
        })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        if self.buckets.is_none() {
            self.buckets = Some(self.open(req.route())?);
        }
        let Some(buckets) = &self.buckets else {
            return Err("limiters were not opened".into());
        };

        let found: Option<Cow<'_, str>> = match &self.key {
            KeySource::ClientIp => Some(Cow::Owned(req.client_addr())),
            KeySource::Header(name) => req.header(name).filter(|v| !v.is_empty()).map(Cow::Owned),
            KeySource::Var(name) => req.var(name).filter(|v| !v.is_empty()).map(Cow::Owned),
            KeySource::Route => Some(Cow::Borrowed(buckets.route.as_str())),
            KeySource::Global => Some(Cow::Borrowed("")),
        };
        let (key, limiters) = match found {
            Some(key) => (key, &buckets.main),
            None => match self.on_missing_key {
                OnMissingKey::Reject => {
                    let reply = Reply::new(400)
                        .header("content-type", "application/json")
                        .body(self.missing_body.clone());
                    return Ok(Decision::Respond(reply));
                }
                OnMissingKey::ClientIp => (Cow::Owned(req.client_addr()), &buckets.fallback),
            },
        };
        let key = bounded(key);

        let mut status: Option<Status> = None;
        let mut refused = None;
        for limiter in limiters {
            let verdict = limiter.check(&key, 1);
            status = Some(Status::of(&verdict).tighter(status));
            if !verdict.allowed {
                refused = Some(verdict);
                break;
            }
        }
        let Some(mut status) = status else {
            return Ok(Decision::Continue);
        };
        // An earlier rate-limit entry on this route may have reported already: keep whichever
        // is closer to refusing. The first entry queues the response headers, set from
        // variables when the response passes it, last of all the entries: by then the
        // variables hold the tightest numbers of every entry (no response phase needed).
        let earlier = req.var(STATUS_VAR).as_deref().and_then(Status::decode);
        if let Some(earlier) = earlier {
            status = status.tighter(Some(earlier));
        }
        req.set_var(STATUS_VAR, &status.encode());
        for ((_, var), (_, value)) in HEADER_VARS.iter().zip(status.headers()) {
            req.set_var(var, &value);
        }
        if earlier.is_none() {
            for (name, var) in HEADER_VARS {
                req.set_response_header_from_var(name, var)?;
            }
        }

        let Some(refused) = refused else {
            return Ok(Decision::Continue);
        };
        let retry_after = seconds_up(refused.retry_after_ms).max(1);
        let mut reply = Reply::new(429)
            .header("content-type", "application/json")
            .header("retry-after", retry_after.to_string());
        for (name, value) in status.headers() {
            reply = reply.header(name, value);
        }
        let body = format!(
            r#"{{"error":"rate_limited","message":"too many requests","retry_after":{retry_after}}}"#
        );
        Ok(Decision::Respond(reply.body(body)))
    }
}

wasmgate_sdk::export!(RateLimit);

#[cfg(test)]
mod tests;
