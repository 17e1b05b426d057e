//! The circuit breaker (`[upstreams.NAME.circuit_breaker]`), one per upstream: when at least
//! `min_requests` were sent over the last `window_ms` and `failure_ratio` of them failed (the
//! failures passive ejection counts: no answer, or a 5xx), the circuit opens and the upstream
//! is sent nothing for `open_ms`; requests get the fallback (or a 503) without touching the
//! network. Then it is half-open: `half_open_requests` probes are let through, and if all
//! succeed it closes, while one failure opens it again. Each change is logged once, by the
//! caller, from the [`Change`] returned.
//!
//! A failing target among healthy ones is passive ejection's to handle (`outlier`); the
//! breaker is for an upstream that fails as a whole.
//!
//! Closed, a request costs a clock read and two atomic adds.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use wasmgate_config::CircuitBreakerConfig;

use super::outlier::{Clock, RealClock};

/// The window is counted in this many buckets.
const BUCKETS: usize = 10;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The state, as `/admin/upstreams` and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 open, 2 half-open: the gauge's value.
    pub fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => CLOSED,
            Self::Open => OPEN,
            Self::HalfOpen => HALF_OPEN,
        }
    }
}

/// What the breaker says of a request about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: send it.
    Pass,
    /// Half-open: send it as one of the probes.
    Probe,
    /// Open, or half-open with every probe out: do not send it.
    Reject,
}

/// A change of state, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened { failed: u32, of: u32 },
    HalfOpened,
    Closed,
    Reopened,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket-length period of the clock it counts.
    epoch: AtomicU64,
    total: AtomicU32,
    failed: AtomicU32,
}

#[derive(Debug)]
pub struct Breaker<C = RealClock> {
    failure_ratio: f64,
    min_requests: u32,
    bucket_ms: u64,
    open_ms: u64,
    half_open_requests: u32,
    state: AtomicU8,
    /// When (clock ms) it last opened.
    opened_at: AtomicU64,
    probes_sent: AtomicU32,
    probes_ok: AtomicU32,
    buckets: [Bucket; BUCKETS],
    clock: C,
}

