//! `[[routes]]`: what a route matches (a path, a pattern or a prefix; host, methods, headers,
//! query), where its requests go (an upstream, or the answer the route gives itself), and the
//! checks that leave every request one route. The router (`host/src/router`) ranks routes by
//! [`RouteConfig::precedence`], the same order the tie check here reasons about.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use wasmgate_rules::http as rules;

use crate::{Config, EscapedSlashes, HostHeader, PipelineEntry, check_timeout, defaults, names};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(default)]
    pub host: Option<String>,
    /// This path and every path under it, at segment boundaries. One of `path_prefix`,
    /// `path` and `path_pattern` is set.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// This path only.
    #[serde(default)]
    pub path: Option<String>,
    /// Paths of this shape, each `*` segment standing for any one segment.
    #[serde(default)]
    pub path_pattern: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Request headers that must match, by name (any case).
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Query parameters that must match, by name, both compared percent-decoded.
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
    /// Where the route's requests go. One of `upstream` and `respond` is set.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The answer the route gives itself, with no upstream.
    #[serde(default)]
    pub respond: Option<Respond>,
    #[serde(default)]
    pub strip_prefix: bool,
    /// What the matched prefix (or path) becomes on the way upstream.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    /// Overrides the upstream's `host_header` for this route.
    #[serde(default)]
    pub host_header: Option<HostHeader>,
    /// The longest the route waits for a response head, every attempt and backoff included;
    /// each attempt has its upstream's `timeout_ms` when unset.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// A WebSocket tunnel through this route is closed when no byte has moved either way for
    /// this long.
    #[serde(default = "defaults::websocket_idle_timeout_ms")]
    pub websocket_idle_timeout_ms: u64,
    /// Compress textual responses with brotli or gzip, by the client's `Accept-Encoding`.
    #[serde(default)]
    pub compress: bool,
    /// Responses known to be shorter than this are not compressed.
    #[serde(default = "defaults::compress_min_bytes")]
    pub compress_min_bytes: u64,
    #[serde(default)]
    pub pipeline: Vec<PipelineEntry>,
}

/// How a route matches paths, in the order the router tries them: an exact path, then a
/// pattern, then the longest prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// `path`: this path only.
    Exact(String),
    /// `path_pattern`: as many segments, each `*` standing for any one (not empty).
    Pattern(String),
    /// `path_prefix`, without a trailing `/` (but for `/` itself).
    Prefix(String),
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => write!(f, "path `{p}`"),
            Self::Pattern(p) => write!(f, "path_pattern `{p}`"),
            Self::Prefix(p) => write!(f, "path_prefix `{p}`"),
        }
    }
}

