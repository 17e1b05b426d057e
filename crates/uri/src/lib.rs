//! The gateway's reading of a request target, in one place: the path every route, plugin and
//! upstream sees ([`normalise_path`]) and the host a request is routed by ([`parse_host`]).
//!
//! Routing on one string while an upstream decodes another is how gateways get walked
//! around (`/api/%61dmin`, `/api//admin`, `/api/x/..%2fadmin`), so the path is normalised
//! once, before routing, and that result is what the router matches, what plugins read and
//! what goes upstream. This crate depends on nothing of the gateway's, so its fuzz targets
//! build in seconds.

#![forbid(unsafe_code)]

mod host;
mod path;

pub use host::{Host, HostError, parse_host};
pub use path::{EscapedSlashes, PathError, is_normal_path, normalise_path};
