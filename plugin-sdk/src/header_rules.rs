//! Header changes handed to the gateway once, from [`Plugin::new`](crate::Plugin::new), which
//! it then makes itself on every request of the route: no call into the plugin, no strings
//! copied across. A plugin whose whole work is such changes registers neither hook and costs a
//! request almost nothing.
//!
//! Request rules run where the plugin's `on_request` would, before it; response rules where
//! its response phase would (on the upstream's response, a gateway error or a later plugin's
//! reply); each phase's rules in the order they were declared. A value is a
//! [`Template`]: text with `${client_ip}`, `${request_id}`, `${route}`, `${method}`,
//! `${path}`, `${header.NAME}` and `${var.NAME}` in it, read when the rule runs.
//!
//! Each call fails as [`Request::set_header`](crate::Request::set_header) would for a bad or
//! host-managed name, with [`HostError::InvalidValue`] for a template that does not parse
//! (parse it yourself with [`Template::parse`] for a message), and with
//! [`HostError::NotAllowed`] outside `new` or past
//! [`MAX_RULES`](crate::rules::header_rules::MAX_RULES).
//!
//! ```
//! use wasmgate_sdk::header_rules::{self, Phase};
//! use wasmgate_sdk::{ConfigError, Plugin, Registration};
//!
//! struct Stamp;
//!
//! impl Plugin for Stamp {
//!     type Config = ();
//!     fn new(_: ()) -> Result<Self, ConfigError> {
//!         header_rules::set_header(Phase::Request, "x-route", "${route}")
//!             .map_err(|e| ConfigError::new(e.to_string()))?;
//!         Ok(Stamp)
//!     }
//!     fn registration(&self) -> Registration {
//!         Registration { on_request: false, on_response: false, ..Registration::default() }
//!     }
//! }
//! # let plugin = wasmgate_sdk::testing::init::<Stamp>(serde_json::json!({})).unwrap();
//! ```
//!
//! Natively, the mock host in [`testing`](crate::testing) keeps the rules and applies them in
//! [`testing::on_request`](crate::testing::on_request) and
//! [`testing::on_response`](crate::testing::on_response), as the gateway does.

use crate::HostError;
pub use wasmgate_rules::header_rules::{Template, TemplateError};

/// The phase a rule runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// On the request, on its way upstream.
    Request,
    /// On the response, on its way back to the client.
    Response,
}

/// Replaces every value of a header with the template's value.
pub fn set_header(phase: Phase, name: &str, template: &str) -> Result<(), HostError> {
    imp::set_header(phase, name, template)
}

/// Adds the template's value to a header, keeping the values already there.
pub fn append_header(phase: Phase, name: &str, template: &str) -> Result<(), HostError> {
    imp::append_header(phase, name, template)
}

/// Removes a header.
pub fn remove_header(phase: Phase, name: &str) -> Result<(), HostError> {
    imp::remove_header(phase, name)
}

/// A request rule: the request keeps the id its client sent in header `name` when it is
/// plain ([`is_request_id`](crate::rules::header_rules::is_request_id)), and otherwise gets a
/// new UUID v4 there; `${request_id}` renders it from then on. Echo it to the client with
/// `set_header(Phase::Response, name, "${request_id}")`.
pub fn request_id(name: &str) -> Result<(), HostError> {
    imp::request_id(name)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Phase;
    use crate::__private::bindings::wasmgate::plugin::header_rules as wit;
    use crate::HostError;
    use crate::glue::host_error;

    fn phase(p: Phase) -> wit::Phase {
        match p {
            Phase::Request => wit::Phase::Request,
            Phase::Response => wit::Phase::Response,
        }
    }

    pub(super) fn set_header(p: Phase, name: &str, template: &str) -> Result<(), HostError> {
        wit::set_header(phase(p), name, template).map_err(host_error)
    }

    pub(super) fn append_header(p: Phase, name: &str, template: &str) -> Result<(), HostError> {
        wit::append_header(phase(p), name, template).map_err(host_error)
    }

    pub(super) fn remove_header(p: Phase, name: &str) -> Result<(), HostError> {
        wit::remove_header(phase(p), name).map_err(host_error)
    }

    pub(super) fn request_id(name: &str) -> Result<(), HostError> {
        wit::request_id(name).map_err(host_error)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Phase;
    use wasmgate_rules::http::is_host_header;

    use crate::HostError;
    use crate::testing::host::{self, DeclaredRule};

    pub(super) fn set_header(p: Phase, name: &str, template: &str) -> Result<(), HostError> {
        host::declare(p, name, |name| {
            let template = super::parse(template)?;
            // A fixed `Host` must be a host, as on the host.
            if p == Phase::Request
                && is_host_header(&name)
                && template
                    .as_text()
                    .is_some_and(|t| !matches!(wasmgate_uri::parse_host(t.as_bytes()), Ok(Some(_))))
            {
                return Err(HostError::InvalidValue);
            }
            Ok(DeclaredRule::Set(name, template))
        })
    }

    pub(super) fn append_header(p: Phase, name: &str, template: &str) -> Result<(), HostError> {
        host::declare(p, name, |name| {
            // `host` takes one value.
            if p == Phase::Request && is_host_header(&name) {
                return Err(HostError::NotAllowed);
            }
            Ok(DeclaredRule::Append(name, super::parse(template)?))
        })
    }

    pub(super) fn remove_header(p: Phase, name: &str) -> Result<(), HostError> {
        host::declare(p, name, |name| Ok(DeclaredRule::Remove(name)))
    }

    pub(super) fn request_id(name: &str) -> Result<(), HostError> {
        host::declare(Phase::Request, name, |name| {
            // An id is no `Host`.
            if is_host_header(&name) {
                return Err(HostError::NotAllowed);
            }
            Ok(DeclaredRule::RequestId(name))
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn parse(template: &str) -> Result<Template, HostError> {
    Template::parse(template).map_err(|_| HostError::InvalidValue)
}
