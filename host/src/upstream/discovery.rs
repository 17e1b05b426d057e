//! Discovery (`[upstreams.NAME.discovery]`): targets that change with no reload.
//!
//! - `dns_refresh_ms`: every host name in `targets` is resolved again this often (by the
//!   `[dns]` servers, or the system's resolver), and each address it resolves to is a target
//!   with its entry's weight, sent the entry's `Host` and, over TLS, its name. A name that
//!   fails to resolve keeps the addresses it had, and the failure is logged once.
//! - `file`: a JSON list of targets (each a URL or `{ "url": …, "weight": … }`), checked every
//!   second; a change that reads and parses is applied, one that does not is logged and the
//!   targets stay as they were.
//!
//! A change replaces the upstream's set of targets whole; a target in both sets keeps its
//! endpoint, so its health, ejection, counts and warm connections stay. Requests in flight
//! finish on the set they started with.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use wasmgate_config::{DiscoveryConfig, DnsConfig, TargetConfig};

use super::Upstream;
use super::endpoint::Endpoint;
use crate::wire::{Target, parse_target};

/// How often a targets file is looked at.
const FILE_POLL: Duration = Duration::from_secs(1);
/// The largest targets file read.
const MAX_FILE: u64 = 1 << 20;

/// The targets a file lists.
pub fn read_file(path: &Path) -> Result<Vec<TargetConfig>, String> {
    let at = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("discovery.file: cannot read {at}: {e}"))?;
    if meta.len() > MAX_FILE {
        return Err(format!("discovery.file: {at} is over {MAX_FILE} bytes"));
    }
    let text = std::fs::read(path).map_err(|e| format!("discovery.file: cannot read {at}: {e}"))?;
    let targets: Vec<TargetConfig> = serde_json::from_slice(&text)
        .map_err(|e| format!("discovery.file: {at} is not a JSON list of targets: {e}"))?;
    if targets.is_empty() {
        return Err(format!("discovery.file: {at} lists no target"));
    }
    for t in &targets {
        parse_target(&t.url).map_err(|e| format!("discovery.file: {at}: {e}"))?;
        if !(1..=wasmgate_config::MAX_WEIGHT).contains(&t.weight) {
            return Err(format!(
                "discovery.file: {at}: weight {} of {} is not 1 to {}",
                t.weight,
                t.url,
                wasmgate_config::MAX_WEIGHT
            ));
        }
    }
    Ok(targets)
}

/// Keeps `upstream`'s targets current until it is gone.
pub async fn run(
    upstream: Weak<Upstream>,
    cfg: DiscoveryConfig,
    dns: Option<DnsConfig>,
    base: PathBuf,
) {
    if let Some(ms) = cfg.dns_refresh_ms {
        by_dns(upstream, Duration::from_millis(ms), dns).await;
    } else if let Some(file) = cfg.file {
        by_file(upstream, base.join(file)).await;
    }
}

async fn by_file(upstream: Weak<Upstream>, path: PathBuf) {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen: Option<(Option<SystemTime>, u64)> = stamp(&path);
    let mut failing = false;
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let Some(up) = upstream.upgrade() else { return };
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_file(&path)).await
        };
        match read.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(targets) => {
                failing = false;
                let wanted = targets
                    .iter()
                    .filter_map(|t| {
                        Some((t.url.as_str().into(), parse_target(&t.url).ok()?, t.weight))
                    })
                    .collect();
                apply(&up, wanted);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(upstream = &*up.name, error = %e, "targets file not applied: the targets stay as they were");
                }
                failing = true;
            }
        }
    }
}

/// A name server to ask, or the system's resolver.
pub(crate) enum Resolver {
    System,
    Servers(Box<hickory_resolver::TokioResolver>),
}