impl<C: Clock> Breaker<C> {
    pub fn new(cfg: &CircuitBreakerConfig, clock: C) -> Self {
        Self {
            failure_ratio: cfg.failure_ratio,
            min_requests: cfg.min_requests,
            bucket_ms: (cfg.window_ms / BUCKETS as u64).max(1),
            open_ms: cfg.open_ms,
            half_open_requests: cfg.half_open_requests,
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            probes_sent: AtomicU32::new(0),
            probes_ok: AtomicU32::new(0),
            buckets: Default::default(),
            clock,
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            CLOSED => State::Closed,
            OPEN => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Whether a request may be sent, and as what; a circuit whose open time is over turns
    /// half-open here (the change is returned once).
    pub fn admit(&self) -> (Admit, Option<Change>) {
        match self.state.load(Ordering::Relaxed) {
            CLOSED => (Admit::Pass, None),
            OPEN => {
                let now = self.clock.now_ms();
                if now < self.opened_at.load(Ordering::Relaxed) + self.open_ms {
                    return (Admit::Reject, None);
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.probes_sent.store(1, Ordering::Relaxed);
                    self.probes_ok.store(0, Ordering::Relaxed);
                    return (Admit::Probe, Some(Change::HalfOpened));
                }
                self.admit()
            }
            _ => {
                if self.probes_sent.fetch_add(1, Ordering::Relaxed) < self.half_open_requests {
                    (Admit::Probe, None)
                } else {
                    (Admit::Reject, None)
                }
            }
        }
    }

    /// The outcome of a request `admit` let through.
    pub fn record(&self, admitted: Admit, ok: bool) -> Option<Change> {
        match admitted {
            Admit::Reject => None,
            Admit::Probe => {
                if self.state.load(Ordering::Relaxed) != HALF_OPEN {
                    return None;
                }
                if !ok {
                    return self.open(HALF_OPEN).then_some(Change::Reopened);
                }
                let passed = self.probes_ok.fetch_add(1, Ordering::Relaxed) + 1;
                if passed >= self.half_open_requests
                    && self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.clear();
                    return Some(Change::Closed);
                }
                None
            }
            Admit::Pass => {
                let now = self.clock.now_ms();
                let epoch = now / self.bucket_ms;
                let b = &self.buckets[(epoch % BUCKETS as u64) as usize];
                if b.epoch.load(Ordering::Relaxed) != epoch {
                    // The first to see a new period starts the bucket over; a count racing
                    // with it may be lost, which a ratio over a window can bear.
                    b.epoch.store(epoch, Ordering::Relaxed);
                    b.total.store(0, Ordering::Relaxed);
                    b.failed.store(0, Ordering::Relaxed);
                }
                b.total.fetch_add(1, Ordering::Relaxed);
                if ok {
                    return None;
                }
                b.failed.fetch_add(1, Ordering::Relaxed);
                let (total, failed) = self.window(epoch);
                if total >= self.min_requests
                    && f64::from(failed) >= self.failure_ratio * f64::from(total)
                    && self.open(CLOSED)
                {
                    return Some(Change::Opened { failed, of: total });
                }
                None
            }
        }
    }

    /// Requests and failures over the window that ends with `epoch`.
    fn window(&self, epoch: u64) -> (u32, u32) {
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=epoch).contains(&b.epoch.load(Ordering::Relaxed)))
            .fold((0, 0), |(t, f), b| {
                (
                    t + b.total.load(Ordering::Relaxed),
                    f + b.failed.load(Ordering::Relaxed),
                )
            })
    }

    fn open(&self, from: u8) -> bool {
        let opened = self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if opened {
            self.opened_at.store(self.clock.now_ms(), Ordering::Relaxed);
        }
        opened
    }

    fn clear(&self) {
        for b in &self.buckets {
            b.total.store(0, Ordering::Relaxed);
            b.failed.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::outlier::tests::FakeClock;

    fn breaker(clock: &FakeClock) -> Breaker<FakeClock> {
        Breaker::new(
            &CircuitBreakerConfig {
                failure_ratio: 0.5,
                min_requests: 4,
                window_ms: 1000,
                open_ms: 5000,
                half_open_requests: 2,
                fallback: None,
            },
            clock.clone(),
        )
    }

    fn send(b: &Breaker<FakeClock>, ok: bool) -> (Admit, Option<Change>) {
        let (admit, _) = b.admit();
        (admit, b.record(admit, ok))
    }

    #[test]
    fn it_opens_on_the_failure_ratio_and_closes_after_the_probes() {
        let clock = FakeClock::default();
        let b = breaker(&clock);
        // Three failures: too few requests to judge.
        for _ in 0..3 {
            assert_eq!(send(&b, false), (Admit::Pass, None));
        }
        assert_eq!(
            send(&b, false),
            (Admit::Pass, Some(Change::Opened { failed: 4, of: 4 }))
        );
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(), (Admit::Reject, None));
        clock.advance(4999);
        assert_eq!(b.admit(), (Admit::Reject, None));
        clock.advance(1);
        // Half-open: two probes, no more, until they are in.
        let (first, change) = b.admit();
        assert_eq!((first, change), (Admit::Probe, Some(Change::HalfOpened)));
        let (second, _) = b.admit();
        assert_eq!(second, Admit::Probe);
        assert_eq!(b.admit().0, Admit::Reject);
        assert_eq!(b.record(first, true), None);
        assert_eq!(b.record(second, true), Some(Change::Closed));
        assert_eq!(b.state(), State::Closed);
        // Closed again with a clean window: one failure does not reopen it.
        assert_eq!(send(&b, false), (Admit::Pass, None));
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_old_failures_age_out() {
        let clock = FakeClock::default();
        let b = breaker(&clock);
        for _ in 0..4 {
            send(&b, false);
        }
        clock.advance(5000);
        let (probe, _) = b.admit();
        assert_eq!(b.record(probe, false), Some(Change::Reopened));
        assert_eq!(b.admit().0, Admit::Reject);
        clock.advance(5000);
        let (p1, _) = b.admit();
        let (p2, _) = b.admit();
        b.record(p1, true);
        assert_eq!(b.record(p2, true), Some(Change::Closed));

        // Failures spread wider than the window never add up to opening it.
        let b = breaker(&clock);
        for _ in 0..10 {
            send(&b, true);
            assert_eq!(send(&b, false).1, None);
            clock.advance(1000);
        }
        // Successes dilute: 2 of 6 failed is under a half.
        let b = breaker(&clock);
        for ok in [true, true, false, true, true, false] {
            assert_eq!(send(&b, ok).1, None);
        }
        assert_eq!(b.state(), State::Closed);
    }
}