/// A prefix as the router keys it: no trailing `/`, except for the root.
pub fn trim_prefix(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// Where a route stands among the routes on the same path: the lower, the sooner it is tried.
pub type Precedence = ((u8, usize), Reverse<usize>);

impl RouteConfig {
    /// How the route matches paths; `None` only for a route that failed its checks.
    pub fn path_match(&self) -> Option<PathMatch> {
        match (&self.path, &self.path_pattern, &self.path_prefix) {
            (Some(p), None, None) => Some(PathMatch::Exact(p.clone())),
            (None, Some(p), None) => Some(PathMatch::Pattern(p.clone())),
            (None, None, Some(p)) => Some(PathMatch::Prefix(trim_prefix(p).to_owned())),
            _ => None,
        }
    }

    /// The host the route names, lower-case.
    pub fn host_match(&self) -> Option<HostMatch> {
        self.host.as_deref().map(HostMatch::new)
    }

    /// The route's rank among routes on the same path: its host first (an exact host, then the
    /// longest `*.` suffix, then none), then the more of the other matchers (`methods`, each
    /// header, each query parameter) the better.
    pub fn precedence(&self) -> Precedence {
        let host = self.host_match().as_ref().map_or((2, 0), HostMatch::rank);
        (host, Reverse(self.matchers()))
    }

    /// How many matchers besides the path and host the route has.
    pub fn matchers(&self) -> usize {
        usize::from(self.methods.is_some()) + self.headers.len() + self.query.len()
    }

    /// What replaces the matched prefix before forwarding: `rewrite_prefix`, or `/` for
    /// `strip_prefix`.
    pub fn rewrite(&self) -> Option<&str> {
        match (&self.rewrite_prefix, self.strip_prefix) {
            (Some(to), _) => Some(to),
            (None, true) => Some("/"),
            (None, false) => None,
        }
    }

    /// The methods, upper-case, sorted and without repeats.
    fn method_set(&self) -> Option<Vec<String>> {
        self.methods.as_ref().map(|ms| {
            let mut ms: Vec<String> = ms.iter().map(|m| m.to_ascii_uppercase()).collect();
            ms.sort();
            ms.dedup();
            ms
        })
    }

    /// The header matchers by lower-case name.
    fn header_matchers(&self) -> BTreeMap<String, &ValueMatch> {
        self.headers
            .iter()
            .map(|(n, m)| (n.to_ascii_lowercase(), m))
            .collect()
    }
}

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
    pub fn new(host: &str) -> Self {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix) => Self::Suffix(suffix.to_owned()),
            None => Self::Exact(host),
        }
    }

    /// Whether it accepts `host`, lower-case and without its port.
    pub fn accepts(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Exact hosts first, then the longest suffix: the most specific route wins.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_) => (0, 0),
            Self::Suffix(s) => (1, usize::MAX - s.len()),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// A `headers` or `query` value: `"2"` (exactly), `{ prefix = "v2" }` or `{ present = true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Present,
}

impl ValueMatch {
    /// Whether a header's or parameter's value (`None`: not in the request) matches.
    pub fn accepts(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (_, None) => false,
            (Self::Exact(want), Some(v)) => want.as_bytes() == v,
            (Self::Prefix(want), Some(v)) => v.starts_with(want.as_bytes()),
            (Self::Present, Some(_)) => true,
        }
    }

    /// Whether some value matches both.
    fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Present, _) | (_, Self::Present) => true,
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(v), Self::Prefix(p)) | (Self::Prefix(p), Self::Exact(v)) => {
                v.starts_with(p.as_str())
            }
            (Self::Prefix(a), Self::Prefix(b)) => a.starts_with(b.as_str()) || b.starts_with(a),
        }
    }

    /// Whether every value this matches, `other` matches too.
    fn implies(&self, other: &Self) -> bool {
        match (self, other) {
            (_, Self::Present) => true,
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(v) | Self::Prefix(v), Self::Prefix(p)) => v.starts_with(p.as_str()),
            _ => false,
        }
    }
}

impl fmt::Display for ValueMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(v) => write!(f, "{v:?}"),
            Self::Prefix(p) => write!(f, "{{ prefix = {p:?} }}"),
            Self::Present => f.write_str("{ present = true }"),
        }
    }
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = ValueMatch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a string (the exact value), { prefix = "..." } or { present = true }"#,
                )
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(s.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueMatch, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    let m = match key.as_str() {
                        "prefix" => ValueMatch::Prefix(map.next_value()?),
                        "present" => {
                            if !map.next_value::<bool>()? {
                                return Err(de::Error::custom(
                                    "`present` can only be true: a route that leaves the name \
                                     out matches with it or without it",
                                ));
                            }
                            ValueMatch::Present
                        }
                        other => {
                            return Err(de::Error::unknown_field(other, &["prefix", "present"]));
                        }
                    };
                    if found.replace(m).is_some() {
                        return Err(de::Error::custom("set one of `prefix` and `present`"));
                    }
                }
                found.ok_or_else(|| {
                    de::Error::custom(
                        r#"an empty table: write { prefix = "..." } or { present = true }"#,
                    )
                })
            }
        }
        d.deserialize_any(Value)
    }
}

/// The largest `respond.body`, in bytes: a route's own answer is a short text, not a file.
pub const MAX_RESPOND_BODY_BYTES: usize = 64 * 1024;

/// `respond = { status = 200, headers = { … }, body = "…" }`: the answer a route gives itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

