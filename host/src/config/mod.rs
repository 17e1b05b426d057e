//! The gateway's TOML config: its typed shape, loading with located errors, and the checks
//! that run after parsing. Every key is documented in the README's config reference.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub wasm: WasmConfig,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Directory the config was read from; plugin paths are relative to it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the proxy listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long SIGINT/SIGTERM waits for in-flight requests before exiting.
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How long a client may take to send a request's headers.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Worker threads, each with its own listener and upstream pools; one per core when unset.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Largest body buffered for a plugin that reads bodies (a route may override it).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// A streamed upload is cut off after this long without a byte of it; a buffered one (for
    /// a plugin that reads bodies) must arrive whole within it.
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
}

/// Hot reload: how changes to the config file and the files it names are picked up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the config file, the plugin components and `config_files` for changes.
    #[serde(default = "ReloadConfig::default_watch")]
    pub watch: bool,
    /// Quiet time after the last file change before reloading, so a write in several steps
    /// is read once, whole.
    #[serde(default = "ReloadConfig::default_debounce_ms")]
    pub debounce_ms: u64,
}

impl ReloadConfig {
    fn default_watch() -> bool {
        true
    }
    fn default_debounce_ms() -> u64 {
        200
    }
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: Self::default_watch(),
            debounce_ms: Self::default_debounce_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// How plugin instances are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceMode {
    /// Instances are initialised once and reused across requests (one call at a time each).
    Pooled,
    /// Every call gets a new instance: nothing carries over from one request to the next.
    Fresh,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmConfig {
    /// Default instance mode for every pipeline entry.
    #[serde(default = "defaults::instance_mode")]
    pub instances: InstanceMode,
    /// Most plugin instances alive at once, across all routes (sizes the pooling allocator).
    #[serde(default = "defaults::max_instances")]
    pub max_instances: u32,
    /// Default limits for every plugin; `[plugins.NAME]` may override each.
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            instances: defaults::instance_mode(),
            max_instances: defaults::max_instances(),
            limits: Limits::default(),
        }
    }
}

/// A plugin's sandbox limits. Unset keys fall back to `[wasm]`, then to the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory, in MiB (default 16).
    pub memory_limit_mib: Option<u32>,
    /// Longest a single call may run, in ms (default 50).
    pub call_timeout_ms: Option<u64>,
    /// Fuel (roughly, Wasm instructions) a single call may burn; unset means unmetered.
    pub fuel_per_call: Option<u64>,
    /// Pooled instances are replaced after this many calls; unset means never.
    pub max_uses: Option<u64>,
}

impl Limits {
    /// These limits, with unset keys taken from `defaults`.
    pub fn or(&self, defaults: &Limits) -> Limits {
        Limits {
            memory_limit_mib: self.memory_limit_mib.or(defaults.memory_limit_mib),
            call_timeout_ms: self.call_timeout_ms.or(defaults.call_timeout_ms),
            fuel_per_call: self.fuel_per_call.or(defaults.fuel_per_call),
            max_uses: self.max_uses.or(defaults.max_uses),
        }
    }
}

/// The host interfaces a plugin may be granted.
pub const CAPABILITIES: [&str; 4] = ["log", "clock", "rate-limit", "kv"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path of the component, relative to the config file.
    pub path: PathBuf,
    /// Host interfaces the plugin may import (of `log`, `clock`, `rate-limit`, `kv`); a
    /// component importing one it was not granted is refused at load. Unset grants all.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    #[serde(flatten)]
    pub limits: Limits,
}

