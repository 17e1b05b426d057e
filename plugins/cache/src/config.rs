//! The config as the operator writes it, and the settings it becomes at init: prefix rules
//! sorted longest first, vary names lower-cased, seconds turned into milliseconds, so a
//! request costs no parsing.

use serde::Deserialize;
use wasmgate_sdk::ConfigError;
use wasmgate_sdk::rules::http::is_header_name;
use wasmgate_sdk::rules::kv;

/// The longest `ttl_s`, `default_ttl_s` and `stale_if_error_s` accepted: a year.
const MAX_SECONDS: u64 = 365 * 24 * 3600;
/// The largest `max_entry_bytes`: the most `kv_max_value_bytes` (on the plugin's table) may
/// let kv take as one value.
const MAX_ENTRY_BYTES: u64 = kv::MAX_VALUE_BYTES_LIMIT as u64;
/// The default `max_entry_bytes`: the default `kv_max_value_bytes` less 4 KiB for the status,
/// headers and times stored with the body.
const DEFAULT_MAX_ENTRY_BYTES: u64 = (kv::MAX_VALUE_BYTES - 4 * 1024) as u64;
/// Each `vary` entry is a host call on every request.
const MAX_VARY: usize = 16;
/// The statuses RFC 9110 §15.1 lets a cache store without explicit freshness, less 206
/// (a part of a representation is not an answer to the next request).
const CACHEABLE_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
/// The default `statuses`.
const DEFAULT_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

/// The plugin's config; see the README.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// TTLs per path prefix; the longest matching prefix wins.
    #[serde(default)]
    pub paths: Vec<PathConfig>,
    /// The TTL of paths no prefix matches; unset, they are not cached.
    pub default_ttl_s: Option<u64>,
    /// Request headers (and `var:NAME` variables) that are part of the key.
    #[serde(default)]
    pub vary: Vec<String>,
    /// The largest body stored; a larger response streams through uncached.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// How long past its freshness an entry may answer when the upstream fails.
    #[serde(default)]
    pub stale_if_error_s: u64,
    /// What a client's `Cache-Control: no-cache` does.
    #[serde(default)]
    pub client_no_cache: ClientNoCache,
    /// What happens to a response with `Set-Cookie`.
    #[serde(default)]
    pub set_cookie: SetCookie,
    /// The statuses stored.
    pub statuses: Option<Vec<u16>>,
}

fn default_max_entry_bytes() -> u64 {
    DEFAULT_MAX_ENTRY_BYTES
}

/// One `paths` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    pub prefix: String,
    pub ttl_s: u64,
}

/// What a request with `Cache-Control: no-cache` (or `max-age=0`) gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientNoCache {
    /// Not answered from the cache; the upstream's response is stored, replacing the entry.
    #[default]
    Refresh,
    /// Not answered from the cache, and the response is not stored.
    Bypass,
    /// The directive is ignored: the request may be a hit.
    Ignore,
}

/// What a response with `Set-Cookie` gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetCookie {
    /// Not stored.
    #[default]
    NotStored,
    /// Stored without its `Set-Cookie` (the client of that miss still gets it).
    Strip,
}

/// One part of the key beyond method, host, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// A request header, lower-case: every value, in order.
    Header(String),
    /// A pipeline variable an earlier plugin set.
    Var(String),
}

/// A TTL for the paths under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    prefix: String,
    ttl_ms: u64,
}

/// The config, checked and ready for requests.
#[derive(Debug)]
pub struct Settings {
    /// Longest prefix first, so the first match is the longest.
    rules: Vec<Rule>,
    default_ttl_ms: u64,
    pub vary: Vec<Vary>,
    /// Whether the key holds the client's identity (`authorization` or a variable), so a
    /// response to a request with `Authorization` may be stored as any other.
    pub keys_identity: bool,
    pub max_entry_bytes: usize,
    pub stale_ms: u64,
    pub client_no_cache: ClientNoCache,
    pub set_cookie: SetCookie,
    statuses: Vec<u16>,
}

impl Settings {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let seconds = |key: String, s: u64| {
            if s > MAX_SECONDS {
                Err(ConfigError::at(
                    key,
                    format!("at most {MAX_SECONDS} (a year)"),
                ))
            } else {
                Ok(s * 1000)
            }
        };

