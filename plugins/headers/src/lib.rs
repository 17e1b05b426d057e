//! `headers`: sets, adds and removes request and response headers, with values templated from
//! the request, and optionally gives every request an `X-Request-ID`.
//!
//! The whole config becomes [header rules](wasmgate_sdk::header_rules), handed to the gateway
//! at init: the gateway parses each template once and makes the changes itself, so the plugin
//! is never called per request. See README.md for the config reference.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::header_rules::{self, Phase, Template};
use wasmgate_sdk::{ConfigError, HostError, Plugin, Registration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    /// Replace a header with one value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Add a value, keeping those already there.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove headers by name.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub request: Ops,
    #[serde(default)]
    pub response: Ops,
    /// Give each request an id: keep a valid one from the client, or generate a UUID.
    #[serde(default)]
    pub request_id: bool,
    /// The header that carries the id.
    #[serde(default = "default_id_header")]
    pub request_id_header: String,
}

fn default_id_header() -> String {
    "x-request-id".into()
}

/// A refused rule as a config error at `key`: a template's own message when it does not
/// parse, else the host's reason.
fn refused(key: String, template: Option<&str>, e: HostError) -> ConfigError {
    let message = match (e, template.map(Template::parse)) {
        (HostError::InvalidValue, Some(Err(why))) => why.to_string(),
        (HostError::InvalidName, _) => "not a valid header name".into(),
        (HostError::NotAllowed, _) => {
            "a header the gateway manages itself, or more rules than it takes".into()
        }
        (e, _) => e.to_string(),
    };
    ConfigError::at(key, message)
}

/// Declares one phase's rules, in the order they are made: removals, then set, then add.
fn declare(ops: &Ops, phase: Phase, at: &str) -> Result<(), ConfigError> {
    for (i, name) in ops.remove.iter().enumerate() {
        header_rules::remove_header(phase, name)
            .map_err(|e| refused(format!("{at}.remove[{i}]"), None, e))?;
    }
    for (kind, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, template) in map {
            let declared = if kind == "set" {
                header_rules::set_header(phase, name, template)
            } else {
                header_rules::append_header(phase, name, template)
            };
            declared.map_err(|e| refused(format!("{at}.{kind}.{name}"), Some(template), e))?;
        }
    }
    Ok(())
}

pub struct Headers;

impl Plugin for Headers {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let id_header = config
            .request_id
            .then_some(config.request_id_header.as_str());
        if let Some(header) = id_header {
            header_rules::request_id(header)
                .map_err(|e| refused("request_id_header".into(), None, e))?;
        }
        declare(&config.request, Phase::Request, "request")?;
        if let Some(header) = id_header {
            header_rules::set_header(Phase::Response, header, "${request_id}")
                .map_err(|e| refused("request_id_header".into(), None, e))?;
        }
        declare(&config.response, Phase::Response, "response")?;
        Ok(Self)
    }

    /// Every change is the gateway's to make: the plugin is never called per request.
    fn registration(&self) -> Registration {
        Registration {
            on_request: false,
            on_response: false,
            request_body: false,
            response_body: false,
        }
    }
}