impl Respond {
    /// The status and headers, checked by the rules plugins' answers follow: what is wrong, if
    /// anything.
    pub fn parts(&self) -> Result<(StatusCode, Vec<(HeaderName, HeaderValue)>), String> {
        let status = Some(self.status)
            .filter(|s| rules::FINAL_STATUS.contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| {
                format!(
                    "status {} is not a final status ({} to {})",
                    self.status,
                    rules::FINAL_STATUS.start(),
                    rules::FINAL_STATUS.end()
                )
            })?;
        if !self.body.is_empty() && matches!(self.status, 204 | 304) {
            return Err(format!("status {} has no body", self.status));
        }
        if self.body.len() > MAX_RESPOND_BODY_BYTES {
            return Err(format!(
                "body: {} bytes is more than {MAX_RESPOND_BODY_BYTES} (64 KiB)",
                self.body.len()
            ));
        }
        let mut seen = HashSet::new();
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            if !rules::is_header_name(k) {
                return Err(format!("headers: `{k}` is not a header name"));
            }
            if rules::is_host_managed(k) {
                return Err(format!(
                    "headers: `{k}` is the gateway's to set (it frames the answer itself)"
                ));
            }
            if !rules::is_header_value(v) {
                return Err(format!("headers: the value of `{k}` is not a header value"));
            }
            if !seen.insert(k.to_ascii_lowercase()) {
                return Err(format!("headers: `{k}` is given twice, in two cases"));
            }
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: `{k}` is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("headers: the value of `{k}` is not a header value"))?;
            headers.push((name, value));
        }
        Ok((status, headers))
    }
}

/// Every problem of `config.routes`, each naming its route and key.
pub(crate) fn problems(config: &Config, out: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}] (\"{}\")", r.name);
        if r.name.is_empty() {
            out.push(format!("routes[{i}].name: must not be empty"));
        } else if !seen.insert(r.name.as_str()) {
            out.push(format!("{at}.name: duplicate route name"));
        }
        path_problems(r, &at, out);
        if let Some(h) = &r.host
            && let Err(e) = check_route_host(h)
        {
            out.push(format!("{at}.host: `{h}` {e}"));
        }
        if let Some(ms) = r.timeout_ms {
            check_timeout(out, &format!("{at}.timeout_ms"), ms);
        }
        if r.methods.as_ref().is_some_and(Vec::is_empty) {
            out.push(format!(
                "{at}.methods: an empty list matches nothing (leave it out to match every method)"
            ));
        }
        for m in r.methods.iter().flatten() {
            if http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                out.push(format!("{at}.methods: `{m}` is not an HTTP method"));
            }
        }
        matcher_problems(r, &at, out);
        target_problems(config, r, &at, out);
        for (j, p) in r.pipeline.iter().enumerate() {
            for key in p.config_files.keys() {
                if p.config.contains_key(key) {
                    out.push(format!(
                        "{at}.pipeline[{j}].config_files.{key}: `{key}` is also set in config"
                    ));
                }
            }
            if !config.plugins.contains_key(&p.plugin) {
                out.push(format!(
                    "{at}.pipeline[{j}].plugin: unknown plugin `{}` (defined: {})",
                    p.plugin,
                    names(config.plugins.keys())
                ));
            }
        }
    }
    out.extend(ties(&config.routes));
}

