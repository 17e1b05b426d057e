//! wasmgate: an API gateway whose request handling is extended by sandboxed WebAssembly
//! components.
//!
//! The modules follow a request's journey: [`config`] is read into a [`gateway::Table`];
//! [`server`] accepts connections; [`router`] picks a route; [`pipeline`] runs the route's
//! plugins (instances from [`plugins`], host functions from [`capabilities`]); [`upstream`]
//! forwards to the upstream; [`state`] holds what the capabilities share through Redis; [`error`] turns every failure into a JSON answer; [`admin`]
//! serves health, metrics and the route table.

pub mod admin;
pub mod body;
pub mod capabilities;
pub mod client_body;
pub mod compress;
pub mod destination;
pub use wasmgate_config as config;
pub mod error;
pub mod fault;
pub mod gateway;
pub mod metrics;
pub mod outbound;
pub mod pem;
pub mod pipeline;
pub mod plugins;
pub mod reload;
pub mod router;
pub mod run;
pub mod scaffold;
pub mod server;
pub mod silence;
pub mod state;
pub mod upstream;
pub mod wire;