        let mut rules: Vec<Rule> = Vec::with_capacity(config.paths.len());
        for (i, p) in config.paths.iter().enumerate() {
            if !is_prefix(&p.prefix) {
                return Err(ConfigError::at(
                    format!("paths[{i}].prefix"),
                    "must start with `/` and hold visible ASCII only, without `?` or `#`",
                ));
            }
            if let Some(j) = rules.iter().position(|r| r.prefix == p.prefix) {
                return Err(ConfigError::at(
                    format!("paths[{i}].prefix"),
                    format!("repeats paths[{j}].prefix"),
                ));
            }
            let ttl_ms = seconds(format!("paths[{i}].ttl_s"), p.ttl_s)?;
            rules.push(Rule {
                prefix: p.prefix.clone(),
                ttl_ms,
            });
        }
        // Stable: equal lengths keep the config's order (and cannot both match one path).
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));

        let default_ttl_ms = match config.default_ttl_s {
            Some(s) => seconds("default_ttl_s".into(), s)?,
            None => 0,
        };
        if default_ttl_ms == 0 && rules.iter().all(|r| r.ttl_ms == 0) {
            return Err(ConfigError::at(
                "paths",
                "nothing would be cached: give `paths` with a `ttl_s` above 0, or `default_ttl_s`",
            ));
        }

        if config.vary.len() > MAX_VARY {
            return Err(ConfigError::at(
                "vary",
                format!("at most {MAX_VARY} entries"),
            ));
        }
        let mut vary: Vec<Vary> = Vec::with_capacity(config.vary.len());
        for (i, spec) in config.vary.iter().enumerate() {
            let v = match spec.strip_prefix("var:") {
                Some(name) if !name.is_empty() && !name.chars().any(char::is_control) => {
                    Vary::Var(name.to_owned())
                }
                None if is_header_name(spec) => Vary::Header(spec.to_ascii_lowercase()),
                _ => {
                    return Err(ConfigError::at(
                        format!("vary[{i}]"),
                        "must be a header name or `var:NAME`",
                    ));
                }
            };
            if let Some(j) = vary.iter().position(|w| *w == v) {
                return Err(ConfigError::at(
                    format!("vary[{i}]"),
                    format!("repeats vary[{j}]"),
                ));
            }
            vary.push(v);
        }
        let keys_identity = vary
            .iter()
            .any(|v| matches!(v, Vary::Var(_)) || *v == Vary::Header("authorization".into()));

        if !(1..=MAX_ENTRY_BYTES).contains(&config.max_entry_bytes) {
            return Err(ConfigError::at(
                "max_entry_bytes",
                format!("must be 1 to {MAX_ENTRY_BYTES} (the most kv_max_value_bytes allows)"),
            ));
        }
        let stale_ms = seconds("stale_if_error_s".into(), config.stale_if_error_s)?;

        let statuses = match config.statuses {
            None => DEFAULT_STATUSES.to_vec(),
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::at("statuses", "must hold at least one status"));
                }
                for (i, s) in list.iter().enumerate() {
                    if !CACHEABLE_STATUSES.contains(s) {
                        return Err(ConfigError::at(
                            format!("statuses[{i}]"),
                            format!("{s} is not one of {CACHEABLE_STATUSES:?}"),
                        ));
                    }
                    if let Some(j) = list[..i].iter().position(|t| t == s) {
                        return Err(ConfigError::at(
                            format!("statuses[{i}]"),
                            format!("repeats statuses[{j}]"),
                        ));
                    }
                }
                list
            }
        };

        Ok(Self {
            rules,
            default_ttl_ms,
            vary,
            keys_identity,
            max_entry_bytes: usize::try_from(config.max_entry_bytes).unwrap_or(usize::MAX),
            stale_ms,
            client_no_cache: config.client_no_cache,
            set_cookie: config.set_cookie,
            statuses,
        })
    }

    /// The TTL of a path, in milliseconds: its longest matching prefix's, else the default;
    /// `None` when that is 0 (not cached).
    pub fn ttl_ms(&self, path: &str) -> Option<u64> {
        let ttl = self
            .rules
            .iter()
            .find(|r| under(path, &r.prefix))
            .map_or(self.default_ttl_ms, |r| r.ttl_ms);
        (ttl > 0).then_some(ttl)
    }

    pub fn stores_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }

    /// Whether a response's `Vary` names only headers the key holds.
    pub fn keys_header(&self, name: &str) -> bool {
        self.vary
            .iter()
            .any(|v| matches!(v, Vary::Header(h) if h.eq_ignore_ascii_case(name)))
    }
}

/// A path prefix: `/`, then visible ASCII without `?` or `#` (the paths it is matched with are
/// the gateway's normalised, still percent-encoded ones).
fn is_prefix(p: &str) -> bool {
    p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// Whether `path` is under `prefix` at a segment boundary, as routes match: `/api/users` holds
/// `/api/users` and `/api/users/7`, not `/api/usersx`.
fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(under("/api/users", "/api/users"));
        assert!(under("/api/users/7", "/api/users"));
        assert!(!under("/api/usersx", "/api/users"));
        assert!(!under("/api", "/api/users"));
        assert!(under("/api/x", "/api/"));
        assert!(!under("/api", "/api/"));
        assert!(under("/anything", "/"));
    }
}