wasmgate_sdk::export!(Headers);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmgate_sdk::Decision;
    use wasmgate_sdk::testing::{self, MockRequest, MockResponse};

    fn plugin(config: serde_json::Value) -> Headers {
        testing::init::<Headers>(config).expect("valid config")
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = testing::init::<Headers>(json!({"request": {"set": {"x-a": "${bogus}"}}}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("request.set.x-a"));
        assert!(err.message.contains("${bogus}"), "{err:?}");
        let err = testing::init::<Headers>(json!({"response": {"add": {"x-a": "${method"}}}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("response.add.x-a"));
        assert!(err.message.contains("unclosed"), "{err:?}");
        let err = testing::init::<Headers>(json!({"response": {"set": {"bad name": "v"}}}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("response.set.bad name"));
        let err = testing::init::<Headers>(json!({"request": {"remove": ["ok", "Connection"]}}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("request.remove[1]"));
        let err = testing::init::<Headers>(json!({"request_id": true, "request_id_header": "a b"}))
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("request_id_header"));
        let err = testing::init::<Headers>(json!({"request": {"sett": {}}}))
            .err()
            .unwrap();
        assert!(err.message.contains("sett"), "{err:?}");
    }

    #[test]
    fn set_add_remove_with_templates() {
        let mut p = plugin(json!({
            "request": {
                "set": {"x-route": "${route}:${method}:${path}", "x-from": "${client_ip}"},
                "add": {"x-multi": "two"},
                "remove": ["X-Secret"]
            },
            "response": {"set": {"x-user-agent": "${header.user-agent}", "x-who": "${var.consumer}"}}
        }));
        let mut req = MockRequest::new("GET", "/a/b")
            .with_route("r1")
            .with_client_addr("10.1.2.3")
            .with_header("x-multi", "one")
            .with_header("x-secret", "s")
            .with_header("user-agent", "curl/8")
            .with_var("consumer", "alice");
        assert!(matches!(
            testing::on_request(&mut p, &mut req).unwrap(),
            Decision::Continue
        ));
        assert_eq!(req.header("x-route"), Some("r1:GET:/a/b"));
        assert_eq!(req.header("x-from"), Some("10.1.2.3"));
        assert_eq!(req.header_values("x-multi"), vec!["one", "two"]);
        assert_eq!(req.header("x-secret"), None);
        let mut resp = MockResponse::new(200);
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-user-agent"), Some("curl/8"));
        assert_eq!(resp.header("x-who"), Some("alice"));
    }

    #[test]
    fn header_injection_through_templates_is_refused_per_request() {
        let mut p = plugin(json!({"request": {"set": {"x-echo": "v=${var.evil}"}}}));
        let mut req = MockRequest::new("GET", "/").with_var("evil", "a\r\nx-injected: 1");
        assert!(matches!(
            testing::on_request(&mut p, &mut req).unwrap(),
            Decision::Continue
        ));
        assert_eq!(req.header("x-echo"), None);
        assert_eq!(req.header("x-injected"), None);
    }

    #[test]
    fn request_ids_are_generated_kept_and_echoed() {
        let mut p = plugin(json!({"request_id": true}));
        let mut req = MockRequest::new("GET", "/");
        testing::on_request(&mut p, &mut req).unwrap();
        let id = req.header("x-request-id").expect("generated").to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        let mut resp = MockResponse::new(200);
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-request-id"), Some(id.as_str()));

        let mut req = MockRequest::new("GET", "/").with_header("x-request-id", "client-id-1");
        testing::on_request(&mut p, &mut req).unwrap();
        assert_eq!(req.header("x-request-id"), Some("client-id-1"));

        let mut req =
            MockRequest::new("GET", "/").with_header("x-request-id", "bad id with spaces");
        testing::on_request(&mut p, &mut req).unwrap();
        assert_ne!(req.header("x-request-id"), Some("bad id with spaces"));

        let mut p = plugin(json!({"request_id": true, "request_id_header": "X-Trace"}));
        let mut req = MockRequest::new("GET", "/");
        testing::on_request(&mut p, &mut req).unwrap();
        assert!(req.header("x-trace").is_some());
    }

    #[test]
    fn the_plugin_is_never_called_per_request() {
        for config in [
            json!({}),
            json!({"request": {"set": {"a": "b"}}}),
            json!({"request_id": true, "response": {"add": {"x-s": "${header.x}"}}}),
        ] {
            let r = plugin(config).registration();
            assert!(!r.on_request && !r.on_response && !r.request_body && !r.response_body);
        }
    }

    #[test]
    fn response_templates_read_the_request_as_it_is_then() {
        let mut p = plugin(json!({"response": {"set": {"x-m": "${method} ${var.v}"}}}));
        let mut req = MockRequest::new("GET", "/");
        testing::on_request(&mut p, &mut req).unwrap();
        let mut req = req.with_var("v", "later");
        let mut resp = MockResponse::new(200);
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-m"), Some("GET later"));
    }

    #[test]
    fn response_changes_keep_their_order() {
        let mut p = plugin(json!({
            "request_id": true,
            "response": {"set": {"x-served-by": "gw (${route}, ${client_ip})"}, "add": {"x-multi": "2"}, "remove": ["server"]}
        }));
        let mut req = MockRequest::new("GET", "/")
            .with_route("r1")
            .with_client_addr("10.0.0.9")
            .with_header("x-request-id", "abc-1");
        testing::on_request(&mut p, &mut req).unwrap();
        let mut resp = MockResponse::new(200)
            .with_header("server", "origin")
            .with_header("x-multi", "1")
            .with_header("x-served-by", "origin");
        testing::on_response(&mut p, &mut req, &mut resp).unwrap();
        assert_eq!(resp.header("x-request-id"), Some("abc-1"));
        assert_eq!(resp.header_values("x-served-by"), vec!["gw (r1, 10.0.0.9)"]);
        assert_eq!(resp.header_values("x-multi"), vec!["1", "2"]);
        assert_eq!(resp.header("server"), None);
    }
}
