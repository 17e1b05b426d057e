//! Active health checks (`[upstreams.NAME.health_check]`): one task per upstream probes every
//! target each `interval_ms`, all at once, each within `timeout_ms`. An `http` probe is a GET
//! of `path` over the upstream's own protocol and TLS (on a connection set of its own, kept
//! alive between probes); it passes when its status is in `expect_status`. A `tcp` probe passes
//! when a connection (and TLS handshake) opens. `unhealthy_after` failures in a row take a
//! target down, `healthy_after` passes in a row bring it back; a target down is not picked.
//! Targets start up, and the first round runs at once. Each change is logged once.
//!
//! The task holds the upstream weakly: it ends when the last table using the upstream is gone.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::BodyExt as _;
use wasmgate_config::{CheckKind, HealthCheckConfig};

use super::endpoint::Endpoint;
use super::{Outgoing, Upstream, pool};

/// The most of a probe's response body read (to keep its connection); past it, the
/// connection is dropped.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// A target's standing with the health checker.
#[derive(Debug, Default)]
pub struct State {
    down: AtomicBool,
    /// Probes in a row that passed (when down) or failed (when up).
    streak: AtomicU32,
}

impl State {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// A probe's verdict changed a target's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Down,
    Up,
}

/// Counts a probe's verdict; returns the change it made, if it made one.
pub fn verdict(state: &State, passed: bool, cfg: &HealthCheckConfig) -> Option<Change> {
    let down = state.is_down();
    if passed != down {
        // As expected: an up target passed, a down one failed.
        state.streak.store(0, Ordering::Relaxed);
        return None;
    }
    let streak = state.streak.fetch_add(1, Ordering::Relaxed) + 1;
    let needed = if down {
        cfg.healthy_after
    } else {
        cfg.unhealthy_after
    };
    if streak < needed {
        return None;
    }
    state.streak.store(0, Ordering::Relaxed);
    state.down.store(!down, Ordering::Relaxed);
    Some(if down { Change::Up } else { Change::Down })
}

/// Probes `upstream`'s targets until it is gone.
pub async fn run(upstream: Weak<Upstream>, cfg: Arc<HealthCheckConfig>) {
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else { return };
        let set = up.targets();
        let mut probes = tokio::task::JoinSet::new();
        for (i, ep) in set.endpoints.iter().enumerate() {
            let (up, ep, cfg) = (up.clone(), ep.clone(), cfg.clone());
            probes.spawn(async move {
                let timeout = Duration::from_millis(cfg.timeout_ms);
                let outcome = tokio::time::timeout(timeout, probe(&up, &ep, &cfg))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} ms", cfg.timeout_ms)));
                (i, outcome)
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((i, outcome)) = done else { continue };
            let ep = &set.endpoints[i];
            if let Err(e) = &outcome {
                ep.set_last_error(format!("health check: {e}"));
            }
            match verdict(&ep.health, outcome.is_ok(), &cfg) {
                Some(Change::Down) => {
                    up.health_changed(true);
                    tracing::warn!(
                        upstream = &*up.name,
                        target = %ep.target.authority,
                        error = outcome.err().unwrap_or_default(),
                        failed_checks = cfg.unhealthy_after,
                        "target down: health checks failed"
                    );
                }
                Some(Change::Up) => {
                    up.health_changed(false);
                    tracing::info!(
                        upstream = &*up.name,
                        target = %ep.target.authority,
                        passed_checks = cfg.healthy_after,
                        "target up: health checks passed"
                    );
                }
                None => {}
            }
        }
    }
}

/// One probe of one target: `Ok` when it passed, else why not.
async fn probe(up: &Upstream, ep: &Arc<Endpoint>, cfg: &HealthCheckConfig) -> Result<(), String> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    if cfg.kind == CheckKind::Tcp {
        return pool::connect(&ep.target.addr, ep.tls.as_ref(), timeout)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
    }
    let mut req = Request::new(());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = cfg.path.parse().map_err(|_| "bad path".to_owned())?;
    let headers = req.headers_mut();
    headers.insert(header::HOST, ep.target.host.clone());
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("wasmgate-health-check"),
    );
    let (mut parts, ()) = req.into_parts();
    let mut body = Outgoing::Bytes(Bytes::new());
    let resp = up
        .exchange(ep, up.checker_slot(), &mut parts, &mut body, timeout, false)
        .await
        .map_err(|e| super::error_chain(&e))?;
    let status = resp.status();
    // Read to the end, so the connection serves the next probe.
    let _ = http_body_util::Limited::new(resp.into_body(), MAX_PROBE_BODY)
        .collect()
        .await;
    if cfg.expect_status.contains(status) {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_goes_down_and_up_after_enough_probes_in_a_row() {
        let cfg: HealthCheckConfig =
            toml::from_str("healthy_after = 2\nunhealthy_after = 3").unwrap();
        let s = State::default();
        assert_eq!(verdict(&s, false, &cfg), None);
        assert_eq!(verdict(&s, false, &cfg), None);
        // A pass in between starts the count over.
        assert_eq!(verdict(&s, true, &cfg), None);
        assert_eq!(verdict(&s, false, &cfg), None);
        assert_eq!(verdict(&s, false, &cfg), None);
        assert_eq!(verdict(&s, false, &cfg), Some(Change::Down));
        assert!(s.is_down());
        assert_eq!(verdict(&s, false, &cfg), None);
        assert_eq!(verdict(&s, true, &cfg), None);
        assert_eq!(verdict(&s, true, &cfg), Some(Change::Up));
        assert!(!s.is_down());
    }
}