/// One of `path_prefix`, `path` and `path_pattern`, in normal form; what rewrites it.
fn path_problems(r: &RouteConfig, at: &str, out: &mut Vec<String>) {
    let given: Vec<(&str, &str)> = [
        ("path_prefix", &r.path_prefix),
        ("path", &r.path),
        ("path_pattern", &r.path_pattern),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v.as_deref()?)))
    .collect();
    match given.as_slice() {
        [] => out.push(format!(
            "{at}: set one of path_prefix, path and path_pattern"
        )),
        [_] => {}
        [(a, _), (b, _), ..] => out.push(format!(
            "{at}: {a} and {b} cannot both be set: a route matches paths one way"
        )),
    }
    for (key, p) in &given {
        check_normal(out, at, key, p);
    }
    if let Some(p) = &r.path_pattern {
        let segments: Vec<&str> = p.split('/').skip(1).collect();
        if segments.iter().any(|s| s.contains('*') && *s != "*") {
            out.push(format!(
                "{at}.path_pattern: `{p}`: `*` stands for a whole segment (`/a/*/b`), alone between slashes"
            ));
        } else if !segments.contains(&"*") {
            out.push(format!(
                "{at}.path_pattern: `{p}` has no `*` segment: match one path with `path`"
            ));
        }
        for key in ["rewrite_prefix", "strip_prefix"] {
            let set = if key == "strip_prefix" {
                r.strip_prefix
            } else {
                r.rewrite_prefix.is_some()
            };
            if set {
                out.push(format!(
                    "{at}.{key}: is for path_prefix and path routes: a pattern has no prefix to replace"
                ));
            }
        }
    }
    if let Some(to) = &r.rewrite_prefix {
        if check_normal(out, at, "rewrite_prefix", to) && to.len() > 1 && to.ends_with('/') {
            out.push(format!(
                "{at}.rewrite_prefix: `{to}` ends with '/', which the rest of the path starts with (write `{}`)",
                trim_prefix(to)
            ));
        }
        if r.strip_prefix {
            out.push(format!(
                "{at}: strip_prefix and rewrite_prefix cannot both be set (strip_prefix = true is rewrite_prefix = \"/\")"
            ));
        }
    }
}

/// Whether `p` is a path in normal form; the problem when it is not.
fn check_normal(out: &mut Vec<String>, at: &str, key: &str, p: &str) -> bool {
    match wasmgate_uri::normalise_path(p, EscapedSlashes::Reject) {
        Err(e) => out.push(format!("{at}.{key}: `{p}`: {e}")),
        Ok(n) if n != p => out.push(format!(
            "{at}.{key}: `{p}` is not in normal form, so no request could match it (write `{n}`)"
        )),
        Ok(_) => return true,
    }
    false
}

/// `headers` and `query`: names that can be in a request, values that can match.
fn matcher_problems(r: &RouteConfig, at: &str, out: &mut Vec<String>) {
    let mut lower = HashMap::new();
    for (name, m) in &r.headers {
        let at = format!("{at}.headers.{name}");
        if !rules::is_header_name(name) {
            out.push(format!("{at}: `{name}` is not a header name"));
            continue;
        }
        if rules::is_host_header(name) {
            out.push(format!(
                "{at}: match the host with the route's `host`, which is read without its port"
            ));
        }
        if let Some(first) = lower.insert(name.to_ascii_lowercase(), name) {
            out.push(format!("{at}: `{first}` names the same header"));
        }
        match m {
            ValueMatch::Exact(v) | ValueMatch::Prefix(v) if !rules::is_header_value(v) => {
                out.push(format!(
                    "{at}: {m} is not a header value, so no request could match it"
                ));
            }
            _ => {}
        }
        empty_prefix(m, &at, out);
    }
    for (name, m) in &r.query {
        let at = format!("{at}.query.{name}");
        if name.is_empty() {
            out.push(format!("{at}: a parameter needs a name"));
        }
        empty_prefix(m, &at, out);
    }
}

fn empty_prefix(m: &ValueMatch, at: &str, out: &mut Vec<String>) {
    if *m == ValueMatch::Prefix(String::new()) {
        out.push(format!(
            "{at}.prefix: an empty prefix matches any value: write {{ present = true }}"
        ));
    }
}

