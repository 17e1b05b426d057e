//! The allowed origins: the config's `origins` parsed once at init, and a request's `Origin`
//! matched against them.
//!
//! An origin is what a browser sends in `Origin`: `scheme://host`, with `:port` only when the
//! port is not the scheme's default, lower-case, the host in ASCII (punycode). Entries are
//! held to that form at load, so one that no browser would ever send is an error, not an
//! entry that silently never matches.

use std::borrow::Cow;
use std::collections::HashSet;

use wasmgate_sdk::ConfigError;

/// Most entries `origins` takes.
pub const MAX_ORIGINS: usize = 256;

/// What `Access-Control-Allow-Origin` says for an origin that is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// `*`: the config allows every origin.
    Any,
    /// The request's own `Origin`, echoed.
    Echo,
}

/// The parsed `origins`.
#[derive(Debug, Default)]
pub struct Origins {
    any: bool,
    null: bool,
    exact: HashSet<String>,
    patterns: Vec<Pattern>,
}

/// `scheme://*.example.com[:port]`: the scheme, then one or more DNS labels, then the fixed
/// rest of the host and the port.
#[derive(Debug)]
struct Pattern {
    /// `https://`
    scheme: String,
    /// `.example.com`, or `.example.com:8443`
    suffix: String,
}

impl Pattern {
    fn matches(&self, origin: &str) -> bool {
        origin
            .strip_prefix(self.scheme.as_str())
            .and_then(|rest| rest.strip_suffix(self.suffix.as_str()))
            .is_some_and(|labels| labels.split('.').all(is_label))
    }
}

/// One entry of `origins`.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Any,
    Null,
    Exact(String),
    Pattern { scheme: String, suffix: String },
}

impl Origins {
    /// Parses `origins`; an error names the entry (`origins[2]`).
    pub fn parse(entries: &[String]) -> Result<Self, ConfigError> {
        if entries.is_empty() {
            return Err(ConfigError::at(
                "origins",
                "list at least one origin (or \"*\")",
            ));
        }
        if entries.len() > MAX_ORIGINS {
            return Err(ConfigError::at(
                "origins",
                format!(
                    "{} entries, more than the {MAX_ORIGINS} taken: use a pattern such as \"https://*.example.com\"",
                    entries.len()
                ),
            ));
        }
        let mut origins = Origins::default();
        for (i, text) in entries.iter().enumerate() {
            let entry =
                parse_entry(text).map_err(|why| ConfigError::at(format!("origins[{i}]"), why))?;
            match entry {
                Entry::Any if entries.len() > 1 => {
                    return Err(ConfigError::at(
                        format!("origins[{i}]"),
                        "\"*\" allows every origin, so it must be the only entry",
                    ));
                }
                Entry::Any => origins.any = true,
                Entry::Null => origins.null = true,
                Entry::Exact(origin) => {
                    origins.exact.insert(origin);
                }
                Entry::Pattern { scheme, suffix } => {
                    origins.patterns.push(Pattern { scheme, suffix })
                }
            }
        }
        Ok(origins)
    }

    /// Whether the config is `["*"]`.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// Whether `origin` (a request's `Origin`) is allowed, and how to say so. Compared
    /// case-insensitively; browsers send origins lower-case.
    pub fn allows(&self, origin: &str) -> Option<Allow> {
        if self.any {
            return Some(Allow::Any);
        }
        let origin = if origin.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(origin.to_ascii_lowercase())
        } else {
            Cow::Borrowed(origin)
        };
        let allowed = if origin == "null" {
            self.null
        } else {
            self.exact.contains(origin.as_ref()) || self.patterns.iter().any(|p| p.matches(&origin))
        };
        allowed.then_some(Allow::Echo)
    }
}

/// One DNS label as browsers serialize hosts: lower-case letters, digits, `-` and `_`.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const FORM: &str =
    "an origin is \"scheme://host\" or \"scheme://host:port\", like \"https://app.example.com\"";

