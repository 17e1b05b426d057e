//! What each plugin instance's store holds: its WASI context, its limits, who it is (for logs
//! and namespaces), and, during a call, the exchange it is working on.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::{kv, rate_limit};
use crate::pipeline::Exchange;

/// Who a store belongs to, and the shared state its capabilities reach. One per pipeline
/// entry, shared by all of that entry's instances.
#[derive(Debug)]
pub struct StageContext {
    pub plugin: Arc<str>,
    pub route: Arc<str>,
    pub kv: Arc<kv::Namespace>,
    pub limiters: Arc<rate_limit::Registry>,
}

pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) ctx: Arc<StageContext>,
    /// The request (and response) being handled; set only for the length of a phase call.
    pub(crate) exchange: Option<Box<Exchange>>,
    /// When the call in progress must end; checked at every epoch tick.
    pub(crate) deadline: Instant,
}

impl HostState {
    pub fn new(ctx: Arc<StageContext>, limits: StoreLimits) -> Self {
        Self {
            // No files, environment, arguments or sockets; random and clocks, and stdout and
            // stderr into the log.
            wasi: WasiCtx::builder()
                .stdout(super::stdio::LogStream::new(ctx.clone(), "stdout"))
                .stderr(super::stdio::LogStream::new(ctx.clone(), "stderr"))
                .build(),
            table: ResourceTable::new(),
            limits,
            ctx,
            exchange: None,
            deadline: Instant::now(),
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

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
