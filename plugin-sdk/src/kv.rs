//! A key-value store held by the host, namespaced per plugin, shared by all its instances,
//! with optional expiry.
//!
//! ```
//! use wasmgate_sdk::kv;
//! kv::set("greeting", b"hi", Some(60_000)).unwrap();
//! assert_eq!(kv::get("greeting").as_deref(), Some(&b"hi"[..]));
//! kv::delete("greeting");
//! assert_eq!(kv::get("greeting"), None);
//! ```
//!
//! Natively the mock host holds the store, per test thread; expiry follows its clock.

use std::fmt;

/// Why the host refused to store a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvError {
    /// The key or value is larger than the host allows
    /// ([`rules::kv`](crate::rules::kv)).
    TooLarge,
    /// The plugin's namespace holds as many entries as the host allows.
    Full,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvError::TooLarge => "key or value too large",
            KvError::Full => "store full",
        })
    }
}

impl std::error::Error for KvError {}

/// The value of `key`, unless it is absent or expired.
pub fn get(key: &str) -> Option<Vec<u8>> {
    imp::get(key)
}

/// Stores a value; with `ttl_ms` it expires that many milliseconds from now, without it it
/// stays until deleted (or the host evicts it).
pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
    imp::set(key, value, ttl_ms)
}

/// Removes `key` (nothing happens when it is absent).
pub fn delete(key: &str) {
    imp::delete(key)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::KvError;
    use crate::__private::bindings::wasmgate::plugin::kv as wit;

    pub(super) fn get(key: &str) -> Option<Vec<u8>> {
        wit::get(key)
    }

    pub(super) fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        wit::set(key, value, ttl_ms).map_err(|err| match err {
            wit::Error::TooLarge => KvError::TooLarge,
            wit::Error::Full => KvError::Full,
        })
    }

    pub(super) fn delete(key: &str) {
        wit::delete(key)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::KvError;
    use crate::testing::host;

    pub(super) fn get(key: &str) -> Option<Vec<u8>> {
        host::kv_get(key)
    }

    pub(super) fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        host::kv_set(key, value, ttl_ms)
    }

    pub(super) fn delete(key: &str) {
        host::kv_delete(key)
    }
}
