//! The instances one pipeline entry runs its calls on.
//!
//! Calls are short, so a worker thread seldom has more than one call of an entry in flight (only
//! when a call on a fiber yields at an epoch tick, or waits). Pooled instances are kept per
//! worker: an instance is reused on the worker thread that used it last, so its memory stays in
//! that core's caches and no lock is shared between workers. A worker makes its own when it has
//! none idle, up to `max_idle` alive at once; past that a call waits for one of them to come
//! back. Without that bound, a call that yields lets the worker start the next request, which
//! makes an instance (milliseconds for an interpreter, yielding in turn), and so on: under load
//! a Python plugin's instances were made and dropped faster than they were used. In fresh mode
//! each call gets a new instance, so nothing can carry over from one request to the next. An
//! instance that trapped, or that was refused memory, is never reused.
//!
//! A plugin whose imports never wait (a Rust plugin: see `super::sync_wasi`) is called
//! directly on the worker's thread; any other is called on a fiber, and at every epoch tick a
//! running call on a fiber yields to the worker's other requests. Either way a call past its
//! deadline is interrupted: a plugin stuck in a loop costs its own request a timeout. A direct
//! call cannot yield, so a loop holds its worker until that deadline; the first call of an
//! entry to time out moves the entry's later calls onto fibers, so it does so once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use wasmtime::component::{Component, ComponentExportIndex, Resource, TypedFunc};
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::bindings::{ConfigError, Decision, Registration};
use super::state::{HostState, StageContext};
use super::{LoadedPlugin, Sandbox};
use crate::capabilities::http::{RequestHandle, ResponseHandle};
use crate::config::InstanceMode;
use crate::pipeline::header_rules::HeaderRules;
use crate::pipeline::{Exchange, Phase};

/// Init may parse a large config or warm caches: it gets longer than a request call.
const INIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call did not produce a decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("plugin returned an error: {0}")]
    Plugin(String),
    #[error("plugin ran past its {0} ms deadline")]
    Timeout(u64),
    #[error(
        "plugin was still waiting {0} ms into its call (ten times its deadline) and was cancelled"
    )]
    Stalled(u64),
    #[error("plugin ran out of fuel")]
    OutOfFuel,
    #[error("plugin ran out of memory (limit {0} MiB)")]
    Memory(usize),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin returned invalid output: {0}")]
    BadOutput(String),
}

impl Failure {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Plugin(_) => "error",
            Self::Timeout(_) | Self::Stalled(_) => "timeout",
            Self::OutOfFuel => "fuel",
            Self::Memory(_) => "memory",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
            Self::BadOutput(_) => "bad_output",
        }
    }

    fn from_trap(e: wasmtime::Error, sandbox: &Sandbox, memory_refused: bool) -> Self {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Self::Timeout(sandbox.call_timeout.as_millis() as u64),
            Some(Trap::OutOfFuel) => Self::OutOfFuel,
            _ if memory_refused => Self::Memory(sandbox.memory_bytes >> 20),
            _ => Self::Trap(format!("{e:#}")),
        }
    }
}

/// The handler interface's functions, found once per component.
#[derive(Clone, Copy)]
pub struct HandlerExports {
    init: ComponentExportIndex,
    on_request: ComponentExportIndex,
    on_response: ComponentExportIndex,
}

impl HandlerExports {
    /// The handler's functions in `component` (any 0.1.x: export names match by semver).
    pub fn find(component: &Component) -> Option<Self> {
        let handler = component.get_export_index(None, super::bindings::HANDLER_EXPORT)?;
        let func = |name| component.get_export_index(Some(&handler), name);
        Some(Self {
            init: func("init")?,
            on_request: func("on-request")?,
            on_response: func("on-response")?,
        })
    }
}

type Verdict = (Result<Decision, String>,);

/// Whether a call failed by running to its deadline.
fn is_interrupt(e: &wasmtime::Error) -> bool {
    matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt))
}

/// One instance's phase functions: called directly with `call`, on a fiber with `call_async`.
struct Handler {
    on_request: TypedFunc<(Resource<RequestHandle>,), Verdict>,
    on_response: TypedFunc<(Resource<RequestHandle>, Resource<ResponseHandle>), Verdict>,
}

/// How many of an entry's pooled instances one worker has alive, and the signal that one came
/// back or went away.
#[derive(Default)]
struct Census {
    live: AtomicUsize,
    freed: Notify,
}

/// A pooled instance's place among its worker's live ones, given back when it is dropped,
/// however it is (put back, discarded after a trap, or with a cancelled request).
struct Lease {
    census: Arc<[Census]>,
    worker: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let c = &self.census[self.worker];
        c.live.fetch_sub(1, Ordering::Relaxed);
        c.freed.notify_one();
    }
}

