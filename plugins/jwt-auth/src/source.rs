//! Where the token is read from: `header:NAME`, `cookie:NAME` or `query:NAME`.

use wasmgate_sdk::Request;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <token>` (scheme matched case-insensitively).
    Bearer,
    /// Any other header: its whole value (trimmed) is the token.
    Header(String),
    Cookie(String),
    Query(String),
}

impl Source {
    pub fn parse(text: &str) -> Result<Source, String> {
        let (kind, name) = text
            .split_once(':')
            .ok_or("expected `header:NAME`, `cookie:NAME` or `query:NAME`")?;
        if name.is_empty() {
            return Err(format!("`{kind}:` needs a name after the colon"));
        }
        match kind {
            "header" => {
                if !is_token(name) {
                    return Err(format!("`{name}` is not a valid header name"));
                }
                let name = name.to_ascii_lowercase();
                Ok(if name == "authorization" {
                    Source::Bearer
                } else {
                    Source::Header(name)
                })
            }
            "cookie" => {
                if !is_token(name) {
                    return Err(format!("`{name}` is not a valid cookie name"));
                }
                Ok(Source::Cookie(name.to_string()))
            }
            "query" => Ok(Source::Query(name.to_string())),
            _ => Err(format!(
                "unknown source `{kind}`: expected `header`, `cookie` or `query`"
            )),
        }
    }

    /// The token, when this source carries a non-empty one.
    pub fn read(&self, req: &Request<'_>) -> Option<String> {
        let token = match self {
            Source::Bearer => {
                let value = req.header("authorization")?;
                let value = value.trim();
                let (scheme, rest) = value.split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                rest.trim().to_string()
            }
            Source::Header(name) => req.header(name)?.trim().to_string(),
            Source::Cookie(name) => req
                .header_values("cookie")
                .iter()
                .find_map(|h| cookie_value(h, name))?,
            Source::Query(name) => query_value(&req.query()?, name)?,
        };
        (!token.is_empty()).then_some(token)
    }
}

/// RFC 9110 `token`: what a header name or a cookie name may be made of.
pub use wasmgate_sdk::rules::http::is_token;

fn cookie_value(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.to_string())
    })
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(n)? == name).then(|| percent_decode(v))?
    })
}

/// `%XX` decoding (and `+` as a space); `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // `from_str_radix` alone would take a sign: `%+1` is not an escape.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(Source::parse("header:Authorization"), Ok(Source::Bearer));
        assert_eq!(
            Source::parse("header:X-Token"),
            Ok(Source::Header("x-token".into()))
        );
        assert_eq!(
            Source::parse("cookie:session"),
            Ok(Source::Cookie("session".into()))
        );
        assert_eq!(
            Source::parse("query:access_token"),
            Ok(Source::Query("access_token".into()))
        );
        for bad in [
            "header",
            "header:",
            "body:x",
            "header:bad name",
            "cookie:a;b",
            "",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_cookies_and_queries() {
        assert_eq!(
            cookie_value("a=1; session=\"tok\"; b=2", "session"),
            Some("tok".into())
        );
        assert_eq!(cookie_value("xsession=1", "session"), None);
        assert_eq!(
            query_value("x=1&access_token=a.b%2Ec&y", "access_token"),
            Some("a.b.c".into())
        );
        assert_eq!(query_value("access_token=%zz", "access_token"), None);
        assert_eq!(query_value("access_token=a%+1", "access_token"), None);
        assert_eq!(query_value("%ff=1", "access_token"), None);
        assert_eq!(query_value("access_token2=x", "access_token"), None);
    }
}