/// What a plugin failure does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Answer 500; the request never reaches the upstream.
    #[default]
    Deny,
    /// Go on as if the plugin were not in the pipeline.
    Skip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` base URLs, used round robin.
    pub targets: Vec<String>,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed from sending the request to receiving the response headers.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait for the next bytes of a response body once it has started.
    #[serde(default = "defaults::read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// A pooled keep-alive connection idle this long is closed.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// A connection open this long is closed once its current response is done, however busy.
    #[serde(default = "defaults::max_connection_lifetime_ms")]
    pub max_connection_lifetime_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(default)]
    pub host: Option<String>,
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub pipeline: Vec<PipelineEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineEntry {
    pub plugin: String,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Overrides `[wasm] instances` for this entry.
    #[serde(default)]
    pub instances: Option<InstanceMode>,
    /// What a failure of this plugin does to the request.
    #[serde(default)]
    pub on_error: OnError,
    /// Config keys whose value is a file's text (path relative to the config file), read at
    /// load: keys, certificates and JWKS stay out of the config, and plugins need no
    /// filesystem access.
    #[serde(default)]
    pub config_files: BTreeMap<String, PathBuf>,
}

mod defaults {
    use super::InstanceMode;
    pub fn drain_timeout_ms() -> u64 {
        30_000
    }
    pub fn header_read_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_body_bytes() -> usize {
        10 * 1024 * 1024
    }
    pub fn instance_mode() -> InstanceMode {
        InstanceMode::Pooled
    }
    pub fn max_instances() -> u32 {
        1000
    }
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn timeout_ms() -> u64 {
        30_000
    }
    pub fn read_timeout_ms() -> u64 {
        60_000
    }
    pub fn idle_timeout_ms() -> u64 {
        60_000
    }
    pub fn max_connection_lifetime_ms() -> u64 {
        600_000
    }
    pub fn body_read_timeout_ms() -> u64 {
        60_000
    }
}

/// The longest any timeout may be, so none can overflow a deadline.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Why a config was refused. Each message names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {}", .problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `path` is used for messages and relative plugin paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// A pipeline entry's config with its `config_files` read in, as JSON text for `init`.
    pub fn plugin_config_json(&self, entry: &PipelineEntry) -> Result<String, String> {
        let mut table = entry.config.clone();
        for (key, rel) in &entry.config_files {
            let path = self.base_dir.join(rel);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("config_files.{key}: cannot read {}: {e}", path.display()))?;
            table.insert(key.clone(), toml::Value::String(text));
        }
        serde_json::to_string(&table).map_err(|e| format!("config cannot be sent as JSON: {e}"))
    }

    /// Whether any plugin has a fuel limit, which needs an engine that meters fuel.
    pub fn wants_fuel(&self) -> bool {
        self.wasm.limits.fuel_per_call.is_some()
            || self
                .plugins
                .values()
                .any(|p| p.limits.fuel_per_call.is_some())
    }

    /// Where a plugin's component file is.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.base_dir.join(&plugin.path)
    }

    /// Every semantic problem, each naming its key path.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, up) in &self.upstreams {
            if up.targets.is_empty() {
                out.push(format!(
                    "upstreams.{name}.targets: at least one target is required"
                ));
            }
            for (i, t) in up.targets.iter().enumerate() {
                if let Err(e) = crate::proxy::parse_target(t) {
                    out.push(format!("upstreams.{name}.targets[{i}]: {e}"));
                }
            }
            for (key, ms) in [
                ("connect_timeout_ms", up.connect_timeout_ms),
                ("timeout_ms", up.timeout_ms),
                ("read_timeout_ms", up.read_timeout_ms),
                ("idle_timeout_ms", up.idle_timeout_ms),
                ("max_connection_lifetime_ms", up.max_connection_lifetime_ms),
            ] {
                if ms == 0 || ms > MAX_TIMEOUT_MS {
                    out.push(format!(
                        "upstreams.{name}.{key}: must be between 1 and {MAX_TIMEOUT_MS} (a day)"
                    ));
                }
            }
        }
        if self.server.body_read_timeout_ms == 0
            || self.server.body_read_timeout_ms > MAX_TIMEOUT_MS
        {
            out.push(format!(
                "server.body_read_timeout_ms: must be between 1 and {MAX_TIMEOUT_MS} (a day)"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}] (\"{}\")", r.name);
            if r.name.is_empty() {
                out.push(format!("routes[{i}].name: must not be empty"));
            } else if !seen.insert(r.name.as_str()) {
                out.push(format!("{at}.name: duplicate route name"));
            }
            if !r.path_prefix.starts_with('/') {
                out.push(format!("{at}.path_prefix: must start with '/'"));
            }
            if let Some(h) = &r.host
                && (h.is_empty() || h.contains(['/', ' ', ':']))
            {
                out.push(format!(
                    "{at}.host: `{h}` is not a host name (give it without a port)"
                ));
            }
            for m in r.methods.iter().flatten() {
                if http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                    out.push(format!("{at}.methods: `{m}` is not an HTTP method"));
                }
            }
            if !self.upstreams.contains_key(&r.upstream) {
                out.push(format!(
                    "{at}.upstream: unknown upstream `{}` (defined: {})",
                    r.upstream,
                    names(self.upstreams.keys())
                ));
            }
            for (j, p) in r.pipeline.iter().enumerate() {
                for key in p.config_files.keys() {
                    if p.config.contains_key(key) {
                        out.push(format!(
                            "{at}.pipeline[{j}].config_files.{key}: `{key}` is also set in config"
                        ));
                    }
                }
                if !self.plugins.contains_key(&p.plugin) {
                    out.push(format!(
                        "{at}.pipeline[{j}].plugin: unknown plugin `{}` (defined: {})",
                        p.plugin,
                        names(self.plugins.keys())
                    ));
                }
            }
        }
        for (name, p) in &self.plugins {
            for c in p.capabilities.iter().flatten() {
                if !CAPABILITIES.contains(&c.as_str()) {
                    out.push(format!(
                        "plugins.{name}.capabilities: unknown capability `{c}` (known: {})",
                        CAPABILITIES.join(", ")
                    ));
                }
            }
        }
        for (at, l) in std::iter::once(("wasm".to_owned(), &self.wasm.limits)).chain(
            self.plugins
                .iter()
                .map(|(n, p)| (format!("plugins.{n}"), &p.limits)),
        ) {
            if l.memory_limit_mib.is_some_and(|m| m == 0 || m > 1024) {
                out.push(format!("{at}.memory_limit_mib: must be between 1 and 1024"));
            }
            if l.call_timeout_ms.is_some_and(|t| t == 0 || t > 60_000) {
                out.push(format!("{at}.call_timeout_ms: must be between 1 and 60000"));
            }
            if l.fuel_per_call == Some(0) || l.max_uses == Some(0) {
                out.push(format!(
                    "{at}: fuel_per_call and max_uses must be greater than 0"
                ));
            }
        }
        if self.wasm.max_instances == 0 {
            out.push("wasm.max_instances: must be greater than 0".into());
        }
        out
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("gw.toml"))
    }

    #[test]
    fn unknown_key_is_located() {
        let err = parse("[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("gw.toml:3:1: "), "{msg}");
        assert!(msg.contains("lisen"), "{msg}");
    }

    #[test]
    fn unknown_names_are_named() {
        let err = parse(
            r#"
[server]
listen = "127.0.0.1:0"
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "nope"
[[routes.pipeline]]
plugin = "ghost"
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("routes[0] (\"a\").upstream: unknown upstream `nope`"),
            "{err}"
        );
        assert!(
            err.contains("routes[0] (\"a\").pipeline[0].plugin: unknown plugin `ghost`"),
            "{err}"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    fn problems(extra_server: &str, extra_upstream: &str) -> String {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n[upstreams.u]\ntargets = [\"http://127.0.0.1:1\"]\n{extra_upstream}\n"
        );
        match Config::parse(&text, Path::new("gw.toml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn pool_and_body_timeouts_have_defaults_and_bounds() {
        let ok = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\ntargets = [\"http://127.0.0.1:1\"]\n",
            Path::new("gw.toml"),
        )
        .unwrap();
        assert_eq!(ok.server.body_read_timeout_ms, 60_000);
        assert_eq!(ok.upstreams["u"].idle_timeout_ms, 60_000);
        assert_eq!(ok.upstreams["u"].max_connection_lifetime_ms, 600_000);
        assert_eq!(
            problems("body_read_timeout_ms = 86400000", "idle_timeout_ms = 1"),
            ""
        );
        for (server, upstream, key) in [
            (
                "body_read_timeout_ms = 0",
                "",
                "server.body_read_timeout_ms",
            ),
            (
                "body_read_timeout_ms = 86400001",
                "",
                "server.body_read_timeout_ms",
            ),
            ("", "idle_timeout_ms = 0", "upstreams.u.idle_timeout_ms"),
            (
                "",
                "max_connection_lifetime_ms = 99999999999",
                "upstreams.u.max_connection_lifetime_ms",
            ),
            ("", "timeout_ms = 86400001", "upstreams.u.timeout_ms"),
        ] {
            let err = problems(server, upstream);
            assert!(
                err.contains(&format!("{key}: must be between 1 and 86400000")),
                "{err}"
            );
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn limits_parse_and_unknown_keys_are_refused() {
        let ok = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[wasm]\nmemory_limit_mib = 8\ncall_timeout_ms = 20\n[plugins.p]\npath = \"p.wasm\"\nmax_uses = 3\ncapabilities = [\"log\"]\n",
            Path::new("gw.toml"),
        )
        .unwrap();
        assert_eq!(ok.wasm.limits.memory_limit_mib, Some(8));
        assert_eq!(ok.plugins["p"].limits.max_uses, Some(3));
        let err = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[plugins.p]\npath = \"p.wasm\"\nmemory_limit = 8\n",
            Path::new("gw.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("memory_limit"), "{err}");
        let err = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[wasm]\nbogus = 1\n",
            Path::new("gw.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