impl Resolver {
    pub(crate) fn new(dns: Option<DnsConfig>) -> Self {
        let Some(dns) = dns else { return Self::System };
        use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        use hickory_resolver::proto::xfer::Protocol;
        let mut config = ResolverConfig::new();
        for s in &dns.servers {
            config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_millis(dns.timeout_ms);
        opts.attempts = 1;
        // Each refresh asks again: the refresh interval is the cache.
        opts.cache_size = 0;
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            hickory_resolver::name_server::TokioConnectionProvider::default(),
        )
        .with_options(opts)
        .build();
        Self::Servers(Box::new(resolver))
    }

    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        let mut ips: Vec<IpAddr> = match self {
            Self::System => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| e.to_string())?
                .map(|a| a.ip())
                .collect(),
            Self::Servers(r) => r
                .lookup_ip(format!("{host}."))
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .collect(),
        };
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            return Err("no address".into());
        }
        Ok(ips)
    }
}

async fn by_dns(upstream: Weak<Upstream>, every: Duration, dns: Option<DnsConfig>) {
    let resolver = Resolver::new(dns);
    // Each entry: its URL, target, weight, and the addresses it last resolved to.
    let entries: Vec<(String, Target, u32)> = match upstream.upgrade() {
        Some(up) => up
            .cfg
            .targets
            .iter()
            .filter_map(|t| Some((t.url.clone(), parse_target(&t.url).ok()?, t.weight)))
            .collect(),
        None => return,
    };
    let mut known: HashMap<usize, Vec<IpAddr>> = HashMap::new();
    let mut failing: HashMap<usize, bool> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else { return };
        let mut wanted: Vec<(Arc<str>, Target, u32)> = Vec::new();
        for (i, (url, target, weight)) in entries.iter().enumerate() {
            let host = target
                .authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = target
                .addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(80);
            if host.parse::<IpAddr>().is_ok() {
                wanted.push((url.as_str().into(), target.clone(), *weight));
                continue;
            }
            match resolver.resolve(host, port).await {
                Ok(ips) => {
                    if failing.insert(i, false) == Some(true) {
                        tracing::info!(upstream = &*up.name, host, "target name resolves again");
                    }
                    known.insert(i, ips);
                }
                Err(e) => {
                    if failing.insert(i, true) != Some(true) {
                        tracing::warn!(upstream = &*up.name, host, error = %e, "target name did not resolve: its addresses stay as they were");
                    }
                }
            }
            let Some(ips) = known.get(&i) else {
                // Never resolved yet: as written, resolved on connect.
                wanted.push((url.as_str().into(), target.clone(), *weight));
                continue;
            };
            for ip in ips {
                let addr = SocketAddr::new(*ip, port).to_string();
                let scheme = if target.tls { "https" } else { "http" };
                let mut t = target.clone();
                t.addr = addr.clone();
                wanted.push((format!("{scheme}://{addr}").into(), t, *weight));
            }
        }
        apply(&up, wanted);
    }
}

/// Makes `wanted` (URL, target, weight) the upstream's targets, if they differ from its
/// current ones; targets in both keep their endpoints.
fn apply(up: &Upstream, mut wanted: Vec<(Arc<str>, Target, u32)>) {
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    wanted.dedup_by(|a, b| a.0 == b.0);
    let current = up.targets();
    let same = |e: &Endpoint, (url, t, w): &(Arc<str>, Target, u32)| {
        e.url == *url && e.target.addr == t.addr && e.weight == *w
    };
    if current.endpoints.len() == wanted.len()
        && wanted
            .iter()
            .all(|w| current.endpoints.iter().any(|e| same(e, w)))
    {
        return;
    }
    let mut endpoints = Vec::with_capacity(wanted.len());
    let mut added = 0;
    for w in &wanted {
        if let Some(e) = current.endpoints.iter().find(|e| same(e, w)) {
            endpoints.push(e.clone());
            continue;
        }
        match up.endpoint(w.0.clone(), w.1.clone(), w.2) {
            Ok(e) => {
                endpoints.push(e);
                added += 1;
            }
            Err(e) => {
                tracing::warn!(upstream = &*up.name, error = %e, "discovered target left out")
            }
        }
    }
    if endpoints.is_empty() {
        return;
    }
    let removed = current.endpoints.len() + added - endpoints.len();
    let targets: Vec<&str> = endpoints.iter().map(|e| &*e.url).collect();
    tracing::info!(
        upstream = &*up.name,
        added,
        removed,
        ?targets,
        "targets changed"
    );
    up.replace_targets(endpoints);
}
