//! Implements `wasmgate:plugin/rate-limit` with governor's GCRA limiters held by the host.
//!
//! Limiters live in a registry that outlives config reloads, keyed by plugin, name and quota:
//! every instance of a plugin, on every worker, shares one bucket per key, and a reload that
//! keeps the quota keeps the state.
//!
//! With `[state] backend = "redis"`, `limiter.check` runs GCRA in Redis instead (one EVALSHA,
//! see `state/gcra.lua`), on the key `PREFIX rl:LEN:PLUGIN:LEN:NAME:COUNT/PERIOD/BURST:KEY`:
//! every gateway using that Redis shares one bucket per key, and a changed quota starts
//! fresh, as it does here. That check awaits Redis, so it is linked for calls on fibers only
//! ([`add_redis_to_linker`]). When Redis cannot answer within `timeout_ms`, `on_unavailable`
//! applies: `local` checks this process's own bucket, `allow` lets the request pass (with
//! the quota's full burst as remaining), `deny` refuses it (retry after one interval). With
//! `sync_ms`, a key's checks after its first are against this gateway's estimate, settled
//! with Redis in the background (`state::Approx`); with Redis down, `local` keeps counting on
//! the estimate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota as GQuota, RateLimiter};
use parking_lot::Mutex;
use wasmgate_rules::rate_limit::{MAX_KEY_BYTES, MAX_PERIOD_MS};
use wasmtime::component::{Linker, Resource};
use wasmtime::{Result, StoreContextMut};

use crate::config::OnUnavailable;
use crate::plugins::bindings::wasmgate::plugin::rate_limit::{Host, HostLimiter, Quota, Verdict};
use crate::plugins::refusals::Refusal;
use crate::plugins::state::HostState;
use crate::state::{GcraVerdict, Redis};

type Keyed =
    RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One shared limiter, and what the `limiter` resource in a store points to.
pub struct Limiter {
    limiter: Keyed,
    burst: u32,
    interval: Duration,
    /// Its Redis key, less the prefix and the checked key.
    shared_key: String,
}

pub struct LimiterHandle(Arc<Limiter>);

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct RegistryKey {
    plugin: Arc<str>,
    name: String,
    count: u32,
    period_ms: u64,
    burst: u32,
}

/// Every limiter the gateway holds.
#[derive(Default)]
pub struct Registry {
    limiters: Mutex<HashMap<RegistryKey, Arc<Limiter>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({} limiters)", self.limiters.lock().len())
    }
}

impl Registry {
    fn open(&self, plugin: &Arc<str>, name: String, q: Quota) -> Result<Arc<Limiter>, String> {
        if name.len() > MAX_KEY_BYTES {
            return Err(format!("limiter name longer than {MAX_KEY_BYTES} bytes"));
        }
        let (Some(count), Some(burst)) = (NonZeroU32::new(q.count), NonZeroU32::new(q.burst))
        else {
            return Err("count and burst must be greater than 0".into());
        };
        if q.period_ms == 0 || q.period_ms > MAX_PERIOD_MS {
            return Err("period-ms must be between 1 ms and a year".into());
        }
        let interval = Duration::from_nanos(
            ((q.period_ms as u128 * 1_000_000) / count.get() as u128).max(1) as u64,
        );
        let key = RegistryKey {
            plugin: plugin.clone(),
            name,
            count: q.count,
            period_ms: q.period_ms,
            burst: q.burst,
        };
        let mut map = self.limiters.lock();
        let limiter = map.entry(key).or_insert_with_key(|k| {
            let shared_key = format!(
                "rl:{}:{}:{}:{}:{}/{}/{}",
                k.plugin.len(),
                k.plugin,
                k.name.len(),
                k.name,
                k.count,
                k.period_ms,
                k.burst
            );
            let quota = GQuota::with_period(interval)
                .expect("interval is non-zero")
                .allow_burst(burst);
            Arc::new(Limiter {
                limiter: RateLimiter::dashmap(quota)
                    .with_middleware::<StateInformationMiddleware>(),
                burst: burst.get(),
                interval,
                shared_key,
            })
        });
        Ok(limiter.clone())
    }

    /// Forgets keys whose buckets are full again (they are indistinguishable from new ones).
    pub fn housekeeping(&self) {
        let limiters: Vec<Arc<Limiter>> = self.limiters.lock().values().cloned().collect();
        for l in limiters {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }
}

impl Limiter {
    fn check(&self, key: &str, cost: u32) -> Verdict {
        let denied = |retry: Duration| Verdict {
            allowed: false,
            limit: self.burst,
            remaining: 0,
            reset_after_ms: ms(retry + self.interval * self.burst.saturating_sub(1)),
            retry_after_ms: ms(retry).max(1),
        };
        let Some(cost) = NonZeroU32::new(cost) else {
            // A zero-cost check takes nothing: report the state as allowed.
            return Verdict {
                allowed: true,
                limit: self.burst,
                remaining: self.burst,
                reset_after_ms: 0,
                retry_after_ms: 0,
            };
        };
        if key.len() > MAX_KEY_BYTES {
            return denied(self.interval);
        }
        let key = key.to_owned();
        match self.limiter.check_key_n(&key, cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Verdict {
                    allowed: true,
                    limit: self.burst,
                    remaining,
                    reset_after_ms: ms(self.interval * (self.burst - remaining)),
                    retry_after_ms: 0,
                }
            }
            Ok(Err(not_until)) => denied(not_until.wait_time_from(DefaultClock::default().now())),
            // More than the whole burst at once can never pass.
            Err(_) => denied(self.interval * self.burst),
        }
    }
}

