//! Chooses the upstream a request goes to (`request.set-upstream`, contract 0.1.5): by the
//! value of a request header (tenants, API versions, an explicit `x-canary: 1`), or, for a
//! request no header rule matched, by sending a fixed share of clients to a canary. A client
//! stays on one side of the split: the share is taken by a hash of its address, not at random.
//! A request that matches neither goes to the route's own upstream.
//!
//! ```toml
//! [[routes.pipeline]]
//! plugin = "router"
//! config = { header = "x-version", upstreams = { v2 = "users-v2" }, canary = { upstream = "users-canary", percent = 5 } }
//! ```
//!
//! An upstream the gateway's config does not have fails the request (500, logged with the
//! name), rather than sending it to one it was not meant for.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::{ConfigError, Decision, Error, HostError, Plugin, Registration, Request};

/// The plugin's config; see the README.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The request header whose value picks the upstream.
    #[serde(default)]
    pub header: Option<String>,
    /// Header value → upstream name. Values are compared exactly.
    #[serde(default)]
    pub upstreams: BTreeMap<String, String>,
    /// A share of the requests no header rule matched, by client.
    #[serde(default)]
    pub canary: Option<Canary>,
}

/// `canary`: `percent` of the clients go to `upstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub upstream: String,
    /// 0 to 100.
    pub percent: u8,
}

/// The router, configured for one route.
#[derive(Debug)]
pub struct Router {
    header: Option<String>,
    upstreams: BTreeMap<String, String>,
    canary: Option<Canary>,
}

impl Plugin for Router {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let header = match config.header {
            Some(h) if !wasmgate_sdk::rules::http::is_header_name(&h) => {
                return Err(ConfigError::at("header", "not a valid header name"));
            }
            h => h.map(|h| h.to_ascii_lowercase()),
        };
        if header.is_none() && !config.upstreams.is_empty() {
            return Err(ConfigError::at(
                "header",
                "`upstreams` maps values of a header: name it",
            ));
        }
        if let Some(c) = &config.canary
            && c.percent > 100
        {
            return Err(ConfigError::at("canary.percent", "at most 100"));
        }
        if header.is_none() && config.canary.is_none() {
            return Err(ConfigError::new(
                "nothing to route by: give `header` and `upstreams`, or `canary`",
            ));
        }
        Ok(Self {
            header,
            upstreams: config.upstreams,
            canary: config.canary,
        })
    }

    fn registration(&self) -> Registration {
        Registration::request_only()
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        let by_header = self
            .header
            .as_deref()
            .and_then(|h| req.header(h))
            .and_then(|v| self.upstreams.get(&v));
        let chosen = match (by_header, &self.canary) {
            (Some(upstream), _) => Some(upstream.as_str()),
            (None, Some(c)) if bucket(&req.client_addr()) < u32::from(c.percent) => {
                Some(c.upstream.as_str())
            }
            (None, _) => None,
        };
        if let Some(name) = chosen {
            req.set_upstream(name).map_err(|e| match e {
                HostError::UnknownUpstream => {
                    Error::new(format!("router: the gateway has no upstream `{name}`"))
                }
                e => e.into(),
            })?;
        }
        Ok(Decision::Continue)
    }
}

/// A client's place in 0..100: FNV-1a of its address, so every worker and gateway process
/// puts a client on the same side of the split.
fn bucket(client: &str) -> u32 {
    let hash = client.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % 100) as u32
}

wasmgate_sdk::export!(Router);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmgate_sdk::testing::{self, MockRequest};

    use super::*;

    fn router(config: serde_json::Value) -> Router {
        testing::init::<Router>(config).expect("config accepted")
    }

    fn routed(plugin: &mut Router, req: MockRequest) -> Option<String> {
        let mut req = req.with_upstreams(&["v1", "v2", "canary"]);
        let decision = testing::on_request(plugin, &mut req).expect("no failure");
        assert_eq!(decision, Decision::Continue);
        req.upstream().map(str::to_owned)
    }

    #[test]
    fn a_header_value_picks_the_upstream_and_others_stay_on_the_route() {
        let mut plugin =
            router(json!({ "header": "X-Version", "upstreams": { "2": "v2", "1": "v1" } }));
        let get = |v: &str| MockRequest::new("GET", "/").with_header("x-version", v);
        assert_eq!(routed(&mut plugin, get("2")).as_deref(), Some("v2"));
        assert_eq!(routed(&mut plugin, get("1")).as_deref(), Some("v1"));
        assert_eq!(routed(&mut plugin, get("3")), None);
        assert_eq!(routed(&mut plugin, MockRequest::new("GET", "/")), None);
    }

    #[test]
    fn the_canary_takes_its_share_of_clients_and_keeps_each_one() {
        let mut plugin = router(json!({ "canary": { "upstream": "canary", "percent": 10 } }));
        let from = |ip: String| MockRequest::new("GET", "/").with_client_addr(&ip);
        let clients: Vec<String> = (0..2000)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let to_canary = clients
            .iter()
            .filter(|ip| routed(&mut plugin, from(ip.to_string())).is_some())
            .count();
        assert!((140..=260).contains(&to_canary), "{to_canary} of 2000");
        for ip in clients.iter().take(50) {
            let first = routed(&mut plugin, from(ip.clone()));
            assert_eq!(routed(&mut plugin, from(ip.clone())), first, "{ip}");
        }
        let mut none = router(json!({ "canary": { "upstream": "canary", "percent": 0 } }));
        let mut all = router(json!({ "canary": { "upstream": "canary", "percent": 100 } }));
        for ip in clients.iter().take(200) {
            assert_eq!(routed(&mut none, from(ip.clone())), None);
            assert_eq!(
                routed(&mut all, from(ip.clone())).as_deref(),
                Some("canary")
            );
        }
    }

    #[test]
    fn a_header_match_wins_over_the_canary() {
        let mut plugin = router(json!({
            "header": "x-version", "upstreams": { "1": "v1" },
            "canary": { "upstream": "canary", "percent": 100 },
        }));
        let req = MockRequest::new("GET", "/").with_header("x-version", "1");
        assert_eq!(routed(&mut plugin, req).as_deref(), Some("v1"));
    }

    #[test]
    fn an_upstream_the_gateway_lacks_fails_the_request() {
        let mut plugin = router(json!({ "header": "x-version", "upstreams": { "3": "v3" } }));
        let mut req = MockRequest::new("GET", "/")
            .with_header("x-version", "3")
            .with_upstreams(&["v1"]);
        let err = testing::on_request(&mut plugin, &mut req).unwrap_err();
        assert!(err.message().contains("no upstream `v3`"), "{err}");
        assert_eq!(req.upstream(), None);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let key = |c| testing::init::<Router>(c).err().map(|e| e.key);
        assert_eq!(
            key(json!({ "header": "a b", "upstreams": {} })),
            Some(Some("header".into()))
        );
        assert_eq!(
            key(json!({ "upstreams": { "1": "v1" } })),
            Some(Some("header".into()))
        );
        assert_eq!(
            key(json!({ "canary": { "upstream": "c", "percent": 101 } })),
            Some(Some("canary.percent".into()))
        );
        assert_eq!(key(json!({})), Some(None));
        assert_eq!(key(json!({ "typo": 1 })), Some(Some("typo".into())));
    }
}
