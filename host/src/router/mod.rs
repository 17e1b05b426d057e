//! Route matching, in this order:
//! 1. the path: routes with that exact `path` (one hash lookup), then `path_pattern` routes
//!    whose pattern fits it (a segment trie, literal segments before `*`), then `path_prefix`
//!    routes, the longest prefix first. A prefix matches at segment boundaries: `/api/users`
//!    matches `/api/users` and `/api/users/7`, never `/api/usersX`. The prefixes are found by
//!    walking the request path's own prefixes from the longest, one hash lookup each, so the
//!    cost follows the path's depth, not the route count;
//! 2. among the routes on one path, their [`Precedence`]: the host (exact, then the longest
//!    `*.` suffix, then none), then the most matchers among `methods`, `headers` and `query`.
//!    The config refuses two routes with the same path and precedence that a request could
//!    match both of, so the first route whose matchers all hold is the only one that could be.
//!
//! When no route on a path holds, the next path in that order is tried. The path is already in
//! normal form (`wasmgate_uri::normalise_path`) and the host already checked and lower-cased,
//! without its port (`wasmgate_uri::parse_host`). Headers are looked up by name (any case) and
//! matched on their first value; the query is read at most once per request ([`query`]).

use std::collections::HashMap;

use foldhash::fast::RandomState;
use http::{HeaderMap, HeaderName, Method};
pub use wasmgate_config::HostMatch;
use wasmgate_config::{PathMatch, Precedence, RouteConfig, ValueMatch};

mod pattern;
mod query;
mod rewrite;

pub use rewrite::Rewrite;

/// What the router reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Lower-case, without its port.
    pub host: Option<&'a str>,
    pub method: &'a Method,
    /// In normal form.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> Request<'a> {
    /// A request's method, path, query and headers, with its routing `host`.
    pub fn of(parts: &'a http::request::Parts, host: Option<&'a str>) -> Self {
        Self {
            host,
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        }
    }
}

/// What the router needs to know about a route; the rest lives with the caller's `T`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// `None` matches any host.
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// `None` matches any method.
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    precedence: Precedence,
    /// Each `query` entry's slot in the router's [`query::Names`], set by [`Router::new`].
    query_slots: Vec<usize>,
}

impl Matcher {
    /// The matcher of a route that passed the config's checks (`None` for one without a path).
    pub fn new(route: &RouteConfig) -> Option<Self> {
        Some(Self {
            host: route.host_match(),
            path: route.path_match()?,
            methods: route.methods.as_ref().map(|ms| {
                ms.iter()
                    .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                    .collect()
            }),
            headers: route
                .headers
                .iter()
                .filter_map(|(n, m)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, m.clone())))
                .collect(),
            query: route
                .query
                .iter()
                .map(|(n, m)| (n.clone(), m.clone()))
                .collect(),
            precedence: route.precedence(),
            query_slots: Vec::new(),
        })
    }

    fn accepts(&self, req: &Request<'_>, host: Option<&str>, query: &mut query::Values) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.accepts(got),
            (Some(_), None) => false,
        };
        host_ok
            && self
                .methods
                .as_ref()
                .is_none_or(|ms| ms.contains(req.method))
            && self
                .headers
                .iter()
                .all(|(name, want)| want.accepts(req.headers.get(name).map(|v| v.as_bytes())))
            && self
                .query
                .iter()
                .zip(&self.query_slots)
                .all(|((_, want), &slot)| want.accepts(query.get(slot)))
    }
}

/// A table of routes of type `T`, built once per config.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(Matcher, T)>,
    /// Each map's lists hold indices into `routes`, in the order they are tried. The keys come
    /// from the config, so a fast hash is safe here.
    exact: HashMap<Box<str>, Vec<usize>, RandomState>,
    patterns: pattern::Node,
    by_prefix: HashMap<Box<str>, Vec<usize>, RandomState>,
    /// Whether any route names a host; when none does, the Host header is never looked at.
    any_host: bool,
    query_names: query::Names,
}

impl<T> Router<T> {
    pub fn new(mut routes: Vec<(Matcher, T)>) -> Self {
        let mut query_names = query::Names::default();
        for (m, _) in &mut routes {
            m.query_slots = m.query.iter().map(|(n, _)| query_names.slot(n)).collect();
        }
        let mut exact: HashMap<Box<str>, Vec<usize>, RandomState> = HashMap::default();
        let mut patterns = pattern::Node::default();
        let mut by_prefix: HashMap<Box<str>, Vec<usize>, RandomState> = HashMap::default();
        for (i, (m, _)) in routes.iter().enumerate() {
            match &m.path {
                PathMatch::Exact(p) => exact.entry(p.as_str().into()).or_default().push(i),
                PathMatch::Pattern(p) => patterns.insert(p, i),
                PathMatch::Prefix(p) => by_prefix.entry(p.as_str().into()).or_default().push(i),
            }
        }
        let order = |i: usize| (routes[i].0.precedence, i);
        for ids in exact.values_mut().chain(by_prefix.values_mut()) {
            ids.sort_by_key(|&i| order(i));
        }
        patterns.sort_routes(&order);
        let any_host = routes.iter().any(|(m, _)| m.host.is_some());
        Self {
            routes,
            exact,
            patterns,
            by_prefix,
            any_host,
            query_names,
        }
    }

