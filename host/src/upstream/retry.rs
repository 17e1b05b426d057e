//! Retries (`[upstreams.NAME.retry]`): which failed attempts are tried again, and how many
//! the upstream may make.
//!
//! - An attempt that never left (the connection or its TLS handshake failed) is retried
//!   whatever the method: nothing was sent, so nothing can happen twice.
//! - One that was sent (a reset, a timeout, a 502/503/504) is retried only for the configured
//!   methods (idempotent ones by default, never POST unless named), and only when its body
//!   is still in hand: buffered, or empty. A client's body that has started streaming is
//!   never replayed.
//! - Each retry waits a random time up to `backoff_ms × 2^(retry - 1)` (full jitter), and none
//!   starts that the route's deadline would cut short.
//! - Retries never exceed `budget_percent` of the upstream's requests over the last 10
//!   seconds, beyond `min_retries_per_second`: a failing upstream is not sent a multiple
//!   of its load.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use rand::Rng as _;
use wasmgate_config::{RetryConfig, RetryOn};

use super::outlier::{Clock, RealClock};

/// Seconds the budget looks back over.
const WINDOW_S: u64 = 10;

/// Why an attempt failed, as far as retrying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was sent.
    Connect,
    Reset,
    Timeout,
    Status(u16),
}

#[derive(Debug)]
pub struct Policy<C = RealClock> {
    attempts: u32,
    on: Vec<RetryOn>,
    methods: Vec<Method>,
    backoff_ms: u64,
    budget: Budget<C>,
}

impl<C: Clock> Policy<C> {
    pub fn new(cfg: &RetryConfig, clock: C) -> Self {
        Self {
            attempts: cfg.attempts,
            on: cfg.on.clone(),
            methods: cfg.parsed_methods().unwrap_or_default(),
            backoff_ms: cfg.backoff_ms,
            budget: Budget::new(cfg.budget_percent, cfg.min_retries_per_second, clock),
        }
    }

    /// Extra tries after the first.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Counts a request (its first attempt) for the budget.
    pub fn request(&self) {
        self.budget.count(false);
    }

    /// Whether the attempt numbered `attempt` (1 for the first), failed so, is retried: by
    /// the policy, and then by the budget, which the retry is counted against.
    pub fn retries(
        &self,
        attempt: u32,
        failure: Failure,
        method: &Method,
        body_in_hand: bool,
    ) -> bool {
        if attempt > self.attempts {
            return false;
        }
        let listed = self.on.iter().any(|on| {
            matches!(
                (on, failure),
                (RetryOn::Connect, Failure::Connect)
                    | (RetryOn::Reset, Failure::Reset)
                    | (RetryOn::Timeout, Failure::Timeout)
            ) || matches!((on, failure), (RetryOn::Status(a), Failure::Status(b)) if *a == b)
        });
        let sent = failure != Failure::Connect;
        if !listed || (sent && !(body_in_hand && self.methods.contains(method))) {
            return false;
        }
        self.budget.allow()
    }

    /// How long to wait before retry number `retry` (1 for the first).
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .backoff_ms
            .saturating_mul(1 << retry.saturating_sub(1).min(10));
        if cap == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(0..=cap))
    }
}

/// Requests and retries per second over the last [`WINDOW_S`] seconds.
#[derive(Debug)]
struct Budget<C> {
    percent: u32,
    min_per_second: u32,
    seconds: [Second; WINDOW_S as usize],
    clock: C,
}

#[derive(Debug, Default)]
struct Second {
    at: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl<C: Clock> Budget<C> {
    fn new(percent: u32, min_per_second: u32, clock: C) -> Self {
        Self {
            percent,
            min_per_second,
            seconds: Default::default(),
            clock,
        }
    }

    fn count(&self, retry: bool) {
        let now = self.clock.now_ms() / 1000;
        let s = &self.seconds[(now % WINDOW_S) as usize];
        if s.at.load(Ordering::Relaxed) != now {
            s.at.store(now, Ordering::Relaxed);
            s.requests.store(0, Ordering::Relaxed);
            s.retries.store(0, Ordering::Relaxed);
        }
        if retry {
            s.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            s.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether one more retry fits, counting it if it does.
    fn allow(&self) -> bool {
        let now = self.clock.now_ms() / 1000;
        let oldest = now.saturating_sub(WINDOW_S - 1);
        let (requests, retries) = self
            .seconds
            .iter()
            .filter(|s| (oldest..=now).contains(&s.at.load(Ordering::Relaxed)))
            .fold((0u64, 0u64), |(q, r), s| {
                (
                    q + u64::from(s.requests.load(Ordering::Relaxed)),
                    r + u64::from(s.retries.load(Ordering::Relaxed)),
                )
            });
        let allowed =
            requests * u64::from(self.percent) / 100 + u64::from(self.min_per_second) * WINDOW_S;
        if retries >= allowed {
            return false;
        }
        self.count(true);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::outlier::tests::FakeClock;

    fn policy(clock: &FakeClock, min_per_second: u32) -> Policy<FakeClock> {
        let cfg: RetryConfig = toml::from_str(&format!(
            "budget_percent = 20\nmin_retries_per_second = {min_per_second}"
        ))
        .unwrap();
        Policy::new(&cfg, clock.clone())
    }

    #[test]
    fn what_was_sent_is_retried_only_when_idempotent_and_in_hand() {
        let p = policy(&FakeClock::default(), 100);
        let get = Method::GET;
        assert!(p.retries(1, Failure::Connect, &Method::POST, false));
        assert!(p.retries(1, Failure::Reset, &get, true));
        assert!(p.retries(2, Failure::Status(503), &get, true));
        // The attempts are spent.
        assert!(!p.retries(3, Failure::Connect, &get, true));
        // A POST that was sent, a body that streamed, a status not listed.
        assert!(!p.retries(1, Failure::Timeout, &Method::POST, true));
        assert!(!p.retries(1, Failure::Reset, &get, false));
        assert!(!p.retries(1, Failure::Status(500), &get, true));
    }

    #[test]
    fn the_budget_holds_retries_to_a_share_of_requests() {
        let clock = FakeClock::default();
        let p = policy(&clock, 0);
        for _ in 0..100 {
            p.request();
        }
        let granted = (0..100)
            .filter(|_| p.retries(1, Failure::Connect, &Method::GET, true))
            .count();
        assert_eq!(granted, 20);
        // Ten seconds on, the old requests no longer pay for retries.
        clock.advance(10_000);
        assert!(!p.retries(1, Failure::Connect, &Method::GET, true));
        // A quiet upstream still gets its few a second.
        let p = policy(&clock, 1);
        let granted = (0..100)
            .filter(|_| p.retries(1, Failure::Connect, &Method::GET, true))
            .count();
        assert_eq!(granted, 10);
        // Backoff grows, with jitter, and is bounded.
        assert!(p.backoff(1) <= Duration::from_millis(25));
        assert!(p.backoff(3) <= Duration::from_millis(100));
    }
}
