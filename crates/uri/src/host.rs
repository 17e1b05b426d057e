//! The `Host` a request is routed by (RFC 9110 §7.2, RFC 3986 §3.2.2), checked strictly.
//!
//! `api.example.com:80@evil.example` is not a host: an authority parser that accepts
//! user info reads it as `evil.example`, a lenient one as `api.example.com`. Anything but a
//! host name, an IPv4 address or a bracketed IPv6 address, with an optional port, is refused.

use std::borrow::Cow;
use std::fmt;

/// A validated host, lower-cased, without its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    /// The name or address; an IPv6 address keeps its brackets.
    pub name: Cow<'a, str>,
    /// The port, when one was given.
    pub port: Option<u16>,
}

/// Why a `Host` value (or a URI's authority) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// A byte that has no place in a host name (`@`, `/`, a space, `%`, …).
    BadCharacter(u8),
    /// The port is not a number from 0 to 65535.
    BadPort,
    /// A bracketed address that is not an IPv6 address.
    BadAddress,
    /// Longer than any DNS name (255 bytes).
    TooLong,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCharacter(c) if c.is_ascii_graphic() => {
                write!(f, "'{}' has no place in a host", *c as char)
            }
            Self::BadCharacter(c) => write!(f, "byte 0x{c:02x} has no place in a host"),
            Self::BadPort => f.write_str("the port is not a number from 0 to 65535"),
            Self::BadAddress => f.write_str("a bracketed host that is not an IPv6 address"),
            Self::TooLong => f.write_str("the host is longer than 255 bytes"),
        }
    }
}

impl std::error::Error for HostError {}

/// Parses a `Host` header value (or a URI's authority). An empty value is `Ok(None)`: RFC
/// 9112 §3.2 lets a request whose target has no authority send an empty `Host`.
pub fn parse_host(value: &[u8]) -> Result<Option<Host<'_>>, HostError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 255 + 6 {
        return Err(HostError::TooLong);
    }
    let (name, port) = if value[0] == b'[' {
        let close = value
            .iter()
            .position(|&c| c == b']')
            .ok_or(HostError::BadAddress)?;
        let inner = std::str::from_utf8(&value[1..close]).map_err(|_| HostError::BadAddress)?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(HostError::BadAddress);
        }
        let rest = &value[close + 1..];
        let port = match rest.split_first() {
            None => None,
            Some((b':', digits)) => parse_port(digits)?,
            Some((&c, _)) => return Err(HostError::BadCharacter(c)),
        };
        (&value[..=close], port)
    } else {
        let (name, port) = match value.iter().position(|&c| c == b':') {
            Some(i) => (&value[..i], parse_port(&value[i + 1..])?),
            None => (value, None),
        };
        if name.len() > 255 {
            return Err(HostError::TooLong);
        }
        if let Some(&c) = name
            .iter()
            .find(|&&c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')))
        {
            return Err(HostError::BadCharacter(c));
        }
        if name.is_empty() {
            return Err(HostError::BadCharacter(b':'));
        }
        (name, port)
    };
    // Every byte left is ASCII.
    let name = std::str::from_utf8(name).map_err(|_| HostError::BadAddress)?;
    let name = if name.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    Ok(Some(Host { name, port }))
}

/// `port = *DIGIT` (RFC 3986 §3.2.3): empty is no port.
fn parse_port(digits: &[u8]) -> Result<Option<u16>, HostError> {
    if digits.is_empty() {
        return Ok(None);
    }
    if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HostError::BadPort);
    }
    let n: u32 = digits.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map(Some).map_err(|_| HostError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> Result<Option<(String, Option<u16>)>, HostError> {
        parse_host(v.as_bytes()).map(|o| o.map(|h| (h.name.into_owned(), h.port)))
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            h("api.example.com"),
            Ok(Some(("api.example.com".into(), None)))
        );
        assert_eq!(
            h("API.Example.com:8080"),
            Ok(Some(("api.example.com".into(), Some(8080))))
        );
        assert_eq!(h("127.0.0.1:80"), Ok(Some(("127.0.0.1".into(), Some(80)))));
        assert_eq!(h("[::1]:9000"), Ok(Some(("[::1]".into(), Some(9000)))));
        assert_eq!(h("[::1]"), Ok(Some(("[::1]".into(), None))));
        assert_eq!(h("x:"), Ok(Some(("x".into(), None))));
        assert_eq!(h(""), Ok(None));
    }

    #[test]
    fn what_is_not_a_host() {
        assert_eq!(
            h("api.example.com:80@evil.example"),
            Err(HostError::BadPort)
        );
        assert_eq!(
            h("user@api.example.com"),
            Err(HostError::BadCharacter(b'@'))
        );
        assert_eq!(h("a b"), Err(HostError::BadCharacter(b' ')));
        assert_eq!(h("a/b"), Err(HostError::BadCharacter(b'/')));
        assert_eq!(h("a%2eb"), Err(HostError::BadCharacter(b'%')));
        assert_eq!(h("a:1:2"), Err(HostError::BadPort));
        assert_eq!(h("a:99999"), Err(HostError::BadPort));
        assert_eq!(h("a:+80"), Err(HostError::BadPort));
        assert_eq!(h(":80"), Err(HostError::BadCharacter(b':')));
        assert_eq!(h("[::1"), Err(HostError::BadAddress));
        assert_eq!(h("[nope]"), Err(HostError::BadAddress));
        assert_eq!(h("[::1]x"), Err(HostError::BadCharacter(b'x')));
        assert_eq!(h("a\0b"), Err(HostError::BadCharacter(0)));
        assert_eq!(h(&"a".repeat(300)), Err(HostError::TooLong));
    }
}
