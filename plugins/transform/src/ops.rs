//! Header, query and JSON-body operations: checked and compiled once from the config, then
//! applied per request with no parsing of the config.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::rules::http::{is_header_name, is_header_value, is_host_managed};
use wasmgate_sdk::{ConfigError, HostError, Request, Response};

use crate::json::{Json, Path};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderConfig {
    pub rename: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonConfig {
    pub rename: BTreeMap<String, String>,
    pub add: BTreeMap<String, serde_json::Value>,
    pub remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// The request and the response, as far as header operations go.
pub trait Headers {
    fn values(&self, name: &str) -> Vec<String>;
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove(&mut self, name: &str);
}

impl Headers for Request<'_> {
    fn values(&self, name: &str) -> Vec<String> {
        self.header_values(name)
    }
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.set_header(name, value)
    }
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.append_header(name, value)
    }
    fn remove(&mut self, name: &str) {
        self.remove_header(name)
    }
}

impl Headers for Response<'_> {
    fn values(&self, name: &str) -> Vec<String> {
        self.header_values(name)
    }
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.set_header(name, value)
    }
    fn append(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.append_header(name, value)
    }
    fn remove(&mut self, name: &str) {
        self.remove_header(name)
    }
}

/// Header operations, names lower-case.
#[derive(Debug, Default)]
pub struct HeaderOps {
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    add: Vec<(String, String)>,
}

impl HeaderOps {
    pub fn compile(config: HeaderConfig, at: &str) -> Result<Self, ConfigError> {
        let mut ops = HeaderOps::default();
        let mut sources = Vec::new();
        let mut targets = Vec::new();
        for (from, to) in config.rename {
            let key = format!("{at}.rename.{from}");
            let from = header_name(&from, &key)?;
            let to = header_name(&to, &key)?;
            if from == to {
                return Err(ConfigError::at(key, "renames a header to itself"));
            }
            if sources.contains(&from) {
                return Err(ConfigError::at(key, "the header is renamed twice"));
            }
            if targets.contains(&to) {
                return Err(ConfigError::at(
                    key,
                    format!("`{to}` is the target of two renames"),
                ));
            }
            sources.push(from.clone());
            targets.push(to.clone());
            ops.rename.push((from, to));
        }
        for (i, name) in config.remove.iter().enumerate() {
            ops.remove
                .push(header_name(name, &format!("{at}.remove[{i}]"))?);
        }
        for (name, value) in config.add {
            let key = format!("{at}.add.{name}");
            let name = header_name(&name, &key)?;
            if ops.add.iter().any(|(n, _)| *n == name) {
                return Err(ConfigError::at(key, "the header is added twice"));
            }
            if !is_header_value(&value) {
                return Err(ConfigError::at(key, "the value holds a control character"));
            }
            ops.add.push((name, value));
        }
        Ok(ops)
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.add.is_empty()
    }

