//! What each plugin instance's store holds: its WASI context, its limits, who it is (for logs
//! and namespaces), and, during a call, the exchange it is working on.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::refusals::Refusals;
use crate::capabilities::{kv, log, rate_limit};
use crate::pipeline::Exchange;
use crate::pipeline::header_rules::HeaderRules;

/// Who a store belongs to, and the shared state its capabilities reach. One per pipeline
/// entry, shared by all of that entry's instances.
#[derive(Debug)]
pub struct StageContext {
    pub plugin: Arc<str>,
    pub route: Arc<str>,
    pub kv: Arc<kv::Namespace>,
    /// The largest value the plugin may store in kv (its `kv_max_value_bytes`).
    pub kv_max_value: usize,
    pub limiters: Arc<rate_limit::Registry>,
    /// `[state] backend = "redis"`: where kv and rate-limit keep their state instead.
    pub redis: Option<Arc<crate::state::Redis>>,
    /// With Redis, what the plugin's kv keys are put after there (`PREFIX kv:LEN:PLUGIN:`).
    pub kv_redis_prefix: String,
    /// The plugin's log budget, shared by every route it runs on.
    pub log: Arc<log::Budget>,
    /// Where its outbound calls may go; `None` refuses them all.
    pub outbound: Option<Arc<crate::outbound::Outbound>>,
}

/// The store's limits, remembering whether a memory grow was refused, so a trap that follows
/// is reported as running out of memory.
pub struct Limits {
    pub(crate) inner: StoreLimits,
    pub(crate) memory_refused: bool,
    /// The size of the instance's largest linear memory (memories only ever grow).
    pub(crate) memory_bytes: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        self.memory_refused |= !ok;
        self.memory_bytes = self.memory_bytes.max(if ok { desired } else { current });
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limits,
    pub(crate) ctx: Arc<StageContext>,
    /// The request (and response) being handled; set only for the length of a phase call.
    pub(crate) exchange: Option<Box<Exchange>>,
    /// Epoch ticks the call in progress may still run through. The epoch callback only fires
    /// while the guest runs, so time the thread spends descheduled or the call spends
    /// suspended does not count: a loaded machine cannot time out a well-behaved plugin.
    pub(crate) ticks_left: u64,
    /// Whether the call in progress runs on a fiber, and so can yield at an epoch tick.
    pub(crate) on_fiber: bool,
    /// Host calls refused during the call in progress; moved out when it returns.
    pub(crate) refusals: Refusals,
    /// The header rules being declared: set only for the length of `init`.
    pub(crate) declared: Option<HeaderRules>,
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    /// Outbound calls: the grants, and the calls of the request in progress.
    pub(crate) hooks: crate::outbound::Hooks,
}

impl HostState {
    pub fn new(ctx: Arc<StageContext>, limits: StoreLimits) -> Self {
        let outbound = ctx.outbound.clone();
        Self {
            // No files, environment, arguments or sockets; random and clocks, and stdout and
            // stderr into the log.
            wasi: WasiCtx::builder()
                .stdout(super::stdio::LogStream::new(ctx.clone(), "stdout"))
                .stderr(super::stdio::LogStream::new(ctx.clone(), "stderr"))
                .build(),
            table: ResourceTable::new(),
            limits: Limits {
                inner: limits,
                memory_refused: false,
                memory_bytes: 0,
            },
            ctx,
            exchange: None,
            ticks_left: 0,
            on_fiber: false,
            refusals: Refusals::default(),
            declared: None,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: crate::outbound::Hooks {
                outbound,
                calls: None,
            },
        }
    }

    /// The exchange of the call in progress. Host functions taking a borrowed request or
    /// response can only run inside a phase call, so its absence is a host bug: trap.
    pub(crate) fn exchange(&mut self) -> wasmtime::Result<&mut Exchange> {
        self.exchange
            .as_deref_mut()
            .ok_or_else(|| wasmtime::format_err!("no request is in progress"))
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
