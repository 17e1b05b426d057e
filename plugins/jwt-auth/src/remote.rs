//! Keys from `jwks_url`: fetched through the gateway's outbound calls by the request that
//! needs them, never at init (which runs when a config is loaded or checked, and must not
//! depend on the identity provider being up), shared with the plugin's other instances through
//! kv, refreshed once they are `jwks_refresh_ms` old and when a token names a key the set
//! lacks, with at most one attempt per `min_refresh_ms`. A failed fetch leaves the last good
//! keys in use.
//!
//! Two kv entries per URL:
//! - `jwks:<url>`: the last good set, as `<fetched at, ms>\n<the JWKS as fetched>`, written by
//!   the instance that fetched it and read by the others, so one fetch serves every instance.
//!   Its time is read without parsing the set.
//! - `jwks-attempt:<url>`: when the last attempt, good or failed, was made; it expires after
//!   `min_refresh_ms`, and while it is there no instance fetches.
//!
//! kv has no compare-and-set: two instances on different workers that look at the very same
//! moment may both fetch. Instances on one worker take turns, and the attempt is recorded
//! before the call is made, so those that run while it is under way see it and wait.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::Value;
use wasmgate_sdk::outbound::{self, Request};
use wasmgate_sdk::{kv, log};

use crate::keys::{self, Key};

/// The kv key prefixes; the longer one bounds the length of `jwks_url`.
const RECORD_PREFIX: &str = "jwks:";
const ATTEMPT_PREFIX: &str = "jwks-attempt:";

/// The longest `jwks_url`, so that both its kv keys fit the host's key size.
pub const MAX_URL_BYTES: usize = wasmgate_sdk::rules::kv::MAX_KEY_BYTES - ATTEMPT_PREFIX.len();

/// How the keys in use changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Update {
    Same,
    /// Keys were added (or the first set arrived); none in use before is gone.
    Added,
    /// A key in use before is gone: what it verified must be verified again.
    Removed,
}

/// The settings of `jwks_url`, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub refresh_ms: i64,
    pub min_refresh_ms: i64,
    pub timeout: Duration,
}

/// A set's usable keys, and the JWKs they were made from (to tell when one is gone).
struct Set {
    keys: Vec<Key>,
    jwks: Vec<Value>,
}

pub struct Remote {
    settings: Settings,
    record_key: String,
    attempt_key: String,
    /// The keys in use.
    set: Set,
    /// When the keys in use were fetched, by this instance or another; `None` before any.
    fetched_at: Option<i64>,
    /// The time of the newest kv record looked at, usable or not, so none is parsed twice.
    seen: Option<i64>,
    /// The last attempt known here (this instance's, or another's read from kv).
    attempted_at: Option<i64>,
    /// Until then the keys are not looked at again (unless a token names a key they lack).
    next_check: i64,
}

impl Remote {
    pub fn new(settings: Settings) -> Self {
        Self {
            record_key: format!("{RECORD_PREFIX}{}", settings.url),
            attempt_key: format!("{ATTEMPT_PREFIX}{}", settings.url),
            settings,
            set: Set {
                keys: Vec::new(),
                jwks: Vec::new(),
            },
            fetched_at: None,
            seen: None,
            attempted_at: None,
            next_check: i64::MIN,
        }
    }

    pub fn keys(&self) -> &[Key] {
        &self.set.keys
    }

    /// Whether a fetch has ever given keys.
    pub fn has_keys(&self) -> bool {
        !self.set.keys.is_empty()
    }

    /// Whether the keys are to be looked at again at `now`.
    pub fn due(&self, now: i64) -> bool {
        now >= self.next_check
    }

    /// Brings the keys up to date when they are `jwks_refresh_ms` old: takes a newer set
    /// another instance fetched, else fetches one, unless an attempt was made within
    /// `min_refresh_ms`.
    pub fn refresh(&mut self, now: i64, allowed: &[Algorithm]) -> Update {
        let shared = self.read_shared(now, allowed);
        if self.is_fresh(now) {
            return shared;
        }
        shared.max(self.fetch_if_allowed(now, allowed))
    }

    /// Takes the set in kv when it is newer than the one in use.
    pub fn read_shared(&mut self, now: i64, allowed: &[Algorithm]) -> Update {
        let update = match kv::get(&self.record_key) {
            Some(record) => self.read_record(&record, allowed),
            None => Update::Same,
        };
        self.schedule(now);
        update
    }

    fn read_record(&mut self, record: &[u8], allowed: &[Algorithm]) -> Update {
        let Some((fetched_at, jwks)) = split_record(record) else {
            return Update::Same;
        };
        if self.seen.is_some_and(|seen| fetched_at <= seen)
            || self.fetched_at.is_some_and(|t| fetched_at <= t)
        {
            return Update::Same;
        }
        self.seen = Some(fetched_at);
        match parse(jwks, allowed) {
            Ok(set) => self.adopt(set, fetched_at),
            Err(why) => {
                // Another route with other `algorithms` may have fetched it.
                log::debug(&format!(
                    "JWKS {}: the set another instance fetched is not usable here: {why}",
                    self.settings.url
                ));
                Update::Same
            }
        }
    }