/// Either an upstream, known, or `respond`, valid, without the keys only an upstream uses.
fn target_problems(config: &Config, r: &RouteConfig, at: &str, out: &mut Vec<String>) {
    match (&r.upstream, &r.respond) {
        (Some(u), None) => {
            if !config.upstreams.contains_key(u) {
                out.push(format!(
                    "{at}.upstream: unknown upstream `{u}` (defined: {})",
                    names(config.upstreams.keys())
                ));
            }
        }
        (None, Some(respond)) => {
            if let Err(e) = respond.parts() {
                out.push(format!("{at}.respond: {e}"));
            }
            for (key, set) in [
                ("strip_prefix", r.strip_prefix),
                ("rewrite_prefix", r.rewrite_prefix.is_some()),
                ("host_header", r.host_header.is_some()),
                ("timeout_ms", r.timeout_ms.is_some()),
            ] {
                if set {
                    out.push(format!(
                        "{at}.{key}: is for a route with an upstream, and this one responds itself"
                    ));
                }
            }
        }
        (Some(_), Some(_)) => out.push(format!(
            "{at}: upstream and respond cannot both be set: a route forwards or answers itself"
        )),
        (None, None) => out.push(format!(
            "{at}: set upstream (where its requests go) or respond (the answer it gives itself)"
        )),
    }
}

/// A route's `host`: a host name, or `*.` and a host name to match its subdomains.
fn check_route_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err("is not a host name: `*` may only stand first, as in `*.example.com`".into());
    }
    match wasmgate_uri::parse_host(name.as_bytes()) {
        Ok(Some(h)) if h.port.is_none() && !name.contains(':') => Ok(()),
        Ok(_) => Err("is not a host name (give it without a port)".into()),
        Err(e) => Err(format!("is not a host name: {e}")),
    }
}

/// Pairs of routes on the same path, with the same precedence, that one request could match
/// both of, when no route before them takes every such request: the router would have no
/// reason to choose one.
fn ties(routes: &[RouteConfig]) -> Vec<String> {
    let mut by_path: HashMap<PathMatch, Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Some(p) = r.path_match() {
            by_path.entry(p).or_default().push(i);
        }
    }
    let mut found = Vec::new();
    for (path, ids) in &by_path {
        for (n, &a) in ids.iter().enumerate() {
            for &b in &ids[n + 1..] {
                let (ra, rb) = (&routes[a], &routes[b]);
                if ra.precedence() != rb.precedence() || !could_both_match(ra, rb) {
                    continue;
                }
                let covered = ids.iter().any(|&c| {
                    let rc = &routes[c];
                    rc.precedence() < ra.precedence() && covers(rc, ra, rb)
                });
                if !covered {
                    found.push((a, b, path));
                }
            }
        }
    }
    found.sort_by_key(|&(a, b, _)| (a, b));
    found
        .into_iter()
        .map(|(a, b, path)| {
            let n = routes[a].matchers();
            format!(
                "routes[{a}] (\"{}\") and routes[{b}] (\"{}\") tie: one request can match both \
                 ({path}, the same host, {n} matcher{} each), and neither comes first. Tell \
                 them apart by a value, give one of them more matchers, or add a route with the \
                 matchers of both",
                routes[a].name,
                routes[b].name,
                if n == 1 { "" } else { "s" }
            )
        })
        .collect()
}

/// Whether some request satisfies the host, methods, headers and query of both routes.
fn could_both_match(a: &RouteConfig, b: &RouteConfig) -> bool {
    let hosts = match (a.host_match(), b.host_match()) {
        (None, _) | (_, None) => true,
        (Some(HostMatch::Exact(x)), Some(h)) | (Some(h), Some(HostMatch::Exact(x))) => {
            h.accepts(&x)
        }
        (Some(HostMatch::Suffix(s)), Some(HostMatch::Suffix(t))) => {
            s.ends_with(t.as_str()) || t.ends_with(s.as_str())
        }
    };
    let methods = match (a.method_set(), b.method_set()) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    };
    let (ha, hb) = (a.header_matchers(), b.header_matchers());
    let headers = ha
        .iter()
        .all(|(n, m)| hb.get(n).is_none_or(|o| m.overlaps(o)));
    let query = a
        .query
        .iter()
        .all(|(n, m)| b.query.get(n).is_none_or(|o| m.overlaps(o)));
    hosts && methods && headers && query
}

