//! The gateway's TOML config: its typed shape, loading with located errors, and the checks
//! that run after parsing. Every key is documented in the README's config reference.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use wasmgate_uri::EscapedSlashes;

mod failure;
pub mod net;
mod outbound;
mod routes;
mod state;
mod targets;

pub use failure::{
    CheckKind, CircuitBreakerConfig, Fallback, HealthCheckConfig, RetryConfig, RetryOn,
    StatusRanges,
};
pub use outbound::{
    OUTBOUND_BODY_BYTES, OUTBOUND_IN_FLIGHT, OUTBOUND_PER_REQUEST, OUTBOUND_TIMEOUT_MS, Origin,
    OutboundGrant,
};
pub use routes::{
    HostMatch, MAX_RESPOND_BODY_BYTES, PathMatch, Precedence, Respond, RouteConfig, ValueMatch,
    trim_prefix,
};
pub use state::{
    MAX_REDIS_POOL, MAX_REDIS_TIMEOUT_MS, OnUnavailable, RedisConfig, StateBackend, StateConfig,
    redact_redis_url,
};
pub use targets::{
    Balance, DiscoveryConfig, DnsConfig, HashOn, HostHeader, MAX_WEIGHT, PassiveConfig,
    TargetConfig,
};

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
    /// The resolver for `[upstreams.NAME.discovery]`.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Where rate limits and kv entries are kept.
    #[serde(default)]
    pub state: StateConfig,
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
    /// What an encoded `/` or `\` (or a raw `\`) in a request path does: `reject` (400),
    /// `keep` (stays encoded, part of a segment) or `unescape` (becomes `/`).
    #[serde(default, deserialize_with = "escaped_slashes")]
    pub escaped_slashes: EscapedSlashes,
    /// Client connections open at once, across all workers; past it, new ones are closed.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// How long a keep-alive connection may sit idle between requests.
    #[serde(default = "defaults::keepalive_timeout_ms")]
    pub keepalive_timeout_ms: u64,
    /// Requests served on one connection before it is closed (after that response).
    #[serde(default = "defaults::max_requests_per_connection")]
    pub max_requests_per_connection: u64,
    /// Largest request head (request line and headers), in bytes; past it, 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most header fields in a request; past it, 431.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// How long a response write may wait for a client that does not read.
    #[serde(default = "defaults::send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// Networks (`10.0.0.0/8`) or addresses of the proxies and load balancers in front of the
    /// gateway: only from these peers are `X-Forwarded-For`, `X-Real-IP` and PROXY headers
    /// believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Every connection opens with a PROXY protocol (v1 or v2) header naming the client.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// A streamed upload is cut off after this long without a byte of it; a buffered one (for
    /// a plugin that reads bodies) must arrive whole within it.
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// HTTPS on `listen`: certificates, TLS versions, client certificates.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// A second, plain listener that answers every request with a redirect to HTTPS.
    #[serde(default)]
    pub redirect: Option<RedirectConfig>,
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain `listen`, beside HTTP/1.1.
    #[serde(default)]
    pub h2c: bool,
    /// Bounds on HTTP/2 connections (over TLS by ALPN, or h2c).
    #[serde(default)]
    pub http2: Http2Config,
}

/// `[server.tls]`: the listener speaks TLS (rustls), offering HTTP/2 and HTTP/1.1 by ALPN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificates, each chosen by SNI for the names in its SANs; the first is also the
    /// default, for clients that send no SNI or a name no certificate has.
    pub certs: Vec<CertConfig>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// PEM file of the CAs that issue client certificates: turns on mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client must present a certificate (`required`, the default)
    /// or may (`optional`).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Resume sessions by tickets (stateless) as well as by session id.
    #[serde(default = "defaults::yes")]
    pub session_tickets: bool,
}

/// A certificate chain and its private key, PEM files relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// The leaf certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// The oldest TLS version accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a certificate from `client_ca` fails the handshake.
    Required,
    /// A client may present one; plugins see whether it did.
    Optional,
}

/// `[server.redirect]`: a plain listener whose every answer is a redirect to the same host and
/// target on HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    pub listen: SocketAddr,
    /// 301 (the default) or 308, which keeps the method and body.
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
}

/// `[server.http2]`: what one HTTP/2 connection may ask of the gateway. The header list
/// is bounded by `server.max_header_bytes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Config {
    /// Streams (requests) open at once on one connection.
    #[serde(default = "defaults::h2_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Streams the client may reset before the gateway has taken them up; past it the
    /// connection is closed with `ENHANCE_YOUR_CALM` (the rapid-reset attack, CVE-2023-44487).
    #[serde(default = "defaults::h2_max_pending_resets")]
    pub max_pending_resets: usize,
    /// Streams the gateway may reset for a client's protocol errors before it closes the
    /// connection (the same attack, provoked through errors).
    #[serde(default = "defaults::h2_max_error_resets")]
    pub max_error_resets: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: defaults::h2_max_concurrent_streams(),
            max_pending_resets: defaults::h2_max_pending_resets(),
            max_error_resets: defaults::h2_max_error_resets(),
        }
    }
}

