//! The Wasm side of the gateway: one wasmtime engine (component model, pooling allocator,
//! epoch interruption), components compiled once and cached by content hash, and the instances
//! each pipeline entry runs its calls on.

pub mod bindings;
pub mod pool;
pub mod refusals;
pub mod state;
mod stdio;
mod sync_wasi;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use self::bindings::{Plugin, PluginPre};
use self::state::HostState;
use crate::config::WasmConfig;

/// How often the epoch advances: a call past its deadline is stopped within one tick, and a
/// running call yields to its worker's other requests at every tick. A request queued behind a
/// looping plugin waits up to a tick for each wake-up it needs (the client's bytes, then the
/// upstream's answer), so the tick bounds what a noisy neighbour costs the other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Longest a single plugin call may run, unless configured.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest linear memory a plugin instance may grow to, unless configured.
pub const MEMORY_LIMIT_MIB: u32 = 16;

/// The limits one plugin's instances run under, resolved from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sandbox {
    pub memory_bytes: usize,
    pub call_timeout: Duration,
    /// Fuel set before each call, when the engine meters fuel (`u64::MAX` for plugins without
    /// a fuel limit).
    pub fuel: Option<u64>,
    pub max_uses: Option<u64>,
    /// Longest a call on a fiber may take from start to end, waits included: ten times
    /// `call_timeout` (a sleep that never ends is cut off here), plus the outbound timeout
    /// for a plugin that may call out.
    pub wall: Duration,
}

impl Sandbox {
    pub fn new(limits: &crate::config::Limits, engine_fuel: bool) -> Self {
        let call_timeout = limits
            .call_timeout_ms
            .map_or(CALL_TIMEOUT, Duration::from_millis);
        Self {
            memory_bytes: limits.memory_limit_mib.unwrap_or(MEMORY_LIMIT_MIB) as usize * (1 << 20),
            call_timeout,
            fuel: engine_fuel.then(|| limits.fuel_per_call.unwrap_or(u64::MAX)),
            max_uses: limits.max_uses,
            wall: call_timeout * 10,
        }
    }

    /// The limits of a plugin that may call out, waiting up to `outbound` for its calls.
    pub fn calling_out(mut self, outbound: Duration) -> Self {
        self.wall += outbound;
        self
    }
}
/// Upper bound for any plugin's memory, sizing the pooling allocator's slots.
const POOL_MEMORY_CEILING: usize = 1 << 30;

/// A compiled plugin, ready to instantiate: linked once, instantiated many times.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub name: Arc<str>,
    /// `sha256:` of the component's bytes.
    pub hash: Arc<str>,
    pub pre: PluginPre<HostState>,
    pub exports: pool::HandlerExports,
    /// Every import was linked synchronously, so calls can be made without a fiber.
    pub direct: bool,
}

/// The engine, the linkers with every host capability, and the compiled-component cache.
pub struct Runtime {
    engine: Engine,
    fuel: bool,
    /// WASI as wasmtime-wasi's asynchronous bindings have it, for calls on fibers.
    linker: Linker<HostState>,
    /// Only the WASI interfaces that never wait (`sync_wasi`), for calls made directly.
    direct_linker: Linker<HostState>,
    compiled: Mutex<HashMap<String, Component>>,
    /// Compiled components on disk, shared across runs; `None` when off or unusable.
    disk_cache: Option<crate::reload::compile_cache::CompileCache>,
    _ticker: std::thread::JoinHandle<()>,
}

impl Runtime {
    /// `fuel` turns on fuel metering for the engine's whole life (it costs every plugin some
    /// speed, so it is only on when some plugin asks for a fuel limit).
    pub fn new(cfg: &WasmConfig, fuel: bool) -> anyhow::Result<Arc<Self>> {
        Self::build(cfg, fuel, true, false)
    }

    /// Like [`Runtime::new`]; with `redis`, kv and rate-limit are linked to the Redis backend
    /// of `[state]`. Their functions then wait on the network, so only calls on fibers have
    /// them: a plugin importing either is called on fibers.
    pub fn with_state(cfg: &WasmConfig, fuel: bool, redis: bool) -> anyhow::Result<Arc<Self>> {
        Self::build(cfg, fuel, true, redis)
    }

    /// Like [`Runtime::new`], with epoch interruption optional: only the benchmarks that
    /// measure its cost turn it off. Without it, nothing stops a plugin stuck in a loop.
    pub fn with_interruption(
        cfg: &WasmConfig,
        fuel: bool,
        epoch: bool,
    ) -> anyhow::Result<Arc<Self>> {
        Self::build(cfg, fuel, epoch, false)
    }

