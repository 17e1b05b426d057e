//! What a request must be before it is routed: one valid `Host` (RFC 9112 §3.2), and a path
//! with a normal form. The request's target is rewritten in place to the one form every later
//! step sees (router, plugins, upstream): origin-form, the path normalised, and `Host` the
//! authority that won.

use std::borrow::Cow;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Uri, Version, header, request};
use wasmgate_uri::{EscapedSlashes, normalise_path, parse_host};

/// Why a request was refused before routing. Each is a 400: the client's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("an HTTP/1.1 request without a Host header")]
    NoHost,
    #[error("more than one Host header")]
    TwoHosts,
    #[error("an invalid host: {0}")]
    BadHost(wasmgate_uri::HostError),
    #[error("an absolute-form target with a scheme other than http or https")]
    BadScheme,
    #[error("a path with no normal form: {0}")]
    BadPath(wasmgate_uri::PathError),
    /// RFC 9112 §6.1: a server may refuse it, and must close the connection either way; two
    /// framings are how requests are smuggled past a proxy that reads the other one.
    #[error("both Content-Length and Transfer-Encoding")]
    TwoFramings,
    #[error("a method longer than {MAX_METHOD} bytes")]
    LongMethod,
}

/// The longest method accepted. Registered methods are at most 17 bytes (WebDAV's
/// `UPDATEREDIRECTREF`); a longer one is an attack or a mistake.
pub const MAX_METHOD: usize = 32;

/// Checks a request's `Host` and target, and rewrites the target to its one form.
///
/// An absolute-form target's authority wins over the `Host` header (RFC 9112 §3.2.2), and
/// becomes the `Host` header, so plugins and `X-Forwarded-Host` see the host that was routed.
pub fn admit(parts: &mut request::Parts, escaped: EscapedSlashes) -> Result<(), Refused> {
    if parts.method.as_str().len() > MAX_METHOD {
        return Err(Refused::LongMethod);
    }
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(Refused::TwoFramings);
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused::TwoHosts);
    }
    if host_header.is_none() && parts.version == Version::HTTP_11 {
        return Err(Refused::NoHost);
    }
    let absolute = parts.uri.authority().is_some();
    if absolute {
        if !matches!(parts.uri.scheme(), Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS) {
            return Err(Refused::BadScheme);
        }
        let authority = parts.uri.authority().expect("checked above").as_str();
        parse_host(authority.as_bytes()).map_err(Refused::BadHost)?;
        // A host `parse_host` accepts is visible ASCII, so it is a header value as it is.
        let value = HeaderValue::from_str(authority)
            .map_err(|_| Refused::BadHost(wasmgate_uri::HostError::BadAddress))?;
        parts.headers.insert(header::HOST, value);
    } else if let Some(h) = host_header {
        parse_host(h.as_bytes()).map_err(Refused::BadHost)?;
    }
    let path = match normalise_path(parts.uri.path(), escaped).map_err(Refused::BadPath)? {
        Cow::Borrowed(_) if !absolute => return Ok(()),
        // Every HTTP/2 request is absolute-form: its path and query, already normal, are kept
        // as they are (shared bytes, no copy).
        Cow::Borrowed(_) => {
            parts.uri = parts
                .uri
                .path_and_query()
                .cloned()
                .map_or_else(|| Uri::from_static("/"), Uri::from);
            return Ok(());
        }
        Cow::Owned(p) => p,
    };
    parts.uri = origin_form(&path, parts.uri.query());
    Ok(())
}

/// The routing host of an admitted request: lower-case, without its port.
pub fn host_of(parts: &request::Parts) -> Option<Cow<'_, str>> {
    let value = parts.headers.get(header::HOST)?;
    parse_host(value.as_bytes()).ok().flatten().map(|h| h.name)
}

/// `path?query` as an origin-form URI. Both parts come from a URI that parsed, and the
/// normaliser only writes `/` and upper-case percent-encodings, so this cannot fail.
pub fn origin_form(path: &str, query: Option<&str>) -> Uri {
    let pq = match query {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    };
    pq.map(Uri::from).unwrap_or_else(|_| Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(target: &str, version: Version, hosts: &[&str]) -> request::Parts {
        let mut b = http::Request::builder().uri(target).version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let reject = EscapedSlashes::Reject;
        let mut p = parts("/x", Version::HTTP_11, &[]);
        assert_eq!(admit(&mut p, reject), Err(Refused::NoHost));
        let mut p = parts("/x", Version::HTTP_10, &[]);
        assert_eq!(admit(&mut p, reject), Ok(()));
        let mut p = parts("/x", Version::HTTP_11, &["a", "b"]);
        assert_eq!(admit(&mut p, reject), Err(Refused::TwoHosts));
        let mut p = parts("/x", Version::HTTP_11, &["api.example.com:80@evil.example"]);
        assert!(matches!(admit(&mut p, reject), Err(Refused::BadHost(_))));
        let mut p = parts("/x", Version::HTTP_11, &["API.example.com:8080"]);
        assert_eq!(admit(&mut p, reject), Ok(()));
        assert_eq!(host_of(&p).as_deref(), Some("api.example.com"));
        let mut p = parts("/x", Version::HTTP_11, &["x"]);
        p.method = http::Method::from_bytes(&[b'M'; MAX_METHOD + 1]).unwrap();
        assert_eq!(admit(&mut p, reject), Err(Refused::LongMethod));
        p.method = http::Method::from_bytes(b"UPDATEREDIRECTREF").unwrap();
        assert_eq!(admit(&mut p, reject), Ok(()));
    }

    #[test]
    fn the_authority_of_an_absolute_form_target_wins() {
        let mut p = parts(
            "http://a.example/x/../y?q=1",
            Version::HTTP_11,
            &["b.example"],
        );
        assert_eq!(admit(&mut p, EscapedSlashes::Reject), Ok(()));
        assert_eq!(p.headers[header::HOST], "a.example");
        assert_eq!(p.uri, "/y?q=1");
        assert_eq!(host_of(&p).as_deref(), Some("a.example"));
        let mut p = parts("http://u@a.example/x", Version::HTTP_11, &["a.example"]);
        assert!(matches!(
            admit(&mut p, EscapedSlashes::Reject),
            Err(Refused::BadHost(_))
        ));
        let mut p = parts("ftp://a.example/x", Version::HTTP_11, &["a.example"]);
        assert_eq!(
            admit(&mut p, EscapedSlashes::Reject),
            Err(Refused::BadScheme)
        );
    }

    #[test]
    fn the_path_is_normalised_in_place_and_the_query_kept() {
        let mut p = parts("/api/%61dmin//users?a=%2F", Version::HTTP_11, &["x"]);
        assert_eq!(admit(&mut p, EscapedSlashes::Reject), Ok(()));
        assert_eq!(p.uri, "/api/admin/users?a=%2F");
        let mut p = parts("/api/x/..%2fadmin", Version::HTTP_11, &["x"]);
        assert!(matches!(
            admit(&mut p, EscapedSlashes::Reject),
            Err(Refused::BadPath(_))
        ));
    }
}