    pub fn routes(&self) -> impl Iterator<Item = &(Matcher, T)> {
        self.routes.iter()
    }

    /// Whether any route names a host: when none does, the request's host is never needed.
    pub fn any_host(&self) -> bool {
        self.any_host
    }

    /// The route for a request.
    pub fn find(&self, req: &Request<'_>) -> Option<&T> {
        let path = req.path;
        if !path.starts_with('/') {
            return None;
        }
        let host = if self.any_host { req.host } else { None };
        let mut query = query::Values::new(&self.query_names, req.query);
        let mut holds = |i: usize| self.routes[i].0.accepts(req, host, &mut query);
        let found = |i: usize| Some(&self.routes[i].1);
        if let Some(ids) = self.exact.get(path)
            && let Some(i) = ids.iter().copied().find(|&i| holds(i))
        {
            return found(i);
        }
        if let Some(i) = self.patterns.find(path, &mut holds) {
            return found(i);
        }
        let mut cand = path.trim_end_matches('/');
        loop {
            let key = if cand.is_empty() { "/" } else { cand };
            if let Some(ids) = self.by_prefix.get(key)
                && let Some(i) = ids.iter().copied().find(|&i| holds(i))
            {
                return found(i);
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

    /// A router of routes given by their TOML lines, each route's index its value. The config
    /// must pass its checks, ties included, as a served one does.
    fn router(routes: &[&str]) -> Router<usize> {
        let mut text = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\ntargets = [\"http://127.0.0.1:1\"]\n".to_owned();
        for (i, r) in routes.iter().enumerate() {
            text.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\nupstream = \"u\"\n{r}\n"
            ));
        }
        let config = wasmgate_config::Config::parse(&text, std::path::Path::new("gw.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        Router::new(
            config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (Matcher::new(r).unwrap(), i))
                .collect(),
        )
    }

    fn prefix(host: Option<&str>, prefix: &str, methods: Option<&[&str]>) -> String {
        let mut s = format!("path_prefix = \"{prefix}\"\n");
        if let Some(h) = host {
            s.push_str(&format!("host = \"{h}\"\n"));
        }
        if let Some(ms) = methods {
            s.push_str(&format!("methods = {ms:?}\n"));
        }
        s
    }

    /// A request: `target` is a path with an optional query.
    struct Req {
        host: Option<&'static str>,
        method: Method,
        target: String,
        headers: HeaderMap,
    }

    fn req(target: &str) -> Req {
        Req {
            host: None,
            method: Method::GET,
            target: target.into(),
            headers: HeaderMap::new(),
        }
    }

    impl Req {
        fn host(mut self, h: &'static str) -> Self {
            self.host = Some(h);
            self
        }
        fn method(mut self, m: Method) -> Self {
            self.method = m;
            self
        }
        fn header(mut self, n: &'static str, v: &'static str) -> Self {
            self.headers.append(n, http::HeaderValue::from_static(v));
            self
        }
        fn find(&self, r: &Router<usize>) -> Option<usize> {
            let (path, query) = match self.target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (self.target.as_str(), None),
            };
            r.find(&Request {
                host: self.host,
                method: &self.method,
                path,
                query,
                headers: &self.headers,
            })
            .copied()
        }
    }

    #[test]
    fn longest_prefix_wins_at_segment_boundaries() {
        let r = router(&[
            &prefix(None, "/", None),
            &prefix(None, "/api", None),
            &prefix(None, "/api/users/", None),
        ]);
        assert_eq!(req("/api/users/7").find(&r), Some(2));
        assert_eq!(req("/api/users").find(&r), Some(2));
        assert_eq!(req("/api/usersX").find(&r), Some(1));
        assert_eq!(req("/other").find(&r), Some(0));
        assert_eq!(req("/").find(&r), Some(0));
        assert_eq!(req("*").find(&r), None);
    }

    #[test]
    fn host_and_method_filter() {
        let r = router(&[
            &prefix(None, "/a", Some(&["GET"])),
            &prefix(Some("API.example.com"), "/a", None),
        ]);
        let post = |host| req("/a").host(host).method(Method::POST);
        assert_eq!(post("api.example.com").find(&r), Some(1));
        assert_eq!(req("/a").host("other").find(&r), Some(0));
        assert_eq!(post("other").find(&r), None);
    }

    #[test]
    fn wildcard_hosts_match_subdomains_and_exact_hosts_win() {
        let r = router(&[
            &prefix(None, "/", None),
            &prefix(Some("*.example.com"), "/", None),
            &prefix(Some("api.example.com"), "/", None),
            &prefix(Some("*.eu.example.com"), "/", None),
        ]);
        assert_eq!(req("/x").host("api.example.com").find(&r), Some(2));
        assert_eq!(req("/x").host("www.example.com").find(&r), Some(1));
        assert_eq!(req("/x").host("a.b.example.com").find(&r), Some(1));
        assert_eq!(req("/x").host("a.eu.example.com").find(&r), Some(3));
        assert_eq!(req("/x").host("example.com").find(&r), Some(0));
        assert_eq!(req("/x").host("badexample.com").find(&r), Some(0));
        assert_eq!(req("/x").find(&r), Some(0));
    }

    #[test]
    fn exact_paths_then_patterns_then_prefixes() {
        let r = router(&[
            "path_prefix = \"/api\"",
            "path_prefix = \"/api/users/7/profile\"",
            "path_pattern = \"/api/users/*/profile\"",
            "path = \"/api/users/me/profile\"",
            "path = \"/api/auth/login\"\nmethods = [\"POST\"]",
        ]);
        assert_eq!(req("/api/users/me/profile").find(&r), Some(3));
        assert_eq!(
            req("/api/users/7/profile").find(&r),
            Some(2),
            "a pattern beats a longer prefix"
        );
        assert_eq!(req("/api/users/7/profile/x").find(&r), Some(1));
        assert_eq!(req("/api/users/7").find(&r), Some(0));
        // An exact path is that path: not its children, not with a trailing slash.
        assert_eq!(req("/api/users/me/profile/").find(&r), Some(0));
        assert_eq!(req("/api/auth/login/x").find(&r), Some(0));
        // An exact route whose method does not hold falls through to the prefix.
        assert_eq!(
            req("/api/auth/login").method(Method::POST).find(&r),
            Some(4)
        );
        assert_eq!(req("/api/auth/login").find(&r), Some(0));
        // The query is not part of the path.
        assert_eq!(req("/api/users/me/profile?x=1").find(&r), Some(3));
    }

    #[test]
    fn the_route_with_most_matchers_that_hold_wins() {
        let r = router(&[
            "path_prefix = \"/api\"",
            "path_prefix = \"/api\"\nheaders = { X-Api-Version = \"2\" }",
            "path_prefix = \"/api\"\nquery = { version = { prefix = \"3\" } }",
            "path_prefix = \"/api\"\nheaders = { x-api-version = \"2\" }\nquery = { version = { prefix = \"3\" } }",
            "path_prefix = \"/api\"\nheaders = { x-beta = { present = true } }\nmethods = [\"GET\"]",
            "path_prefix = \"/api\"\nheaders = { x-api-version = \"2\", x-beta = { present = true } }\nmethods = [\"GET\"]",
        ]);
        assert_eq!(req("/api/x").find(&r), Some(0));
        assert_eq!(req("/api/x").header("x-api-version", "2").find(&r), Some(1));
        assert_eq!(
            req("/api/x").header("x-api-version", "20").find(&r),
            Some(0)
        );
        assert_eq!(req("/api/x?version=3.1").find(&r), Some(2));
        assert_eq!(req("/api/x?version=2").find(&r), Some(0));
        assert_eq!(
            req("/api/x?version=3")
                .header("X-API-VERSION", "2")
                .find(&r),
            Some(3)
        );
        assert_eq!(req("/api/x").header("x-beta", "").find(&r), Some(4));
        assert_eq!(
            req("/api/x")
                .header("x-beta", "")
                .method(Method::POST)
                .find(&r),
            Some(0)
        );
        assert_eq!(
            req("/api/x")
                .header("x-beta", "1")
                .header("x-api-version", "2")
                .find(&r),
            Some(5)
        );
        // The first value of a header counts.
        assert_eq!(
            req("/api/x")
                .header("x-api-version", "1")
                .header("x-api-version", "2")
                .find(&r),
            Some(0)
        );
        // Query names and values are compared decoded.
        assert_eq!(req("/api/x?ver%73ion=%33").find(&r), Some(2));
    }

    #[test]
    fn matchers_narrow_a_path_but_never_widen_it() {
        let r = router(&[
            "path_prefix = \"/\"",
            "path_prefix = \"/admin\"\nheaders = { x-admin = \"yes\" }",
        ]);
        assert_eq!(req("/admin").find(&r), Some(0));
        assert_eq!(req("/admin/x").header("x-admin", "yes").find(&r), Some(1));
        assert_eq!(req("/adminx").header("x-admin", "yes").find(&r), Some(0));
    }

    #[test]
    fn the_query_is_read_only_when_a_route_asks() {
        let r = router(&[
            "path_prefix = \"/\"",
            "path = \"/q\"\nquery = { a = \"1\" }",
        ]);
        let long = format!("/q?{}a=1", "x=y&".repeat(50_000));
        assert_eq!(req(&long).find(&r), Some(1));
        assert_eq!(req("/q?a=2&a=1").find(&r), Some(0));
        assert_eq!(req("/other?a=1").find(&r), Some(0));
    }
}
