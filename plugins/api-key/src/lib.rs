//! `api-key`: authenticates requests by an API key read from a header or the query, checks its
//! expiry and the route's required scopes, takes the key off the request, and hands the
//! consumer and its scopes on to later plugins as vars.
//!
//! Keys come from the config, or from a key file the gateway reads into it (`config_files`),
//! re-read whenever the file changes. Everything is parsed and checked once, at init: a key's
//! digest, its expiry (RFC 3339, to milliseconds), whether it holds the route's scopes, the
//! answers. A request costs reading its key, one lookup (see `keys` for how lookups are kept
//! constant-time), a clock read for a key that expires, and setting two vars. See README.md for
//! the config reference.

mod keys;
mod source;

#[cfg(test)]
mod tests;

use serde::Deserialize;
use serde_json::{Value, json};
use wasmgate_sdk::{
    ConfigError, Decision, Error, Plugin, Registration, Reply, Request, clock, log,
};

use keys::KeyStore;
use source::{Presented, Source};

/// `max_key_bytes` when not given.
pub const DEFAULT_MAX_KEY_BYTES: usize = 512;
/// The largest `max_key_bytes`.
pub const MAX_MAX_KEY_BYTES: usize = 8 * 1024;
/// The most entries in `key_source`.
pub const MAX_SOURCES: usize = 8;
/// `key_source` when not given.
pub const DEFAULT_SOURCE: &str = "header:X-API-Key";
/// How many entries a load warning names before it stops listing them.
const WARN_LIST: usize = 5;

/// One value or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The keys: a list of entries, or a key file's text (JSON or TOML) from `config_files`.
    #[serde(default)]
    pub keys: Option<Value>,
    /// Where the key is read: `header:NAME` or `query:NAME`, or a list tried in order.
    #[serde(default)]
    pub key_source: Option<OneOrMany>,
    /// Scopes a key must all hold on this route.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Longer presented keys are refused without a lookup.
    #[serde(default)]
    pub max_key_bytes: Option<usize>,
    /// The answer to a request without a key.
    #[serde(default)]
    pub on_missing: Option<ReplyConfig>,
    /// The answer to an unknown or expired key, or one without a required scope.
    #[serde(default)]
    pub on_refused: Option<ReplyConfig>,
}

/// A configurable answer: its status and JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: Option<Value>,
}

pub struct ApiKey {
    store: KeyStore,
    sources: Vec<Source>,
    max_key_bytes: usize,
    /// The answers, built once.
    missing: Reply,
    refused: Reply,
}

/// Why a presented key is refused, for the log.
enum Refusal<'a> {
    Unusable(&'static str),
    Unknown,
    Expired(&'a str),
    Scope(&'a str),
}

fn sources(config: Option<OneOrMany>) -> Result<Vec<Source>, ConfigError> {
    let (list, indexed) = match config {
        None => (vec![DEFAULT_SOURCE.to_string()], false),
        Some(OneOrMany::One(s)) => (vec![s], false),
        Some(OneOrMany::Many(list)) => (list, true),
    };
    if list.is_empty() {
        return Err(ConfigError::at("key_source", "must not be an empty list"));
    }
    if list.len() > MAX_SOURCES {
        return Err(ConfigError::at(
            "key_source",
            format!("at most {MAX_SOURCES} sources"),
        ));
    }
    let mut out: Vec<Source> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let at = if indexed {
            format!("key_source[{i}]")
        } else {
            "key_source".to_string()
        };
        let source = Source::parse(text).map_err(|e| ConfigError::at(&at, e))?;
        if out.contains(&source) {
            return Err(ConfigError::at(
                at,
                format!("`{}` is listed twice", source.spec()),
            ));
        }
        out.push(source);
    }
    Ok(out)
}

/// Builds an answer from its config: the status must be an error (400 to 599); the body is any
/// JSON value (a table in TOML), sent as it is.
fn reply(
    key: &str,
    config: Option<ReplyConfig>,
    default_status: u16,
    default_body: Value,
) -> Result<Reply, ConfigError> {
    let config = config.unwrap_or(ReplyConfig {
        status: None,
        body: None,
    });
    let status = config.status.unwrap_or(default_status);
    if !(400..=599).contains(&status) {
        return Err(ConfigError::at(
            format!("{key}.status"),
            "must be from 400 to 599",
        ));
    }
    let body = config.body.unwrap_or(default_body);
    let mut reply = Reply::json(status, &body)
        .map_err(|e| ConfigError::at(format!("{key}.body"), e.to_string()))?;
    if status == 401 {
        // RFC 9110 §15.5.2: a 401 carries a challenge.
        reply = reply.header("www-authenticate", "ApiKey");
    }
    Ok(reply)
}

/// The host's wall clock, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    i64::try_from(clock::now_millis()).unwrap_or(i64::MAX)
}

