//! The Redis connections behind `[state] backend = "redis"`, and the commands the capabilities
//! send on them.
//!
//! Each worker has connections of its own (`pool_size` spread over the workers, at least one
//! each), made on the worker's runtime, so a command and its answer never cross threads: the
//! worker's task queues the command on the next of them, pipelined with whatever else is in
//! flight there, and awaits its answer without blocking the thread. A command gets
//! `timeout_ms` in all; past it, or with Redis down, the caller gets [`Unavailable`] at once
//! and applies `on_unavailable`: no request waits on a reconnection.
//!
//! A supervisor thread keeps one connection of its own. It pings Redis every second, decides
//! whether it is up or down (a failed or hung PING, a dropped connection), reconnects with a
//! backoff of 100 ms doubling to 5 s, and logs each change between up and down once. While
//! Redis is down, workers drop their connections and make none; once it is up again, each
//! worker connects in the background on its next command, which meanwhile goes on the
//! supervisor's connection. Every new connection loads the GCRA script.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::sync::Notify;

use crate::config::{OnUnavailable, RedisConfig, redact_redis_url};

/// How long connecting (TCP, TLS, `HELLO`/`AUTH`/`SELECT`, the script's load) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often each connection is pinged, and how long the ping may take before the connection
/// is dropped.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The GCRA check, one atomic round trip (see the script's header).
const GCRA: &str = include_str!("gcra.lua");

/// Where a command's connection came from.
#[derive(Clone, Copy)]
enum Slot {
    Local(usize),
    Own,
}

/// The calling worker's connections (one `Redis` per process; `owner` tells them apart in
/// tests that start several).
#[derive(Default)]
struct Local {
    owner: usize,
    generation: u64,
    conns: Vec<Option<Arc<MultiplexedConnection>>>,
    connecting: bool,
    next: usize,
}

thread_local! {
    static LOCAL: std::cell::RefCell<Local> = std::cell::RefCell::default();
}

/// Redis did not answer in time, or no connection is up: the caller's `on_unavailable`
/// applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What the GCRA script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraVerdict {
    pub allowed: bool,
    pub remaining: u32,
    pub reset_after_ms: u64,
    pub retry_after_ms: u64,
}

pub struct Redis {
    /// The supervisor's connection.
    own: ArcSwapOption<MultiplexedConnection>,
    client: Client,
    /// Connections each worker keeps.
    per_worker: usize,
    timeout: Duration,
    prefix: String,
    pub policy: OnUnavailable,
    gcra: redis::Script,
    /// The URL without its password, for logs and the status.
    url: String,
    wake: Notify,
    health: Health,
    /// `sync_ms`: approximate rate limits.
    pub approx: Option<super::Approx>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({})", self.url)
    }
}

/// The backend's state and counts, for `/admin/status` and `/metrics`.
struct Health {
    up: AtomicBool,
    /// Bumped each time Redis goes down: a worker's connections from before are dropped.
    generation: AtomicU64,
    status: Mutex<Status>,
    commands: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    /// A smoothed command latency, in µs (EWMA, 1/16 per command).
    ewma_us: AtomicU64,
}

