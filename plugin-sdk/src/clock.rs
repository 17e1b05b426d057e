//! Wall-clock and monotonic time, from the host.
//!
//! Natively the mock host answers: real time, unless a test set the mock clock with
//! [`testing::set_now_millis`](crate::testing::set_now_millis).

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    imp::now_millis()
}

/// Nanoseconds from an arbitrary start; only differences mean anything.
pub fn monotonic_nanos() -> u64 {
    imp::monotonic_nanos()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::__private::bindings::wasmgate::plugin::clock as wit;

    pub(super) fn now_millis() -> u64 {
        wit::now_millis()
    }

    pub(super) fn monotonic_nanos() -> u64 {
        wit::monotonic_nanos()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::testing::host;

    pub(super) fn now_millis() -> u64 {
        host::now_millis()
    }

    pub(super) fn monotonic_nanos() -> u64 {
        host::monotonic_nanos()
    }
}
