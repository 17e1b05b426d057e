//! Wire-level facts that every layer reads: which worker thread serves a connection, and (from
//! the config crate, which names them) who is at the other end, which peers are trusted to say
//! who the client really is, and what an upstream target is. A leaf module, so `server`,
//! `pipeline` and `upstream` depend on it and not on one another.

pub use wasmgate_config::net::{Peer, Target, TrustedProxies, parse_target};

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index of the worker thread running this code (0 outside workers).
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

pub(crate) fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}
