//! What a plugin may call out to (`[plugins.NAME] outbound = [...]`), and the limits on its
//! calls.

use std::fmt;
use std::net::IpAddr;

use http::Uri;
use http::uri::Scheme;
use serde::Deserialize;

/// One entry of a plugin's `outbound` list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum OutboundGrant {
    /// `upstream:NAME`: requests whose authority is `NAME` go through that upstream.
    Upstream(String),
    /// `http://host[:port]` or `https://host[:port]`: that origin, as itself.
    Origin(Origin),
}

impl TryFrom<String> for OutboundGrant {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("upstream:") {
            if name.is_empty() {
                return Err("`upstream:` needs an upstream's name, as in upstream:users".into());
            }
            return Ok(Self::Upstream(name.to_owned()));
        }
        Origin::parse(&s).map(Self::Origin)
    }
}

impl fmt::Display for OutboundGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upstream(name) => write!(f, "upstream:{name}"),
            Self::Origin(o) => o.fmt(f),
        }
    }
}

/// A scheme, host and port. The host is lowercase, an IPv6 address without its brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `http(s)://host[:port]`, with no user, path or query.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: Uri = s
            .parse()
            .map_err(|e| format!("`{s}` is neither upstream:NAME nor a URL: {e}"))?;
        let tls = match uri.scheme() {
            Some(x) if *x == Scheme::HTTPS => true,
            Some(x) if *x == Scheme::HTTP => false,
            _ => {
                return Err(format!(
                    "`{s}`: an origin is http://host[:port] or https://host[:port]"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{s}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{s}`: an origin has no user name or password"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{s}`: an origin is scheme://host[:port], without a path or query"
            ));
        }
        Ok(Self::new(tls, authority.host(), authority.port_u16()))
    }

    /// The origin of a request to `host` and `port` (the scheme's own when `None`).
    pub fn new(tls: bool, host: &str, port: Option<u16>) -> Self {
        Self {
            tls,
            host: bare(host).to_ascii_lowercase(),
            port: port.unwrap_or(default_port(tls)),
        }
    }

    /// Whether a request to `host` and `port` (the scheme's own when `None`) is to this
    /// origin; allocates nothing.
    pub fn is(&self, tls: bool, host: &str, port: Option<u16>) -> bool {
        self.tls == tls
            && self.port == port.unwrap_or(default_port(tls))
            && self.host.eq_ignore_ascii_case(bare(host))
    }

    /// The host, when it is an address rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// A host without an IPv6 address's brackets.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn default_port(tls: bool) -> u16 {
    if tls { 443 } else { 80 }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Longest an outbound call may take, unless configured.
pub const OUTBOUND_TIMEOUT_MS: u64 = 2_000;
/// Outbound calls one request's plugins may have in flight at once, unless configured.
pub const OUTBOUND_IN_FLIGHT: u32 = 8;
/// Outbound calls one request's plugins may make in all, unless configured.
pub const OUTBOUND_PER_REQUEST: u32 = 16;
/// Largest outbound response body, unless configured.
pub const OUTBOUND_BODY_BYTES: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> Result<OutboundGrant, String> {
        OutboundGrant::try_from(s.to_owned())
    }

    #[test]
    fn grants_parse_as_upstreams_or_origins() {
        assert_eq!(
            grant("upstream:users"),
            Ok(OutboundGrant::Upstream("users".into()))
        );
        let Ok(OutboundGrant::Origin(o)) = grant("https://IdP.Example.com") else {
            panic!()
        };
        assert_eq!(
            (o.tls, o.host.as_str(), o.port),
            (true, "idp.example.com", 443)
        );
        assert_eq!(o.to_string(), "https://idp.example.com:443");
        let Ok(OutboundGrant::Origin(o)) = grant("http://[::1]:8080/") else {
            panic!()
        };
        assert_eq!(o.ip(), Some("::1".parse().unwrap()));
        assert_eq!(o.to_string(), "http://[::1]:8080");
        assert!(o.is(false, "[::1]", Some(8080)));
        assert!(!o.is(true, "[::1]", Some(8080)) && !o.is(false, "::1", None));
        let Ok(OutboundGrant::Origin(o)) = grant("https://idp.example.com") else {
            panic!()
        };
        assert!(o.is(true, "IDP.example.com", None) && o.is(true, "idp.example.com", Some(443)));
        for bad in [
            "upstream:",
            "idp.example.com",
            "ftp://idp.example.com",
            "https://idp.example.com/keys",
            "https://idp.example.com/?a=1",
            "https://user:pw@idp.example.com",
        ] {
            assert!(grant(bad).is_err(), "{bad}");
        }
    }
}
