//! Implements `wasmgate:plugin/log`: plugin lines go into the host's tracing, with the plugin
//! and the route named, cut to a bounded length (`wasmgate_rules::log`), and within the
//! plugin's log budget.
//!
//! The budget is a GCRA limiter (governor's) per plugin (shared by its routes, instances and workers, and
//! by its stdout and stderr): a burst of lines at once, refilled at a steady rate. A line past
//! it is dropped and counted in `wasmgate_plugin_log_dropped_total{plugin}`; after a call, a
//! plugin with lines dropped since its last summary gets one "dropped N log lines" line, at
//! most once per [`SUMMARY_INTERVAL`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use wasmtime::Result;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::plugins::bindings::wasmgate::plugin::log::{Host, Level};
use crate::plugins::state::HostState;

/// Lines a plugin may log per second, and at once, unless its config says otherwise.
pub const LINES_PER_SECOND: u32 = 100;
pub const BURST: u32 = 200;

/// Shortest time between two summaries of one plugin's dropped lines.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// One plugin's log budget.
pub struct Budget {
    plugin: Arc<str>,
    /// governor's GCRA, as the rate-limit capability uses, with the rate and burst it was made
    /// for; a reload that changes them puts a new one in, one that does not keeps its state.
    limiter: ArcSwap<(u32, u32, DefaultDirectRateLimiter)>,
    dropped: Counter,
    /// Lines dropped since the last summary.
    unreported: AtomicU64,
    last_summary: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({})", self.plugin)
    }
}

/// The rate and burst `limits` ask for, and a limiter for them.
fn limiter(limits: &Limits) -> (u32, u32, DefaultDirectRateLimiter) {
    let rate = limits.log_lines_per_second.unwrap_or(LINES_PER_SECOND);
    let burst = limits.log_burst.unwrap_or(BURST);
    let nz = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::per_second(nz(rate)).allow_burst(nz(burst));
    (rate, burst, RateLimiter::direct(quota))
}

impl Budget {
    fn new(plugin: Arc<str>, dropped: Counter) -> Self {
        Self {
            plugin,
            limiter: ArcSwap::from_pointee(limiter(&Limits::default())),
            dropped,
            unreported: AtomicU64::new(0),
            last_summary: Mutex::new(None),
        }
    }

    fn configure(&self, limits: &Limits) {
        let new = limiter(limits);
        let current = self.limiter.load();
        if (current.0, current.1) != (new.0, new.1) {
            self.limiter.store(Arc::new(new));
        }
    }

    /// Takes a line from the budget; `false` (counted as dropped) when it is spent.
    pub fn admit(&self) -> bool {
        if self.limiter.load().2.check().is_ok() {
            return true;
        }
        self.dropped.inc();
        self.unreported.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Logs how many lines were dropped since the last summary, if any were and the last
    /// summary is at least [`SUMMARY_INTERVAL`] old. Called after each call of the plugin.
    pub fn report(&self) {
        if self.unreported.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut last = self.last_summary.lock();
            if last.is_some_and(|t| now.duration_since(t) < SUMMARY_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let plugin = &*self.plugin;
            tracing::warn!(
                plugin,
                dropped,
                "dropped {dropped} log lines from plugin {plugin}: over its log budget"
            );
        }
    }
}

/// Every plugin's log budget, by plugin name. Budgets outlive config reloads; a reload
/// changes their rate and burst in place.
#[derive(Default)]
pub struct Budgets {
    by_plugin: Mutex<HashMap<Arc<str>, Arc<Budget>>>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budgets({})", self.by_plugin.lock().len())
    }
}

impl Budgets {
    /// The budget of `plugin`, set to `limits` (the plugin's, with `[wasm]`'s filled in).
    pub fn get(&self, plugin: &Arc<str>, limits: &Limits, metrics: &Metrics) -> Arc<Budget> {
        let budget = self
            .by_plugin
            .lock()
            .entry(plugin.clone())
            .or_insert_with(|| {
                Arc::new(Budget::new(
                    plugin.clone(),
                    metrics.plugin_log_dropped(plugin),
                ))
            })
            .clone();
        budget.configure(limits);
        budget
    }
}

/// Whether the host's log keeps plugin lines at this level.
fn enabled(level: Level) -> bool {
    match level {
        Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
        Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
        Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
        Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
        Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
    }
}

impl Host for HostState {
    fn enabled(&mut self, level: Level) -> Result<bool> {
        Ok(enabled(level))
    }

    fn log(&mut self, level: Level, message: String) -> Result<()> {
        // A line the log would discard anyway takes nothing from the budget.
        if !enabled(level) || !self.ctx.log.admit() {
            return Ok(());
        }
        let message = wasmgate_rules::log::cut_line(&message);
        let (plugin, route) = (&*self.ctx.plugin, &*self.ctx.route);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, route, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, route, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, route, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, route, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, route, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(rate: u32, burst: u32) -> Budget {
        let b = Budget::new("p".into(), Counter::default());
        b.configure(&Limits {
            log_lines_per_second: Some(rate),
            log_burst: Some(burst),
            ..Limits::default()
        });
        b
    }

    #[test]
    fn the_burst_passes_then_the_rate() {
        let b = budget(50, 10);
        let passed = (0..1000).filter(|_| b.admit()).count();
        assert!((10..=11).contains(&passed), "{passed}");
        assert_eq!(b.dropped.get(), 1000 - passed as u64);
        assert_eq!(b.unreported.load(Ordering::Relaxed), b.dropped.get());
        // 50 a second: one every 20 ms.
        std::thread::sleep(Duration::from_millis(70));
        let later = (0..1000).filter(|_| b.admit()).count();
        assert!((2..=5).contains(&later), "{later}");
    }

    #[test]
    fn summaries_come_at_most_once_per_interval() {
        let b = budget(1, 1);
        assert!(b.admit());
        assert!(!b.admit());
        b.report();
        assert_eq!(b.unreported.load(Ordering::Relaxed), 0, "reported");
        assert!(!b.admit());
        b.report();
        assert_eq!(
            b.unreported.load(Ordering::Relaxed),
            1,
            "held for the next interval"
        );
        assert_eq!(b.dropped.get(), 2);
    }

    #[test]
    fn a_reload_changes_a_budget_in_place() {
        let budgets = Budgets::default();
        let metrics = Metrics::new();
        let plugin: Arc<str> = "p".into();
        let limits = |burst| Limits {
            log_burst: Some(burst),
            ..Limits::default()
        };
        let a = budgets.get(&plugin, &limits(1), &metrics);
        assert!(a.admit() && !a.admit());
        let b = budgets.get(&plugin, &limits(5), &metrics);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(b.admit(), "the larger burst applies at once");
        assert!(
            metrics
                .encode(&[])
                .contains("wasmgate_plugin_log_dropped_total{plugin=\"p\"} 1"),
            "{}",
            metrics.encode(&[])
        );
    }
}
