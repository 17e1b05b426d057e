//! `cache`: a response cache for GET and HEAD, held in the plugin's kv (so every instance and
//! worker shares it, and a shared kv backend makes it shared across gateways).
//!
//! The request phase decides: a fresh entry is answered at once (`X-Cache: HIT`, with `Age`)
//! and the upstream is not called; anything else goes on, with `X-Cache: MISS` or `BYPASS`
//! queued for the response and the response body bounded to what could be stored (so a larger
//! one streams through unbuffered). The response phase stores what is cacheable, or answers
//! with a stale entry when the upstream failed. The config is checked and prepared once, at
//! init; a hit costs a handful of host calls, one SHA-256, one kv read and no copy of the body.
//! See README.md for the config reference and what is and is not cached.

mod config;
mod directives;
mod entry;

use std::fmt;

use sha2::{Digest, Sha256};
use wasmgate_sdk::kv::{self, KvError};
use wasmgate_sdk::log::{self, Level};
use wasmgate_sdk::rules::http::is_host_managed;
use wasmgate_sdk::{
    ConfigError, Decision, Error, HostError, Plugin, Registration, Request, Response, clock,
};

pub use config::{ClientNoCache, Config, SetCookie};
use config::{Settings, Vary};
use directives::{RequestDirectives, ResponseDirectives, age_seconds, http_date};
use entry::{Entry, Times};

/// Carries what the request phase decided into the response phase (unset: the cache is not
/// involved). See [`Pending`].
const PENDING_VAR: &str = "cache.pending";
/// The header that tells the client how the cache answered.
const X_CACHE: &str = "x-cache";

/// A request the cache sent upstream, as the response phase needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    /// Store the response (a GET the client did not forbid storing).
    store: bool,
    /// The request carried `Authorization`, and the key does not hold the client's identity.
    authorized: bool,
    head: bool,
    /// The TTL of the request's path.
    ttl_ms: u64,
    key: String,
}

impl Pending {
    /// `SAH TTL KEY`, each flag `0` or `1`.
    fn encode(&self) -> String {
        let flag = |b: bool| if b { '1' } else { '0' };
        format!(
            "{}{}{} {} {}",
            flag(self.store),
            flag(self.authorized),
            flag(self.head),
            self.ttl_ms,
            self.key
        )
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let flags = parts.next()?.as_bytes();
        let flag = |i: usize| match flags.get(i) {
            Some(b'1') => Some(true),
            Some(b'0') => Some(false),
            _ => None,
        };
        let pending = Self {
            store: flag(0)?,
            authorized: flag(1)?,
            head: flag(2)?,
            ttl_ms: parts.next()?.parse().ok()?,
            key: parts.next()?.to_owned(),
        };
        (flags.len() == 3 && parts.next().is_none()).then_some(pending)
    }
}

/// Why a response was not stored (logged at debug).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotStored {
    Status(u16),
    Directive(&'static str),
    /// A response to a request with `Authorization`, without `public`, `s-maxage` or
    /// `must-revalidate` (RFC 9111 §3.5).
    Authorization,
    Vary(String),
    SetCookie,
    /// Its freshness (`max-age`, `s-maxage`, `Expires`, less `Age`) is already over.
    Expired,
    TooLarge,
    Body(HostError),
    Kv(KvError),
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {s} is not stored"),
            Self::Directive(d) => write!(f, "Cache-Control: {d}"),
            Self::Authorization => f.write_str(
                "a response to a request with Authorization, without public, s-maxage or must-revalidate",
            ),
            Self::Vary(v) => write!(f, "Vary: {v}, which the key does not hold"),
            Self::SetCookie => f.write_str("Set-Cookie"),
            Self::Expired => f.write_str("already stale"),
            Self::TooLarge => f.write_str("body larger than max_entry_bytes"),
            Self::Body(e) => write!(f, "body: {e}"),
            Self::Kv(e) => write!(f, "kv refused it: {e}"),
        }
    }
}

#[derive(Debug)]
pub struct Cache {
    settings: Settings,
}

