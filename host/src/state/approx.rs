//! Approximate rate limits (`[state.redis] sync_ms`), as Kong's `sync_rate`: each gateway
//! checks its own estimate of every bucket with no round trip, and every `sync_ms` settles
//! with Redis: what it let through since is charged there (GCRA, forced: the bucket may be left
//! empty, never overdrawn), and the bucket's state comes back as the new estimate, with what
//! the other gateways took. Between two settlements, gateways together may let through up to
//! one interval's worth more than the quota per gateway; that is the trade.
//!
//! A key's first check on a gateway is exact (one round trip), and its answer is the first
//! estimate, so a gateway joining late does not start from a full bucket. Estimates are kept
//! for at most [`MAX_KEYS`] keys; a key past that is checked exactly. One unused for ten
//! settlements, with nothing to charge, is forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::redis::{GcraVerdict, Redis};

/// Most keys with an estimate at once.
pub const MAX_KEYS: usize = 100_000;

pub struct Approx {
    pub sync: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    interval: Duration,
    burst: u32,
    /// Tokens in the bucket at `at`: as Redis last said, less what was taken here since,
    /// refilled at one per interval up to the burst.
    tokens: f64,
    at: Instant,
    /// Tokens taken here since, not yet charged in Redis.
    pending: u32,
    used: Instant,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Approx {
    pub fn new(sync: Duration) -> Self {
        Self {
            sync,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The first estimate of `key`: what its exact check answered.
    pub fn seed(&self, key: &str, interval: Duration, burst: u32, v: &GcraVerdict) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() < MAX_KEYS || buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    interval,
                    burst,
                    tokens: f64::from(v.remaining),
                    at: now,
                    pending: 0,
                    used: now,
                },
            );
        }
    }

    /// Takes `cost` tokens from this gateway's estimate of the bucket at `key`. `None` when
    /// it has none yet: check it exactly, and [`Approx::seed`] the answer.
    pub fn check(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        cost: u32,
    ) -> Option<GcraVerdict> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let b = buckets.get_mut(key)?;
        b.used = now;
        let refilled = now.duration_since(b.at).as_secs_f64() / interval.as_secs_f64();
        let available = (b.tokens + refilled).min(f64::from(burst));
        b.tokens = available;
        b.at = now;
        let allowed = cost > 0 && available + 1e-9 >= f64::from(cost);
        if allowed {
            b.tokens -= f64::from(cost);
            b.pending = b.pending.saturating_add(cost);
        }
        let left = if allowed {
            available - f64::from(cost)
        } else {
            available
        };
        let remaining = (left.max(0.0) + 1e-9).floor().min(f64::from(burst)) as u32;
        let retry_after_ms = if allowed || cost == 0 {
            0
        } else if cost > burst {
            ms(interval * burst)
        } else {
            ms(interval.mul_f64(f64::from(cost) - left.max(0.0))).max(1)
        };
        Some(GcraVerdict {
            allowed: allowed || cost == 0,
            remaining,
            reset_after_ms: ms(interval * (burst - remaining)),
            retry_after_ms,
        })
    }

    /// One settlement: every bucket with something to charge, or used lately, is sent to Redis
    /// at once (pipelined), and its estimate replaced by the answer. A bucket Redis could not
    /// answer for keeps its count for the next one.
    pub async fn settle(&self, redis: &Arc<Redis>) {
        let now = Instant::now();
        let forget_after = self.sync * 10;
        let recent = self.sync * 2;
        let work: Vec<(String, Duration, u32, u32)> = {
            let mut buckets = self.buckets.lock();
            buckets.retain(|_, b| b.pending > 0 || now.duration_since(b.used) < forget_after);
            buckets
                .iter()
                .filter(|(_, b)| b.pending > 0 || now.duration_since(b.used) < recent)
                .map(|(k, b)| (k.clone(), b.interval, b.burst, b.pending))
                .collect()
        };
        let mut calls = tokio::task::JoinSet::new();
        for (key, interval, burst, pending) in work {
            let redis = redis.clone();
            calls.spawn(async move {
                let answer = redis.gcra(&key, interval, burst, pending, true).await;
                (key, pending, answer)
            });
        }
        while let Some(joined) = calls.join_next().await {
            let Ok((key, sent, Ok(v))) = joined else {
                continue;
            };
            if let Some(b) = self.buckets.lock().get_mut(&key) {
                // What was taken here while the answer was on its way is not in it.
                b.pending = b.pending.saturating_sub(sent);
                b.tokens = (f64::from(v.remaining) - f64::from(b.pending)).max(0.0);
                b.at = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(burst: u32) -> GcraVerdict {
        GcraVerdict {
            allowed: true,
            remaining: burst,
            reset_after_ms: 0,
            retry_after_ms: 0,
        }
    }

    #[test]
    fn the_estimate_lets_a_burst_through_then_refuses_until_it_refills() {
        let a = Approx::new(Duration::from_millis(50));
        let interval = Duration::from_secs(60);
        // No estimate yet: checked exactly, whose answer seeds one.
        assert!(a.check("k", interval, 3, 1).is_none());
        a.seed("k", interval, 3, &full(3));
        a.seed("other", interval, 3, &full(3));
        a.seed("fast", Duration::from_millis(10), 1, &full(1));
        let passed = (0..5)
            .filter(|_| a.check("k", interval, 3, 1).unwrap().allowed)
            .count();
        assert_eq!(passed, 3);
        let v = a.check("k", interval, 3, 1).unwrap();
        assert!(!v.allowed && v.remaining == 0, "{v:?}");
        assert!((59_000..=60_000).contains(&v.retry_after_ms), "{v:?}");
        // More than the burst can never pass; a zero cost takes nothing.
        assert!(!a.check("other", interval, 3, 4).unwrap().allowed);
        let v = a.check("other", interval, 3, 0).unwrap();
        assert!(v.allowed && v.remaining == 3, "{v:?}");
        // A fast quota refills between checks.
        let fast = Duration::from_millis(10);
        assert!(a.check("fast", fast, 1, 1).unwrap().allowed);
        assert!(!a.check("fast", fast, 1, 1).unwrap().allowed);
        std::thread::sleep(Duration::from_millis(25));
        assert!(a.check("fast", fast, 1, 1).unwrap().allowed);
    }

    #[test]
    fn estimates_are_kept_for_at_most_max_keys() {
        let a = Approx::new(Duration::from_millis(50));
        let interval = Duration::from_secs(1);
        for i in 0..MAX_KEYS {
            a.seed(&i.to_string(), interval, 5, &full(5));
        }
        // A new key past the bound has none, and is checked exactly; a known one still does.
        a.seed("one more", interval, 5, &full(5));
        assert!(a.check("one more", interval, 5, 1).is_none());
        assert!(a.check("7", interval, 5, 1).is_some());
        a.seed("7", interval, 5, &full(2));
        assert_eq!(a.check("7", interval, 5, 1).unwrap().remaining, 1);
    }
}
