//! A hostile plugin for the sandbox tests. Its config names one behaviour, run in the request
//! phase; each is something a buggy or malicious plugin could do to its host.

use std::hint::black_box;

use serde::Deserialize;
use wasmgate_sdk::rate_limit::{Limiter, Quota};
use wasmgate_sdk::{
    ConfigError, Decision, Error, Plugin, Registration, Reply, Request, clock, kv, log,
};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Never returns.
    Loop,
    /// Allocates until memory runs out.
    GrowMemory,
    /// Recurses without end.
    Recurse,
    Panic,
    /// Answers with a header name that is not a token.
    BadHeaderName,
    /// Answers with CR LF in a header value.
    BadHeaderValue,
    /// Answers with status 42.
    BadStatus,
    /// Answers with a 12 MiB body.
    HugeBody,
    /// Calls every host function with absurd arguments, then lets the request through.
    AbsurdHostArgs,
    /// Busy-waits `ms`, then lets the request through.
    Spin,
    /// Reads the monotonic clock, prints `ms` lines to stdout and stderr, then lets the
    /// request through.
    Print,
    /// Answers with how many requests this instance has seen: globals persist in pooled mode.
    Counter,
    /// Leaks `kib` KiB per call (as a runtime with a leak, or a garbage collector that never
    /// gives memory back, does), and answers like `Counter`.
    Leak,
    /// Sets `count` distinct variables, each refused past the host's cap, then lets the
    /// request through.
    VarFlood,
    /// Logs `count` lines through the `log` capability, then lets the request through.
    LogFlood,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub behaviour: Behaviour,
    #[serde(default)]
    pub ms: u64,
    #[serde(default)]
    pub kib: usize,
    #[serde(default)]
    pub count: u64,
}

pub struct Hostile {
    config: Config,
    seen: u64,
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let local = black_box([n; 16]);
    if local[0] == u64::MAX {
        return 0;
    }
    recurse(local[3] + 1) + local[7]
}

impl Plugin for Hostile {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self { config, seen: 0 })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        self.seen += 1;
        let ms = self.config.ms;
        match self.config.behaviour {
            Behaviour::Loop => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            Behaviour::GrowMemory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Behaviour::Recurse => {
                black_box(recurse(1));
                Ok(Decision::Continue)
            }
            Behaviour::Panic => panic!("hostile plugin panics, as configured"),
            Behaviour::BadHeaderName => {
                Ok(Decision::Respond(Reply::new(200).header("bad name", "v")))
            }
            Behaviour::BadHeaderValue => Ok(Decision::Respond(
                Reply::new(200).header("x-split", "a\r\nx-injected: 1"),
            )),
            Behaviour::BadStatus => Ok(Decision::Respond(Reply::new(42))),
            Behaviour::HugeBody => Ok(Decision::Respond(
                Reply::new(200).body(vec![b'x'; 12 << 20]),
            )),
            Behaviour::AbsurdHostArgs => {
                let huge = "k".repeat(2 << 20);
                let _ = kv::set(&huge, b"v", Some(u64::MAX));
                let _ = kv::set("k", &vec![0u8; 4 << 20], Some(0));
                let _ = kv::set("k", b"v", Some(u64::MAX));
                let _ = kv::get(&huge);
                kv::delete(&huge);
                let _ = Limiter::open(
                    "zero",
                    Quota {
                        count: 0,
                        period_ms: 0,
                        burst: 0,
                    },
                );
                let _ = Limiter::open(
                    &huge,
                    Quota {
                        count: 1,
                        period_ms: 1,
                        burst: 1,
                    },
                );
                if let Ok(l) = Limiter::open(
                    "max",
                    Quota {
                        count: u32::MAX,
                        period_ms: u64::MAX,
                        burst: u32::MAX,
                    },
                ) {
                    black_box(l.check(&huge, u32::MAX));
                }
                if let Ok(l) = Limiter::open(
                    "one",
                    Quota {
                        count: 1,
                        period_ms: 1000,
                        burst: 1,
                    },
                ) {
                    black_box(l.check("x", u32::MAX));
                }
                log::info(&huge);
                req.set_var(&huge, &huge);
                let _ = req.set_header(&huge, "v");
                let _ = req.set_body(&[0u8; 16]);
                let _ = req.set_path(&huge);
                Ok(Decision::Continue)
            }
            Behaviour::Spin => {
                let until = clock::monotonic_nanos() + ms * 1_000_000;
                while clock::monotonic_nanos() < until {
                    black_box(());
                }
                Ok(Decision::Continue)
            }
            Behaviour::Print => {
                // Reads the standard library's clock (WASI's monotonic clock), which a plugin
                // called directly may do.
                black_box(std::time::Instant::now());
                for i in 0..ms.max(1) {
                    println!("hostile stdout line {i}");
                    eprintln!("hostile stderr line {i}");
                }
                Ok(Decision::Continue)
            }
            Behaviour::Counter => Ok(Decision::Respond(
                Reply::new(200).body(self.seen.to_string()),
            )),
            Behaviour::Leak => {
                black_box(vec![1u8; self.config.kib << 10].leak());
                Ok(Decision::Respond(
                    Reply::new(200).body(self.seen.to_string()),
                ))
            }
            Behaviour::VarFlood => {
                for i in 0..self.config.count {
                    req.set_var(&format!("flood-{i}"), "v");
                }
                Ok(Decision::Continue)
            }
            Behaviour::LogFlood => {
                for i in 0..self.config.count {
                    log::info(&format!("hostile log line {i}"));
                }
                Ok(Decision::Continue)
            }
        }
    }
}

wasmgate_sdk::export!(Hostile);