impl ServerConfig {
    /// The settings a running gateway cannot take up (its sockets and connection handling are
    /// set up at start), as `(key, value)` for the reload check.
    pub fn fixed_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("server.listen", self.listen.to_string()),
            (
                "server.workers",
                self.workers.map_or("unset".into(), |w| w.to_string()),
            ),
            (
                "server.header_read_timeout_ms",
                self.header_read_timeout_ms.to_string(),
            ),
            ("server.drain_timeout_ms", self.drain_timeout_ms.to_string()),
            ("server.max_connections", self.max_connections.to_string()),
            (
                "server.keepalive_timeout_ms",
                self.keepalive_timeout_ms.to_string(),
            ),
            (
                "server.max_requests_per_connection",
                self.max_requests_per_connection.to_string(),
            ),
            ("server.max_header_bytes", self.max_header_bytes.to_string()),
            ("server.max_headers", self.max_headers.to_string()),
            ("server.send_timeout_ms", self.send_timeout_ms.to_string()),
            ("server.trusted_proxies", self.trusted_proxies.join(", ")),
            ("server.proxy_protocol", self.proxy_protocol.to_string()),
            // The certificates and TLS settings reload; whether the listener speaks TLS does not.
            ("server.tls", self.tls.is_some().to_string()),
            (
                "server.redirect",
                self.redirect
                    .as_ref()
                    .map_or("unset".into(), |r| format!("{} {}", r.listen, r.status)),
            ),
            ("server.h2c", self.h2c.to_string()),
            (
                "server.http2",
                format!(
                    "{} {} {}",
                    self.http2.max_concurrent_streams,
                    self.http2.max_pending_resets,
                    self.http2.max_error_resets
                ),
            ),
        ]
    }
}

fn escaped_slashes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EscapedSlashes, D::Error> {
    match String::deserialize(d)?.as_str() {
        "reject" => Ok(EscapedSlashes::Reject),
        "keep" => Ok(EscapedSlashes::Keep),
        "unescape" => Ok(EscapedSlashes::Unescape),
        other => Err(serde::de::Error::custom(format!(
            "unknown value `{other}`, expected one of `reject`, `keep`, `unescape`"
        ))),
    }
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
    /// Loopback unless told otherwise: the admin API can reload the gateway.
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
    /// A file holding the bearer token every admin request must carry (relative to the config
    /// file). Required when `listen` is not a loopback address.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Shortest admin token accepted, in bytes.
pub const MIN_ADMIN_TOKEN: usize = 16;

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
    /// Log lines (log capability, stdout and stderr) the plugin may write per second, across
    /// all its routes (default 100); past it and the burst, lines are dropped and counted.
    pub log_lines_per_second: Option<u32>,
    /// Log lines the plugin may write at once before the rate applies (default 200).
    pub log_burst: Option<u32>,
    /// Longest an outbound call may take, head and body, in ms (default 2,000). Time a call
    /// waits on the network does not count against `call_timeout_ms`.
    pub outbound_timeout_ms: Option<u64>,
    /// Outbound calls a request's plugins may have in flight at once (default 8).
    pub outbound_in_flight: Option<u32>,
    /// Outbound calls a request's plugins may make in all (default 16).
    pub outbound_per_request: Option<u32>,
    /// Largest outbound response body, in bytes (default 1 MiB).
    pub outbound_body_bytes: Option<u64>,
    /// Largest value the plugin may store in kv, in bytes (default 64 KiB, at most 8 MiB).
    pub kv_max_value_bytes: Option<u64>,
}

impl Limits {
    /// These limits, with unset keys taken from `defaults`.
    pub fn or(&self, defaults: &Limits) -> Limits {
        Limits {
            memory_limit_mib: self.memory_limit_mib.or(defaults.memory_limit_mib),
            call_timeout_ms: self.call_timeout_ms.or(defaults.call_timeout_ms),
            fuel_per_call: self.fuel_per_call.or(defaults.fuel_per_call),
            max_uses: self.max_uses.or(defaults.max_uses),
            log_lines_per_second: self.log_lines_per_second.or(defaults.log_lines_per_second),
            log_burst: self.log_burst.or(defaults.log_burst),
            outbound_timeout_ms: self.outbound_timeout_ms.or(defaults.outbound_timeout_ms),
            outbound_in_flight: self.outbound_in_flight.or(defaults.outbound_in_flight),
            outbound_per_request: self.outbound_per_request.or(defaults.outbound_per_request),
            outbound_body_bytes: self.outbound_body_bytes.or(defaults.outbound_body_bytes),
            kv_max_value_bytes: self.kv_max_value_bytes.or(defaults.kv_max_value_bytes),
        }
    }
}

