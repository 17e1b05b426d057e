//! How an upstream copes with targets that fail: active health checks
//! (`[upstreams.NAME.health_check]`), the circuit breaker and its fallback
//! (`[upstreams.NAME.circuit_breaker]`) and retries (`[upstreams.NAME.retry]`).

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;

/// `[upstreams.NAME.health_check]`: each target is probed every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http`: a GET of `path`, healthy when its status is in `expect_status`; `tcp`: a
    /// connection (and TLS handshake, for an `https://` target) that opens.
    #[serde(default, rename = "type")]
    pub kind: CheckKind,
    #[serde(default = "slash_health")]
    pub path: String,
    #[serde(default = "two_seconds")]
    pub interval_ms: u64,
    /// Longest a probe may take, connect included.
    #[serde(default = "one_second")]
    pub timeout_ms: u64,
    /// Probes in a row that bring a target that is down back up.
    #[serde(default = "two")]
    pub healthy_after: u32,
    /// Probes in a row that take a target that is up down.
    #[serde(default = "three")]
    pub unhealthy_after: u32,
    #[serde(default = "ok_statuses")]
    pub expect_status: StatusRanges,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    #[default]
    Http,
    Tcp,
}

/// Statuses as `"200-399"`, `"200"` or `"200, 204, 300-302"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StatusRanges(pub Vec<(u16, u16)>);

impl StatusRanges {
    pub fn contains(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s))
    }
}

impl TryFrom<String> for StatusRanges {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let status = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!("`{}` is not a status from 100 to 599", t.trim())),
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => (status(lo)?, status(hi)?),
                None => (status(part)?, status(part)?),
            };
            if range.0 > range.1 {
                return Err(format!("`{}` is an empty range", part.trim()));
            }
            ranges.push(range);
        }
        Ok(Self(ranges))
    }
}

/// `[upstreams.NAME.circuit_breaker]`: when too many requests fail, the upstream is not sent
/// any for a while.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// The share of failed requests, over `window_ms`, that opens the circuit.
    #[serde(default = "half")]
    pub failure_ratio: f64,
    /// Fewer requests than this in the window never open it.
    #[serde(default = "twenty")]
    pub min_requests: u32,
    #[serde(default = "ten_seconds")]
    pub window_ms: u64,
    /// How long it stays open before probes are let through.
    #[serde(default = "thirty_seconds")]
    pub open_ms: u64,
    /// Probes that must all succeed, half-open, to close it again.
    #[serde(default = "three")]
    pub half_open_requests: u32,
    /// The answer while the circuit is open or no target is usable; a 503 JSON error when
    /// unset.
    #[serde(default)]
    pub fallback: Option<Fallback>,
}

/// A fixed response: `{ status = 503, headers = { … }, body = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    #[serde(default = "service_unavailable")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

impl Fallback {
    /// The status and headers, checked: what is wrong, if anything.
    pub fn parts(&self) -> Result<(StatusCode, Vec<(HeaderName, HeaderValue)>), String> {
        let status = StatusCode::from_u16(self.status)
            .ok()
            .filter(|s| !s.is_informational())
            .ok_or_else(|| format!("status {} is not a final status", self.status))?;
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("`{k}` is not a header name"))?;
                let value = HeaderValue::from_str(v)
                    .map_err(|_| format!("the value of `{k}` is not a header value"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        Ok((status, headers))
    }
}

/// `[upstreams.NAME.retry]`: failed attempts tried again, on another target when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra tries after the first.
    #[serde(default = "two")]
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// The methods retried after the request was sent (one that never left, for a connect
    /// error, is retried whatever its method).
    #[serde(default = "idempotent_methods")]
    pub methods: Vec<String>,
    /// The base of the backoff between tries: a random wait up to `backoff_ms × 2^(try - 1)`.
    #[serde(default = "twenty_five")]
    pub backoff_ms: u64,
    /// Retries never exceed this share of the upstream's requests over the last 10 seconds…
    #[serde(default = "twenty")]
    pub budget_percent: u32,
    /// …beyond this many a second, which a quiet upstream may always make.
    #[serde(default = "three")]
    pub min_retries_per_second: u32,
}

impl RetryConfig {
    /// The methods, parsed.
    pub fn parsed_methods(&self) -> Result<Vec<Method>, String> {
        self.methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("`{m}` is not a method"))
            })
            .collect()
    }
}

/// What a retry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RetryOn {
    /// The connection (or its TLS handshake) could not be made: nothing was sent.
    Connect,
    /// The connection broke, or the response was malformed, before the response head.
    Reset,
    /// No response head within the upstream's `timeout_ms`.
    Timeout,
    /// A response with this status.
    Status(u16),
}

impl TryFrom<String> for RetryOn {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "connect" => Ok(Self::Connect),
            "reset" => Ok(Self::Reset),
            "timeout" => Ok(Self::Timeout),
            _ => match s.parse::<u16>() {
                Ok(n) if (500..=599).contains(&n) => Ok(Self::Status(n)),
                _ => Err(format!(
                    "`{s}` is not one of \"connect\", \"reset\", \"timeout\" and a 5xx status"
                )),
            },
        }
    }
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::Connect,
        RetryOn::Reset,
        RetryOn::Timeout,
        RetryOn::Status(502),
        RetryOn::Status(503),
        RetryOn::Status(504),
    ]
}
fn idempotent_methods() -> Vec<String> {
    ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
        .map(String::from)
        .into()
}
fn slash_health() -> String {
    "/health".into()
}
fn ok_statuses() -> StatusRanges {
    StatusRanges(vec![(200, 399)])
}
fn service_unavailable() -> u16 {
    503
}
fn half() -> f64 {
    0.5
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn twenty() -> u32 {
    20
}
fn twenty_five() -> u64 {
    25
}
fn one_second() -> u64 {
    1_000
}
pub(crate) fn two_seconds() -> u64 {
    2_000
}
fn ten_seconds() -> u64 {
    10_000
}
fn thirty_seconds() -> u64 {
    30_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_conditions_parse_or_say_why_not() {
        let r = StatusRanges::try_from("200, 204,300-302".to_owned()).unwrap();
        assert_eq!(r.0, [(200, 200), (204, 204), (300, 302)]);
        assert!(r.contains(StatusCode::from_u16(301).unwrap()));
        assert!(!r.contains(StatusCode::from_u16(303).unwrap()));
        for (bad, says) in [
            ("", "is not a status"),
            ("200-", "is not a status"),
            ("399-200", "empty range"),
            ("700", "100 to 599"),
        ] {
            let e = StatusRanges::try_from(bad.to_owned()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            RetryOn::try_from("503".to_owned()),
            Ok(RetryOn::Status(503))
        );
        assert!(RetryOn::try_from("404".to_owned()).is_err());
        assert!(RetryOn::try_from("always".to_owned()).is_err());
        let f = Fallback {
            status: 503,
            headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
            body: "{}".into(),
        };
        assert_eq!(f.parts().unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
        let f = Fallback { status: 101, ..f };
        assert!(f.parts().unwrap_err().contains("final"));
    }
}
