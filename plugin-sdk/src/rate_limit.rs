//! Rate limiting against state the host holds, shared by every instance and worker of the
//! plugin, and kept across config reloads while the quota is unchanged.
//!
//! A bucket holds up to `burst` tokens and refills at `count` per `period_ms`; each
//! [`Limiter::check`] takes `cost` tokens from the bucket of its key, if they are there.
//!
//! ```
//! # wasmgate_sdk::testing::set_now_millis(1_000_000);
//! use wasmgate_sdk::rate_limit::{Limiter, Quota};
//! let limiter = Limiter::open("per-ip", Quota { count: 10, period_ms: 1_000, burst: 2 }).unwrap();
//! assert!(limiter.check("10.0.0.1", 1).allowed);
//! assert!(limiter.check("10.0.0.1", 1).allowed);
//! let third = limiter.check("10.0.0.1", 1);
//! assert!(!third.allowed);
//! assert_eq!(third.retry_after_ms, 100);
//! ```
//!
//! Natively the mock host keeps a real bucket (GCRA) per name, quota and key, per test thread,
//! on its clock.

/// `burst` requests at once, refilled at `count` per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Tokens added per period.
    pub count: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// The bucket's size: how many requests can pass at once.
    pub burst: u32,
}

impl Quota {
    /// `count` per second, with a burst of `count`.
    pub const fn per_second(count: u32) -> Self {
        Self {
            count,
            period_ms: 1_000,
            burst: count,
        }
    }

    /// `count` per minute, with a burst of `count`.
    pub const fn per_minute(count: u32) -> Self {
        Self {
            count,
            period_ms: 60_000,
            burst: count,
        }
    }

    /// The same, with this burst.
    pub const fn with_burst(self, burst: u32) -> Self {
        Self { burst, ..self }
    }
}

/// The outcome of a [`Limiter::check`], with what the `RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// Whether the request may pass (its tokens were taken).
    pub allowed: bool,
    /// The quota's burst, for `RateLimit-Limit`.
    pub limit: u32,
    /// Requests that could pass right now, for `RateLimit-Remaining`.
    pub remaining: u32,
    /// Milliseconds until the bucket is full again, for `RateLimit-Reset`.
    pub reset_after_ms: u64,
    /// When refused: milliseconds until this request would pass, for `Retry-After`
    /// (0 when allowed).
    pub retry_after_ms: u64,
}

/// A named limiter. Limiters of the same plugin with the same name and quota share state.
#[derive(Debug)]
pub struct Limiter {
    inner: imp::Limiter,
}

impl Limiter {
    /// Opens (or rejoins) a limiter. Fails on a zero count, period or burst, a period over
    /// [`rules::rate_limit::MAX_PERIOD_MS`](crate::rules::rate_limit::MAX_PERIOD_MS), or a name
    /// over [`rules::rate_limit::MAX_KEY_BYTES`](crate::rules::rate_limit::MAX_KEY_BYTES). Open it once, in
    /// [`Plugin::new`](crate::Plugin::new), and keep it in the plugin.
    pub fn open(name: &str, quota: Quota) -> Result<Limiter, String> {
        imp::Limiter::open(name, quota).map(|inner| Limiter { inner })
    }

    /// Takes `cost` tokens from the bucket of `key`, if they are there. A `cost` of 0 takes
    /// nothing and reports a full bucket (the host cannot read a bucket without taking from
    /// it); a `cost` above the burst never passes, nor does a `key` over
    /// [`rules::rate_limit::MAX_KEY_BYTES`](crate::rules::rate_limit::MAX_KEY_BYTES).
    pub fn check(&self, key: &str, cost: u32) -> Verdict {
        self.inner.check(key, cost)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{Quota, Verdict};
    use crate::__private::bindings::wasmgate::plugin::rate_limit as wit;

    #[derive(Debug)]
    pub(super) struct Limiter(wit::Limiter);

    impl Limiter {
        pub(super) fn open(name: &str, quota: Quota) -> Result<Self, String> {
            let quota = wit::Quota {
                count: quota.count,
                period_ms: quota.period_ms,
                burst: quota.burst,
            };
            wit::Limiter::open(name, quota).map(Limiter)
        }

        pub(super) fn check(&self, key: &str, cost: u32) -> Verdict {
            let v = self.0.check(key, cost);
            Verdict {
                allowed: v.allowed,
                limit: v.limit,
                remaining: v.remaining,
                reset_after_ms: v.reset_after_ms,
                retry_after_ms: v.retry_after_ms,
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Quota, Verdict};
    use crate::testing::host;

    #[derive(Debug)]
    pub(super) struct Limiter {
        name: String,
        quota: Quota,
    }

    impl Limiter {
        pub(super) fn open(name: &str, quota: Quota) -> Result<Self, String> {
            host::limiter_open(name, quota)?;
            Ok(Limiter {
                name: name.to_string(),
                quota,
            })
        }

        pub(super) fn check(&self, key: &str, cost: u32) -> Verdict {
            host::limiter_check(&self.name, self.quota, key, cost)
        }
    }
}