/// Up or down (unknown before the first connection attempt), since when, and why down.
#[derive(Clone)]
struct Status {
    up: Option<bool>,
    since: SystemTime,
    last_error: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl Health {
    fn count(&self, outcome: &'static str) {
        self.commands.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    fn counted(&self, outcome: &'static str) -> u64 {
        self.commands.get_or_create(&OutcomeLabel { outcome }).get()
    }
}

impl Redis {
    /// Opens the pool: connects it (waiting at most [`CONNECT_TIMEOUT`]; a Redis that is down
    /// at start is logged, and connected to once it is up), and starts the supervisor. Fails
    /// only on a URL or CA file that cannot be used.
    pub fn start(
        cfg: &RedisConfig,
        base_dir: &std::path::Path,
        workers: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let url = redact_redis_url(&cfg.url);
        let client = match &cfg.ca_file {
            Some(ca) => {
                let path = base_dir.join(ca);
                let pem = std::fs::read(&path).map_err(|e| {
                    anyhow::anyhow!("state.redis.ca_file: cannot read {}: {e}", path.display())
                })?;
                Client::build_with_tls(
                    cfg.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => Client::open(cfg.url.as_str()),
        }
        .map_err(|e| anyhow::anyhow!("state.redis.url: `{url}`: {e}"))?;
        let this = Arc::new(Self {
            own: ArcSwapOption::empty(),
            client: client.clone(),
            per_worker: (cfg.pool_size / workers.max(1)).max(1),
            timeout: Duration::from_millis(cfg.timeout_ms),
            prefix: cfg.key_prefix.clone(),
            policy: cfg.on_unavailable,
            gcra: redis::Script::new(GCRA),
            url,
            wake: Notify::new(),
            health: Health {
                up: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                status: Mutex::new(Status {
                    up: None,
                    since: SystemTime::now(),
                    last_error: None,
                }),
                commands: Family::default(),
                // 50 µs to ~0.8 s.
                latency: Histogram::new(exponential_buckets(0.00005, 2.0, 15)),
                ewma_us: AtomicU64::new(0),
            },
            approx: cfg
                .sync_ms
                .map(|ms| super::Approx::new(Duration::from_millis(ms))),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The first connections before the gateway serves, so its first requests share state.
        let failed = rt.block_on(this.fill(&client));
        this.note_health(failed);
        let supervised = this.clone();
        std::thread::Builder::new()
            .name("wasmgate-redis".into())
            .spawn(move || rt.block_on(supervised.supervise(client)))?;
        Ok(this)
    }

    /// `prefix` + `parts`, the key every command of the capabilities uses.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = String::with_capacity(
            self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        k.push_str(&self.prefix);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(p);
        }
        k
    }

    pub async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let cmd = redis::cmd("GET").arg(key).to_owned();
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// `SET key value [PX ttl]`; a TTL of 0 deletes the key.
    pub async fn set(
        self: &Arc<Self>,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), Unavailable> {
        let cmd = match ttl_ms {
            Some(0) => redis::cmd("DEL").arg(key).to_owned(),
            Some(ms) => redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .to_owned(),
            None => redis::cmd("SET").arg(key).arg(value).to_owned(),
        };
        self.run(|mut c| async move { cmd.query_async::<()>(&mut c).await })
            .await
    }

    pub async fn delete(self: &Arc<Self>, key: &str) -> Result<(), Unavailable> {
        let cmd = redis::cmd("DEL").arg(key).to_owned();
        self.run(|mut c| async move { cmd.query_async::<()>(&mut c).await })
            .await
    }

    /// Takes `cost` tokens from the GCRA bucket at `key` (EVALSHA; a server that lost the
    /// script, after `SCRIPT FLUSH` or a restart, gets it again in the same call). `force`
    /// charges them even when they do not fit, leaving the bucket empty.
    pub async fn gcra(
        self: &Arc<Self>,
        key: &str,
        interval: Duration,
        burst: u32,
        cost: u32,
        force: bool,
    ) -> Result<GcraVerdict, Unavailable> {
        let interval_us = interval.as_secs_f64() * 1e6;
        let mut call = self.gcra.key(key);
        call.arg(interval_us)
            .arg(burst)
            .arg(cost)
            .arg(if force { "1" } else { "0" });
        let answer: (i64, i64, i64, i64) = self
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await?;
        let clamp = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(GcraVerdict {
            allowed: answer.0 == 1,
            remaining: u32::try_from(clamp(answer.1))
                .unwrap_or(u32::MAX)
                .min(burst),
            reset_after_ms: clamp(answer.2),
            retry_after_ms: clamp(answer.3),
        })
    }

    /// Runs one command on the worker's next connection (or the supervisor's while the
    /// worker's are not up), within the timeout.
    async fn run<T, F, Fut>(self: &Arc<Self>, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let picked = if self.health.up.load(Ordering::Relaxed) {
            self.local()
                .or_else(|| self.own.load_full().map(|c| (Slot::Own, c)))
        } else {
            None
        };
        let Some((slot, conn)) = picked else {
            self.health.count("unavailable");
            return Err(Unavailable);
        };
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, command((*conn).clone())).await {
            Ok(Ok(v)) => {
                let took = started.elapsed();
                self.health.latency.observe(took.as_secs_f64());
                let us = took.as_micros().min(u128::from(u32::MAX)) as u64;
                let old = self.health.ewma_us.load(Ordering::Relaxed);
                let new = if old == 0 { us } else { (old * 15 + us) / 16 };
                self.health.ewma_us.store(new, Ordering::Relaxed);
                self.health.count("ok");
                Ok(v)
            }
            Ok(Err(e)) => {
                self.health.count("error");
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    self.drop_failed(slot, &conn, &e.to_string());
                } else {
                    tracing::debug!(error = %e, "state: redis command failed");
                }
                Err(Unavailable)
            }
            Err(_) => {
                self.health.count("timeout");
                Err(Unavailable)
            }
        }
    }

    /// The worker's next connection; starts connecting the worker's missing ones in the
    /// background, on the worker's runtime. `None` off a worker or while none is up.
    fn local(self: &Arc<Self>) -> Option<(Slot, Arc<MultiplexedConnection>)> {
        let generation = self.health.generation.load(Ordering::Relaxed);
        let id = Arc::as_ptr(self) as usize;
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.owner != id || l.generation != generation {
                *l = Local {
                    owner: id,
                    generation,
                    conns: vec![None; self.per_worker],
                    connecting: false,
                    next: 0,
                };
            }
            if !l.connecting
                && l.conns.iter().any(Option::is_none)
                && tokio::runtime::Handle::try_current().is_ok()
            {
                l.connecting = true;
                tokio::spawn(self.clone().connect_local(generation));
            }
            let n = l.conns.len();
            let start = l.next;
            l.next = l.next.wrapping_add(1);
            (0..n).find_map(|i| {
                let slot = (start + i) % n;
                l.conns[slot].clone().map(|c| (Slot::Local(slot), c))
            })
        })
    }

