//! Config errors, and the one parsing path both the wasm `init` and `testing::init` take.

use std::fmt;

use serde::de::DeserializeOwned;

/// A config the plugin refuses, naming the key at fault. The gateway reports it when it loads
/// the route, and does not load the route.
///
/// ```
/// use wasmgate_sdk::ConfigError;
/// let err = ConfigError::at("limits[0].rate", "must be positive");
/// assert_eq!(err.to_string(), "limits[0].rate: must be positive");
/// assert_eq!(ConfigError::new("no routes").to_string(), "no routes");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the key, when one key is at fault: `limits[0].rate`.
    pub key: Option<String>,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about the config as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            key: None,
            message: message.into(),
        }
    }

    /// An error about one key (a dotted path: `limits[0].rate`).
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses the config text the host sends. Empty text and `null` mean `{}`; `{}` is also
/// accepted by a config type that only takes `null` (`()`, `Option<T>`).
pub(crate) fn parse_config<C: DeserializeOwned>(text: &str) -> Result<C, ConfigError> {
    let text = match text.trim() {
        "" | "null" => "{}",
        text => text,
    };
    match parse_strict(text) {
        Ok(config) => Ok(config),
        Err(err) => {
            // `()` and `Option<T>` want `null` where a missing config is `{}`.
            if is_empty_object(text)
                && let Ok(config) = parse_strict("null")
            {
                return Ok(config);
            }
            Err(err)
        }
    }
}

fn is_empty_object(text: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(map)) if map.is_empty()
    )
}

fn parse_strict<C: DeserializeOwned>(text: &str) -> Result<C, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let config = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        // The path names the key at fault, unknown keys (`deny_unknown_fields`) included; a
        // path of nothing but unknown segments (`?`, for broken JSON) names no key.
        let known = err
            .path()
            .iter()
            .any(|segment| !matches!(segment, serde_path_to_error::Segment::Unknown));
        ConfigError {
            key: known.then(|| err.path().to_string()),
            message: without_position(err.inner()),
        }
    })?;
    de.end()
        .map_err(|err| ConfigError::new(without_position(&err)))?;
    Ok(config)
}

/// serde_json's message without its ` at line L column C` suffix, which points into the JSON
/// the host made, not into the operator's TOML.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    if err.line() == 0 {
        return text;
    }
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        rate: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        name: String,
        #[serde(default)]
        limits: Vec<Limit>,
    }

    #[test]
    fn parses_a_good_config() {
        let config: Config = parse_config(r#"{"name":"a","limits":[{"rate":3}]}"#).unwrap();
        assert_eq!(config.limits, [Limit { rate: 3 }]);
    }

    #[test]
    fn names_the_key_at_fault() {
        let err = parse_config::<Config>(r#"{"limits":[{"rate":1},{"rate":"x"}]}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits[1].rate"));
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert!(!err.message.contains("line"), "{}", err.message);
    }

    #[test]
    fn names_an_unknown_key() {
        let err = parse_config::<Config>(r#"{"nmae":"a"}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("nmae"));
        let err = parse_config::<Config>(r#"{"limits":[{"rate":1,"burst":2}]}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits[0].burst"));
    }

    #[test]
    fn names_a_missing_key() {
        let err = parse_config::<Config>(r#"{"limits":[{}]}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits[0]"));
        assert!(
            err.message.contains("missing field `rate`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn empty_config_is_an_empty_object() {
        for text in ["", "  ", "null", "{}"] {
            let config: Config = parse_config(text).unwrap();
            assert_eq!(config.name, "");
        }
        let _: () = parse_config("{}").unwrap();
        let _: () = parse_config("").unwrap();
        let none: Option<Limit> = parse_config("{}").unwrap();
        assert_eq!(none, None);
        let map: std::collections::BTreeMap<String, u32> = parse_config("").unwrap();
        assert!(map.is_empty());
    }

    #[test]
    fn bad_json_has_no_key() {
        let err = parse_config::<Config>("{").unwrap_err();
        assert_eq!(err.key, None);
        let err = parse_config::<Config>("{} x").unwrap_err();
        assert_eq!(err.key, None);
        let err = parse_config::<Config>(r#""x""#).unwrap_err();
        assert_eq!(err.key, None);
    }
}