/// Whether every request that satisfies both `a` and `b` (which have the same host) satisfies
/// `c`.
fn covers(c: &RouteConfig, a: &RouteConfig, b: &RouteConfig) -> bool {
    let host = c.host_match().is_none_or(|h| Some(h) == a.host_match());
    let methods = match (c.method_set(), a.method_set(), b.method_set()) {
        (None, _, _) => true,
        (Some(_), None, None) => false,
        (Some(cm), Some(x), None) | (Some(cm), None, Some(x)) => x.iter().all(|m| cm.contains(m)),
        (Some(cm), Some(x), Some(y)) => x.iter().filter(|m| y.contains(m)).all(|m| cm.contains(m)),
    };
    let (ha, hb) = (a.header_matchers(), b.header_matchers());
    let headers = c.header_matchers().iter().all(|(n, want)| {
        [ha.get(n), hb.get(n)]
            .into_iter()
            .flatten()
            .any(|m| m.implies(want))
    });
    let query = c.query.iter().all(|(n, want)| {
        [a.query.get(n), b.query.get(n)]
            .into_iter()
            .flatten()
            .any(|m| m.implies(want))
    });
    host && methods && headers && query
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str =
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\ntargets = [\"http://127.0.0.1:1\"]\n";

    fn problems(routes: &[&str]) -> String {
        let mut text = BASE.to_owned();
        for (i, r) in routes.iter().enumerate() {
            text.push_str(&format!("[[routes]]\nname = \"r{i}\"\n{r}\n"));
        }
        match Config::parse(&text, Path::new("gw.toml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn says(routes: &[&str], needle: &str) {
        let p = problems(routes);
        assert!(p.contains(needle), "{needle:?} not in {p}");
    }

    const UP: &str = "upstream = \"u\"";

    #[test]
    fn a_route_matches_paths_one_way() {
        assert_eq!(problems(&[&format!("path = \"/login\"\n{UP}")]), "");
        assert_eq!(
            problems(&[&format!("path_pattern = \"/u/*/profile\"\n{UP}")]),
            ""
        );
        says(
            &[UP],
            "routes[0] (\"r0\"): set one of path_prefix, path and path_pattern",
        );
        says(
            &[&format!("path = \"/a\"\npath_prefix = \"/a\"\n{UP}")],
            "path_prefix and path cannot both be set",
        );
        says(
            &[&format!("path = \"/a//b\"\n{UP}")],
            "routes[0] (\"r0\").path: `/a//b` is not in normal form",
        );
        says(
            &[&format!("path_pattern = \"/a/x*/b\"\n{UP}")],
            "`*` stands for a whole segment",
        );
        says(
            &[&format!("path_pattern = \"/a/b\"\n{UP}")],
            "has no `*` segment: match one path with `path`",
        );
        says(
            &[&format!(
                "path_pattern = \"/a/*\"\nrewrite_prefix = \"/b\"\n{UP}"
            )],
            "rewrite_prefix: is for path_prefix and path routes",
        );
    }

    #[test]
    fn rewrite_prefix_is_a_normal_prefix_and_not_strip_prefix_too() {
        assert_eq!(
            problems(&[&format!(
                "path_prefix = \"/api/v1\"\nrewrite_prefix = \"/v2\"\n{UP}"
            )]),
            ""
        );
        says(
            &[&format!(
                "path_prefix = \"/a\"\nrewrite_prefix = \"/v2/\"\n{UP}"
            )],
            "ends with '/', which the rest of the path starts with (write `/v2`)",
        );
        says(
            &[&format!(
                "path_prefix = \"/a\"\nrewrite_prefix = \"/x/../v2\"\n{UP}"
            )],
            "rewrite_prefix: `/x/../v2` is not in normal form",
        );
        says(
            &[&format!(
                "path_prefix = \"/a\"\nrewrite_prefix = \"v2\"\n{UP}"
            )],
            "does not start with '/'",
        );
        says(
            &[&format!(
                "path_prefix = \"/a\"\nrewrite_prefix = \"/v2\"\nstrip_prefix = true\n{UP}"
            )],
            "strip_prefix and rewrite_prefix cannot both be set",
        );
    }

    #[test]
    fn header_and_query_matchers_parse_and_are_checked() {
        let ok = format!(
            "path_prefix = \"/\"\n{UP}\nheaders = {{ \"X-Api-Version\" = \"2\", x-b = {{ prefix = \"v\" }}, x-c = {{ present = true }} }}\nquery = {{ version = \"2\" }}"
        );
        assert_eq!(problems(&[&ok]), "");
        let c = Config::parse(
            &format!("{BASE}[[routes]]\nname = \"r\"\n{ok}\n"),
            Path::new("g"),
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.headers["x-b"], ValueMatch::Prefix("v".into()));
        assert_eq!(r.headers["x-c"], ValueMatch::Present);
        assert_eq!(r.matchers(), 4);
        for (bad, needle) in [
            ("headers = { x = 2 }", "expected a string (the exact value)"),
            (
                "headers = { x = { present = false } }",
                "`present` can only be true",
            ),
            (
                "headers = { x = { prefx = \"a\" } }",
                "unknown field `prefx`",
            ),
            ("headers = { x = {} }", "an empty table"),
            (
                "headers = { x = { prefix = \"a\", present = true } }",
                "set one of `prefix` and `present`",
            ),
            (
                "headers = { \"a b\" = \"1\" }",
                "headers.a b: `a b` is not a header name",
            ),
            (
                "headers = { Host = \"a\" }",
                "match the host with the route's `host`",
            ),
            (
                "headers = { X-A = \"1\", x-a = \"2\" }",
                "`X-A` names the same header",
            ),
            ("headers = { x = \"a\\nb\" }", "is not a header value"),
            (
                "headers = { x = { prefix = \"\" } }",
                "headers.x.prefix: an empty prefix",
            ),
            ("query = { \"\" = \"1\" }", "a parameter needs a name"),
        ] {
            says(&[&format!("path_prefix = \"/\"\n{UP}\n{bad}")], needle);
        }
    }

    #[test]
    fn a_route_has_an_upstream_or_responds() {
        assert_eq!(
            problems(&[
                "path = \"/health\"\nrespond = { status = 200, headers = { content-type = \"text/plain\" }, body = \"up\" }"
            ]),
            ""
        );
        let c = Config::parse(
            &format!("{BASE}[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = {{}}\n"),
            Path::new("g"),
        )
        .unwrap();
        assert_eq!(
            c.routes[0].respond.as_ref().unwrap().parts().unwrap().0,
            StatusCode::OK
        );
        says(
            &["path = \"/\""],
            "set upstream (where its requests go) or respond",
        );
        says(
            &[&format!("path = \"/\"\n{UP}\nrespond = {{}}")],
            "upstream and respond cannot both be set",
        );
        says(
            &["path = \"/\"\nupstream = \"nope\""],
            "unknown upstream `nope` (defined: u)",
        );
        for (respond, needle) in [
            (
                "{ status = 101 }",
                "status 101 is not a final status (200 to 599)",
            ),
            ("{ status = 600 }", "status 600 is not a final status"),
            ("{ status = 204, body = \"x\" }", "status 204 has no body"),
            (
                "{ headers = { \"a b\" = \"1\" } }",
                "`a b` is not a header name",
            ),
            (
                "{ headers = { content-length = \"1\" } }",
                "`content-length` is the gateway's to set",
            ),
            (
                "{ headers = { Transfer-Encoding = \"chunked\" } }",
                "`Transfer-Encoding` is the gateway's",
            ),
            (
                "{ headers = { x = \"a\\rb\" } }",
                "the value of `x` is not a header value",
            ),
            ("{ headers = { X-A = \"1\", x-a = \"2\" } }", "given twice"),
            ("{ stauts = 200 }", "unknown field `stauts`"),
        ] {
            says(&[&format!("path = \"/\"\nrespond = {respond}")], needle);
        }
        let big = "x".repeat(MAX_RESPOND_BODY_BYTES + 1);
        says(
            &[&format!("path = \"/\"\nrespond = {{ body = \"{big}\" }}")],
            "body: 65537 bytes is more than 65536",
        );
        says(
            &["path_prefix = \"/a\"\nrespond = {}\nstrip_prefix = true\ntimeout_ms = 5"],
            "strip_prefix: is for a route with an upstream",
        );
        says(
            &["path_prefix = \"/a\"\nrespond = {}\ntimeout_ms = 5"],
            "timeout_ms: is for a route with an upstream",
        );
    }

    #[test]
    fn ties_are_refused_naming_both_routes() {
        let h = |v: &str| format!("path_prefix = \"/api\"\n{UP}\nheaders = {{ x-v = {v} }}");
        let q = |v: &str| format!("path_prefix = \"/api\"\n{UP}\nquery = {{ version = {v} }}");
        // Values that exclude each other, and more matchers, decide.
        assert_eq!(
            problems(&[&h("\"1\""), &h("\"2\""), &q("\"2\"").replace("/api", "/b")]),
            ""
        );
        assert_eq!(
            problems(&[
                &h("\"1\""),
                &format!("{}\nmethods = [\"GET\"]", h("{ present = true }"))
            ]),
            ""
        );
        // A header and a query parameter: one request can carry both.
        says(
            &[&h("\"2\""), &q("\"2\"")],
            "routes[0] (\"r0\") and routes[1] (\"r1\") tie: one request can match both (path_prefix `/api`, the same host, 1 matcher each)",
        );
        // ...unless a route with the matchers of both takes such a request first.
        let both = format!("{}\nquery = {{ version = \"2\" }}", h("\"2\""));
        assert_eq!(problems(&[&h("\"2\""), &q("\"2\""), &both]), "");
        // Overlapping values.
        says(&[&h("{ prefix = \"v\" }"), &h("\"v2\"")], "tie");
        says(&[&h("{ present = true }"), &h("\"1\"")], "tie");
        assert_eq!(problems(&[&h("{ prefix = \"v1\" }"), &h("\"v2\"")]), "");
        // Hosts and methods.
        let m = |ms: &str, host: &str| format!("path = \"/x\"\n{UP}\nmethods = {ms}\n{host}");
        assert_eq!(problems(&[&m("[\"GET\"]", ""), &m("[\"POST\"]", "")]), "");
        says(
            &[&m("[\"GET\", \"POST\"]", ""), &m("[\"post\"]", "")],
            "tie",
        );
        assert_eq!(
            problems(&[
                &m("[\"GET\"]", "host = \"a.example\""),
                &m("[\"GET\"]", "host = \"b.example\"")
            ]),
            ""
        );
        // Different ways of matching paths never tie: they are tried in order.
        assert_eq!(
            problems(&[
                &format!("path = \"/api\"\n{UP}"),
                &format!("path_prefix = \"/api\"\n{UP}"),
                &format!("path_pattern = \"/*\"\n{UP}"),
            ]),
            ""
        );
        // A pattern is one key however it is reached.
        says(
            &[
                &format!("path_pattern = \"/u/*\"\n{UP}"),
                &format!("path_pattern = \"/u/*\"\n{UP}"),
            ],
            "path_pattern `/u/*`",
        );
    }

    #[test]
    fn value_matchers_accept_overlap_and_imply() {
        let e = |s: &str| ValueMatch::Exact(s.into());
        let p = |s: &str| ValueMatch::Prefix(s.into());
        assert!(e("2").accepts(Some(b"2")));
        assert!(!e("2").accepts(Some(b"20")));
        assert!(p("v2").accepts(Some(b"v2.1")));
        assert!(ValueMatch::Present.accepts(Some(b"")));
        assert!(!ValueMatch::Present.accepts(None));
        assert!(p("v").overlaps(&p("v2")) && p("v2").overlaps(&p("v")));
        assert!(!p("v1").overlaps(&p("v2")));
        assert!(e("v2").implies(&p("v")) && !p("v").implies(&e("v2")));
        assert!(p("v2").implies(&ValueMatch::Present));
        assert!(!ValueMatch::Present.implies(&e("")));
    }
}
