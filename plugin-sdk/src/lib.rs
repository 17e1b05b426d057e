//! # wasmgate-sdk: write wasmgate plugins in Rust
//!
//! A wasmgate plugin is a WebAssembly component that the gateway runs, sandboxed, on the
//! requests of the routes it is configured for. This crate hides the component plumbing:
//! you implement [`Plugin`] on a type of your own, name that type in [`export!`], and build
//! for `wasm32-wasip2`.
//!
//! ## How a plugin runs
//!
//! 1. The gateway creates an instance of the plugin for a route and calls [`Plugin::new`]
//!    once, with the route's config table (TOML in the gateway's config, handed over as JSON
//!    and deserialized into [`Plugin::Config`] with serde). A bad config becomes a
//!    [`ConfigError`] naming the key at fault (`limits[0].rate`), and the route does not load.
//! 2. It asks [`Plugin::registration`] what the plugin needs: which hooks to call and whether
//!    to buffer the request or response body for it.
//! 3. For each request on the route it calls [`Plugin::on_request`] (in pipeline order), then,
//!    once the upstream (or a plugin) answered, [`Plugin::on_response`] (in reverse order).
//!    A hook returns [`Decision::Continue`] to go on, [`Decision::Respond`] to answer the
//!    client at once with a [`Reply`], or an [`Error`], which the gateway treats as a plugin
//!    failure.
//!
//! Host capabilities are modules of their own: [`log`], [`clock`], [`rate_limit`] and [`kv`],
//! and [`outbound`] for HTTP calls to upstreams and origins (the standard
//! `wasi:http/outgoing-handler`). A component imports only the ones it uses, so a plugin that
//! never logs cannot log, and one that makes no call imports no `wasi:http`.
//! [`header_rules`] hands the gateway header changes to make on every request, from
//! [`Plugin::new`], so that a plugin whose work they are is never called per request.
//!
//! ## A plugin, step by step
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "require-header"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]   # the component; `cargo test` still runs unit tests natively
//!
//! [dependencies]
//! wasmgate-sdk = { path = "../plugin-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use serde::Deserialize;
//! use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Reply, Request};
//!
//! /// Refuses requests that lack a header.
//! pub struct RequireHeader {
//!     name: String,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     header: String,
//! }
//!
//! impl Plugin for RequireHeader {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, ConfigError> {
//!         if config.header.is_empty() {
//!             return Err(ConfigError::at("header", "must not be empty"));
//!         }
//!         Ok(Self { name: config.header.to_ascii_lowercase() })
//!     }
//!
//!     // `registration` keeps its default: on_request and on_response, no bodies.
//!
//!     fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
//!         if req.header(&self.name).is_none() {
//!             wasmgate_sdk::log::info(&format!("{} without {}", req.id(), self.name));
//!             let reply = Reply::new(400).body(format!("missing header {}\n", self.name));
//!             return Ok(Decision::Respond(reply));
//!         }
//!         req.set_header("x-checked", "1")?; // a `HostError` converts into `Error`
//!         Ok(Decision::Continue)
//!     }
//! }
//!
//! wasmgate_sdk::export!(RequireHeader);
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2`; it is
//! `target/wasm32-wasip2/release/require_header.wasm`.
//!
//! ## Testing natively
//!
//! Off wasm, every host call goes to a mock host in [`testing`], so `cargo test` exercises a
//! plugin's logic with no runtime. The mock validates like the gateway does, and its clock,
//! key-value store, rate limiter and log are per test thread.
//!
//! ```
//! # use serde::Deserialize;
//! # use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Reply, Request};
//! # pub struct RequireHeader { name: String }
//! # #[derive(Deserialize)] #[serde(deny_unknown_fields)] pub struct Config { header: String }
//! # impl Plugin for RequireHeader {
//! #     type Config = Config;
//! #     fn new(config: Config) -> Result<Self, ConfigError> { Ok(Self { name: config.header }) }
//! #     fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
//! #         if req.header(&self.name).is_none() { return Ok(Decision::Respond(Reply::new(400))); }
//! #         req.set_header("x-checked", "1")?;
//! #         Ok(Decision::Continue)
//! #     }
//! # }
//! use serde_json::json;
//! use wasmgate_sdk::testing::{self, MockRequest};
//!
//! let mut plugin = testing::init::<RequireHeader>(json!({ "header": "x-key" })).unwrap();
//!
//! let mut req = MockRequest::new("GET", "/");
//! let decision = testing::on_request(&mut plugin, &mut req).unwrap();
//! assert!(matches!(decision, Decision::Respond(ref r) if r.status == 400));
//!
//! let mut req = MockRequest::new("GET", "/").with_header("X-Key", "k");
//! assert_eq!(testing::on_request(&mut plugin, &mut req).unwrap(), Decision::Continue);
//! assert_eq!(req.header("x-checked"), Some("1"));
//!
//! let err = testing::init::<RequireHeader>(json!({ "header": 7 })).err().unwrap();
//! assert_eq!(err.key.as_deref(), Some("header"));
//! ```
//!
//! ## Errors and panics
//!
//! Host calls return `Result`s ([`HostError`]); `?` turns them into a plugin [`Error`]. Author
//! errors never cross the component boundary as panics: a failed config is an `err` from
//! `init`, a failed hook an `err` from `on-request`/`on-response`. A panic in plugin code is a
//! trap (wasm has no unwinding), which the gateway treats as a failure of the instance.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
#[cfg(target_arch = "wasm32")]
mod glue;
mod http;
mod types;

