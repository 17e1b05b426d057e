//! Where a key is read from (`header:NAME` or `query:NAME`), and taking it off the request
//! before it goes upstream.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use wasmgate_sdk::rules::http::{is_host_managed, is_token};
use wasmgate_sdk::{HostError, Request};

/// The longest query parameter name a source may name.
pub const MAX_QUERY_NAME_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (lower-case name): its whole value, trimmed, is the key.
    Header(String),
    /// A query parameter, matched by its percent-decoded name; its decoded value is the key.
    Query(String),
}

/// What a source holds on one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// Nothing, or only an empty value.
    Missing,
    /// A key to look up.
    Key(String),
    /// Something no key can be: sent more than once, too long, or not decodable. Refused
    /// without a lookup.
    Unusable(&'static str),
}

impl Source {
    pub fn parse(text: &str) -> Result<Source, String> {
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected `header:NAME` or `query:NAME`"))?;
        if name.is_empty() {
            return Err(format!("`{kind}:` needs a name after the colon"));
        }
        match kind {
            "header" => {
                if !is_token(name) {
                    return Err(format!("`{name}` is not a valid header name"));
                }
                let name = name.to_ascii_lowercase();
                if is_host_managed(&name) {
                    return Err(format!("`{name}` is managed by the gateway"));
                }
                Ok(Source::Header(name))
            }
            "query" => {
                let plain = name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"&=#%+".contains(&b));
                if !plain || name.len() > MAX_QUERY_NAME_BYTES {
                    return Err(format!(
                        "`{name}`: a query parameter name is 1 to {MAX_QUERY_NAME_BYTES} visible ASCII characters, without `&`, `=`, `#`, `%` or `+`"
                    ));
                }
                Ok(Source::Query(name.to_string()))
            }
            _ => Err(format!(
                "unknown source `{kind}`: expected `header` or `query`"
            )),
        }
    }

    /// The canonical spelling, for error messages.
    pub fn spec(&self) -> String {
        match self {
            Source::Header(name) => format!("header:{name}"),
            Source::Query(name) => format!("query:{name}"),
        }
    }

    /// What this source holds on `req`; a key longer than `max_bytes` is unusable.
    pub fn read(&self, req: &Request<'_>, max_bytes: usize) -> Presented {
        let key = match self {
            Source::Header(name) => {
                let values = req.header_values(name);
                match values.as_slice() {
                    [] => return Presented::Missing,
                    [one] => one.trim().to_string(),
                    _ => return Presented::Unusable("the key header was sent more than once"),
                }
            }
            Source::Query(name) => {
                let Some(query) = req.query() else {
                    return Presented::Missing;
                };
                let mut found = params(&query).filter(|(n, _)| n.as_deref() == Some(name));
                let Some((_, value)) = found.next() else {
                    return Presented::Missing;
                };
                if found.next().is_some() {
                    return Presented::Unusable("the key parameter was sent more than once");
                }
                if value.len() > 3 * max_bytes {
                    // Too long even before decoding: not worth decoding.
                    return Presented::Unusable("the key is too long");
                }
                match decode(value) {
                    Some(value) => value.into_owned(),
                    None => return Presented::Unusable("the key parameter is not decodable"),
                }
            }
        };
        if key.is_empty() {
            Presented::Missing
        } else if key.len() > max_bytes {
            Presented::Unusable("the key is too long")
        } else {
            Presented::Key(key)
        }
    }

    /// Takes every copy of the key off `req`, so the upstream never sees one.
    pub fn remove(&self, req: &mut Request<'_>) -> Result<(), HostError> {
        match self {
            Source::Header(name) => {
                req.remove_header(name);
                Ok(())
            }
            Source::Query(name) => {
                let Some(query) = req.query() else {
                    return Ok(());
                };
                if let Some(rest) = without_param(&query, name) {
                    req.set_query((!rest.is_empty()).then_some(rest.as_str()))?;
                }
                Ok(())
            }
        }
    }
}

/// A query's `name=value` pairs, raw, with each name decoded (`None` when it does not decode).
fn params(query: &str) -> impl Iterator<Item = (Option<Cow<'_, str>>, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name), value)
    })
}

/// The query without the parameters named `name`, when it had any.
fn without_param(query: &str, name: &str) -> Option<String> {
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (n, _) = pair.split_once('=').unwrap_or((pair, ""));
            let ours = decode(n).as_deref() == Some(name);
            removed |= ours;
            !ours
        })
        .collect();
    removed.then(|| kept.join("&"))
}

/// `application/x-www-form-urlencoded` decoding, as browsers and servers read a query: `+` is a
/// space, then `%XX` escapes. `None` for bytes that are not UTF-8 (a bad escape is kept as it
/// is, as the WHATWG URL standard does).
fn decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let spaced = s.replace('+', " ");
    let decoded = percent_decode_str(&spaced).decode_utf8().ok()?;
    Some(Cow::Owned(decoded.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            Source::parse("header:X-API-Key"),
            Ok(Source::Header("x-api-key".into()))
        );
        assert_eq!(
            Source::parse("query:api_key"),
            Ok(Source::Query("api_key".into()))
        );
        for bad in [
            "header",
            "header:",
            "cookie:k",
            "header:bad name",
            "header:Connection",
            "query:a=b",
            "query:a&b",
            "query:a b",
            "query:a%20b",
            "",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn removes_only_the_named_parameter() {
        assert_eq!(
            without_param("a=1&api_key=k&b=2", "api_key").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(without_param("api_key=k", "api_key").as_deref(), Some(""));
        assert_eq!(
            without_param("api%5Fkey=k&x", "api_key").as_deref(),
            Some("x")
        );
        assert_eq!(without_param("api_key", "api_key").as_deref(), Some(""));
        assert_eq!(without_param("api_keys=k&xapi_key=1", "api_key"), None);
        assert_eq!(without_param("a=1", "api_key"), None);
    }

    #[test]
    fn decodes_as_a_form() {
        assert_eq!(decode("a%2Bb+c").as_deref(), Some("a+b c"));
        assert_eq!(decode("plain").as_deref(), Some("plain"));
        assert_eq!(decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode("%ff"), None);
    }
}
