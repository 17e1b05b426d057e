//! An upstream's targets and how requests are spread over them: `targets` entries (a URL, or
//! a table with a weight), `balance` and `hash_on`, and which targets are left out
//! (`[upstreams.NAME.passive]`), where targets are found (`[upstreams.NAME.discovery]`,
//! `[dns]`), and the `Host` they are sent (`host_header`).

use std::fmt;

use std::net::SocketAddr;
use std::path::PathBuf;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

/// The heaviest weight a target may have.
pub const MAX_WEIGHT: u32 = 1000;

/// One `targets` entry: `"http://10.0.0.1:9001"`, or `{ url = "...", weight = 3 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub url: String,
    /// Its share of requests, relative to the other targets' (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> Visitor<'de> for Entry {
            type Value = TargetConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a URL, or a table such as { url = "http://10.0.0.1:9001", weight = 3 }"#,
                )
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig {
                    url: s.to_owned(),
                    weight: 1,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    url: String,
                    #[serde(default = "one")]
                    weight: u32,
                }
                fn one() -> u32 {
                    1
                }
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetConfig {
                    url: t.url,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(Entry)
    }
}

/// How an upstream picks a target for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin (nginx's): by weight, and interleaved.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight for its weight.
    LeastConnections,
    /// Two targets drawn at random by weight; the one with fewer requests in flight.
    Random,
    /// Consistent hashing of `hash_on`: the same key goes to the same target, and a target
    /// added or removed moves only its own share of keys.
    Hash,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HashOn {
    /// The client's address (the real one, behind trusted proxies).
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// A var a plugin set earlier in the pipeline.
    Var(String),
    /// The request's path.
    Path,
}

impl TryFrom<String> for HashOn {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "client_ip" => return Ok(Self::ClientIp),
            "path" => return Ok(Self::Path),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("`{name}` is not a header name"));
        }
        if let Some(name) = s.strip_prefix("var:") {
            if name.is_empty() {
                return Err("`var:` needs a var's name".into());
            }
            return Ok(Self::Var(name.to_owned()));
        }
        Err(format!(
            "`{s}` is not one of \"client_ip\", \"header:NAME\", \"var:NAME\" and \"path\""
        ))
    }
}

/// `[upstreams.NAME.passive]`: outlier ejection from real traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Consecutive failures (connect errors, resets, timeouts, 5xx) that eject a target.
    #[serde(default = "five")]
    pub max_failures: u32,
    /// How long a target is out the first time.
    #[serde(default = "thirty_seconds")]
    pub eject_ms: u64,
    /// The longest it is out, however often it fails again.
    #[serde(default = "five_minutes")]
    pub max_eject_ms: u64,
    /// The largest share of the targets out at once (one may always be, of two or more).
    #[serde(default = "fifty")]
    pub max_ejected_percent: u32,
}

/// `[upstreams.NAME.discovery]`: targets that change without a reload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Host names in `targets` are resolved again this often, and every address they resolve
    /// to is a target (with its entry's weight). Off when unset.
    #[serde(default)]
    pub dns_refresh_ms: Option<u64>,
    /// A JSON list of targets (each as in `targets`), watched: a change takes effect with no
    /// reload. It replaces `targets`, which must then be empty.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[dns]`: the resolver discovery uses; the system's when absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers, as `address:port`.
    pub servers: Vec<SocketAddr>,
    /// Longest wait for an answer.
    #[serde(default = "crate::failure::two_seconds")]
    pub timeout_ms: u64,
}

/// The `Host` an upstream is sent: `"target"` (the target's own host and port), `"preserve"`
/// (the client's, as nginx's `proxy_set_header Host $host` and Kong's `preserve_host`), or a
/// fixed value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HostHeader {
    #[default]
    Target,
    Preserve,
    Value(HeaderValue),
}

impl TryFrom<String> for HostHeader {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "target" => Ok(Self::Target),
            "preserve" => Ok(Self::Preserve),
            _ if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'/' || b >= 0x7f) => {
                Err(format!(
                    "`{s}` is neither \"target\", \"preserve\" nor a host name such as api.example.com"
                ))
            }
            _ => HeaderValue::from_str(&s)
                .map(Self::Value)
                .map_err(|_| format!("`{s}` is not a header value")),
        }
    }
}

fn five() -> u32 {
    5
}
fn thirty_seconds() -> u64 {
    30_000
}
fn five_minutes() -> u64 {
    300_000
}
fn fifty() -> u32 {
    50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Up {
        targets: Vec<TargetConfig>,
        hash_on: Option<HashOn>,
    }

    #[test]
    fn a_target_is_a_url_or_a_table_and_hash_on_names_its_source() {
        let up: Up = toml::from_str(
            r#"
            targets = [{ url = "http://a:1", weight = 3 }, "http://b:1", { url = "http://c:1" }]
            hash_on = "header:X-User"
            "#,
        )
        .unwrap();
        let weights: Vec<u32> = up.targets.iter().map(|t| t.weight).collect();
        assert_eq!(weights, [3, 1, 1]);
        assert_eq!(up.targets[1].url, "http://b:1");
        assert_eq!(
            up.hash_on,
            Some(HashOn::Header(HeaderName::from_static("x-user")))
        );
        for (bad, says) in [
            (
                r#"targets = [{ url = "http://a:1", wieght = 3 }]"#,
                "wieght",
            ),
            (r#"targets = [{ weight = 3 }]"#, "url"),
            (r#"targets = [3]"#, "a URL, or a table"),
            ("targets = []\nhash_on = \"cookie\"", "is not one of"),
            (
                "targets = []\nhash_on = \"header:a b\"",
                "not a header name",
            ),
            ("targets = []\nhash_on = \"var:\"", "needs a var"),
        ] {
            let e = toml::from_str::<Up>(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