/// The host interfaces a plugin may be granted.
pub const CAPABILITIES: [&str; 5] = ["log", "clock", "rate-limit", "kv", "outbound"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path of the component, relative to the config file.
    pub path: PathBuf,
    /// Host interfaces the plugin may import (of `log`, `clock`, `rate-limit`, `kv`,
    /// `outbound`, the last being `wasi:http/outgoing-handler`); a component importing one it
    /// was not granted is refused at load. Unset grants all.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// Where the plugin's outbound calls may go: `upstream:NAME` and origins. A call anywhere
    /// else is refused before any socket opens.
    #[serde(default)]
    pub outbound: Vec<OutboundGrant>,
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
    /// `http://host:port` or `https://host:port` base URLs, each with a weight.
    pub targets: Vec<TargetConfig>,
    /// How each request's target is chosen.
    #[serde(default)]
    pub balance: Balance,
    /// What `balance = "hash"` hashes (the client's address when unset).
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Outlier ejection from real traffic; off when absent.
    #[serde(default)]
    pub passive: Option<PassiveConfig>,
    /// Active health checks; off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Off when absent.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// No retries when absent.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Targets found by DNS or from a file; `targets` as written when absent.
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// When fewer than this share of the targets are usable (healthy and not ejected), every
    /// target is used, as Envoy's panic mode does; 0, the default, never.
    #[serde(default)]
    pub panic_below_percent: u32,
    /// The `Host` the targets are sent (a route may say otherwise).
    #[serde(default)]
    pub host_header: HostHeader,
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
    /// For `https://` targets: a PEM file of the CAs to trust, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate (the target's host when
    /// unset).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// `false` accepts any certificate the target presents: for tests only, and logged.
    #[serde(default = "defaults::yes")]
    pub tls_verify: bool,
    /// A client certificate for mutual TLS with the targets.
    #[serde(default)]
    pub client_cert: Option<CertConfig>,
    /// What the targets are spoken to in.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// An upstream's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool per worker.
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2: ALPN `h2` on `https://` targets, prior knowledge (h2c) on `http://` ones. Each
    /// worker multiplexes its requests to a target over one connection.
    #[serde(rename = "h2")]
    H2,
}