fn parse_entry(text: &str) -> Result<Entry, String> {
    match text {
        "*" => return Ok(Entry::Any),
        "null" => return Ok(Entry::Null),
        _ => {}
    }
    if !text.is_ascii() {
        return Err(format!(
            "{text:?}: browsers send the host in its ASCII (punycode) form, \"xn--...\"; write it so"
        ));
    }
    let lower = text.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err(format!("{text:?}: {FORM}"));
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(format!("{text:?}: {scheme:?} is not a URL scheme; {FORM}"));
    }
    if rest.contains('@') {
        return Err(format!("{text:?}: an origin has no user info; {FORM}"));
    }
    if let Some(at) = rest.find(['/', '?', '#']) {
        let why = if at + 1 == rest.len() && rest.ends_with('/') {
            "an origin has no path, not even \"/\": leave out the trailing slash".to_string()
        } else {
            format!("an origin has no path, query or fragment; {FORM}")
        };
        return Err(format!("{text:?}: {why}"));
    }
    let (host, port) = split_port(rest).ok_or_else(|| format!("{text:?}: {FORM}"))?;
    if let Some(port) = port {
        check_port(scheme, port).map_err(|why| format!("{text:?}: {why}"))?;
    }
    let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
    if let Some(fixed) = host.strip_prefix("*.") {
        check_pattern_host(fixed).map_err(|why| format!("{text:?}: {why}"))?;
        return Ok(Entry::Pattern {
            scheme: format!("{scheme}://"),
            suffix: format!(".{fixed}{port_part}"),
        });
    }
    if host.contains('*') {
        return Err(format!(
            "{text:?}: \"*\" stands only for the leading labels of a host, as in \"https://*.example.com\""
        ));
    }
    check_host(host).map_err(|why| format!("{text:?}: {why}"))?;
    Ok(Entry::Exact(format!("{scheme}://{host}{port_part}")))
}

/// `host[:port]` or `[v6][:port]` into the host and the port text.
fn split_port(rest: &str) -> Option<(&str, Option<&str>)> {
    if rest.starts_with('[') {
        let close = rest.find(']')?;
        let (host, after) = rest.split_at(close + 1);
        return match after {
            "" => Some((host, None)),
            _ => after.strip_prefix(':').map(|p| (host, Some(p))),
        };
    }
    match rest.split_once(':') {
        None => Some((rest, None)),
        Some((host, port)) => Some((host, Some(port))),
    }
}

fn check_port(scheme: &str, port: &str) -> Result<(), String> {
    let number: u16 = port
        .parse()
        .ok()
        .filter(|&n| n > 0 && port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0'))
        .ok_or_else(|| format!("{port:?} is not a port (1 to 65535, no leading zero)"))?;
    let default = match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    if default == Some(number) {
        return Err(format!(
            "browsers leave the default port {number} of {scheme} out of an origin: leave out \":{number}\""
        ));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ok = v6.contains(':')
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return if ok {
            Ok(())
        } else {
            Err(format!("{host:?} is not an IPv6 address"))
        };
    }
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if !host.split('.').all(is_label) {
        return Err(format!(
            "{host:?} is not a host name: labels of letters, digits, \"-\" and \"_\", separated by single dots"
        ));
    }
    Ok(())
}

/// The fixed part of a pattern's host: a DNS name of at least two labels, so that a pattern
/// covers one party's names and not a whole top-level domain.
fn check_pattern_host(fixed: &str) -> Result<(), String> {
    if fixed.contains('*') {
        return Err(
            "only one \"*\", standing for the leading labels: \"https://*.example.com\"".into(),
        );
    }
    if fixed.starts_with('[') {
        return Err("a pattern is for host names, not IP addresses".into());
    }
    check_host(fixed)?;
    let labels: Vec<&str> = fixed.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "\"*.{fixed}\" would match every site under {fixed:?}: name at least two labels after \"*.\""
        ));
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("a pattern is for host names, not IP addresses".into());
    }
    Ok(())
}
