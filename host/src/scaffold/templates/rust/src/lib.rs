//! `{{name}}`: sets a configured header on every request before it goes upstream, and on every
//! response before it goes back to the client.

use serde::Deserialize;
// The gateway's own rules: what it refuses from a plugin is refused here at load, rather than
// failing every request.
use wasmgate_sdk::rules::http::{is_header_name, is_header_value, is_host_managed};
use wasmgate_sdk::{ConfigError, Decision, Error, Plugin, Request, Response};

/// The route's `config` table, e.g. `{ header = "x-hello", value = "world" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_header")]
    header: String,
    // An `Option`, so a missing value is refused with an error that names the key.
    value: Option<String>,
}

fn default_header() -> String {
    "x-hello".to_string()
}

pub struct SetHeader {
    header: String,
    value: String,
}

impl Plugin for SetHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let header = config.header.to_ascii_lowercase();
        if !is_header_name(&header) {
            return Err(ConfigError::at("header", "must be an HTTP header name"));
        }
        if is_host_managed(&header) {
            return Err(ConfigError::at("header", "is managed by the gateway"));
        }
        let Some(value) = config.value else {
            return Err(ConfigError::at("value", "is required"));
        };
        if !is_header_value(&value) {
            return Err(ConfigError::at("value", "must not hold control characters"));
        }
        Ok(Self { header, value })
    }

    // `registration` keeps its default: both hooks, no bodies.

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        req.set_header(&self.header, &self.value)?;
        Ok(Decision::Continue)
    }

    fn on_response(
        &mut self,
        _req: &mut Request<'_>,
        resp: &mut Response<'_>,
    ) -> Result<Decision, Error> {
        resp.set_header(&self.header, &self.value)?;
        Ok(Decision::Continue)
    }
}

wasmgate_sdk::export!(SetHeader);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmgate_sdk::testing::{self, MockRequest, MockResponse};

    #[test]
    fn sets_the_header_both_ways() {
        let mut plugin =
            testing::init::<SetHeader>(json!({ "header": "X-Hello", "value": "world" })).unwrap();

        let mut req = MockRequest::new("GET", "/").with_header("x-hello", "from the client");
        let decision = testing::on_request(&mut plugin, &mut req).unwrap();
        assert_eq!(decision, Decision::Continue);
        assert_eq!(req.header_values("x-hello"), ["world"]);

        let mut resp = MockResponse::new(200);
        let decision = testing::on_response(&mut plugin, &mut req, &mut resp).unwrap();
        assert_eq!(decision, Decision::Continue);
        assert_eq!(resp.header("x-hello"), Some("world"));
    }

    #[test]
    fn the_header_name_defaults_to_x_hello() {
        let mut plugin = testing::init::<SetHeader>(json!({ "value": "v" })).unwrap();
        let mut req = MockRequest::new("GET", "/");
        testing::on_request(&mut plugin, &mut req).unwrap();
        assert_eq!(req.header("x-hello"), Some("v"));
    }

    #[test]
    fn refuses_bad_configs_naming_the_key() {
        let key = |config| testing::init::<SetHeader>(config).err().unwrap().key;
        assert_eq!(key(json!({})).as_deref(), Some("value"));
        assert_eq!(key(json!({ "value": 7 })).as_deref(), Some("value"));
        assert_eq!(key(json!({ "value": "a\r\nb" })).as_deref(), Some("value"));
        assert_eq!(
            key(json!({ "header": "", "value": "v" })).as_deref(),
            Some("header")
        );
        assert_eq!(
            key(json!({ "header": "a b", "value": "v" })).as_deref(),
            Some("header")
        );
        for managed in ["Content-Length", "Proxy-Authorization"] {
            let config = json!({ "header": managed, "value": "1" });
            assert_eq!(key(config).as_deref(), Some("header"), "{managed}");
        }
        assert_eq!(
            key(json!({ "value": "v", "extra": 1 })).as_deref(),
            Some("extra")
        );
    }
}