impl UpstreamConfig {
    /// Whether any TLS setting is given.
    fn has_tls_settings(&self) -> bool {
        self.ca_file.is_some()
            || self.tls_server_name.is_some()
            || !self.tls_verify
            || self.client_cert.is_some()
    }
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
    pub fn websocket_idle_timeout_ms() -> u64 {
        60_000
    }
    pub fn compress_min_bytes() -> u64 {
        1024
    }
    pub fn admin_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9901))
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn keepalive_timeout_ms() -> u64 {
        60_000
    }
    pub fn max_requests_per_connection() -> u64 {
        1_000
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn send_timeout_ms() -> u64 {
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
    pub fn yes() -> bool {
        true
    }
    pub fn redirect_status() -> u16 {
        301
    }
    pub fn h2_max_concurrent_streams() -> u32 {
        128
    }
    pub fn h2_max_pending_resets() -> usize {
        20
    }
    pub fn h2_max_error_resets() -> usize {
        1024
    }
}

/// The longest any timeout may be: a day. Longer ones are mistakes, and a bound keeps every
/// deadline far from overflowing.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

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

    /// The admin bearer token, read from `admin.token_file` (surrounding whitespace trimmed).
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        let Some(file) = self.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
            return Ok(None);
        };
        let path = self.base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("admin.token_file: cannot read {}: {e}", path.display()))?;
        let token = text.trim();
        if token.len() < MIN_ADMIN_TOKEN || token.contains(char::is_whitespace) {
            return Err(format!(
                "admin.token_file: {} must hold one token of at least {MIN_ADMIN_TOKEN} characters, without spaces",
                path.display()
            ));
        }
        Ok(Some(token.to_owned()))
    }

    /// Every certificate, key and CA file the config names (`[server.tls]`'s and the
    /// upstreams'), joined to the config's directory.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let server = self.server.tls.iter().flat_map(|tls| {
            tls.certs
                .iter()
                .flat_map(|c| [&c.cert, &c.key])
                .chain(tls.client_ca.as_ref())
        });
        let upstreams = self.upstreams.values().flat_map(|u| {
            u.ca_file
                .iter()
                .chain(u.client_cert.iter().flat_map(|c| [&c.cert, &c.key]))
        });
        server
            .chain(upstreams)
            .map(|p| self.base_dir.join(p))
            .collect()
    }

    /// Where a plugin's component file is.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.base_dir.join(&plugin.path)
    }

    /// What is wrong with an upstream's health check, circuit breaker, retries and discovery.
    fn failure_problems(name: &str, up: &UpstreamConfig) -> Vec<String> {
        let mut out = Vec::new();
        let at = |key: &str| format!("upstreams.{name}.{key}");
        if let Some(h) = &up.health_check {
            if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
                out.push(format!(
                    "{}: `{}` is not a path such as /health",
                    at("health_check.path"),
                    h.path
                ));
            }
            for (key, n) in [
                ("healthy_after", h.healthy_after),
                ("unhealthy_after", h.unhealthy_after),
            ] {
                if n == 0 {
                    out.push(format!(
                        "{}: at least 1",
                        at(&format!("health_check.{key}"))
                    ));
                }
            }
            for (key, ms) in [("interval_ms", h.interval_ms), ("timeout_ms", h.timeout_ms)] {
                check_timeout(&mut out, &at(&format!("health_check.{key}")), ms);
            }
            if h.timeout_ms > h.interval_ms {
                out.push(format!(
                    "{}: {} ms is longer than interval_ms ({} ms)",
                    at("health_check.timeout_ms"),
                    h.timeout_ms,
                    h.interval_ms
                ));
            }
        }
        if let Some(c) = &up.circuit_breaker {
            if !(c.failure_ratio > 0.0 && c.failure_ratio <= 1.0) {
                out.push(format!(
                    "{}: {} is not above 0 and at most 1",
                    at("circuit_breaker.failure_ratio"),
                    c.failure_ratio
                ));
            }
            for (key, n) in [
                ("min_requests", c.min_requests),
                ("half_open_requests", c.half_open_requests),
            ] {
                if n == 0 {
                    out.push(format!(
                        "{}: at least 1",
                        at(&format!("circuit_breaker.{key}"))
                    ));
                }
            }
            for (key, ms) in [("window_ms", c.window_ms), ("open_ms", c.open_ms)] {
                check_timeout(&mut out, &at(&format!("circuit_breaker.{key}")), ms);
            }
            if let Some(Err(e)) = c.fallback.as_ref().map(Fallback::parts) {
                out.push(format!("{}: {e}", at("circuit_breaker.fallback")));
            }
        }
        if let Some(r) = &up.retry {
            if r.attempts > 10 {
                out.push(format!(
                    "{}: {} is more than 10",
                    at("retry.attempts"),
                    r.attempts
                ));
            }
            if r.budget_percent > 100 {
                out.push(format!(
                    "{}: {} is over 100",
                    at("retry.budget_percent"),
                    r.budget_percent
                ));
            }
            if let Err(e) = r.parsed_methods() {
                out.push(format!("{}: {e}", at("retry.methods")));
            }
            if r.backoff_ms > MAX_TIMEOUT_MS {
                check_timeout(&mut out, &at("retry.backoff_ms"), r.backoff_ms);
            }
        }
        if let Some(d) = &up.discovery {
            if d.dns_refresh_ms.is_none() && d.file.is_none() {
                out.push(format!("{}: set dns_refresh_ms or file", at("discovery")));
            }
            if d.dns_refresh_ms.is_some() && d.file.is_some() {
                out.push(format!(
                    "{}: dns_refresh_ms and file cannot both be set",
                    at("discovery")
                ));
            }
            if let Some(ms) = d.dns_refresh_ms {
                check_timeout(&mut out, &at("discovery.dns_refresh_ms"), ms);
            }
        }
        if up.panic_below_percent > 100 {
            out.push(format!(
                "{}: {} is over 100",
                at("panic_below_percent"),
                up.panic_below_percent
            ));
        }
        out
    }

    /// Every semantic problem, each naming its key path.
    fn problems(&self) -> Vec<String> {
        let mut out = self.state.problems();
        for (name, up) in &self.upstreams {
            let from_file = up.discovery.as_ref().is_some_and(|d| d.file.is_some());
            if up.targets.is_empty() && !from_file {
                out.push(format!(
                    "upstreams.{name}.targets: at least one target is required"
                ));
            }
            if !up.targets.is_empty() && from_file {
                out.push(format!(
                    "upstreams.{name}.targets: the targets come from discovery.file, so this list must be empty"
                ));
            }
            let mut tls_targets = 0;
            for (i, t) in up.targets.iter().enumerate() {
                match crate::net::parse_target(&t.url) {
                    Ok(t) => tls_targets += usize::from(t.tls),
                    Err(e) => out.push(format!("upstreams.{name}.targets[{i}]: {e}")),
                }
                if !(1..=MAX_WEIGHT).contains(&t.weight) {
                    out.push(format!(
                        "upstreams.{name}.targets[{i}].weight: {} is not 1 to {MAX_WEIGHT}",
                        t.weight
                    ));
                }
            }
            if let Some(p) = &up.passive {
                if p.max_failures == 0 {
                    out.push(format!("upstreams.{name}.passive.max_failures: at least 1"));
                }
                if p.max_ejected_percent > 100 {
                    out.push(format!(
                        "upstreams.{name}.passive.max_ejected_percent: {} is over 100",
                        p.max_ejected_percent
                    ));
                }
                for (key, ms) in [("eject_ms", p.eject_ms), ("max_eject_ms", p.max_eject_ms)] {
                    check_timeout(&mut out, &format!("upstreams.{name}.passive.{key}"), ms);
                }
            }
            out.extend(Self::failure_problems(name, up));
            if up.hash_on.is_some() && up.balance != Balance::Hash {
                out.push(format!(
                    "upstreams.{name}.hash_on: it is for balance = \"hash\", and this upstream balances otherwise"
                ));
            }
            if tls_targets == 0 && up.has_tls_settings() {
                out.push(format!(
                    "upstreams.{name}: ca_file, tls_server_name, tls_verify and client_cert are for https:// targets, and it has none"
                ));
            }
            for (key, ms) in [
                ("connect_timeout_ms", up.connect_timeout_ms),
                ("timeout_ms", up.timeout_ms),
                ("read_timeout_ms", up.read_timeout_ms),
                ("idle_timeout_ms", up.idle_timeout_ms),
                ("max_connection_lifetime_ms", up.max_connection_lifetime_ms),
            ] {
                check_timeout(&mut out, &format!("upstreams.{name}.{key}"), ms);
            }
        }
        let s = &self.server;
        for (key, ms) in [
            ("drain_timeout_ms", s.drain_timeout_ms),
            ("header_read_timeout_ms", s.header_read_timeout_ms),
            ("keepalive_timeout_ms", s.keepalive_timeout_ms),
            ("send_timeout_ms", s.send_timeout_ms),
            ("body_read_timeout_ms", s.body_read_timeout_ms),
        ] {
            check_timeout(&mut out, &format!("server.{key}"), ms);
        }
        check_timeout(&mut out, "reload.debounce_ms", self.reload.debounce_ms);
        for (key, n) in [
            ("max_connections", s.max_connections as u64),
            ("max_requests_per_connection", s.max_requests_per_connection),
            ("max_headers", s.max_headers as u64),
        ] {
            if n == 0 {
                out.push(format!("server.{key}: must be greater than 0"));
            }
        }
        if !(1024..=1024 * 1024).contains(&s.max_header_bytes) {
            out.push("server.max_header_bytes: must be between 1024 and 1048576".into());
        }
        if s.workers == Some(0) {
            out.push("server.workers: must be greater than 0".into());
        }
        if let Err(e) = crate::net::TrustedProxies::parse(&s.trusted_proxies) {
            out.push(format!("server.trusted_proxies: {e}"));
        }
        if s.proxy_protocol && s.trusted_proxies.is_empty() {
            out.push(
                "server.proxy_protocol: needs server.trusted_proxies, the load balancers allowed to send the header"
                    .into(),
            );
        }
        if let Some(tls) = &s.tls {
            if tls.certs.is_empty() {
                out.push("server.tls.certs: at least one certificate is required".into());
            }
            if tls.client_ca.is_none() && tls.client_auth.is_some() {
                out.push("server.tls.client_auth: needs server.tls.client_ca".into());
            }
            if s.h2c {
                out.push(
                    "server.h2c: is for a plain listener; with server.tls, HTTP/2 is offered by ALPN"
                        .into(),
                );
            }
        }
        if let Some(r) = &s.redirect {
            if s.tls.is_none() {
                out.push(
                    "server.redirect: redirects to HTTPS, so it needs server.tls on server.listen"
                        .into(),
                );
            }
            if !matches!(r.status, 301 | 308) {
                out.push(format!(
                    "server.redirect.status: {} is not 301 or 308",
                    r.status
                ));
            }
            if r.listen == s.listen && r.listen.port() != 0 {
                out.push("server.redirect.listen: is server.listen itself".into());
            }
        }
        if s.http2.max_concurrent_streams == 0 {
            out.push("server.http2.max_concurrent_streams: must be greater than 0".into());
        }
        if let Some(a) = &self.admin {
            if !a.listen.ip().is_loopback() && a.token_file.is_none() {
                out.push(format!(
                    "admin.listen: {} is not a loopback address; set admin.token_file (a bearer token) to serve the admin API there",
                    a.listen
                ));
            }
            if let Err(e) = self.admin_token() {
                out.push(e);
            }
        }
        routes::problems(self, &mut out);
        for (name, p) in &self.plugins {
            for g in &p.outbound {
                if let OutboundGrant::Upstream(u) = g
                    && !self.upstreams.contains_key(u)
                {
                    out.push(format!(
                        "plugins.{name}.outbound: unknown upstream `{u}` (defined: {})",
                        names(self.upstreams.keys())
                    ));
                }
            }
            if !p.outbound.is_empty()
                && p.capabilities
                    .as_ref()
                    .is_some_and(|c| !c.iter().any(|c| c == "outbound"))
            {
                out.push(format!(
                    "plugins.{name}: `outbound` lists destinations, but `capabilities` does not grant \"outbound\""
                ));
            }
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
            if l.outbound_timeout_ms.is_some_and(|t| t == 0 || t > 300_000) {
                out.push(format!(
                    "{at}.outbound_timeout_ms: must be between 1 and 300000"
                ));
            }
            if l.outbound_in_flight.is_some_and(|n| n == 0 || n > 256)
                || l.outbound_per_request.is_some_and(|n| n == 0 || n > 1024)
            {
                out.push(format!(
                    "{at}: outbound_in_flight must be between 1 and 256, outbound_per_request between 1 and 1024"
                ));
            }
            if l.outbound_body_bytes
                .is_some_and(|n| n == 0 || n > 64 << 20)
            {
                out.push(format!(
                    "{at}.outbound_body_bytes: must be between 1 and 67108864 (64 MiB)"
                ));
            }
            if l.kv_max_value_bytes
                .is_some_and(|n| n == 0 || n > wasmgate_rules::kv::MAX_VALUE_BYTES_LIMIT as u64)
            {
                out.push(format!(
                    "{at}.kv_max_value_bytes: must be between 1 and {} (8 MiB)",
                    wasmgate_rules::kv::MAX_VALUE_BYTES_LIMIT
                ));
            }
            if l.fuel_per_call == Some(0) || l.max_uses == Some(0) {
                out.push(format!(
                    "{at}: fuel_per_call and max_uses must be greater than 0"
                ));
            }
            for (key, v) in [
                ("log_lines_per_second", l.log_lines_per_second),
                ("log_burst", l.log_burst),
            ] {
                if v.is_some_and(|v| v == 0 || v > 1_000_000) {
                    out.push(format!("{at}.{key}: must be between 1 and 1000000"));
                }
            }
        }
        if self.wasm.max_instances == 0 {
            out.push("wasm.max_instances: must be greater than 0".into());
        }
        out
    }
}