pub mod clock;
pub mod header_rules;
pub mod kv;
pub mod log;
pub mod outbound;
pub mod rate_limit;

#[cfg(any(not(target_arch = "wasm32"), doc))]
pub mod testing;

pub use config::ConfigError;
pub use http::{Request, Response};
pub use types::{ClientCert, Decision, Error, HostError, Registration, Reply, TlsInfo};
/// The rules the gateway holds a plugin's output to, from the crate the host itself enforces
/// them with: the headers it manages ([`rules::http::HOST_MANAGED_HEADERS`]), what a header
/// name and value may be, and the caps on variables, queued response headers, key-value
/// entries, limiter keys and log lines. The mock host in `testing` enforces the same ones.
/// Check a config against them at load, so a bad one fails there and not on every request:
///
/// ```
/// use wasmgate_sdk::rules::http::is_host_managed;
/// assert!(is_host_managed("Proxy-Authorization"));
/// assert!(!is_host_managed("x-request-id"));
/// ```
pub use wasmgate_rules as rules;

/// The trait a plugin implements. One value of it serves every request of one route in one
/// instance; the gateway may run several instances of a route side by side, so state that must
/// be shared goes through [`kv`] or [`rate_limit`], not fields.
pub trait Plugin: Sized + 'static {
    /// Typed per-route config, deserialized from the route's TOML table (sent as JSON).
    ///
    /// A route without a config table gets `{}`; a type with all-default fields, `()` or an
    /// `Option` all accept that. Use `#[serde(deny_unknown_fields)]` to catch misspelt keys.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config. Runs once per instance, before any request (the wasm
    /// export `init`); an `Err` refuses the config, and the route does not load.
    fn new(config: Self::Config) -> Result<Self, ConfigError>;

    /// What this plugin needs from the host. Called once, right after [`Plugin::new`].
    ///
    /// Default: [`Registration::default()`]: both hooks called, no body buffered.
    fn registration(&self) -> Registration {
        Registration::default()
    }

    /// Runs for each request of the route, in pipeline order, before the upstream is called
    /// (skipped when the registration says `on_request: false`).
    ///
    /// Default: does nothing and returns [`Decision::Continue`].
    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let _ = req;
        Ok(Decision::Continue)
    }

    /// Runs for each response of the route, in reverse pipeline order, once the upstream or a
    /// plugin answered (skipped when the registration says `on_response: false`). The request
    /// is there to read (and for its vars); changing it is refused with
    /// [`HostError::NotAllowed`].
    ///
    /// Default: does nothing and returns [`Decision::Continue`].
    fn on_response(
        &mut self,
        req: &mut Request<'_>,
        resp: &mut Response<'_>,
    ) -> Result<Decision, Error> {
        let _ = (req, resp);
        Ok(Decision::Continue)
    }
}

/// Exports a [`Plugin`] type as the component's `handler`: `wasmgate_sdk::export!(MyPlugin);`,
/// once per plugin crate, at module level.
///
/// On `wasm32` it generates the component exports (`init`, `on-request`, `on-response`); on
/// other targets it only checks that the type implements [`Plugin`], so the crate still builds
/// and tests natively.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        const _: fn() = $crate::__private::assert_plugin::<$plugin>;

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct __WasmgateComponent;

            impl $crate::__private::Guest for __WasmgateComponent {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<
                    $crate::__private::WitRegistration,
                    $crate::__private::WitConfigError,
                > {
                    $crate::__private::init::<$plugin>(&config)
                }

                fn on_request(
                    req: &$crate::__private::WitRequest,
                ) -> ::core::result::Result<$crate::__private::WitDecision, ::std::string::String>
                {
                    $crate::__private::on_request(req)
                }

                fn on_response(
                    req: &$crate::__private::WitRequest,
                    resp: &$crate::__private::WitResponse,
                ) -> ::core::result::Result<$crate::__private::WitDecision, ::std::string::String>
                {
                    $crate::__private::on_response(req, resp)
                }
            }

            $crate::__private::bindings::export!(
                __WasmgateComponent with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Implementation details of [`export!`] and the capability modules. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::Plugin;
    #[cfg(target_arch = "wasm32")]
    use crate::{Decision, Error, Request, Response};

    /// Type-checks the argument of [`export!`](crate::export) on every target.
    pub fn assert_plugin<P: Plugin>() {}

    /// A plugin with its type erased, so the instance can live in one non-generic slot.
    #[cfg(target_arch = "wasm32")]
    pub(crate) trait ErasedPlugin {
        fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error>;
        fn on_response(
            &mut self,
            req: &mut Request<'_>,
            resp: &mut Response<'_>,
        ) -> Result<Decision, Error>;
    }

    #[cfg(target_arch = "wasm32")]
    impl<P: Plugin> ErasedPlugin for P {
        fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
            Plugin::on_request(self, req)
        }

        fn on_response(
            &mut self,
            req: &mut Request<'_>,
            resp: &mut Response<'_>,
        ) -> Result<Decision, Error> {
            Plugin::on_response(self, req, resp)
        }
    }

    /// Raw bindings generated from `wit/plugin.wit`.
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code, missing_docs, clippy::all, unused)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "wasmgate:plugin/plugin",
            pub_export_macro: true,
            default_bindings_module: "wasmgate_sdk::__private::bindings",
            generate_all,
        });
    }

    #[cfg(target_arch = "wasm32")]
    pub use crate::glue::*;
}
