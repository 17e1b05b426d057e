//! Where a request is sent: an upstream, with what its config decides about the requests it is
//! sent (the `Host` they carry), resolved once at load. A route has one; a plugin's
//! `set-upstream` picks another by name from the table's [`Destinations`].

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::HostHeader;
use crate::upstream::Upstream;

/// An upstream and the `Host` policy its requests get.
pub struct Destination {
    pub upstream: Arc<Upstream>,
    /// `host_header`: the route's when it has one, else the upstream's.
    pub host_header: HostHeader,
    /// Spoken to over HTTP/2, which sends the target as `:authority` and no `Host`, so a
    /// `Host` written for it would never arrive.
    pub h2: bool,
}

static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Every upstream of a config, by name, with its own `host_header`.
pub type Destinations = HashMap<Arc<str>, Arc<Destination>>;

/// What decides the `Host` of one request, once the request phase is over.
pub enum HostSource<'a> {
    /// A policy (`host_header`).
    Policy(&'a HostHeader),
    /// A plugin or a header rule wrote `host` (to this value, or removed it): that wins.
    Written(Option<HeaderValue>),
}

/// Puts the upstream's `Host` in `headers`, which `upstream::forwarded_headers` has already
/// left without one (the client's moved to `X-Forwarded-Host`). When none is put there, the
/// upstream sends the target's own host and port.
pub fn set_host(headers: &mut HeaderMap, source: HostSource<'_>) {
    let host = match source {
        HostSource::Policy(HostHeader::Target) | HostSource::Written(None) => return,
        HostSource::Policy(HostHeader::Preserve) => {
            // The client's `Host`, which `forwarded_headers` moved there.
            match headers.get(&X_FORWARDED_HOST) {
                Some(client) => client.clone(),
                None => return,
            }
        }
        HostSource::Policy(HostHeader::Value(v)) => v.clone(),
        HostSource::Written(Some(v)) => v,
    };
    headers.insert(header::HOST, host);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xfh: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = xfh {
            h.insert(&X_FORWARDED_HOST, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_host_follows_the_policy_unless_a_plugin_wrote_one() {
        let fixed = HostHeader::Value(HeaderValue::from_static("users.internal"));
        let plugin = HeaderValue::from_static("plugin.example");
        let cases = [
            (HostSource::Policy(&HostHeader::Target), None),
            (
                HostSource::Policy(&HostHeader::Preserve),
                Some("client.example"),
            ),
            (HostSource::Policy(&fixed), Some("users.internal")),
            (HostSource::Written(Some(plugin)), Some("plugin.example")),
            (HostSource::Written(None), None),
        ];
        for (source, expected) in cases {
            let mut h = headers(Some("client.example"));
            set_host(&mut h, source);
            assert_eq!(h.get(header::HOST).map(|v| v.to_str().unwrap()), expected);
        }
        // A client without a Host (HTTP/1.0): the target's.
        let mut h = headers(None);
        set_host(&mut h, HostSource::Policy(&HostHeader::Preserve));
        assert!(h.get(header::HOST).is_none());
    }
}
