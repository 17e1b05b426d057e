//! `[state]`: where the rate-limit and kv capabilities keep their state, this process's memory
//! or Redis, shared by every gateway pointed at it.

use serde::Deserialize;

/// `[state]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub backend: StateBackend,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// Each process keeps its own limits and kv entries.
    #[default]
    Memory,
    /// Limits and kv entries live in Redis (or Valkey), shared by every gateway using it.
    Redis,
}

/// `[state.redis]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Connections kept open; the requests of every worker share them, pipelined.
    #[serde(default = "RedisConfig::default_pool_size")]
    pub pool_size: usize,
    /// The longest a command may take; past it `on_unavailable` applies.
    #[serde(default = "RedisConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Put before every key the gateway writes.
    #[serde(default = "RedisConfig::default_key_prefix")]
    pub key_prefix: String,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// Approximate rate limits: each gateway counts on its own and settles with Redis every
    /// `sync_ms`, instead of a round trip per check.
    #[serde(default)]
    pub sync_ms: Option<u64>,
    /// A CA certificate (PEM) to verify a `rediss://` server with, instead of the system's
    /// roots; relative to the config file.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Most connections `pool_size` may ask for.
pub const MAX_REDIS_POOL: usize = 64;
/// Longest `timeout_ms`: a request is never held longer than this for its state.
pub const MAX_REDIS_TIMEOUT_MS: u64 = 5_000;
/// Shortest and longest `sync_ms`.
pub const SYNC_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=60_000;
/// Longest `key_prefix`, in bytes.
pub const MAX_KEY_PREFIX_BYTES: usize = 128;

impl RedisConfig {
    fn default_pool_size() -> usize {
        8
    }
    fn default_timeout_ms() -> u64 {
        20
    }
    fn default_key_prefix() -> String {
        "wasmgate:".into()
    }
}

/// What a check or kv call does when Redis cannot answer within `timeout_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Use this process's own state, as the memory backend does.
    #[default]
    Local,
    /// Let every rate-limit check pass; kv reads miss and writes are not stored.
    Allow,
    /// Refuse every rate-limit check; kv reads miss and writes are not stored.
    Deny,
}

impl StateConfig {
    /// Every problem with `[state]`, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(r) = &self.redis else {
            if self.backend == StateBackend::Redis {
                out.push(
                    "state.backend: \"redis\" needs a [state.redis] table with its url".into(),
                );
            }
            return out;
        };
        if self.backend == StateBackend::Memory {
            out.push(
                "state.redis: set, but state.backend is \"memory\"; set backend = \"redis\" to use it"
                    .into(),
            );
        }
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
            out.push(format!(
                "state.redis.url: `{}` is not a redis:// or rediss:// URL",
                redact_redis_url(&r.url)
            ));
        }
        if r.ca_file.is_some() && !r.url.starts_with("rediss://") {
            out.push("state.redis.ca_file: it is for a rediss:// url".into());
        }
        if !(1..=MAX_REDIS_POOL).contains(&r.pool_size) {
            out.push(format!(
                "state.redis.pool_size: {} is not 1 to {MAX_REDIS_POOL}",
                r.pool_size
            ));
        }
        if !(1..=MAX_REDIS_TIMEOUT_MS).contains(&r.timeout_ms) {
            out.push(format!(
                "state.redis.timeout_ms: {} is not 1 to {MAX_REDIS_TIMEOUT_MS}",
                r.timeout_ms
            ));
        }
        if r.key_prefix.len() > MAX_KEY_PREFIX_BYTES
            || r.key_prefix.bytes().any(|b| b.is_ascii_control())
        {
            out.push(format!(
                "state.redis.key_prefix: at most {MAX_KEY_PREFIX_BYTES} bytes, without control characters"
            ));
        }
        if let Some(ms) = r.sync_ms
            && !SYNC_MS_RANGE.contains(&ms)
        {
            out.push(format!(
                "state.redis.sync_ms: {ms} is not {} to {}",
                SYNC_MS_RANGE.start(),
                SYNC_MS_RANGE.end()
            ));
        }
        out
    }

    /// The Redis settings when the backend is Redis.
    pub fn redis(&self) -> Option<&RedisConfig> {
        match self.backend {
            StateBackend::Redis => self.redis.as_ref(),
            StateBackend::Memory => None,
        }
    }
}

/// A Redis URL with its password, if any, replaced by `***`, for messages and logs.
pub fn redact_redis_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{shown}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(state: &str) -> String {
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{state}");
        match crate::Config::parse(&text, std::path::Path::new("gw.toml")) {
            Ok(c) => format!("ok {:?}", c.state.redis().map(|r| r.url.clone())),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_state_table_is_checked_key_by_key() {
        assert_eq!(problems(""), "ok None");
        assert_eq!(
            problems(
                "[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://127.0.0.1:6379/0\""
            ),
            "ok Some(\"redis://127.0.0.1:6379/0\")"
        );
        for (state, says) in [
            (
                "[state]\nbackend = \"redis\"",
                "state.backend: \"redis\" needs a [state.redis] table",
            ),
            ("[state]\nbackend = \"etcd\"", "unknown variant `etcd`"),
            (
                "[state.redis]\nurl = \"redis://h\"",
                "state.redis: set, but state.backend is \"memory\"",
            ),
            (
                "[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"http://u:pw@h\"",
                "state.redis.url: `http://u:***@h` is not a redis:// or rediss:// URL",
            ),
            (
                "[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://h\"\npool_size = 0\ntimeout_ms = 0\nsync_ms = 1",
                "state.redis.pool_size: 0 is not 1 to 64; state.redis.timeout_ms: 0 is not 1 to 5000; state.redis.sync_ms: 1 is not 10 to 60000",
            ),
            (
                "[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://h\"\nca_file = \"ca.pem\"",
                "state.redis.ca_file: it is for a rediss:// url",
            ),
            (
                "[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://h\"\non_unavailable = \"retry\"",
                "unknown variant `retry`",
            ),
            (
                "[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://h\"\npoolsize = 3",
                "unknown field `poolsize`",
            ),
        ] {
            let got = problems(state);
            assert!(got.contains(says), "{state:?}: {got}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact_redis_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(
            redact_redis_url("redis://:s3cret@host"),
            "redis://:***@host"
        );
        assert_eq!(redact_redis_url("rediss://tok@host"), "rediss://***@host");
        assert_eq!(
            redact_redis_url("redis://host:6379/0"),
            "redis://host:6379/0"
        );
        assert_eq!(redact_redis_url("redis://host/a@b"), "redis://host/a@b");
    }
}
