//! The Wasm side of the gateway: one wasmtime engine (component model, pooling allocator,
//! epoch interruption), components compiled once and cached by content hash, and the instances
//! each pipeline entry runs its calls on.

pub mod bindings;
pub mod pool;
pub mod state;
mod stdio;

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

/// How often the epoch advances; a call's deadline is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest a single plugin call may run.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest linear memory a plugin instance may grow to.
pub const MEMORY_LIMIT: usize = 16 << 20;
/// Upper bound for any plugin's memory, sizing the pooling allocator's slots.
const POOL_MEMORY_CEILING: usize = 1 << 30;

/// A compiled plugin, ready to instantiate: linked once, instantiated many times.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub name: Arc<str>,
    /// `sha256:` of the component's bytes.
    pub hash: Arc<str>,
    pub pre: PluginPre<HostState>,
}

/// The engine, the linker with every host capability, and the compiled-component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    compiled: Mutex<HashMap<String, Component>>,
    _ticker: std::thread::JoinHandle<()>,
}

impl Runtime {
    pub fn new(cfg: &WasmConfig) -> anyhow::Result<Arc<Self>> {
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
            .table_elements(20_000);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(512 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;

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
            linker,
            compiled: Mutex::new(HashMap::new()),
            _ticker: ticker,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
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
                let c = Component::new(&self.engine, &bytes).map_err(|e| {
                    format!(
                        "plugin `{name}` ({}): not a valid component: {e:#}",
                        path.display()
                    )
                })?;
                self.compiled.lock().insert(hash.clone(), c.clone());
                c
            }
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!(
                "plugin `{name}` ({}): cannot be linked: {e:#}",
                path.display()
            )
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            format!(
                "plugin `{name}` ({}): does not export wasmgate:plugin/handler@0.1.0: {e:#}",
                path.display()
            )
        })?;
        Ok(LoadedPlugin {
            name: name.into(),
            hash: hash.into(),
            pre,
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