impl Plugin for Cache {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            settings: Settings::new(config)?,
        })
    }

    fn registration(&self) -> Registration {
        Registration::new().with_response_body()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let method = req.method();
        let head = method == "HEAD";
        if !(head || method == "GET") {
            return bypass(req);
        }
        let path = req.path();
        let Some(ttl_ms) = self.settings.ttl_ms(&path) else {
            return bypass(req);
        };
        let client = if self.settings.client_no_cache == ClientNoCache::Ignore {
            RequestDirectives::default()
        } else {
            RequestDirectives::parse(
                req.header_values("cache-control")
                    .iter()
                    .map(String::as_str),
            )
        };
        if client.no_cache && self.settings.client_no_cache == ClientNoCache::Bypass {
            return bypass(req);
        }
        let key = self.key(req, &path);

        if !client.no_cache
            && let Some(entry) = kv::get(&key).and_then(Entry::decode)
        {
            let now = clock::now_millis();
            if entry.times.is_fresh(now) {
                let age = entry.times.age_s(now).to_string();
                if let Some(reply) = entry.into_reply(head, [(X_CACHE, "HIT".into()), ("age", age)])
                {
                    return Ok(Decision::Respond(reply));
                }
            }
        }

        // Sent upstream: its response is stored when it may be, and a stale entry answers in
        // its place when the upstream fails.
        let store = !head && !client.no_store;
        let authorized =
            store && !self.settings.keys_identity && req.header("authorization").is_some();
        req.limit_response_body(if store {
            self.settings.max_entry_bytes
        } else {
            0
        })?;
        let pending = Pending {
            store,
            authorized,
            head,
            ttl_ms,
            key,
        };
        req.set_var(PENDING_VAR, &pending.encode());
        let outcome = if client.no_cache { "BYPASS" } else { "MISS" };
        req.set_response_header(X_CACHE, outcome)?;
        Ok(Decision::Continue)
    }

    fn on_response(
        &mut self,
        req: &mut Request<'_>,
        resp: &mut Response<'_>,
    ) -> Result<Decision, Error> {
        let Some(pending) = req.var(PENDING_VAR).as_deref().and_then(Pending::decode) else {
            return Ok(Decision::Continue);
        };
        let status = resp.status();
        if status >= 500 && !self.settings.stores_status(status) {
            return Ok(self.stale(&pending));
        }
        if !pending.store {
            return Ok(Decision::Continue);
        }
        if let Err(why) = self.store(&pending, resp)
            && log::enabled(Level::Debug)
        {
            log::debug(&format!("{} not stored: {why}", req.path()));
        }
        Ok(Decision::Continue)
    }
}

/// Neither read nor stored: the body is declined, so none is buffered for the cache.
fn bypass(req: &mut Request<'_>) -> Result<Decision, Error> {
    req.limit_response_body(0)?;
    req.set_response_header(X_CACHE, "BYPASS")?;
    Ok(Decision::Continue)
}

