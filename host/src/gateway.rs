//! The gateway's live state. `Shared` lives as long as the process (engine, limiters, KV
//! namespaces, log budgets, metrics); a `Table` is everything one config produces (routes,
//! upstreams, pipelines) and is swapped whole, so a request sees one config from start to end.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::capabilities::{kv, log, rate_limit};
use crate::config::{
    Config, EscapedSlashes, HostHeader, InstanceMode, PathMatch, UpstreamProtocol, ValueMatch,
};
use crate::destination::{Destination, Destinations};
use crate::metrics::{Metrics, RouteMetrics};
use crate::pipeline::{Pipeline, Stage};
use crate::plugins::pool::Instances;
use crate::plugins::state::StageContext;
use crate::plugins::{LoadedPlugin, Runtime, Sandbox};
use crate::router::{Matcher, Rewrite, Router};
use crate::upstream::Upstream;
use crate::wire::TrustedProxies;

/// State that outlives any one config.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    pub limiters: Arc<rate_limit::Registry>,
    pub kv: kv::Namespaces,
    /// `[state] backend = "redis"`, fixed at start.
    pub redis: Option<Arc<crate::state::Redis>>,
    /// Each plugin's log budget.
    pub log_budgets: log::Budgets,
    pub metrics: Arc<Metrics>,
    /// Worker threads serving requests: the most calls one pipeline entry can have at once.
    pub workers: usize,
    /// `server.trusted_proxies`, fixed at start like the listeners.
    pub trusted: Arc<TrustedProxies>,
    /// TLS session resumption state, kept across reloads.
    pub tls_sessions: Arc<crate::server::tls::Sessions>,
}

/// One route, ready to serve.
pub struct Route {
    pub name: Arc<str>,
    /// Where its requests go: an upstream, or the route's own answer.
    pub target: Target,
    /// The route's own `host_header`, which also applies to an upstream a plugin chooses.
    pub host_override: Option<HostHeader>,
    /// Every upstream of the config, which a plugin's `set-upstream` chooses from.
    pub destinations: Arc<Destinations>,
    /// `rewrite_prefix` (or `strip_prefix`), applied when the request is forwarded.
    pub rewrite: Option<Rewrite>,
    pub pipeline: Option<Pipeline>,
    pub body_limit: usize,
    /// `server.body_read_timeout_ms`: the client's body, streamed or buffered, is bounded by it.
    pub body_read_timeout: std::time::Duration,
    /// `timeout_ms`: the longest all attempts at a response head may take together.
    pub timeout: Option<std::time::Duration>,
    /// `websocket_idle_timeout_ms`: how long a tunnel may carry nothing either way.
    pub websocket_idle: std::time::Duration,
    /// `compress = true`: the least length a response is compressed at.
    pub compress: Option<u64>,
    pub metrics: RouteMetrics,
}

/// Where a route's requests go.
pub enum Target {
    /// `upstream`: with the `Host` policy of the route's requests (the route's `host_header`,
    /// else the upstream's).
    Upstream(Arc<Destination>),
    /// `respond`: the answer the route gives itself, as if an upstream had given it.
    Respond(Fixed),
}

impl Route {
    /// The route's own upstream, when it has one.
    pub fn destination(&self) -> Option<&Arc<Destination>> {
        match &self.target {
            Target::Upstream(d) => Some(d),
            Target::Respond(_) => None,
        }
    }
}

/// A fixed answer: `respond = { status, headers, body }`, checked at load.
pub struct Fixed {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Fixed {
    fn new(r: &crate::config::Respond) -> Result<Self, String> {
        let (status, headers) = r.parts()?;
        let mut headers: http::HeaderMap = headers.into_iter().collect();
        headers.insert(http::header::CONTENT_LENGTH, r.body.len().into());
        Ok(Self {
            status,
            headers,
            body: bytes::Bytes::from(r.body.clone()),
        })
    }

    pub fn status(&self) -> http::StatusCode {
        self.status
    }

