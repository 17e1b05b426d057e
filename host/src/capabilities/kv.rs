//! Implements `wasmgate:plugin/kv`: a bounded in-memory store per plugin, with per-entry
//! expiry. Namespaces outlive config reloads. When a namespace is full, the least useful
//! entries are evicted (moka's TinyLFU), so a plugin can never grow host memory without bound.
//!
//! With `[state] backend = "redis"` the entries live in Redis instead, under
//! `PREFIX kv:LEN:PLUGIN:KEY` (the plugin name's length keeps one plugin out of another's
//! keys), with `SET … PX` for TTLs and the same size limits; Redis's own memory policy bounds
//! their number. Those functions await Redis, so they are linked for calls on fibers only
//! ([`add_redis_to_linker`]). When Redis cannot answer within `timeout_ms`, `on_unavailable`
//! applies: `local` uses this process's namespace until Redis is back; `allow` and `deny`
//! make reads miss and writes fail with `full` (not stored).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;
use parking_lot::Mutex;
use wasmgate_rules::kv::{MAX_ENTRIES, MAX_KEY_BYTES, weight};
use wasmtime::Result;

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use crate::config::OnUnavailable;
use crate::plugins::bindings::wasmgate::plugin::kv::{Error, Host};
use crate::plugins::refusals::Refusal;
use crate::plugins::state::{HostState, StageContext};
use crate::state::Redis;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Option<Duration>,
}

struct Expiry;

impl moka::Expiry<String, Entry> for Expiry {
    fn expire_after_create(&self, _: &String, e: &Entry, _: Instant) -> Option<Duration> {
        e.ttl
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        e.ttl
    }
}

/// One plugin's keys.
pub struct Namespace {
    cache: Cache<String, Entry>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Namespace({} entries)", self.cache.entry_count())
    }
}

impl Namespace {
    fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .weigher(|k: &String, e: &Entry| weight(k.len(), e.value.len()))
                .expire_after(Expiry)
                .build(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key).map(|e| e.value)
    }

    /// Stores a value of at most `max_value` bytes (the plugin's `kv_max_value_bytes`).
    pub fn set(
        &self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        max_value: usize,
    ) -> Result<(), Error> {
        fits(&key, &value, max_value)?;
        let ttl = ttl_ms.map(Duration::from_millis);
        if ttl == Some(Duration::ZERO) {
            self.cache.invalidate(&key);
            return Ok(());
        }
        self.cache.insert(
            key,
            Entry {
                value: Bytes::from(value),
                ttl,
            },
        );
        Ok(())
    }

    pub fn delete(&self, key: &str) {
        self.cache.invalidate(key);
    }
}

/// The size limits, whatever the backend.
fn fits(key: &str, value: &[u8], max_value: usize) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES || value.len() > max_value {
        return Err(Error::TooLarge);
    }
    Ok(())
}

/// Every plugin's namespace, by plugin name.
#[derive(Default)]
pub struct Namespaces {
    by_plugin: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Namespaces({})", self.by_plugin.lock().len())
    }
}

impl Namespaces {
    pub fn get(&self, plugin: &str) -> Arc<Namespace> {
        self.by_plugin
            .lock()
            .entry(plugin.to_owned())
            .or_insert_with(|| Arc::new(Namespace::new()))
            .clone()
    }
}

impl HostState {
    /// Notes a refused `kv.set`, and returns its result.
    fn kv_set_result(
        &mut self,
        key_len: usize,
        value_len: usize,
        result: Result<(), Error>,
    ) -> Result<(), Error> {
        self.refusals.check(Refusal::Kv, result, |e| {
            let why = match e {
                Error::TooLarge => "too-large",
                Error::Full => "full",
            };
            format!("kv.set: key of {key_len} bytes, value of {value_len} bytes: {why}")
        })
    }
}

impl Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>> {
        Ok(self.ctx.kv.get(&key).map(|b| b.to_vec()))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<(), Error>> {
        let (key_len, value_len) = (key.len(), value.len());
        let result = self.ctx.kv.set(key, value, ttl_ms, self.ctx.kv_max_value);
        Ok(self.kv_set_result(key_len, value_len, result))
    }

    fn delete(&mut self, key: String) -> Result<()> {
        self.ctx.kv.delete(&key);
        Ok(())
    }
}

/// What a plugin's kv keys are put after in Redis, made once per pipeline entry.
pub fn redis_prefix(redis: &Redis, plugin: &str) -> String {
    redis.key(&["kv", &plugin.len().to_string(), plugin, ""])
}