struct Instance {
    store: Store<HostState>,
    /// Set for pooled instances.
    lease: Option<Lease>,
    handler: Handler,
    uses: u64,
    /// Past this much linear memory the instance is replaced rather than reused.
    retire_at_bytes: usize,
}

/// The instances of one pipeline entry: one plugin, with one route's config.
pub struct Instances {
    loaded: LoadedPlugin,
    config: Arc<str>,
    ctx: Arc<StageContext>,
    mode: InstanceMode,
    sandbox: Sandbox,
    /// Idle instances, one list per worker thread (see `crate::wire::worker_index`).
    idle: Box<[Mutex<Vec<Instance>>]>,
    /// Pooled instances alive, per worker.
    census: Arc<[Census]>,
    /// Most pooled instances alive (and so idle) per worker.
    max_live: usize,
    /// Linear memory the first instance had after `init`.
    memory_after_init: usize,
    /// Calls go on fibers: always for a plugin whose imports can wait (see
    /// `LoadedPlugin::direct`), and from its first timed-out call on for one called directly.
    on_fibers: AtomicBool,
}

/// Arms the store's tick budget (and fuel) for a call of at most `limit` of running time: the
/// call is interrupted at the tick that exhausts its budget, so within `limit` plus one tick.
/// (The wall-clock backstop for a call that waits instead of running is in `call`.)
fn arm(store: &mut Store<HostState>, limit: Duration, fuel: Option<u64>) {
    let tick = super::EPOCH_TICK.as_micros().max(1);
    store.data_mut().ticks_left = (limit.as_micros().div_ceil(tick) as u64).max(1);
    store.set_epoch_deadline(1);
    if let Some(fuel) = fuel {
        // Only fails when the engine does not meter fuel, which `fuel` being set rules out.
        let _ = store.set_fuel(fuel);
    }
}

impl Instances {
    /// Creates the first instance and calls `init` with the config, which must succeed. In
    /// pooled mode up to `max_live` instances are alive for each of `workers` worker threads.
    /// Blocking (it drives `init` on a runtime of its own): call it off the async runtime.
    pub fn new(
        loaded: LoadedPlugin,
        config: Arc<str>,
        ctx: Arc<StageContext>,
        mode: InstanceMode,
        sandbox: Sandbox,
        workers: usize,
        max_live: usize,
    ) -> Result<(Self, Registration, HeaderRules), String> {
        let on_fibers = AtomicBool::new(!loaded.direct);
        let mut this = Self {
            loaded,
            config,
            ctx,
            mode,
            sandbox,
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            census: (0..workers.max(1)).map(|_| Census::default()).collect(),
            max_live: max_live.max(1),
            memory_after_init: 0,
            on_fibers,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for init: {e}"))?;
        let (first, registration, rules) =
            rt.block_on(this.instantiate()).map_err(|f| match f {
                Failure::Instantiate(m) => m,
                other => other.to_string(),
            })?;
        this.memory_after_init = first.store.data().limits.memory_bytes;
        if mode == InstanceMode::Pooled {
            let mut first = first;
            first.lease = Some(this.lease());
            this.idle().push(first);
        }
        Ok((this, registration, rules))
    }

    pub fn mode(&self) -> InstanceMode {
        self.mode
    }

    /// How this entry's calls are made now: `"direct"` or `"fibers"`.
    pub fn calls(&self) -> &'static str {
        if self.on_fibers.load(Ordering::Relaxed) {
            "fibers"
        } else {
            "direct"
        }
    }

    /// The linear memory an instance may still grow by after `init`: what a call has for
    /// the bodies it reads.
    pub fn room_after_init(&self) -> usize {
        self.sandbox
            .memory_bytes
            .saturating_sub(self.memory_after_init)
    }

    /// The calling worker's slot.
    fn worker(&self) -> usize {
        crate::wire::worker_index() % self.idle.len()
    }

