//! The host's bindings for `wasmgate:plugin@0.1.6`, generated once from `wit/`. Nothing else
//! edits them; capabilities implement the generated traits in `crate::capabilities`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmgate:plugin/plugin",
    // Host functions are synchronous (they never wait). The generated exports only check a
    // component's handler at load (`PluginPre::new`); calls, direct or on fibers, go through
    // typed functions (`pool::HandlerExports`).
    imports: { default: trappable },
    with: {
        "wasmgate:plugin/http.request": crate::capabilities::http::RequestHandle,
        "wasmgate:plugin/http.response": crate::capabilities::http::ResponseHandle,
        "wasmgate:plugin/rate-limit.limiter": crate::capabilities::rate_limit::LimiterHandle,
    },
});

/// The export every plugin has, by its name in this contract version; a component built
/// against any earlier 0.1.x matches it by semver.
pub const HANDLER_EXPORT: &str = "wasmgate:plugin/handler@0.1.6";
/// The capabilities the Redis backend links anew, by their names in this contract version.
pub const KV_INTERFACE: &str = "wasmgate:plugin/kv@0.1.6";
pub const RATE_LIMIT_INTERFACE: &str = "wasmgate:plugin/rate-limit@0.1.6";

pub use self::exports::wasmgate::plugin::handler::{ConfigError, Registration};
pub use self::wasmgate::plugin::http::{Decision, ErrorCode, Reply};