    /// The answer, for one request.
    pub fn response(&self) -> http::Response<crate::body::Body> {
        let mut resp = http::Response::new(crate::body::full(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

/// Everything a config produces.
pub struct Table {
    pub router: Router<Arc<Route>>,
    /// `(name, sha256)` of every plugin the config loaded.
    pub plugins: Vec<(Arc<str>, Arc<str>)>,
    /// Every stage, by what it was built from, for the next table to reuse.
    stages: HashMap<String, Vec<Arc<Stage>>>,
    /// `server.escaped_slashes`: how request paths, and paths plugins set, are normalised.
    pub escaped_slashes: EscapedSlashes,
    /// `[server.tls]`, loaded: its certificates are read again with every reload.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Every upstream, by name.
    pub upstreams: HashMap<Arc<str>, Arc<Upstream>>,
}

/// `upstream` as its config sends it requests, with `route_host` (a route's `host_header`) over
/// its own.
fn destination(
    upstream: &Arc<Upstream>,
    cfg: &crate::config::UpstreamConfig,
    route_host: Option<&HostHeader>,
) -> Arc<Destination> {
    Arc::new(Destination {
        upstream: upstream.clone(),
        host_header: route_host.unwrap_or(&cfg.host_header).clone(),
        h2: cfg.protocol == UpstreamProtocol::H2,
    })
}

/// The running gateway: shared state and the current table.
pub struct Gateway {
    pub shared: Shared,
    pub table: ArcSwap<Table>,
    /// Where the upstreams' health checks and discovery run.
    pub background: tokio::runtime::Handle,
}

impl Gateway {
    /// Starts what the current table's upstreams run in the background (health checks,
    /// discovery), for those that do not run it yet.
    pub fn start_upstreams(&self) {
        for u in self.table.load().upstreams.values() {
            u.start(&self.background);
        }
    }

    /// Builds everything a config describes. Blocking (compiles plugins, runs their `init`):
    /// call it off the async runtime. All problems are returned, each naming where it is.
    pub fn build_table(shared: &Shared, config: &Config) -> Result<Table, Vec<String>> {
        Self::build_table_from(shared, config, None)
    }

    /// Like [`Gateway::build_table`], but a pipeline entry built from exactly the same inputs
    /// as one in `previous` (route, plugin bytes, config after `config_files`, instance mode,
    /// every other setting of the entry and of its plugin) reuses that stage and its warm
    /// instances instead of creating and initialising new ones.
    pub fn build_table_from(
        shared: &Shared,
        config: &Config,
        previous: Option<&Table>,
    ) -> Result<Table, Vec<String>> {
        let mut problems = Vec::new();
        if config.wants_fuel() && !shared.runtime.fuel() {
            problems.push(
                "a plugin now has fuel_per_call, but the engine was started without fuel \
                 metering: restart the gateway to apply it"
                    .to_owned(),
            );
        }
        let mut reusable: HashMap<String, Vec<Arc<Stage>>> =
            previous.map(|t| t.stages.clone()).unwrap_or_default();
        let mut built: HashMap<String, Vec<Arc<Stage>>> = HashMap::new();

        let mut loaded: HashMap<&str, LoadedPlugin> = HashMap::new();
        for (name, p) in &config.plugins {
            let checked = shared
                .runtime
                .load(name, &config.plugin_path(p))
                .and_then(|l| {
                    shared.runtime.check_grants(&l, p.capabilities.as_deref())?;
                    Ok(l)
                });
            match checked {
                Ok(l) => {
                    loaded.insert(name, l);
                }
                Err(e) => problems.push(e),
            }
        }

        let tls = match &config.server.tls {
            None => None,
            Some(t) => match crate::server::tls::load(t, &config.base_dir, &shared.tls_sessions) {
                Ok(c) => Some(c),
                Err(mut p) => {
                    problems.append(&mut p);
                    None
                }
            },
        };

        // An upstream whose settings (and TLS files) are as before is the same upstream: it
        // keeps its connections, target health, ejections and circuit.
        let mut upstreams: HashMap<Arc<str>, Arc<Upstream>> = HashMap::new();
        for (name, u) in &config.upstreams {
            let fingerprint =
                crate::upstream::fingerprint(u, config.dns.as_ref(), &config.base_dir);
            if let Some(old) = previous
                .and_then(|t| t.upstreams.get(name.as_str()))
                .filter(|old| old.fingerprint() == fingerprint)
            {
                upstreams.insert(old.name.clone(), old.clone());
                continue;
            }
            match Upstream::new(
                name,
                u,
                fingerprint,
                config.dns.as_ref(),
                shared.metrics.upstream(name),
                shared.workers,
                &config.base_dir,
            ) {
                Ok(u) => {
                    upstreams.insert(u.name.clone(), Arc::new(u));
                }
                Err(e) => problems.push(format!("upstreams.{name}: {e}")),
            }
        }

        // Each upstream with its own `host_header`, for the plugins that choose one.
        let destinations: Arc<Destinations> = Arc::new(
            upstreams
                .iter()
                .filter_map(|(name, upstream)| {
                    let cfg = config.upstreams.get(&**name)?;
                    Some((name.clone(), destination(upstream, cfg, None)))
                })
                .collect(),
        );

        // One client for every call to an origin, when some plugin is granted one.
        let origins = config
            .plugins
            .values()
            .flat_map(|p| &p.outbound)
            .filter_map(|g| match g {
                crate::config::OutboundGrant::Origin(o) => Some(o),
                crate::config::OutboundGrant::Upstream(_) => None,
            })
            .collect::<Vec<_>>();
        let origin_client = (!origins.is_empty()).then(|| {
            let tls = match crate::upstream::tls::origin_client_config() {
                Ok(tls) => tls,
                Err(e) => {
                    if let Some(o) = origins.iter().find(|o| o.tls) {
                        problems.push(format!("outbound grant {o}: {e}"));
                    }
                    crate::upstream::tls::origin_client_config_without_roots()
                }
            };
            Arc::new(crate::outbound::origin::Client::new(
                config.dns.clone(),
                tls,
            ))
        });

        let mut routes = Vec::new();
        for r in &config.routes {
            let name: Arc<str> = r.name.as_str().into();
            let body_limit = r.max_body_bytes.unwrap_or(config.server.max_body_bytes);
            let mut stages = Vec::new();
            for (j, entry) in r.pipeline.iter().enumerate() {
                let Some(plugin) = loaded.get(entry.plugin.as_str()) else {
                    continue; // its load error is already reported
                };
                let at = format!(
                    "route `{}`, pipeline[{j}], plugin `{}`",
                    r.name, entry.plugin
                );
                let json = match config.plugin_config_json(entry) {
                    Ok(j) => j,
                    Err(e) => {
                        problems.push(format!("{at}: {e}"));
                        continue;
                    }
                };
                let limits = config
                    .plugins
                    .get(&entry.plugin)
                    .map(|p| p.limits.or(&config.wasm.limits))
                    .unwrap_or_else(|| config.wasm.limits.clone());
                let grants = config
                    .plugins
                    .get(&entry.plugin)
                    .map_or(&[][..], |p| &p.outbound[..]);
                let call_limits = crate::outbound::CallLimits::new(&limits);
                let outbound = (!grants.is_empty()).then(|| {
                    Arc::new(crate::outbound::Outbound::new(
                        plugin.name.clone(),
                        name.clone(),
                        grants,
                        &destinations,
                        call_limits,
                        origin_client.clone(),
                        &shared.metrics,
                    ))
                });
                let ctx = Arc::new(StageContext {
                    outbound,
                    plugin: plugin.name.clone(),
                    route: name.clone(),
                    kv: shared.kv.get(&entry.plugin),
                    kv_max_value: limits
                        .kv_max_value_bytes
                        .map_or(wasmgate_rules::kv::MAX_VALUE_BYTES, |n| n as usize),
                    limiters: shared.limiters.clone(),
                    redis: shared.redis.clone(),
                    kv_redis_prefix: shared.redis.as_ref().map_or_else(String::new, |r| {
                        crate::capabilities::kv::redis_prefix(r, &plugin.name)
                    }),
                    log: shared
                        .log_budgets
                        .get(&plugin.name, &limits, &shared.metrics),
                });
                let mode = entry.instances.unwrap_or(config.wasm.instances);
                // A stage that calls out is built again when an upstream it may call is.
                let called: Vec<&str> = grants
                    .iter()
                    .filter_map(|g| match g {
                        crate::config::OutboundGrant::Upstream(u) => {
                            upstreams.get(u.as_str()).map(|u| u.fingerprint())
                        }
                        crate::config::OutboundGrant::Origin(_) => None,
                    })
                    .collect();
                let key = crate::plugins::content_hash(
                    format!(
                        "{}\0{}\0{mode:?}\0{entry:?}\0{:?}\0{json}\0{called:?}\0{:?}",
                        r.name,
                        plugin.hash,
                        config.plugins.get(&entry.plugin),
                        (!grants.is_empty()).then_some(&config.dns),
                    )
                    .as_bytes(),
                );
                if let Some(stage) = reusable.get_mut(&key).and_then(Vec::pop) {
                    stages.push(stage.clone());
                    built.entry(key).or_default().push(stage);
                    continue;
                }
                let mut sandbox = Sandbox::new(&limits, shared.runtime.fuel());
                if !grants.is_empty() {
                    sandbox = sandbox.calling_out(call_limits.timeout);
                }
                // Calls yield at each epoch tick, so a worker may have more than one call of an
                // entry in flight: keep two idle instances per worker.
                let workers = shared.workers;
                match Instances::new(plugin.clone(), json.into(), ctx, mode, sandbox, workers, 2) {
                    Ok((instances, registration, rules)) => {
                        let room = instances.room_after_init();
                        if (registration.request_body || registration.response_body)
                            && room < body_limit
                        {
                            tracing::warn!(
                                route = %r.name,
                                plugin = %entry.plugin,
                                body_limit,
                                room,
                                "the plugin reads bodies of up to the route's max_body_bytes, but \
                                 its memory limit leaves less than that after init: a body that \
                                 large will fail it (raise its memory_limit_mib, or lower \
                                 max_body_bytes)"
                            );
                        }
                        let stage = Arc::new(Stage {
                            plugin: plugin.name.clone(),
                            hash: plugin.hash.clone(),
                            registration,
                            rules,
                            on_error: entry.on_error,
                            instances,
                        });
                        stages.push(stage.clone());
                        built.entry(key).or_default().push(stage);
                    }
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            }
            let target = match (&r.upstream, &r.respond) {
                (Some(u), _) => {
                    let (Some(upstream), Some(upstream_cfg)) =
                        (upstreams.get(u.as_str()), config.upstreams.get(u))
                    else {
                        continue;
                    };
                    let own = destination(upstream, upstream_cfg, r.host_header.as_ref());
                    if own.h2
                        && let Some(stage) = stages.iter().find(|s| s.rules.writes_host())
                    {
                        problems.push(format!(
                            "route `{}`, plugin `{}`: a header rule writes `host`, but upstream \
                             `{u}` speaks HTTP/2, which sends its target as `:authority` and no \
                             `Host`",
                            r.name, stage.plugin
                        ));
                    }
                    Target::Upstream(own)
                }
                (None, Some(respond)) => match Fixed::new(respond) {
                    Ok(f) => Target::Respond(f),
                    Err(e) => {
                        problems.push(format!("route `{}`, respond: {e}", r.name));
                        continue;
                    }
                },
                (None, None) => continue, // refused by the config's checks
            };
            let Some(matcher) = Matcher::new(r) else {
                continue; // refused by the config's checks
            };
            let rewrite = match (&matcher.path, r.rewrite()) {
                (PathMatch::Prefix(from) | PathMatch::Exact(from), Some(to)) => {
                    Rewrite::new(from, to)
                }
                _ => None,
            };
            let route = Route {
                name: name.clone(),
                target,
                host_override: r.host_header.clone(),
                destinations: destinations.clone(),
                rewrite,
                pipeline: (!stages.is_empty()).then_some(Pipeline { stages }),
                body_limit,
                body_read_timeout: std::time::Duration::from_millis(
                    config.server.body_read_timeout_ms,
                ),
                timeout: r.timeout_ms.map(std::time::Duration::from_millis),
                websocket_idle: std::time::Duration::from_millis(r.websocket_idle_timeout_ms),
                compress: r.compress.then_some(r.compress_min_bytes),
                metrics: shared.metrics.route(&r.name),
            };
            routes.push((matcher, Arc::new(route)));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        let plugins = loaded
            .values()
            .map(|l| (l.name.clone(), l.hash.clone()))
            .collect();
        Ok(Table {
            router: Router::new(routes),
            plugins,
            stages: built,
            escaped_slashes: config.server.escaped_slashes,
            tls,
            upstreams,
        })
    }

    /// A description of the current routes, for `GET /admin/routes`.
    pub fn routes_json(&self) -> serde_json::Value {
        let table = self.table.load();
        let routes: Vec<_> = table
            .router
            .routes()
            .map(|(m, r)| {
                let pipeline: Vec<_> = r
                    .pipeline
                    .iter()
                    .flat_map(|p| &p.stages)
                    .map(|s| {
                        serde_json::json!({
                            "plugin": &*s.plugin,
                            "hash": &*s.hash,
                            "instances": match s.instances.mode() {
                                InstanceMode::Pooled => "pooled",
                                InstanceMode::Fresh => "fresh",
                            },
                            "calls": s.instances.calls(),
                            "on_request": s.registration.on_request,
                            "on_response": s.registration.on_response,
                            "request_body": s.registration.request_body,
                            "response_body": s.registration.response_body,
                        })
                    })
                    .collect();
                let (path_key, path) = match &m.path {
                    PathMatch::Exact(p) => ("path", p),
                    PathMatch::Pattern(p) => ("path_pattern", p),
                    PathMatch::Prefix(p) => ("path_prefix", p),
                };
                let matchers = |ms: Vec<(&str, &ValueMatch)>| {
                    ms.into_iter()
                        .map(|(n, v)| {
                            let v = match v {
                                ValueMatch::Exact(v) => serde_json::json!(v),
                                ValueMatch::Prefix(p) => serde_json::json!({ "prefix": p }),
                                ValueMatch::Present => serde_json::json!({ "present": true }),
                            };
                            (n.to_owned(), v)
                        })
                        .collect::<serde_json::Map<_, _>>()
                };
                let mut route = serde_json::json!({
                    "name": &*r.name,
                    "host": m.host.as_ref().map(ToString::to_string),
                    "methods": m.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                    "headers": matchers(m.headers.iter().map(|(n, v)| (n.as_str(), v)).collect()),
                    "query": matchers(m.query.iter().map(|(n, v)| (n.as_str(), v)).collect()),
                    "upstream": r.destination().map(|d| &*d.upstream.name),
                    "respond": match &r.target {
                        Target::Respond(f) => Some(f.status().as_u16()),
                        Target::Upstream(_) => None,
                    },
                    "rewrite_prefix": r.rewrite.as_ref().map(Rewrite::to),
                    "pipeline": pipeline,
                });
                route[path_key] = path.as_str().into();
                route
            })
            .collect();
        let plugins: serde_json::Map<String, serde_json::Value> = table
            .plugins
            .iter()
            .map(|(n, h)| (n.to_string(), serde_json::Value::from(&**h)))
            .collect();
        serde_json::json!({ "routes": routes, "plugins": plugins })
    }
}
