//! Route matching: by host, path prefix (the longest wins) and method.
//!
//! A prefix matches at segment boundaries: `/api/users` matches `/api/users` and
//! `/api/users/7`, never `/api/usersX`. Lookup walks the request path's own prefixes from the
//! longest, one hash lookup each, so its cost follows the path's depth, not the route count.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use http::Method;

/// What the router needs to know about a route; the rest lives with the caller's `T`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// Normalised: starts with `/`, no trailing `/` except for the root.
    pub prefix: String,
    /// `None` matches any method.
    pub methods: Option<Vec<Method>>,
}

impl Matcher {
    pub fn new(host: Option<&str>, prefix: &str, methods: Option<&[String]>) -> Self {
        Self {
            host: host.map(|h| h.to_ascii_lowercase()),
            prefix: normalise_prefix(prefix).to_owned(),
            methods: methods.map(|ms| {
                ms.iter()
                    .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                    .collect()
            }),
        }
    }

    fn accepts(&self, host: Option<&str>, method: &Method) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        host_ok && self.methods.as_ref().is_none_or(|ms| ms.contains(method))
    }
}

fn normalise_prefix(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// A table of routes of type `T`, built once per config.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(Matcher, T)>,
    /// prefix → indices into `routes`, host-specific routes first, then config order. The keys
    /// come from the config, so a fast hash is safe here.
    by_prefix: HashMap<Box<str>, Vec<usize>, RandomState>,
    /// Whether any route names a host; when none does, the Host header is never looked at.
    any_host: bool,
}

impl<T> Router<T> {
    pub fn new(routes: Vec<(Matcher, T)>) -> Self {
        let mut by_prefix: HashMap<Box<str>, Vec<usize>, RandomState> = HashMap::default();
        for (i, (m, _)) in routes.iter().enumerate() {
            by_prefix
                .entry(m.prefix.as_str().into())
                .or_default()
                .push(i);
        }
        for ids in by_prefix.values_mut() {
            ids.sort_by_key(|&i| (routes[i].0.host.is_none(), i));
        }
        let any_host = routes.iter().any(|(m, _)| m.host.is_some());
        Self {
            routes,
            by_prefix,
            any_host,
        }
    }

    pub fn routes(&self) -> impl Iterator<Item = &(Matcher, T)> {
        self.routes.iter()
    }

    /// The route for a request. `host` is the Host header's value (a port is ignored).
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&T> {
        let host = if self.any_host {
            host.map(strip_port)
        } else {
            None
        };
        if !path.starts_with('/') {
            return None;
        }
        let mut cand = path.trim_end_matches('/');
        loop {
            let key = if cand.is_empty() { "/" } else { cand };
            if let Some(ids) = self.by_prefix.get(key) {
                for &i in ids {
                    let (m, t) = &self.routes[i];
                    if m.accepts(host, method) {
                        return Some(t);
                    }
                }
            }
            if cand.is_empty() {
                return None;
            }
            cand = &cand[..cand.rfind('/').unwrap_or(0)];
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether a request path tries to climb out of its prefix with dot segments, raw or
/// percent-encoded (`/a/../admin`, `/a/%2e%2e/admin`). Such requests are refused outright.
pub fn has_dot_segments(path: &str) -> bool {
    // Most paths have neither a dot nor a percent sign.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let lower_has_encoded_dot = path.len() >= 3
        && path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'e' || w[2] == b'E'));
    if lower_has_encoded_dot {
        let decoded = path.replace("%2e", ".").replace("%2E", ".");
        return decoded.split('/').any(|s| s == "." || s == "..");
    }
    path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, prefix: &str, methods: Option<&[&str]>, id: u32) -> (Matcher, u32) {
        let ms: Option<Vec<String>> = methods.map(|m| m.iter().map(|s| s.to_string()).collect());
        (Matcher::new(host, prefix, ms.as_deref()), id)
    }

    #[test]
    fn longest_prefix_wins_at_segment_boundaries() {
        let router = Router::new(vec![
            r(None, "/", None, 0),
            r(None, "/api", None, 1),
            r(None, "/api/users/", None, 2),
        ]);
        let get = Method::GET;
        assert_eq!(router.find(None, "/api/users/7", &get), Some(&2));
        assert_eq!(router.find(None, "/api/users", &get), Some(&2));
        assert_eq!(router.find(None, "/api/usersX", &get), Some(&1));
        assert_eq!(router.find(None, "/other", &get), Some(&0));
        assert_eq!(router.find(None, "/", &get), Some(&0));
        assert_eq!(router.find(None, "*", &get), None);
    }

    #[test]
    fn host_and_method_filter() {
        let router = Router::new(vec![
            r(None, "/a", Some(&["GET"]), 0),
            r(Some("API.example.com"), "/a", None, 1),
        ]);
        assert_eq!(
            router.find(Some("api.example.com:8080"), "/a", &Method::POST),
            Some(&1)
        );
        assert_eq!(router.find(Some("other"), "/a", &Method::GET), Some(&0));
        assert_eq!(router.find(Some("other"), "/a", &Method::POST), None);
    }

    #[test]
    fn dot_segments_are_spotted() {
        assert!(has_dot_segments("/a/../b"));
        assert!(has_dot_segments("/a/%2E%2e/b"));
        assert!(has_dot_segments("/a/."));
        assert!(!has_dot_segments("/a/..b/c.d"));
        assert!(!has_dot_segments("/plain/x"));
    }
}