    fn build(cfg: &WasmConfig, fuel: bool, epoch: bool, redis: bool) -> anyhow::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::new();
        let instances = cfg.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_core_instances_per_component(64)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(POOL_MEMORY_CEILING)
            .table_elements(20_000)
            .linear_memory_keep_resident(512 << 10)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(epoch)
            .consume_fuel(fuel)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(512 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let disk_cache = crate::reload::compile_cache::CompileCache::open(&engine);

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // Outbound calls wait on the network, so only calls on fibers can make them.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        let mut direct_linker = Linker::<HostState>::new(&engine);
        sync_wasi::add_to_linker(&mut direct_linker).map_err(anyhow::Error::from)?;
        if redis {
            use self::bindings::wasmgate::plugin::{clock, header_rules, http, log};
            type D = HasSelf<HostState>;
            let l = &mut direct_linker;
            http::add_to_linker::<HostState, D>(l, |s| s)
                .and_then(|()| header_rules::add_to_linker::<HostState, D>(l, |s| s))
                .and_then(|()| log::add_to_linker::<HostState, D>(l, |s| s))
                .and_then(|()| clock::add_to_linker::<HostState, D>(l, |s| s))
                .map_err(anyhow::Error::from)?;
            linker.allow_shadowing(true);
            crate::capabilities::kv::add_redis_to_linker(&mut linker, bindings::KV_INTERFACE)
                .and_then(|()| {
                    crate::capabilities::rate_limit::add_redis_to_linker(
                        &mut linker,
                        bindings::RATE_LIMIT_INTERFACE,
                    )
                })
                .map_err(anyhow::Error::from)?;
            linker.allow_shadowing(false);
        } else {
            Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut direct_linker, |s| s)
                .map_err(anyhow::Error::from)?;
        }

        // Epoch interruption needs a clock: advance the epoch every tick, for the process's life.
        let ticker_engine = engine.weak();
        let ticker = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker_engine.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        Ok(Arc::new(Self {
            engine,
            fuel,
            linker,
            direct_linker,
            compiled: Mutex::new(HashMap::new()),
            disk_cache,
            _ticker: ticker,
        }))
    }

    /// Whether the engine meters fuel.
    pub fn fuel(&self) -> bool {
        self.fuel
    }

    /// Refuses a plugin that imports a host interface it was not granted. `None` grants all.
    pub fn check_grants(
        &self,
        plugin: &LoadedPlugin,
        granted: Option<&[String]>,
    ) -> Result<(), String> {
        let Some(granted) = granted else {
            return Ok(());
        };
        let component = plugin.pre.instance_pre().component();
        for (name, _) in component.component_type().imports(&self.engine) {
            // `wasi:http/outgoing-handler` is the `outbound` capability.
            let outbound = name.starts_with("wasi:http/outgoing-handler@");
            let Some(interface) = name
                .strip_prefix("wasmgate:plugin/")
                .or(outbound.then_some("outbound"))
            else {
                continue;
            };
            let interface = interface.split('@').next().unwrap_or(interface);
            if interface == "http" || interface == "header-rules" {
                continue; // the plugin's own request and response: always granted
            }
            if !granted.iter().any(|g| g == interface) {
                return Err(format!(
                    "plugin `{}` imports {name}, which it was not granted (capabilities = [{}])",
                    plugin.name,
                    granted.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Drops compiled components whose content hash `keep` rejects (the disk cache keeps them).
    pub fn retain_compiled(&self, keep: impl Fn(&str) -> bool) {
        self.compiled.lock().retain(|hash, _| keep(hash));
    }

    /// Reads, compiles (or reuses the compiled copy of the same bytes) and links a plugin.
    /// Blocking: call it off the async runtime.
    pub fn load(&self, name: &str, path: &Path) -> Result<LoadedPlugin, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("plugin `{name}`: cannot read {}: {e}", path.display()))?;
        let hash = content_hash(&bytes);
        let cached = self.compiled.lock().get(&hash).cloned();
        let component = match cached {
            Some(c) => c,
            None => {
                let started = std::time::Instant::now();
                let (c, from_disk) = match &self.disk_cache {
                    Some(cache) => cache.get_or_compile(&self.engine, &hash, &bytes),
                    None => Component::new(&self.engine, &bytes).map(|c| (c, false)),
                }
                .map_err(|e| {
                    format!(
                        "plugin `{name}` ({}): not a valid component: {e:#}",
                        path.display()
                    )
                })?;
                tracing::info!(
                    plugin = name,
                    hash = %hash,
                    ms = started.elapsed().as_millis() as u64,
                    from_disk_cache = from_disk,
                    "plugin compiled"
                );
                self.compiled.lock().insert(hash.clone(), c.clone());
                c
            }
        };
        // A component whose imports the direct linker has is called without fibers; any
        // other is linked with all of WASI, for fibers.
        let (instance_pre, direct) = match self.direct_linker.instantiate_pre(&component) {
            Ok(pre) => (pre, true),
            Err(_) => {
                let pre = self.linker.instantiate_pre(&component).map_err(|e| {
                    format!(
                        "plugin `{name}` ({}): cannot be linked: {e:#}",
                        path.display()
                    )
                })?;
                (pre, false)
            }
        };
        let not_exported = |e: &dyn std::fmt::Display| {
            format!(
                "plugin `{name}` ({}): does not export {}: {e:#}",
                path.display(),
                bindings::HANDLER_EXPORT
            )
        };
        // The bindings' check of the handler's types, with its message for a wrong export.
        let pre = PluginPre::new(instance_pre).map_err(|e| not_exported(&e))?;
        let exports =
            pool::HandlerExports::find(&component).ok_or_else(|| not_exported(&"not found"))?;
        Ok(LoadedPlugin {
            name: name.into(),
            hash: hash.into(),
            pre,
            exports,
            direct,
        })
    }
}

/// `sha256:<hex>` of some bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}
