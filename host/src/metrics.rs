//! Prometheus metrics. The families live for the whole process, across config reloads; each
//! route holds its own handles, fetched once when the route is built, so recording a request
//! is a few atomic adds with no label lookup.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadOutcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginError {
    route: String,
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    plugin_errors: Family<PluginError, Counter>,
    plugin_log_dropped: Family<PluginLabel, Counter>,
    unmatched: Counter,
    reloads: Family<ReloadOutcome, Counter>,
    upstream_latency: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    outbound: Family<OutboundOutcome, Counter>,
    outbound_latency: Family<OutboundLabel, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabel {
    plugin: String,
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundOutcome {
    plugin: String,
    destination: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's handles.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("wasmgate");
        let requests = Family::<RouteStatus, Counter>::default();
        let latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let plugin_errors = Family::<PluginError, Counter>::default();
        let plugin_log_dropped = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_log_dropped",
            "Plugin log lines (log capability, stdout, stderr) dropped over the plugin's log budget, by plugin",
            plugin_log_dropped.clone(),
        );
        let unmatched = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to its response headers, by route",
            latency.clone(),
        );
        registry.register(
            "plugin_errors",
            "Plugin failures, by route, plugin and kind (error, timeout, trap, memory, fuel, instantiate, bad_output)",
            plugin_errors.clone(),
        );
        registry.register(
            "unmatched_requests",
            "Requests that matched no route",
            unmatched.clone(),
        );
        let reloads = Family::<ReloadOutcome, Counter>::default();
        registry.register(
            "reloads",
            "Config reloads, by outcome (ok, failed)",
            reloads.clone(),
        );
        let upstream_latency =
            Family::<UpstreamLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "upstream_response_duration_seconds",
            "Time from sending a request upstream to its response head, retries included, by upstream",
            upstream_latency.clone(),
        );
        let outbound = Family::<OutboundOutcome, Counter>::default();
        registry.register(
            "plugin_outbound_requests",
            "Plugins' outbound calls, by plugin, destination (upstream:NAME, an origin, or ungranted) and outcome (ok, denied, limited, timeout, failed)",
            outbound.clone(),
        );
        let outbound_latency =
            Family::<OutboundLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "plugin_outbound_duration_seconds",
            "Time from a plugin's outbound call to its response head, by plugin and destination",
            outbound_latency.clone(),
        );
        Arc::new(Self {
            registry,
            upstream_latency,
            outbound,
            outbound_latency,
            requests,
            latency,
            plugin_errors,
            plugin_log_dropped,
            unmatched,
            reloads,
        })
    }

    pub fn route(&self, route: &str) -> RouteMetrics {
        let by_class = CLASSES.map(|status| {
            self.requests.get_or_create_owned(&RouteStatus {
                route: route.to_owned(),
                status,
            })
        });
        let latency = self.latency.get_or_create_owned(&RouteLabel {
            route: route.to_owned(),
        });
        RouteMetrics { by_class, latency }
    }

    /// The latency histogram of the upstream `name`.
    pub fn upstream(&self, name: &str) -> Histogram {
        self.upstream_latency.get_or_create_owned(&UpstreamLabel {
            upstream: name.to_owned(),
        })
    }

    /// The handles of `plugin`'s calls to `destination`: a counter per outcome (in
    /// [`crate::outbound::Outcome::ALL`]'s order) and the latency histogram.
    pub fn outbound(&self, plugin: &str, destination: &str) -> ([Counter; 5], Histogram) {
        let counters = crate::outbound::Outcome::ALL.map(|o| {
            self.outbound.get_or_create_owned(&OutboundOutcome {
                plugin: plugin.to_owned(),
                destination: destination.to_owned(),
                outcome: o.label(),
            })
        });
        let latency = self.outbound_latency.get_or_create_owned(&OutboundLabel {
            plugin: plugin.to_owned(),
            destination: destination.to_owned(),
        });
        (counters, latency)
    }

    pub fn unmatched(&self) {
        self.unmatched.inc();
    }

    pub fn plugin_error(&self, route: &str, plugin: &str, kind: &'static str) {
        self.plugin_errors
            .get_or_create(&PluginError {
                route: route.to_owned(),
                plugin: plugin.to_owned(),
                kind,
            })
            .inc();
    }

    /// The counter of `plugin`'s dropped log lines, for its log budget to hold.
    pub fn plugin_log_dropped(&self, plugin: &str) -> Counter {
        self.plugin_log_dropped.get_or_create_owned(&PluginLabel {
            plugin: plugin.to_owned(),
        })
    }

    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadOutcome { outcome }).inc();
    }

    /// The Prometheus text exposition, with the metrics of `live` (made as they stand when
    /// asked) after the process's own.
    pub fn encode(&self, live: &[Registry]) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| live.iter().try_for_each(|r| encode_registry(&mut out, r)))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}