    /// The calling worker's idle instances. Only that worker takes this lock, except while a
    /// config is being built.
    fn idle(&self) -> parking_lot::MutexGuard<'_, Vec<Instance>> {
        self.idle[self.worker()].lock()
    }

    /// Counts one more live pooled instance on the calling worker.
    fn lease(&self) -> Lease {
        let worker = self.worker();
        self.census[worker].live.fetch_add(1, Ordering::Relaxed);
        Lease {
            census: self.census.clone(),
            worker,
        }
    }

    /// A new instance, initialised: with its registration and the header rules it declared.
    async fn instantiate(&self) -> Result<(Instance, Registration, HeaderRules), Failure> {
        let engine = self.loaded.pre.instance_pre().engine();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.sandbox.memory_bytes)
            .table_elements(20_000)
            .instances(64)
            .tables(16)
            .memories(4)
            .build();
        let mut store = Store::new(engine, HostState::new(self.ctx.clone(), limits));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            data.ticks_left = data.ticks_left.saturating_sub(1);
            Ok(if data.ticks_left == 0 {
                UpdateDeadline::Interrupt
            } else if !data.on_fiber {
                UpdateDeadline::Continue(1)
            } else {
                // tokio's yield_now wakes the call only after the worker has polled for I/O
                // and run the tasks already waiting; a plain yield wakes it at once, and a
                // current-thread runtime then checks for I/O only every 61 polls, so a
                // looping plugin held back every other request on its worker for that long.
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        arm(
            &mut store,
            INIT_TIMEOUT.max(self.sandbox.call_timeout),
            self.sandbox.fuel,
        );
        store.data_mut().declared = Some(HeaderRules::default());
        let on_fiber = self.on_fibers.load(Ordering::Relaxed);
        store.data_mut().on_fiber = on_fiber;
        let failed = |e: wasmtime::Error| Failure::Instantiate(format!("{e:#}"));
        let pre = self.loaded.pre.instance_pre();
        let instance = if on_fiber {
            pre.instantiate_async(&mut store).await
        } else {
            pre.instantiate(&mut store)
        }
        .map_err(failed)?;
        let exports = self.loaded.exports;
        let handler = Handler {
            on_request: instance
                .get_typed_func(&mut store, exports.on_request)
                .map_err(failed)?,
            on_response: instance
                .get_typed_func(&mut store, exports.on_response)
                .map_err(failed)?,
        };
        let init = instance
            .get_typed_func::<(&str,), (Result<Registration, ConfigError>,)>(
                &mut store,
                exports.init,
            )
            .map_err(failed)?;
        let config = (&*self.config,);
        let init = if on_fiber {
            let init_limit = INIT_TIMEOUT.max(self.sandbox.call_timeout) * 10;
            let Ok(init) =
                tokio::time::timeout(init_limit, init.call_async(&mut store, config)).await
            else {
                return Err(Failure::Instantiate(format!(
                    "init was still waiting after {} ms",
                    init_limit.as_millis()
                )));
            };
            init
        } else {
            let init = init.call(&mut store, config);
            if init.as_ref().is_err_and(is_interrupt) {
                self.move_to_fibers();
            }
            init
        }
        .map(|(r,)| r);
        let rules = store.data_mut().declared.take().unwrap_or_default();
        let refusals = std::mem::take(&mut store.data_mut().refusals);
        refusals.log(&self.ctx.route, &self.ctx.plugin, None);
        self.ctx.log.report();
        let registration = match init {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(Failure::Instantiate(match e.key {
                    Some(key) => format!("config key `{key}`: {}", e.message),
                    None => format!("config: {}", e.message),
                }));
            }
            Err(e) => return Err(Failure::Instantiate(format!("init trapped: {e:#}"))),
        };
        // Some guests never give memory back (a leak, or a garbage-collected runtime whose
        // heap only grows): an instance that has used half the room it had after init is
        // replaced between calls, before a call of its runs out. Half, not more: a
        // garbage-collected heap grows in steps of a MiB or more within one call.
        let initial = store.data().limits.memory_bytes;
        let room = self.sandbox.memory_bytes.saturating_sub(initial);
        Ok((
            Instance {
                store,
                lease: None,
                handler,
                uses: 0,
                retire_at_bytes: initial + room / 2,
            },
            registration,
            rules,
        ))
    }

    async fn checkout(&self) -> Result<Instance, Failure> {
        if self.mode == InstanceMode::Fresh {
            return self.instantiate().await.map(|(i, _, _)| i);
        }
        let census = &self.census[self.worker()];
        loop {
            if let Some(i) = self.idle().pop() {
                return Ok(i);
            }
            if census.live.load(Ordering::Relaxed) < self.max_live {
                // Counted before the instance exists, so calls arriving while it is made wait.
                let lease = self.lease();
                let (mut i, _, _) = self.instantiate().await?;
                i.lease = Some(lease);
                return Ok(i);
            }
            census.freed.notified().await;
        }
    }

    fn checkin(&self, instance: Instance) {
        let worn_out = self
            .sandbox
            .max_uses
            .is_some_and(|max| instance.uses >= max);
        // A guest that was refused memory may have survived the call (a garbage-collected
        // runtime throws, the plugin answers with an error) but is full: reusing it would fail
        // every later call. One near its limit is replaced before that happens. A new instance
        // starts from the clean initial memory.
        let limits = &instance.store.data().limits;
        let full = limits.memory_refused || limits.memory_bytes > instance.retire_at_bytes;
        if full && self.mode == InstanceMode::Pooled {
            tracing::debug!(
                plugin = %self.loaded.name,
                route = %self.ctx.route,
                uses = instance.uses,
                memory_kib = limits.memory_bytes >> 10,
                limit_kib = self.sandbox.memory_bytes >> 10,
                "plugin instance replaced: its memory is near the limit"
            );
        }
        if self.mode == InstanceMode::Pooled && !worn_out && !full {
            let worker = self.worker();
            self.idle[worker].lock().push(instance);
            self.census[worker].freed.notify_one();
        }
    }

    /// Runs one phase call with the exchange lent to the store for its length.
    async fn call(
        &self,
        mut ex: Box<Exchange>,
        phase: Phase,
    ) -> (Box<Exchange>, Result<Decision, Failure>) {
        let mut inst = match self.checkout().await {
            Ok(i) => i,
            Err(e) => return (ex, Err(e)),
        };
        arm(
            &mut inst.store,
            self.sandbox.call_timeout,
            self.sandbox.fuel,
        );
        inst.uses += 1;
        let state = inst.store.data_mut();
        state.hooks.calls = ex.outbound.take();
        state.exchange = Some(ex);
        let on_fiber = self.on_fibers.load(Ordering::Relaxed);
        inst.store.data_mut().on_fiber = on_fiber;
        let (handler, store) = (&inst.handler, &mut inst.store);
        let (req, resp) = (Resource::new_borrow(0), Resource::new_borrow(0));
        let result = if on_fiber {
            let call = async move {
                match phase {
                    Phase::Request => handler.on_request.call_async(store, (req,)).await,
                    Phase::Response => handler.on_response.call_async(store, (req, resp)).await,
                }
            };
            // The tick budget only counts time the guest runs; a call parked in a WASI wait (a
            // sleep that never ends) is cut off here instead. Dropping the call cancels it.
            tokio::time::timeout(self.sandbox.wall, call).await
        } else {
            let result = match phase {
                Phase::Request => handler.on_request.call(store, (req,)),
                Phase::Response => handler.on_response.call(store, (req, resp)),
            };
            if result.as_ref().is_err_and(is_interrupt) {
                self.move_to_fibers();
            }
            Ok(result)
        };
        self.finish(inst, result.map(|r| r.map(|(d,)| d)))
    }

    /// The first timeout of a direct call: later calls of this entry go on fibers, where a
    /// running call yields to the worker's other requests at every tick.
    fn move_to_fibers(&self) {
        if !self.on_fibers.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                plugin = %self.loaded.name,
                route = %self.ctx.route,
                "plugin call ran to its deadline; this plugin's calls on this route now run on fibers, yielding to other requests while they run"
            );
        }
    }

    /// Takes the exchange back from the store and returns the instance, unless it failed.
    fn finish(
        &self,
        mut inst: Instance,
        result: Result<wasmtime::Result<Result<Decision, String>>, tokio::time::error::Elapsed>,
    ) -> (Box<Exchange>, Result<Decision, Failure>) {
        let state = inst.store.data_mut();
        let mut ex = state
            .exchange
            .take()
            .expect("the store gives back the exchange it was lent");
        ex.outbound = state.hooks.calls.take();
        // Off the deadline from here: what the call did is counted, and logged later.
        ex.refusals
            .absorb(&ex.route, ex.id, &self.ctx.plugin, &mut state.refusals);
        self.ctx.log.report();
        match result {
            Ok(Ok(Ok(decision))) => {
                self.checkin(inst);
                (ex, Ok(decision))
            }
            Ok(Ok(Err(message))) => {
                self.checkin(inst);
                (ex, Err(Failure::Plugin(message)))
            }
            // A trapped or cancelled instance may be in any state: drop it.
            Ok(Err(e)) => {
                let memory_refused = inst.store.data().limits.memory_refused;
                (
                    ex,
                    Err(Failure::from_trap(e, &self.sandbox, memory_refused)),
                )
            }
            Err(_) => (
                ex,
                Err(Failure::Timeout(
                    self.sandbox.call_timeout.as_millis() as u64
                )),
            ),
        }
    }

    pub async fn on_request(
        &self,
        ex: Box<Exchange>,
    ) -> (Box<Exchange>, Result<Decision, Failure>) {
        self.call(ex, Phase::Request).await
    }

    pub async fn on_response(
        &self,
        ex: Box<Exchange>,
    ) -> (Box<Exchange>, Result<Decision, Failure>) {
        self.call(ex, Phase::Response).await
    }
}
