//! Passive outlier ejection (`[upstreams.NAME.passive]`): a target whose last `max_failures`
//! requests in a row failed (a connect error, a TLS handshake failure, a reset or a broken
//! response, a timeout, or a 5xx) is taken out of balancing for `eject_ms`. A target ejected
//! again within `eject_ms` of coming back stays out twice as long as the last time, up to
//! `max_eject_ms`. At most `max_ejected_percent` of the targets are out at once, but one
//! always may be when there are two or more. Each ejection and return is logged once.
//!
//! Nothing is read from a clock while no target is out: a request to a healthy upstream
//! costs one atomic load here, and one store for its outcome.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmgate_config::PassiveConfig;

/// A monotonic clock in milliseconds: the real one, or a test's.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// Milliseconds since the clock was made.
#[derive(Debug)]
pub struct RealClock(Instant);

impl Default for RealClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for RealClock {
    fn now_ms(&self) -> u64 {
        // Starting at 1: 0 means "not ejected" below.
        self.0.elapsed().as_millis() as u64 + 1
    }
}

/// What a request's outcome did to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Ejected { failures: u32, for_ms: u64 },
}

/// One target's standing, kept with the target.
#[derive(Debug, Default)]
pub struct State {
    consecutive: AtomicU32,
    /// Until when (clock ms) it is out; 0 when it is in.
    until: AtomicU64,
    /// How long its last ejection was, and when it came back from it.
    last_ms: AtomicU64,
    returned_at: AtomicU64,
}

#[derive(Debug)]
pub struct Outliers<C = RealClock> {
    max_failures: u32,
    eject_ms: u64,
    max_eject_ms: u64,
    max_ejected_percent: u32,
    /// Targets out now.
    ejected: AtomicUsize,
    clock: C,
}

impl<C: Clock> Outliers<C> {
    pub fn new(cfg: &PassiveConfig, clock: C) -> Self {
        Self {
            max_failures: cfg.max_failures,
            eject_ms: cfg.eject_ms,
            max_eject_ms: cfg.max_eject_ms.max(cfg.eject_ms),
            max_ejected_percent: cfg.max_ejected_percent,
            ejected: AtomicUsize::new(0),
            clock,
        }
    }