fn check_timeout(out: &mut Vec<String>, at: &str, ms: u64) {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        out.push(format!(
            "{at}: must be between 1 and {MAX_TIMEOUT_MS} (a day), in milliseconds"
        ));
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
    fn balancing_and_ejection_settings_are_checked() {
        assert_eq!(
            problems(
                "",
                "balance = \"hash\"\nhash_on = \"path\"\n[upstreams.u.passive]\nmax_failures = 2"
            ),
            ""
        );
        for (upstream, says) in [
            (
                "hash_on = \"path\"",
                "upstreams.u.hash_on: it is for balance = \"hash\"",
            ),
            ("balance = \"fastest\"", "unknown variant `fastest`"),
            (
                "[upstreams.u.passive]\nmax_failures = 0",
                "passive.max_failures: at least 1",
            ),
            (
                "[upstreams.u.passive]\nmax_ejected_percent = 101",
                "max_ejected_percent: 101 is over 100",
            ),
            (
                "[upstreams.u.passive]\neject_ms = 0",
                "upstreams.u.passive.eject_ms",
            ),
            (
                "[upstreams.u.passive]\nejected_ms = 5",
                "unknown field `ejected_ms`",
            ),
        ] {
            let p = problems("", upstream);
            assert!(p.contains(says), "{upstream}: {p}");
        }
        let weighted = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\ntargets = [{ url = \"http://127.0.0.1:1\", weight = 0 }, { url = \"http://127.0.0.1:2\", weight = 1001 }]\n",
            Path::new("gw.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            weighted.contains("targets[0].weight: 0 is not 1 to 1000"),
            "{weighted}"
        );
        assert!(weighted.contains("targets[1].weight: 1001"), "{weighted}");
    }

    #[test]
    fn health_circuit_retry_and_discovery_settings_are_checked() {
        assert_eq!(
            problems(
                "",
                "panic_below_percent = 50\n[upstreams.u.health_check]\n[upstreams.u.circuit_breaker]\nfallback = { body = \"down\" }\n[upstreams.u.retry]\n[upstreams.u.discovery]\ndns_refresh_ms = 100"
            ),
            ""
        );
        for (upstream, says) in [
            (
                "[upstreams.u.health_check]\npath = \"health\"",
                "health_check.path: `health` is not a path",
            ),
            (
                "[upstreams.u.health_check]\nunhealthy_after = 0",
                "health_check.unhealthy_after: at least 1",
            ),
            (
                "[upstreams.u.health_check]\ntimeout_ms = 5000",
                "is longer than interval_ms",
            ),
            (
                "[upstreams.u.health_check]\nexpect_status = \"2xx\"",
                "is not a status",
            ),
            (
                "[upstreams.u.health_check]\ntype = \"udp\"",
                "unknown variant `udp`",
            ),
            (
                "[upstreams.u.circuit_breaker]\nfailure_ratio = 1.5",
                "failure_ratio: 1.5 is not above 0",
            ),
            (
                "[upstreams.u.circuit_breaker]\nopen_ms = 0",
                "circuit_breaker.open_ms",
            ),
            (
                "[upstreams.u.circuit_breaker]\nfallback = { status = 99 }",
                "fallback: status 99",
            ),
            (
                "[upstreams.u.circuit_breaker]\nfallback = { headers = { \"a b\" = \"1\" } }",
                "`a b` is not a header name",
            ),
            (
                "[upstreams.u.retry]\nattempts = 11",
                "retry.attempts: 11 is more than 10",
            ),
            ("[upstreams.u.retry]\non = [\"404\"]", "a 5xx status"),
            (
                "[upstreams.u.retry]\nmethods = [\"G T\"]",
                "retry.methods: `G T` is not a method",
            ),
            (
                "[upstreams.u.discovery]",
                "discovery: set dns_refresh_ms or file",
            ),
            (
                "[upstreams.u.discovery]\nfile = \"t.json\"",
                "this list must be empty",
            ),
            (
                "panic_below_percent = 101",
                "panic_below_percent: 101 is over 100",
            ),
            ("host_header = \"a/b\"", "is neither \"target\""),
        ] {
            let p = problems("", upstream);
            assert!(p.contains(says), "{upstream}: {p}");
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

    #[test]
    fn log_budgets_parse_fall_back_to_wasm_and_are_bounded() {
        let ok = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[wasm]\nlog_lines_per_second = 5\nlog_burst = 7\n[plugins.p]\npath = \"p.wasm\"\nlog_burst = 9\n",
            Path::new("gw.toml"),
        )
        .unwrap();
        let p = ok.plugins["p"].limits.or(&ok.wasm.limits);
        assert_eq!((p.log_lines_per_second, p.log_burst), (Some(5), Some(9)));
        for bad in [
            "[wasm]\nlog_burst = 0",
            "[wasm]\nlog_lines_per_second = 2000000",
        ] {
            let err = Config::parse(
                &format!("[server]\nlisten = \"127.0.0.1:0\"\n{bad}\n"),
                Path::new("gw.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("must be between 1 and 1000000"), "{err}");
        }
    }
}

#[cfg(test)]
mod hole_tests {
    use super::*;

    const BASE: &str =
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\ntargets = [\"http://127.0.0.1:1\"]\n";

    fn problems(extra: &str) -> String {
        match Config::parse(&format!("{BASE}{extra}"), Path::new("gw.toml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn route(name: &str, rest: &str) -> String {
        format!("[[routes]]\nname = \"{name}\"\nupstream = \"u\"\n{rest}\n")
    }

    #[test]
    fn outbound_grants_and_limits_are_checked() {
        let ok = Config::parse(
            &format!("{BASE}[plugins.p]\npath = \"p.wasm\"\ncapabilities = [\"outbound\"]\noutbound = [\"upstream:u\", \"https://idp.example.com\"]\noutbound_timeout_ms = 500\n"),
            Path::new("gw.toml"),
        )
        .unwrap();
        assert_eq!(ok.plugins["p"].outbound.len(), 2);
        assert_eq!(ok.plugins["p"].limits.outbound_timeout_ms, Some(500));
        let err = problems(
            "[plugins.p]\npath = \"p.wasm\"\ncapabilities = [\"log\"]\noutbound = [\"upstream:nope\"]\noutbound_in_flight = 0\noutbound_body_bytes = 0\n",
        );
        for needle in [
            "plugins.p.outbound: unknown upstream `nope` (defined: u)",
            "`capabilities` does not grant \"outbound\"",
            "outbound_in_flight must be between 1 and 256",
            "plugins.p.outbound_body_bytes: must be between 1",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
        let err = problems(
            "[plugins.p]\npath = \"p.wasm\"\noutbound = [\"https://idp.example.com/keys\"]\n",
        );
        assert!(err.contains("without a path or query"), "{err}");
    }

    #[test]
    fn kv_value_limits_are_per_plugin_and_bounded() {
        let ok = Config::parse(
            &format!("{BASE}[wasm]\nkv_max_value_bytes = 1024\n[plugins.p]\npath = \"p.wasm\"\nkv_max_value_bytes = 1048576\n[plugins.q]\npath = \"q.wasm\"\n"),
            Path::new("gw.toml"),
        )
        .unwrap();
        let limits = |name: &str| ok.plugins[name].limits.or(&ok.wasm.limits);
        assert_eq!(limits("p").kv_max_value_bytes, Some(1 << 20));
        assert_eq!(limits("q").kv_max_value_bytes, Some(1024));
        for bad in ["0", "8388609"] {
            let err = problems(&format!(
                "[plugins.p]\npath = \"p.wasm\"\nkv_max_value_bytes = {bad}\n"
            ));
            assert!(
                err.contains("plugins.p.kv_max_value_bytes: must be between 1 and 8388608 (8 MiB)"),
                "{err}"
            );
        }
    }

    #[test]
    fn timeouts_are_bounded_to_a_day() {
        let err = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout_ms = 0\ndrain_timeout_ms = 86400001\nkeepalive_timeout_ms = 99999999999\n[upstreams.u]\ntargets = [\"http://127.0.0.1:1\"]\ntimeout_ms = 99999999999\n[reload]\ndebounce_ms = 0\n",
            Path::new("gw.toml"),
        )
        .unwrap_err()
        .to_string();
        for key in [
            "server.header_read_timeout_ms",
            "server.drain_timeout_ms",
            "server.keepalive_timeout_ms",
            "upstreams.u.timeout_ms",
            "reload.debounce_ms",
        ] {
            assert!(
                err.contains(&format!("{key}: must be between 1 and 86400000")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn prefixes_must_be_normal_and_methods_not_empty() {
        let err = problems(&route("a", "path_prefix = \"/api//x\""));
        assert!(
            err.contains("is not in normal form") && err.contains("(write `/api/x`)"),
            "{err}"
        );
        let err = problems(&route("a", "path_prefix = \"/api/%61\""));
        assert!(err.contains("(write `/api/a`)"), "{err}");
        let err = problems(&route("a", "path_prefix = \"/a/../b\""));
        assert!(err.contains("(write `/b`)"), "{err}");
        let err = problems(&route("a", "path_prefix = \"/a%2fb\""));
        assert!(
            err.contains("path_prefix: `/a%2fb`: an encoded '/'"),
            "{err}"
        );
        let err = problems(&route("a", "path_prefix = \"api\""));
        assert!(err.contains("does not start with '/'"), "{err}");
        assert_eq!(problems(&route("a", "path_prefix = \"/api/\"")), "");
        let err = problems(&route("a", "path_prefix = \"/\"\nmethods = []"));
        assert!(
            err.contains("methods: an empty list matches nothing"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let two = format!(
            "{}{}",
            route("a", "path_prefix = \"/x\"\nmethods = [\"GET\", \"POST\"]"),
            route("b", "path_prefix = \"/x/\"\nmethods = [\"post\", \"GET\"]")
        );
        let err = problems(&two);
        assert!(
            err.contains("routes[0] (\"a\") and routes[1] (\"b\") tie"),
            "{err}"
        );
        let other_host = format!(
            "{}{}",
            route("a", "path_prefix = \"/x\""),
            route("b", "path_prefix = \"/x\"\nhost = \"h.example\"")
        );
        assert_eq!(problems(&other_host), "");
    }

    #[test]
    fn hosts_are_names_or_leading_wildcards() {
        assert_eq!(
            problems(&route("a", "path_prefix = \"/\"\nhost = \"*.example.com\"")),
            ""
        );
        for bad in ["a.*.example.com", "*example.com", "*", "h:80", "a b", "a@b"] {
            let err = problems(&route(
                "a",
                &format!("path_prefix = \"/\"\nhost = \"{bad}\""),
            ));
            assert!(err.contains(&format!(".host: `{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn an_admin_api_off_loopback_needs_a_token() {
        let err = problems("[admin]\nlisten = \"0.0.0.0:9901\"\n");
        assert!(
            err.contains("admin.listen: 0.0.0.0:9901 is not a loopback address"),
            "{err}"
        );
        assert_eq!(problems("[admin]\n"), "");
        let err = problems("[admin]\ntoken_file = \"/nonexistent/token\"\n");
        assert!(
            err.contains("admin.token_file: cannot read /nonexistent/token"),
            "{err}"
        );
    }

    #[test]
    fn escaped_slashes_take_three_values() {
        let c = Config::parse(
            &BASE.replace("listen", "escaped_slashes = \"keep\"\nlisten"),
            Path::new("gw.toml"),
        )
        .unwrap();
        assert_eq!(c.server.escaped_slashes, EscapedSlashes::Keep);
        assert_eq!(problems(""), "");
        let err = Config::parse(
            &BASE.replace("listen", "escaped_slashes = \"decode\"\nlisten"),
            Path::new("gw.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("expected one of `reject`, `keep`, `unescape`"),
            "{err}"
        );
    }
}
