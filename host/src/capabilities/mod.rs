//! The host side of each WIT interface a plugin may import: one module per interface, each
//! implementing the traits `bindgen!` generated for it.

pub mod clock;
pub mod header_rules;
pub mod http;
pub mod kv;
pub mod log;
pub mod rate_limit;
