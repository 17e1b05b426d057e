//! What the upstreams show of themselves: `GET /admin/upstreams` and their part of
//! `/metrics`, both read from the live state when asked, so nothing is kept for them on the
//! request path beyond the endpoints' own counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Upstream;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetOutcome {
    upstream: String,
    target: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    upstream: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

/// `GET /admin/upstreams`: each upstream's circuit and retries, and each target's health,
/// ejection, load, weight, counts and last error.
pub fn json(upstreams: &HashMap<Arc<str>, Arc<Upstream>>) -> serde_json::Value {
    let mut names: Vec<&Arc<str>> = upstreams.keys().collect();
    names.sort();
    let all: serde_json::Map<String, serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let u = &upstreams[name];
            let targets: Vec<serde_json::Value> = u
                .targets()
                .endpoints
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "url": &*e.url,
                        "address": e.target.addr,
                        "weight": e.weight,
                        "healthy": u.checks_health().then(|| !e.health.is_down()),
                        "ejected_for_ms": u.ejected_for(e).map(|d| d.as_millis() as u64),
                        "in_flight": e.in_flight(),
                        "requests": {
                            "ok": e.counts.ok.load(Ordering::Relaxed),
                            "error_status": e.counts.error_status.load(Ordering::Relaxed),
                            "failed": e.counts.failed.load(Ordering::Relaxed),
                        },
                        "last_error": e.last_error(),
                    })
                })
                .collect();
            let value = serde_json::json!({
                "circuit": u.circuit().map(|c| c.as_str()),
                "retries": u.retries.load(Ordering::Relaxed),
                "targets": targets,
            });
            (name.to_string(), value)
        })
        .collect();
    serde_json::json!({ "upstreams": all })
}

/// The upstreams' metrics, as they stand, in a registry of their own.
pub fn registry(upstreams: &HashMap<Arc<str>, Arc<Upstream>>) -> Registry {
    let mut registry = Registry::with_prefix("wasmgate_upstream");
    let requests = Family::<TargetOutcome, Counter>::default();
    let up = Family::<TargetLabel, Gauge>::default();
    let circuit = Family::<UpstreamLabel, Gauge>::default();
    let retries = Family::<UpstreamLabel, Counter>::default();
    for (name, u) in upstreams {
        let upstream = name.to_string();
        for e in u.targets().endpoints.iter() {
            let target = e.url.to_string();
            for (outcome, n) in [
                ("ok", &e.counts.ok),
                ("error_status", &e.counts.error_status),
                ("failed", &e.counts.failed),
            ] {
                requests
                    .get_or_create(&TargetOutcome {
                        upstream: upstream.clone(),
                        target: target.clone(),
                        outcome,
                    })
                    .inc_by(n.load(Ordering::Relaxed));
            }
            let usable = !e.health.is_down() && u.ejected_for(e).is_none();
            up.get_or_create(&TargetLabel {
                upstream: upstream.clone(),
                target,
            })
            .set(i64::from(usable));
        }
        let label = UpstreamLabel {
            upstream: upstream.clone(),
        };
        if let Some(state) = u.circuit() {
            circuit
                .get_or_create(&label)
                .set(i64::from(state.as_gauge()));
        }
        retries
            .get_or_create(&label)
            .inc_by(u.retries.load(Ordering::Relaxed));
    }
    registry.register(
        "requests",
        "Attempts sent to each target, by outcome (ok, error_status: a 5xx, failed: no answer)",
        requests,
    );
    registry.register(
        "target_up",
        "1 when a target is picked (healthy and not ejected), 0 when it is out",
        up,
    );
    registry.register(
        "circuit_state",
        "The circuit breaker's state: 0 closed, 1 open, 2 half-open",
        circuit,
    );
    registry.register("retries", "Retries made, by upstream", retries);
    registry
}
