//! A test plugin that sleeps `ms` through WASI (`std::thread::sleep`, the monotonic clock's
//! timer) in the request phase, then lets the request through. Importing a WASI interface that
//! waits makes the gateway link it for calls on fibers, so this is the test plugin that runs
//! there; the others are called directly.

use serde::Deserialize;
use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Registration, Request};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ms: u64,
}

pub struct Sleeper {
    ms: u64,
}

impl Plugin for Sleeper {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self { ms: config.ms })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, _req: &mut Request<'_>) -> Result<Decision, Error> {
        std::thread::sleep(std::time::Duration::from_millis(self.ms));
        Ok(Decision::Continue)
    }
}

wasmgate_sdk::export!(Sleeper);