impl Limiter {
    /// The verdict of `on_unavailable = "allow"` or `"deny"` when Redis cannot answer.
    fn fallback(&self, allowed: bool) -> Verdict {
        Verdict {
            allowed,
            limit: self.burst,
            remaining: if allowed { self.burst } else { 0 },
            reset_after_ms: 0,
            retry_after_ms: if allowed { 0 } else { ms(self.interval).max(1) },
        }
    }

    /// A verdict from Redis (or its estimate), for this quota.
    fn verdict(&self, v: &GcraVerdict) -> Verdict {
        Verdict {
            allowed: v.allowed,
            limit: self.burst,
            remaining: v.remaining,
            reset_after_ms: v.reset_after_ms,
            retry_after_ms: v.retry_after_ms,
        }
    }

    /// The check on Redis, with `on_unavailable` when it cannot answer.
    async fn check_shared(&self, redis: &Arc<Redis>, key: &str, cost: u32) -> Verdict {
        if key.len() > MAX_KEY_BYTES || cost == 0 {
            return self.check(key, cost);
        }
        let rkey = redis.key(&[&self.shared_key, key]);
        if let Some(approx) = &redis.approx
            && (redis.is_up() || redis.policy == OnUnavailable::Local)
            && let Some(v) = approx.check(&rkey, self.interval, self.burst, cost)
        {
            return self.verdict(&v);
        }
        match redis
            .gcra(&rkey, self.interval, self.burst, cost, false)
            .await
        {
            Ok(v) => {
                if let Some(approx) = &redis.approx {
                    approx.seed(&rkey, self.interval, self.burst, &v);
                }
                self.verdict(&v)
            }
            Err(_) => match redis.policy {
                OnUnavailable::Local => self.check(key, cost),
                OnUnavailable::Allow => self.fallback(true),
                OnUnavailable::Deny => self.fallback(false),
            },
        }
    }
}

/// Links `limiter.check` to Redis, shadowing the in-memory one, in the linker of calls on
/// fibers.
pub fn add_redis_to_linker(linker: &mut Linker<HostState>, interface: &str) -> Result<()> {
    linker.instance(interface)?.func_wrap_async(
        "[method]limiter.check",
        |mut store: StoreContextMut<'_, HostState>,
         (this, key, cost): (Resource<LimiterHandle>, String, u32)| {
            Box::new(async move {
                let redis = store.data().ctx.redis.clone().ok_or_else(|| {
                    wasmtime::format_err!("rate-limit on Redis called without a Redis backend")
                })?;
                let limiter = store.data().table.get(&this)?.0.clone();
                let verdict = limiter.check_shared(&redis, &key, cost).await;
                store.data_mut().note_oversized_key(&key, cost);
                Ok((verdict,))
            })
        },
    )
}

impl HostState {
    /// A check with a key over the limit is refused, and noted.
    fn note_oversized_key(&mut self, key: &str, cost: u32) {
        // A zero-cost check takes nothing and looks at no key.
        if cost > 0 && key.len() > MAX_KEY_BYTES {
            self.refusals.note(Refusal::RateLimit, || {
                format!(
                    "limiter.check: key of {} bytes, over {MAX_KEY_BYTES}",
                    key.len()
                )
            });
        }
    }
}

impl Host for HostState {}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl HostLimiter for HostState {
    fn open(
        &mut self,
        name: String,
        quota: Quota,
    ) -> Result<Result<Resource<LimiterHandle>, String>> {
        let opened = self.ctx.limiters.open(&self.ctx.plugin, name, quota);
        Ok(match opened {
            Ok(l) => Ok(self.table.push(LimiterHandle(l))?),
            Err(e) => {
                self.refusals
                    .note(Refusal::RateLimit, || format!("limiter.open: {e}"));
                Err(e)
            }
        })
    }

    fn check(&mut self, this: Resource<LimiterHandle>, key: String, cost: u32) -> Result<Verdict> {
        let verdict = self.table.get(&this)?.0.check(&key, cost);
        self.note_oversized_key(&key, cost);
        Ok(verdict)
    }

    fn drop(&mut self, this: Resource<LimiterHandle>) -> Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_passes_exactly_then_refuses() {
        let reg = Registry::default();
        let plugin: Arc<str> = "p".into();
        let q = Quota {
            count: 1,
            period_ms: 60_000,
            burst: 3,
        };
        let l = reg.open(&plugin, "a".into(), q).unwrap();
        let passed = (0..5).filter(|_| l.check("k", 1).allowed).count();
        assert_eq!(passed, 3);
        let v = l.check("k", 1);
        assert!(!v.allowed && v.retry_after_ms > 50_000, "{v:?}");
        assert!(l.check("other", 1).allowed);
        // Reopening the same quota shares state; a new quota starts fresh.
        assert!(
            !reg.open(&plugin, "a".into(), q)
                .unwrap()
                .check("k", 1)
                .allowed
        );
        let q2 = Quota { burst: 4, ..q };
        assert!(
            reg.open(&plugin, "a".into(), q2)
                .unwrap()
                .check("k", 1)
                .allowed
        );
    }

    #[test]
    fn bad_quotas_are_refused() {
        let reg = Registry::default();
        let plugin: Arc<str> = "p".into();
        assert!(
            reg.open(
                &plugin,
                "a".into(),
                Quota {
                    count: 0,
                    period_ms: 1,
                    burst: 1
                }
            )
            .is_err()
        );
        assert!(
            reg.open(
                &plugin,
                "a".into(),
                Quota {
                    count: 1,
                    period_ms: 0,
                    burst: 1
                }
            )
            .is_err()
        );
    }
}
