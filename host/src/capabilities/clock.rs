//! Implements `wasmgate:plugin/clock`.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::Result;

use crate::plugins::bindings::wasmgate::plugin::clock::Host;
use crate::plugins::state::HostState;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl Host for HostState {
    fn now_millis(&mut self) -> Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }

    fn monotonic_nanos(&mut self) -> Result<u64> {
        Ok(start().elapsed().as_nanos() as u64)
    }
}