/// `keys[0], keys[3], ...`, for a warning.
fn listed(entries: &[usize]) -> String {
    let mut out: Vec<String> = entries
        .iter()
        .take(WARN_LIST)
        .map(|i| format!("keys[{i}]"))
        .collect();
    if entries.len() > WARN_LIST {
        out.push(format!("and {} more", entries.len() - WARN_LIST));
    }
    out.join(", ")
}

impl Plugin for ApiKey {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let sources = sources(c.key_source)?;
        let max_key_bytes = c.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES);
        if !(1..=MAX_MAX_KEY_BYTES).contains(&max_key_bytes) {
            return Err(ConfigError::at(
                "max_key_bytes",
                format!("must be from 1 to {MAX_MAX_KEY_BYTES}"),
            ));
        }
        let required = keys::scopes("required_scopes", c.required_scopes)?;
        let loaded = keys::load(c.keys, &required, max_key_bytes, now_ms())?;
        let missing = reply(
            "on_missing",
            c.on_missing,
            401,
            json!({ "error": "missing_api_key", "message": "an API key is required" }),
        )?;
        let refused = reply(
            "on_refused",
            c.on_refused,
            403,
            json!({ "error": "invalid_api_key", "message": "the API key is not valid for this request" }),
        )?;

        if !loaded.plain.is_empty() {
            log::warn(&format!(
                "{}: a plain `key` is for development only; give `key_sha256` (the SHA-256 of the key, in hex) instead",
                listed(&loaded.plain)
            ));
        }
        if !loaded.expired.is_empty() {
            log::warn(&format!(
                "{}: expired already; refused until removed or renewed",
                listed(&loaded.expired)
            ));
        }
        if loaded.store.len() == 0 {
            log::warn("no keys: every request is refused");
        }
        Ok(Self {
            store: loaded.store,
            sources,
            max_key_bytes,
            missing,
            refused,
        })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let presented = self
            .sources
            .iter()
            .map(|s| s.read(req, self.max_key_bytes))
            .find(|p| *p != Presented::Missing);
        let key = match presented {
            None | Some(Presented::Missing) => {
                return Ok(Decision::Respond(self.missing.clone()));
            }
            Some(Presented::Unusable(why)) => return self.refuse(Refusal::Unusable(why)),
            Some(Presented::Key(key)) => key,
        };
        let Some(found) = self.store.find(&key) else {
            return self.refuse(Refusal::Unknown);
        };
        if found.expires_ms.is_some_and(|expires| now_ms() >= expires) {
            return self.refuse(Refusal::Expired(&found.consumer));
        }
        if !found.granted {
            return self.refuse(Refusal::Scope(&found.consumer));
        }
        req.set_var("consumer", &found.consumer);
        req.set_var("scopes", &found.scopes);
        for source in &self.sources {
            source.remove(req)?;
        }
        Ok(Decision::Continue)
    }
}

impl ApiKey {
    /// The refusal, logged with its reason (never the key). Unknown and unusable keys, which
    /// anyone can send, are logged at debug; a known consumer's refusals at info.
    fn refuse(&self, why: Refusal<'_>) -> Result<Decision, Error> {
        let level = match why {
            Refusal::Unusable(_) | Refusal::Unknown => log::Level::Debug,
            Refusal::Expired(_) | Refusal::Scope(_) => log::Level::Info,
        };
        if log::enabled(level) {
            let line = match why {
                Refusal::Unusable(what) => format!("refused: {what}"),
                Refusal::Unknown => "refused: unknown key".to_string(),
                Refusal::Expired(consumer) => {
                    format!("refused: the key of consumer `{consumer}` has expired")
                }
                Refusal::Scope(consumer) => {
                    format!("refused: the key of consumer `{consumer}` lacks a required scope")
                }
            };
            log::log(level, &line);
        }
        Ok(Decision::Respond(self.refused.clone()))
    }
}

wasmgate_sdk::export!(ApiKey);