    /// Connects the calling worker's missing connections, one after another.
    async fn connect_local(self: Arc<Self>, generation: u64) {
        let missing = LOCAL.with(|l| {
            let l = l.borrow();
            l.conns.iter().filter(|c| c.is_none()).count()
        });
        for _ in 0..missing {
            let made = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(&self.client)).await;
            let done = LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                if l.generation != generation {
                    return true;
                }
                match made {
                    Ok(Ok(c)) => {
                        if let Some(free) = l.conns.iter_mut().find(|c| c.is_none()) {
                            *free = Some(Arc::new(c));
                        }
                        false
                    }
                    // The supervisor decides whether Redis is down; the next command tries again.
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "state: a worker's redis connection failed");
                        true
                    }
                    Err(_) => true,
                }
            });
            if done {
                break;
            }
        }
        LOCAL.with(|l| l.borrow_mut().connecting = false);
    }

    /// Drops a connection that failed: a worker's own, or the supervisor's.
    fn drop_failed(&self, slot: Slot, conn: &Arc<MultiplexedConnection>, why: &str) {
        match slot {
            Slot::Own => self.drop_own(conn, why),
            Slot::Local(i) => LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                if l.conns
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| Arc::ptr_eq(c, conn))
                {
                    tracing::debug!(error = why, "state: a worker's redis connection dropped");
                    l.conns[i] = None;
                    // Whether Redis is down is the supervisor's to find out, now.
                    self.wake.notify_one();
                }
            }),
        }
    }

    fn drop_own(&self, conn: &Arc<MultiplexedConnection>, why: &str) {
        let prev = self.own.compare_and_swap(&Some(conn.clone()), None);
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, conn)) {
            tracing::debug!(error = why, "state: redis connection dropped");
            self.note_health(Some(why.to_owned()));
            self.wake.notify_one();
        }
    }

    /// Connects the supervisor's connection if it is down; why that failed.
    async fn fill(&self, client: &Client) -> Option<String> {
        if self.own.load().is_some() {
            return None;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(client)).await {
            Ok(Ok(c)) => {
                self.own.store(Some(Arc::new(c)));
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
    }

    async fn connect(&self, client: &Client) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let mut c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.gcra.prepare_invoke().load_async(&mut c).await?;
        Ok(c)
    }

    /// Up when the supervisor's connection is; logs each change once, and the first state at
    /// start.
    fn note_health(&self, error: Option<String>) {
        let up = self.own.load().is_some();
        let mut status = self.health.status.lock();
        if status.up == Some(up) {
            if !up && error.is_some() {
                status.last_error = error;
            }
            return;
        }
        if up {
            tracing::info!(url = %self.url, "state: redis connected");
            status.last_error = None;
        } else {
            let why = error.unwrap_or_else(|| "no connection".into());
            tracing::warn!(
                url = %self.url,
                error = %why,
                on_unavailable = ?self.policy,
                "state: redis unavailable; on_unavailable applies until it is back"
            );
            status.last_error = Some(why);
        }
        status.up = Some(up);
        status.since = SystemTime::now();
        if !up {
            self.health.generation.fetch_add(1, Ordering::Relaxed);
        }
        self.health.up.store(up, Ordering::Relaxed);
    }

    /// Whether Redis is up, as the supervisor last found.
    pub fn is_up(&self) -> bool {
        self.health.up.load(Ordering::Relaxed)
    }

    /// The supervisor: pings, drops and reconnects, for the process's life; and with
    /// `sync_ms`, settles the approximate rate limits.
    async fn supervise(self: Arc<Self>, client: Client) {
        if let Some(sync) = self.approx.as_ref().map(|a| a.sync) {
            let this = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(sync);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Some(a) = &this.approx
                        && this.is_up()
                    {
                        a.settle(&this).await;
                    }
                }
            });
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            let failed = self.fill(&client).await;
            if let Some(c) = self.own.load_full() {
                let mut conn = (*c).clone();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<()>(&mut conn);
                match tokio::time::timeout(PING_TIMEOUT, ping).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.drop_own(&c, &e.to_string()),
                    Err(_) => {
                        self.drop_own(&c, &format!("no answer to PING within {PING_TIMEOUT:?}"))
                    }
                }
            }
            self.note_health(failed.clone());
            if failed.is_some() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = MIN_BACKOFF;
                tokio::select! {
                    () = tokio::time::sleep(PING_EVERY) => {}
                    () = self.wake.notified() => {}
                }
            }
        }
    }

    /// For `/admin/status`.
    pub fn status_json(&self) -> serde_json::Value {
        let status = self.health.status.lock().clone();
        let since_s = status
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        serde_json::json!({
            "backend": "redis",
            "url": self.url,
            "status": if self.health.up.load(Ordering::Relaxed) { "up" } else { "down" },
            "since_unix_s": since_s,
            "last_error": status.last_error,
            "per_worker": self.per_worker,
            "timeout_ms": self.timeout.as_millis() as u64,
            "on_unavailable": self.policy,
            "latency_us": self.health.ewma_us.load(Ordering::Relaxed),
            "commands": {
                "ok": self.health.counted("ok"),
                "error": self.health.counted("error"),
                "timeout": self.health.counted("timeout"),
                "unavailable": self.health.counted("unavailable"),
            },
        })
    }

    /// For `/metrics`: `wasmgate_state_redis_up`, `_commands_total{outcome}` and
    /// `_command_duration_seconds`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("wasmgate_state_redis");
        let up = Gauge::<i64>::default();
        up.set(i64::from(self.health.up.load(Ordering::Relaxed)));
        r.register("up", "Whether a connection to Redis is up", up);
        r.register(
            "commands",
            "Redis commands, by outcome (unavailable: no connection was up)",
            self.health.commands.clone(),
        );
        r.register(
            "command_duration_seconds",
            "Time of the Redis commands that answered",
            self.health.latency.clone(),
        );
        r
    }
}