impl Cache {
    /// The key: SHA-256 over the method class (a HEAD is answered from the GET's entry), host,
    /// path, query and each `vary` entry's name and value, each part length-prefixed and an
    /// absent one told apart from an empty one.
    fn key(&self, req: &Request<'_>, path: &str) -> String {
        let mut h = Sha256::new();
        let mut part = |bytes: Option<&[u8]>| match bytes {
            None => h.update([0]),
            Some(b) => {
                h.update([1]);
                h.update(u64::try_from(b.len()).unwrap_or(u64::MAX).to_le_bytes());
                h.update(b);
            }
        };
        part(Some(b"GET"));
        let host = req.header("host").map(|h| h.to_ascii_lowercase());
        part(host.as_deref().map(str::as_bytes));
        part(Some(path.as_bytes()));
        part(req.query().as_deref().map(str::as_bytes));
        for v in &self.settings.vary {
            match v {
                Vary::Header(name) => {
                    part(Some(name.as_bytes()));
                    let values = req.header_values(name);
                    part(Some(&(values.len() as u64).to_le_bytes()));
                    for value in &values {
                        part(Some(value.as_bytes()));
                    }
                }
                Vary::Var(name) => {
                    part(Some(b"var:"));
                    part(Some(name.as_bytes()));
                    part(req.var(name).as_deref().map(str::as_bytes));
                }
            }
        }
        // Hex by table: `write!` per byte is a formatting call each, a third of a hit's time.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(3 + 64);
        key.push_str("c1:");
        for b in h.finalize() {
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        key
    }

    /// The upstream failed: with `stale_if_error_s`, a stored entry within its stale window
    /// answers instead.
    fn stale(&self, pending: &Pending) -> Decision {
        if self.settings.stale_ms == 0 {
            return Decision::Continue;
        }
        let Some(entry) = kv::get(&pending.key).and_then(Entry::decode) else {
            return Decision::Continue;
        };
        let now = clock::now_millis();
        if !entry.times.serves_on_error(now) {
            return Decision::Continue;
        }
        let age = entry.times.age_s(now).to_string();
        match entry.into_reply(pending.head, [(X_CACHE, "STALE".into()), ("age", age)]) {
            Some(reply) => Decision::Respond(reply),
            None => Decision::Continue,
        }
    }

    /// Stores the response when it is cacheable.
    fn store(&self, pending: &Pending, resp: &mut Response<'_>) -> Result<(), NotStored> {
        let status = resp.status();
        if !self.settings.stores_status(status) {
            return Err(NotStored::Status(status));
        }
        let headers = resp.headers();
        let values = |name: &'static str| {
            headers
                .iter()
                .filter(move |(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let cc = ResponseDirectives::parse(values("cache-control"));
        if cc.no_store {
            return Err(NotStored::Directive("no-store"));
        }
        if cc.private {
            return Err(NotStored::Directive("private"));
        }
        if cc.no_cache {
            return Err(NotStored::Directive("no-cache"));
        }
        if pending.authorized && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
            return Err(NotStored::Authorization);
        }
        for name in values("vary").flat_map(|v| v.split(',')).map(str::trim) {
            if !name.is_empty() && (name == "*" || !self.settings.keys_header(name)) {
                return Err(NotStored::Vary(name.to_owned()));
            }
        }
        let strip_cookies = match (values("set-cookie").next(), self.settings.set_cookie) {
            (None, _) => false,
            (Some(_), SetCookie::Strip) => true,
            (Some(_), SetCookie::NotStored) => return Err(NotStored::SetCookie),
        };

        let now = clock::now_millis();
        let initial_age_s = values("age").next().and_then(age_seconds).unwrap_or(0);
        let lifetime_s = cc.s_maxage.or(cc.max_age).or_else(|| {
            let expires = values("expires").next()?;
            let date = values("date").next().and_then(http_date);
            // An `Expires` that is not a date means already expired (RFC 9111 §5.3).
            Some(http_date(expires).map_or(0, |e| e.saturating_sub(date.unwrap_or(now / 1000))))
        });
        let mut ttl_ms = pending.ttl_ms;
        if let Some(l) = lifetime_s {
            ttl_ms = ttl_ms.min(l.saturating_sub(initial_age_s).saturating_mul(1000));
        }
        if ttl_ms == 0 {
            return Err(NotStored::Expired);
        }
        // `s-maxage` implies `proxy-revalidate` (RFC 9111 §5.2.2.10).
        let revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
        let times = Times {
            stored_at: now,
            ttl_ms,
            stale_ms: if revalidate {
                0
            } else {
                self.settings.stale_ms
            },
            initial_age_s,
        };

        let body = match resp.body() {
            Ok(body) if body.len() <= self.settings.max_entry_bytes => body,
            Ok(_) | Err(HostError::BodyTooLarge) => return Err(NotStored::TooLarge),
            Err(e) => return Err(NotStored::Body(e)),
        };
        let kept = headers
            .iter()
            .filter(|(n, _)| {
                !(is_host_managed(n)
                    || n == "age"
                    || n == X_CACHE
                    || (strip_cookies && n == "set-cookie"))
            })
            .map(|(n, v)| (n.as_str(), v.as_str()));
        let value = entry::encode(status, &times, kept, body);
        kv::set(&pending.key, &value, Some(times.kv_ttl_ms())).map_err(NotStored::Kv)
    }
}

wasmgate_sdk::export!(Cache);

#[cfg(test)]
mod tests;
