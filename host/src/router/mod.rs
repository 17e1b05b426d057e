//! Route matching: by host, path prefix (the longest wins) and method.
//!
//! A prefix matches at segment boundaries: `/api/users` matches `/api/users` and
//! `/api/users/7`, never `/api/usersX`. Lookup walks the request path's own prefixes from the
//! longest, one hash lookup each, so its cost follows the path's depth, not the route count.
//! The path is already in normal form (`wasmgate_uri::normalise_path`) and the host already
//! checked and lower-cased, without its port (`wasmgate_uri::parse_host`).

use std::collections::HashMap;

use foldhash::fast::RandomState;
use http::Method;

/// Which hosts a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// One host, lower-case.
    Exact(String),
    /// `*.example.com`: any subdomain of it (`a.example.com`, `a.b.example.com`), not
    /// `example.com` itself. Holds the suffix with its dot, lower-case (`.example.com`).
    Suffix(String),
}

impl HostMatch {
    fn new(host: &str) -> Self {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix) => Self::Suffix(suffix.to_owned()),
            None => Self::Exact(host),
        }
    }

    fn accepts(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Exact hosts first, then the longest suffix: the most specific route wins.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_) => (0, 0),
            Self::Suffix(s) => (1, usize::MAX - s.len()),
        }
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// What the router needs to know about a route; the rest lives with the caller's `T`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// `None` matches any host.
    pub host: Option<HostMatch>,
    /// Normalised: starts with `/`, no trailing `/` except for the root.
    pub prefix: String,
    /// `None` matches any method.
    pub methods: Option<Vec<Method>>,
}

impl Matcher {
    pub fn new(host: Option<&str>, prefix: &str, methods: Option<&[String]>) -> Self {
        Self {
            host: host.map(HostMatch::new),
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
            (Some(want), Some(got)) => want.accepts(got),
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
            ids.sort_by_key(|&i| {
                let rank = routes[i].0.host.as_ref().map_or((2, 0), HostMatch::rank);
                (rank, i)
            });
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

    /// Whether any route names a host: when none does, the request's host is never needed.
    pub fn any_host(&self) -> bool {
        self.any_host
    }

    /// The route for a request: `host` lower-case and without a port, `path` in normal form.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&T> {
        let host = if self.any_host { host } else { None };
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
            router.find(Some("api.example.com"), "/a", &Method::POST),
            Some(&1)
        );
        assert_eq!(router.find(Some("other"), "/a", &Method::GET), Some(&0));
        assert_eq!(router.find(Some("other"), "/a", &Method::POST), None);
    }

    #[test]
    fn wildcard_hosts_match_subdomains_and_exact_hosts_win() {
        let router = Router::new(vec![
            r(None, "/", None, 0),
            r(Some("*.example.com"), "/", None, 1),
            r(Some("api.example.com"), "/", None, 2),
            r(Some("*.eu.example.com"), "/", None, 3),
        ]);
        let get = Method::GET;
        assert_eq!(router.find(Some("api.example.com"), "/x", &get), Some(&2));
        assert_eq!(router.find(Some("www.example.com"), "/x", &get), Some(&1));
        assert_eq!(router.find(Some("a.b.example.com"), "/x", &get), Some(&1));
        assert_eq!(router.find(Some("a.eu.example.com"), "/x", &get), Some(&3));
        assert_eq!(router.find(Some("example.com"), "/x", &get), Some(&0));
        assert_eq!(router.find(Some("badexample.com"), "/x", &get), Some(&0));
        assert_eq!(router.find(None, "/x", &get), Some(&0));
    }
}