/// The Redis key of a plugin's kv key.
fn redis_key(ctx: &StageContext, key: &str) -> String {
    let mut k = String::with_capacity(ctx.kv_redis_prefix.len() + key.len());
    k.push_str(&ctx.kv_redis_prefix);
    k.push_str(key);
    k
}

fn redis_of(store: &StoreContextMut<'_, HostState>) -> Result<Arc<Redis>> {
    store
        .data()
        .ctx
        .redis
        .clone()
        .ok_or_else(|| wasmtime::format_err!("kv on Redis called without a Redis backend"))
}

/// Links kv's functions to Redis, shadowing the in-memory ones, in the linker of calls on
/// fibers.
pub fn add_redis_to_linker(linker: &mut Linker<HostState>, interface: &str) -> Result<()> {
    let mut kv = linker.instance(interface)?;
    kv.func_wrap_async(
        "get",
        |store: StoreContextMut<'_, HostState>, (key,): (String,)| {
            Box::new(async move {
                let redis = redis_of(&store)?;
                let ctx = store.data().ctx.clone();
                let answer = match redis.get(&redis_key(&ctx, &key)).await {
                    Ok(v) => v,
                    Err(_) if redis.policy == OnUnavailable::Local => {
                        ctx.kv.get(&key).map(|b| b.to_vec())
                    }
                    Err(_) => None,
                };
                Ok((answer,))
            })
        },
    )?;
    kv.func_wrap_async(
        "set",
        |mut store: StoreContextMut<'_, HostState>,
         (key, value, ttl_ms): (String, Vec<u8>, Option<u64>)| {
            Box::new(async move {
                let redis = redis_of(&store)?;
                let ctx = store.data().ctx.clone();
                let (key_len, value_len) = (key.len(), value.len());
                let result = match fits(&key, &value, ctx.kv_max_value) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let rkey = redis_key(&ctx, &key);
                        match redis.set(&rkey, &value, ttl_ms).await {
                            Ok(()) => Ok(()),
                            Err(_) if redis.policy == OnUnavailable::Local => {
                                ctx.kv.set(key, value, ttl_ms, ctx.kv_max_value)
                            }
                            Err(_) => Err(Error::Full),
                        }
                    }
                };
                Ok((store.data_mut().kv_set_result(key_len, value_len, result),))
            })
        },
    )?;
    kv.func_wrap_async(
        "delete",
        |store: StoreContextMut<'_, HostState>, (key,): (String,)| {
            Box::new(async move {
                let redis = redis_of(&store)?;
                let ctx = store.data().ctx.clone();
                if redis.delete(&redis_key(&ctx, &key)).await.is_err()
                    && redis.policy == OnUnavailable::Local
                {
                    ctx.kv.delete(&key);
                }
                Ok(())
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_rules::kv::MAX_VALUE_BYTES;

    #[test]
    fn a_raised_limit_takes_larger_values_which_count_as_more_entries() {
        let ns = Namespace::new();
        let big = 200 * 1024;
        assert!(matches!(
            ns.set("big".into(), vec![1; big], None, MAX_VALUE_BYTES),
            Err(Error::TooLarge)
        ));
        ns.set("big".into(), vec![1; big], None, 1 << 20).unwrap();
        assert_eq!(ns.get("big").map(|v| v.len()), Some(big));
        assert_eq!(weight(3, big), 4);
        assert_eq!(weight(3, 10), 1);
        assert_eq!(weight(0, MAX_VALUE_BYTES), 1);
    }

    #[test]
    fn ttl_and_limits() {
        let ns = Namespace::new();
        ns.set("a".into(), b"1".to_vec(), None, MAX_VALUE_BYTES)
            .unwrap();
        assert_eq!(ns.get("a").as_deref(), Some(&b"1"[..]));
        ns.set("b".into(), b"2".to_vec(), Some(30), MAX_VALUE_BYTES)
            .unwrap();
        assert!(ns.get("b").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(ns.get("b").is_none());
        assert!(matches!(
            ns.set("x".repeat(2000), vec![], None, MAX_VALUE_BYTES),
            Err(Error::TooLarge)
        ));
        assert!(matches!(
            ns.set(
                "c".into(),
                vec![0; MAX_VALUE_BYTES + 1],
                None,
                MAX_VALUE_BYTES
            ),
            Err(Error::TooLarge)
        ));
        ns.delete("a");
        assert!(ns.get("a").is_none());
    }
}