    /// Renames (all at once, so two headers can swap), then removes, then adds (replacing any
    /// value the header had).
    pub fn apply(&self, headers: &mut impl Headers) -> Result<(), HostError> {
        let moved: Vec<(&str, Vec<String>)> = self
            .rename
            .iter()
            .map(|(from, to)| (to.as_str(), headers.values(from)))
            .collect();
        for (from, _) in &self.rename {
            headers.remove(from);
        }
        for (to, values) in moved {
            if values.is_empty() {
                continue;
            }
            headers.remove(to);
            for value in values {
                headers.append(to, &value)?;
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.add {
            headers.set(name, value)?;
        }
        Ok(())
    }
}

fn header_name(name: &str, key: &str) -> Result<String, ConfigError> {
    if !is_header_name(name) {
        return Err(ConfigError::at(
            key,
            format!("`{}` is not a valid header name", crate::shorten(name)),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if is_host_managed(&lower) {
        return Err(ConfigError::at(
            key,
            format!("`{lower}` frames the message; only the gateway sets it"),
        ));
    }
    Ok(lower)
}

/// Query operations. Keys are compared after percent-decoding (`+` as a space), as a server
/// would read them; pairs the config does not touch are kept byte for byte.
#[derive(Debug, Default)]
pub struct QueryOps {
    /// Decoded keys to drop: the removed ones and the added ones (which replace).
    drop: Vec<Vec<u8>>,
    /// `key=value`, encoded once.
    add: Vec<String>,
}

impl QueryOps {
    pub fn compile(config: QueryConfig, at: &str) -> Result<Self, ConfigError> {
        let mut ops = QueryOps::default();
        for (i, key) in config.remove.into_iter().enumerate() {
            if key.is_empty() {
                return Err(ConfigError::at(format!("{at}.remove[{i}]"), "empty key"));
            }
            ops.drop.push(key.into_bytes());
        }
        for (key, value) in config.add {
            if key.is_empty() {
                return Err(ConfigError::at(format!("{at}.add"), "empty key"));
            }
            ops.add.push(format!("{}={}", encode(&key), encode(&value)));
            ops.drop.push(key.into_bytes());
        }
        Ok(ops)
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty()
    }

    /// The new query, or `None` when it stays as it is.
    pub fn apply(&self, query: Option<&str>) -> Option<Option<String>> {
        let original = query.unwrap_or_default();
        let pairs: Vec<&str> = original.split('&').filter(|p| !p.is_empty()).collect();
        let kept: Vec<&str> = pairs
            .iter()
            .copied()
            .filter(|pair| {
                let key = pair.split('=').next().unwrap_or_default();
                !self.drop.contains(&decode(key))
            })
            .collect();
        if kept.len() == pairs.len() && self.add.is_empty() {
            return None;
        }
        let all: Vec<&str> = kept
            .into_iter()
            .chain(self.add.iter().map(String::as_str))
            .collect();
        Some((!all.is_empty()).then(|| all.join("&")))
    }
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// JSON body operations on dotted paths.
#[derive(Debug, Default)]
pub struct JsonOps {
    rename: Vec<(Path, Path)>,
    remove: Vec<Path>,
    add: Vec<(Path, Json)>,
}

impl JsonOps {
    pub fn compile(config: JsonConfig, at: &str) -> Result<Self, ConfigError> {
        let mut ops = JsonOps::default();
        for (from, to) in config.rename {
            let key = format!("{at}.rename.{from}");
            let source = Path::parse(&from).map_err(|e| ConfigError::at(&key, e))?;
            let target = Path::parse(&to).map_err(|e| ConfigError::at(&key, e))?;
            if source == target {
                return Err(ConfigError::at(key, "renames a field to itself"));
            }
            // Renames that share no path (nested ones included) give the same result in any
            // order, and the config has no order to follow.
            let overlap = |a: &Path, b: &Path| a.covers(b) || b.covers(a);
            for (s, t) in &ops.rename {
                if [(&source, s), (&source, t), (&target, s), (&target, t)]
                    .iter()
                    .any(|(a, b)| overlap(a, b))
                {
                    return Err(ConfigError::at(
                        key,
                        format!("overlaps the rename of `{s}` to `{t}`"),
                    ));
                }
            }
            ops.rename.push((source, target));
        }
        for (i, path) in config.remove.iter().enumerate() {
            ops.remove.push(
                Path::parse(path).map_err(|e| ConfigError::at(format!("{at}.remove[{i}]"), e))?,
            );
        }
        for (path, value) in config.add {
            let key = format!("{at}.add.{path}");
            let target = Path::parse(&path).map_err(|e| ConfigError::at(&key, e))?;
            if let Some((other, _)) = ops
                .add
                .iter()
                .find(|(p, _)| p.covers(&target) || target.covers(p))
            {
                return Err(ConfigError::at(
                    key,
                    format!("overlaps the addition of `{other}`"),
                ));
            }
            ops.add.push((target, Json::from_value(value)));
        }
        Ok(ops)
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.add.is_empty()
    }

    /// Renames, removes, then adds (replacing a value that is there). Only an object is
    /// changed; returns whether anything was.
    pub fn apply(&self, doc: &mut Json) -> bool {
        if !matches!(doc, Json::Object(_)) {
            return false;
        }
        let mut changed = false;
        for (from, to) in &self.rename {
            if from.same_parent(to) {
                changed |= from.rename_in_place(doc, to);
                continue;
            }
            let Some(value) = from.take(doc) else {
                continue;
            };
            changed = true;
            // Where the target cannot be made (a value on its way is not an object), the
            // field stays where it was rather than being lost. Putting it back cannot fail:
            // its object was just there, and no other rename touches this path.
            if let Err(value) = to.put(doc, value) {
                let _ = from.put(doc, value);
            }
        }
        for path in &self.remove {
            changed |= path.take(doc).is_some();
        }
        for (path, value) in &self.add {
            changed |= path.put(doc, value.clone()).is_ok();
        }
        changed
    }
}
