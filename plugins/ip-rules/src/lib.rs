//! `ip-rules`: lets a request through or refuses it (403) by its client's address, against
//! allow and deny lists of IPv4 and IPv6 networks.
//!
//! The address is the real client's as the gateway works it out (`server.trusted_proxies`,
//! `X-Forwarded-For`, the PROXY protocol): the plugin reads `Request::client_addr` and never a
//! header of its own. The lists are parsed once, at init, into sorted and merged ranges per
//! address family (see `ranges`); a request costs one address parse and at most two binary
//! searches. See README.md for the config reference.

mod ranges;

#[cfg(test)]
mod tests;

use serde::Deserialize;
use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Registration, Reply, Request, log};

use ranges::{Ranges, parse_client, parse_net};

/// The most entries one list may hold. The lookup is a binary search, so this bounds the
/// memory a config takes rather than the time a request does.
pub const MAX_ENTRIES: usize = 10_000;
/// The longest `message`.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// `message` when not given.
pub const DEFAULT_MESSAGE: &str = "access from this address is not allowed";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// When given, only clients in these networks may pass.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Clients in these networks are refused, even when `allow` holds them too.
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    /// The `message` of the 403's JSON body.
    #[serde(default)]
    pub message: Option<String>,
}

pub struct IpRules {
    /// `None`: no allow list, every address not denied passes.
    allow: Option<Ranges>,
    deny: Ranges,
    /// The 403, built once.
    refusal: Reply,
}

/// Parses one list, naming the entry at fault (`deny[2]`).
fn list(key: &str, entries: Option<Vec<String>>) -> Result<Option<Ranges>, ConfigError> {
    let Some(entries) = entries else {
        return Ok(None);
    };
    if entries.is_empty() {
        let hint = match key {
            "allow" => "leave `allow` out to let every address that is not denied through",
            _ => "leave `deny` out to deny nothing",
        };
        return Err(ConfigError::at(
            key,
            format!("must not be an empty list ({hint})"),
        ));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(ConfigError::at(
            key,
            format!(
                "{} entries, more than the {MAX_ENTRIES} allowed",
                entries.len()
            ),
        ));
    }
    let nets = entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_net(e).map_err(|why| ConfigError::at(format!("{key}[{i}]"), why)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Ranges::new(&nets)))
}

impl Plugin for IpRules {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.allow.is_none() && c.deny.is_none() {
            return Err(ConfigError::new(
                "no rules: give `allow`, `deny` or both (lists of networks, as 10.0.0.0/8)",
            ));
        }
        let allow = list("allow", c.allow)?;
        let deny = list("deny", c.deny)?.unwrap_or_default();
        let message = c.message.unwrap_or_else(|| DEFAULT_MESSAGE.to_string());
        if message.is_empty() || message.len() > MAX_MESSAGE_BYTES {
            return Err(ConfigError::at(
                "message",
                format!("must be 1 to {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        let refusal = Reply::json(
            403,
            &serde_json::json!({ "error": "forbidden", "message": message }),
        )
        .map_err(|e| ConfigError::at("message", e.to_string()))?;
        Ok(Self {
            allow,
            deny,
            refusal,
        })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let addr = req.client_addr();
        let Some(ip) = parse_client(&addr) else {
            // The gateway always gives an address; refuse rather than let an unknown one by.
            log::warn(&format!("refused: client address `{addr}` does not parse"));
            return Ok(Decision::Respond(self.refusal.clone()));
        };
        if self.allows(ip) {
            Ok(Decision::Continue)
        } else {
            if log::enabled(log::Level::Debug) {
                log::debug(&format!("refused {ip}"));
            }
            Ok(Decision::Respond(self.refusal.clone()))
        }
    }
}

impl IpRules {
    /// Deny wins; then, with an allow list, only what it holds passes.
    fn allows(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.contains(ip) && self.allow.as_ref().is_none_or(|allow| allow.contains(ip))
    }
}

wasmgate_sdk::export!(IpRules);