    /// Fetches the set, unless an attempt (by any instance) was made within `min_refresh_ms`.
    pub fn fetch_if_allowed(&mut self, now: i64, allowed: &[Algorithm]) -> Update {
        let shared = kv::get(&self.attempt_key)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok());
        let last = self.attempted_at.max(shared);
        if last.is_some_and(|t| now < t.saturating_add(self.settings.min_refresh_ms)) {
            self.attempted_at = last;
            self.schedule(now);
            return Update::Same;
        }
        self.attempted_at = Some(now);
        // Recorded before the call, so instances that look while it is under way wait too.
        let ttl = u64::try_from(self.settings.min_refresh_ms).unwrap_or(u64::MAX);
        if let Err(e) = kv::set(&self.attempt_key, now.to_string().as_bytes(), Some(ttl)) {
            log::warn(&format!(
                "JWKS {}: the attempt is not shared with other instances: {e}",
                self.settings.url
            ));
        }
        let update = match self.fetch(allowed) {
            Ok((set, body)) => {
                self.share(now, &body);
                self.seen = Some(now);
                let update = self.adopt(set, now);
                if update != Update::Same {
                    log::info(&format!(
                        "JWKS {}: {} keys in use ({})",
                        self.settings.url,
                        self.set.keys.len(),
                        kids(&self.set.keys)
                    ));
                }
                update
            }
            Err(why) => {
                let kept = match self.fetched_at {
                    Some(t) => format!(
                        "the last good keys, fetched {} ms ago, stay in use",
                        now.saturating_sub(t)
                    ),
                    None => {
                        "no keys from it yet: tokens that need one are answered 503".to_string()
                    }
                };
                log::warn(&format!(
                    "JWKS {}: fetch failed: {why}; {kept}",
                    self.settings.url
                ));
                Update::Same
            }
        };
        self.schedule(now);
        update
    }

    /// One GET of the URL: the set, and the body to share.
    fn fetch(&self, allowed: &[Algorithm]) -> Result<(Set, Vec<u8>), String> {
        let request = Request::get(&self.settings.url)
            .header("accept", "application/json")
            .timeout(self.settings.timeout);
        let response = outbound::send(request).map_err(|e| format!("outbound call {e}"))?;
        if !response.is_success() {
            return Err(format!("answered status {}", response.status));
        }
        let set = parse(&response.body, allowed)?;
        Ok((set, response.body))
    }

    /// Writes a fetched set to kv for the other instances.
    fn share(&self, fetched_at: i64, body: &[u8]) {
        let mut record = format!("{fetched_at}\n").into_bytes();
        record.extend_from_slice(body);
        if let Err(e) = kv::set(&self.record_key, &record, None) {
            // Nor is the attempt, then: it would hold the others back from a set they cannot see.
            kv::delete(&self.attempt_key);
            log::warn(&format!(
                "JWKS {}: the set ({} bytes) is not shared with other instances, which fetch their own: {e}",
                self.settings.url,
                body.len()
            ));
        }
    }

    fn adopt(&mut self, set: Set, fetched_at: i64) -> Update {
        self.fetched_at = Some(fetched_at);
        let (old, new) = (&self.set.jwks, &set.jwks);
        let update = if old.iter().any(|jwk| !new.contains(jwk)) {
            Update::Removed
        } else if new.iter().any(|jwk| !old.contains(jwk)) {
            Update::Added
        } else {
            return Update::Same;
        };
        self.set = set;
        update
    }

    fn is_fresh(&self, now: i64) -> bool {
        self.fetched_at
            .is_some_and(|t| now < t.saturating_add(self.settings.refresh_ms))
    }

    /// When to look again: once the keys are `jwks_refresh_ms` old, or, when they are already
    /// (or there are none), once another attempt may be made.
    fn schedule(&mut self, now: i64) {
        self.next_check = match self.fetched_at {
            Some(t) if self.is_fresh(now) => t.saturating_add(self.settings.refresh_ms),
            _ => self
                .attempted_at
                .map_or(now, |t| t.saturating_add(self.settings.min_refresh_ms)),
        };
    }
}

/// A kv record's time and JWKS, read up to the end of the time only.
fn split_record(record: &[u8]) -> Option<(i64, &[u8])> {
    let end = record.iter().position(|&b| b == b'\n')?;
    let at = std::str::from_utf8(&record[..end]).ok()?.parse().ok()?;
    Some((at, &record[end + 1..]))
}

/// A fetched (or shared) set, parsed.
fn parse(jwks: &[u8], allowed: &[Algorithm]) -> Result<Set, String> {
    let value: Value =
        serde_json::from_slice(jwks).map_err(|e| format!("the body is not JSON: {e}"))?;
    let keys = keys::jwk_set(&value, allowed)
        .map_err(|e| format!("the body is not a usable JWK set: {e}"))?;
    let (keys, jwks) = keys
        .into_iter()
        .map(|(key, jwk)| (key, jwk.clone()))
        .unzip();
    Ok(Set { keys, jwks })
}

/// The keys' ids, for the log (quoted and escaped: they come from the endpoint).
fn kids(keys: &[Key]) -> String {
    let ids: Vec<String> = keys
        .iter()
        .map(|k| {
            k.kid
                .as_deref()
                .map_or("no kid".into(), |kid| format!("{kid:?}"))
        })
        .collect();
    ids.join(", ")
}

/// Checks `jwks_url`: a URL the SDK can send ([`outbound::check_url`]), short enough for its
/// kv keys.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    outbound::check_url(url).map_err(|why| {
        format!("{why}: give an absolute URL, e.g. \"http://idp/.well-known/jwks.json\"")
    })
}
