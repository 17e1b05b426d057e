//! The instances one pipeline entry runs its calls on.
//!
//! Calls are synchronous and short, so a worker thread runs at most one call of an entry at a
//! time: a pooled entry never needs more idle instances than there are workers. In pooled mode
//! an instance is initialised once and reused; in fresh mode each call gets a new instance, so
//! nothing can carry over from one request to the next. An instance that trapped is never
//! reused.
//!
//! Calls run on fibers. At every epoch tick a running call yields to the worker's other
//! requests, and once past its deadline it is interrupted: a plugin stuck in a loop costs its
//! own request a timeout, not the worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::Resource;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::bindings::{Decision, Plugin, Registration};
use super::state::{HostState, StageContext};
use super::{CALL_TIMEOUT, LoadedPlugin, MEMORY_LIMIT};
use crate::config::InstanceMode;
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
            Self::Timeout(_) => "timeout",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
            Self::BadOutput(_) => "bad_output",
        }
    }

    fn from_trap(e: wasmtime::Error) -> Self {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Self::Timeout(CALL_TIMEOUT.as_millis() as u64),
            _ => Self::Trap(format!("{e:#}")),
        }
    }
}

struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
}

/// The instances of one pipeline entry: one plugin, with one route's config.
pub struct Instances {
    loaded: LoadedPlugin,
    config: Arc<str>,
    ctx: Arc<StageContext>,
    mode: InstanceMode,
    idle: Mutex<Vec<Instance>>,
    max_idle: usize,
}

/// Arms the store's deadline for a call of at most `limit`.
fn arm(store: &mut Store<HostState>, limit: Duration) {
    store.data_mut().deadline = Instant::now() + limit;
    store.set_epoch_deadline(1);
}

impl Instances {
    /// Creates the first instance and calls `init` with the config, which must succeed.
    /// Blocking (it drives `init` on a runtime of its own): call it off the async runtime.
    pub fn new(
        loaded: LoadedPlugin,
        config: Arc<str>,
        ctx: Arc<StageContext>,
        mode: InstanceMode,
        max_idle: usize,
    ) -> Result<(Self, Registration), String> {
        let this = Self {
            loaded,
            config,
            ctx,
            mode,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for init: {e}"))?;
        let (first, registration) = rt.block_on(this.instantiate()).map_err(|f| match f {
            Failure::Instantiate(m) => m,
            other => other.to_string(),
        })?;
        if mode == InstanceMode::Pooled {
            this.idle.lock().push(first);
        }
        Ok((this, registration))
    }

    pub fn mode(&self) -> InstanceMode {
        self.mode
    }

    async fn instantiate(&self) -> Result<(Instance, Registration), Failure> {
        let engine = self.loaded.pre.instance_pre().engine();
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .table_elements(20_000)
            .instances(64)
            .tables(16)
            .memories(4)
            .build();
        let mut store = Store::new(engine, HostState::new(self.ctx.clone(), limits));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        arm(&mut store, INIT_TIMEOUT);
        let plugin = self
            .loaded
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
        let registration = match plugin
            .wasmgate_plugin_handler()
            .call_init(&mut store, &self.config)
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(Failure::Instantiate(match e.key {
                    Some(key) => format!("config key `{key}`: {}", e.message),
                    None => format!("config: {}", e.message),
                }));
            }
            Err(e) => return Err(Failure::Instantiate(format!("init trapped: {e:#}"))),
        };
        Ok((Instance { store, plugin }, registration))
    }

    async fn checkout(&self) -> Result<Instance, Failure> {
        if self.mode == InstanceMode::Pooled
            && let Some(i) = self.idle.lock().pop()
        {
            return Ok(i);
        }
        self.instantiate().await.map(|(i, _)| i)
    }

    fn checkin(&self, instance: Instance) {
        if self.mode == InstanceMode::Pooled {
            let mut idle = self.idle.lock();
            if idle.len() < self.max_idle {
                idle.push(instance);
            }
        }
    }

    /// Runs one phase call with the exchange lent to the store for its length.
    async fn call(
        &self,
        ex: Box<Exchange>,
        phase: Phase,
    ) -> (Box<Exchange>, Result<Decision, Failure>) {
        let mut inst = match self.checkout().await {
            Ok(i) => i,
            Err(e) => return (ex, Err(e)),
        };
        arm(&mut inst.store, CALL_TIMEOUT);
        inst.store.data_mut().exchange = Some(ex);
        let handler = inst.plugin.wasmgate_plugin_handler();
        let result = match phase {
            Phase::Request => {
                handler
                    .call_on_request(&mut inst.store, Resource::new_borrow(0))
                    .await
            }
            Phase::Response => {
                handler
                    .call_on_response(
                        &mut inst.store,
                        Resource::new_borrow(0),
                        Resource::new_borrow(0),
                    )
                    .await
            }
        };
        let ex = inst
            .store
            .data_mut()
            .exchange
            .take()
            .expect("the store gives back the exchange it was lent");
        match result {
            Ok(Ok(decision)) => {
                self.checkin(inst);
                (ex, Ok(decision))
            }
            Ok(Err(message)) => {
                self.checkin(inst);
                (ex, Err(Failure::Plugin(message)))
            }
            // A trapped instance may be in any state: drop it.
            Err(e) => (ex, Err(Failure::from_trap(e))),
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