    /// Whether `target` may be picked. An ejection that has run its time ends here (and is
    /// logged as over by `returned`, called once for it).
    pub fn usable(&self, t: &State, returned: impl FnOnce()) -> bool {
        if self.ejected.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let until = t.until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.clock.now_ms();
        if now < until {
            return false;
        }
        // Whoever clears it first counts and logs the return.
        if t.until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            t.returned_at.store(now, Ordering::Relaxed);
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            returned();
        }
        true
    }

    /// A request to a target succeeded.
    pub fn success(&self, t: &State) {
        let c = &t.consecutive;
        if c.load(Ordering::Relaxed) != 0 {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// A request to a target, one of `n`, failed; returns the ejection it caused, if it did.
    pub fn failure(&self, t: &State, n: usize) -> Option<Change> {
        let failures = t.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.max_failures || t.until.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let out = self.ejected.load(Ordering::Relaxed);
        let within_share = (out + 1) * 100 <= self.max_ejected_percent as usize * n;
        if n < 2 || !(within_share || out == 0) {
            return None;
        }
        let now = self.clock.now_ms();
        // Back soon and failing again: twice as long as last time.
        let last = t.last_ms.load(Ordering::Relaxed);
        let returned = t.returned_at.load(Ordering::Relaxed);
        let for_ms = if last > 0 && now.saturating_sub(returned) < self.eject_ms {
            (last * 2).min(self.max_eject_ms)
        } else {
            self.eject_ms
        };
        if t.until
            .compare_exchange(0, now + for_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        self.ejected.fetch_add(1, Ordering::Relaxed);
        t.last_ms.store(for_ms, Ordering::Relaxed);
        t.consecutive.store(0, Ordering::Relaxed);
        Some(Change::Ejected { failures, for_ms })
    }

    /// How long a target stays out, from now, if it is out.
    pub fn ejected_for(&self, t: &State) -> Option<Duration> {
        let until = t.until.load(Ordering::Relaxed);
        let now = self.clock.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Targets out now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Counts the targets out again, for a new set of targets.
    pub fn recount<'a>(&self, targets: impl Iterator<Item = &'a State>) {
        let out = targets
            .filter(|t| t.until.load(Ordering::Relaxed) != 0)
            .count();
        self.ejected.store(out, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug, Default, Clone)]
    pub struct FakeClock(Arc<AtomicU64>);

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed) + 1
        }
    }

    impl FakeClock {
        pub fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::Relaxed);
        }
    }

    fn states(n: usize) -> Vec<State> {
        (0..n).map(|_| State::default()).collect()
    }

    fn cfg(max_failures: u32, pct: u32) -> PassiveConfig {
        PassiveConfig {
            max_failures,
            eject_ms: 1000,
            max_eject_ms: 3000,
            max_ejected_percent: pct,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_time_that_doubles_when_it_fails_again() {
        let clock = FakeClock::default();
        let o = Outliers::new(&cfg(3, 50), clock.clone());
        let t = states(4);
        assert_eq!(o.failure(&t[0], t.len()), None);
        o.success(&t[0]);
        assert_eq!(o.failure(&t[0], t.len()), None);
        assert_eq!(o.failure(&t[0], t.len()), None);
        assert_eq!(
            o.failure(&t[0], t.len()),
            Some(Change::Ejected {
                failures: 3,
                for_ms: 1000
            })
        );
        let mut returns = 0;
        assert!(!o.usable(&t[0], || returns += 1));
        assert!(o.usable(&t[1], || returns += 1));
        clock.advance(999);
        assert!(!o.usable(&t[0], || returns += 1));
        clock.advance(1);
        assert!(o.usable(&t[0], || returns += 1));
        assert!(o.usable(&t[0], || returns += 1));
        assert_eq!(returns, 1, "the return is counted once");
        // Failing again soon after: 2 s, then 3 s (the cap), then 3 s.
        for expect in [2000, 3000, 3000] {
            for _ in 0..2 {
                assert_eq!(o.failure(&t[0], t.len()), None);
            }
            assert_eq!(
                o.failure(&t[0], t.len()),
                Some(Change::Ejected {
                    failures: 3,
                    for_ms: expect
                })
            );
            clock.advance(expect);
            assert!(o.usable(&t[0], || {}));
        }
        // Healthy for a while, then failing: back to 1 s.
        clock.advance(5000);
        for _ in 0..2 {
            o.failure(&t[0], t.len());
        }
        assert_eq!(
            o.failure(&t[0], t.len()),
            Some(Change::Ejected {
                failures: 3,
                for_ms: 1000
            })
        );
    }

    #[test]
    fn at_most_the_configured_share_is_out_but_always_one_of_several() {
        let o = Outliers::new(&cfg(1, 50), FakeClock::default());
        let t = states(4);
        assert!(o.failure(&t[0], t.len()).is_some());
        assert!(o.failure(&t[1], t.len()).is_some());
        // Two of four is 50%: a third is not ejected.
        assert!(o.failure(&t[2], t.len()).is_none());
        assert!(o.usable(&t[2], || {}));
        // A share too small for one target still lets one go.
        let o = Outliers::new(&cfg(1, 10), FakeClock::default());
        let t = states(3);
        assert!(o.failure(&t[0], t.len()).is_some());
        assert!(o.failure(&t[1], t.len()).is_none());
        // A lone target is never ejected: there would be nowhere to go.
        let o = Outliers::new(&cfg(1, 100), FakeClock::default());
        let t = states(1);
        assert!(o.failure(&t[0], t.len()).is_none());
        assert!(o.usable(&t[0], || {}));
    }
}
