//! Calls to granted origins, as themselves: hyper-util's pooled client, over rustls for
//! `https://` (the system's roots), with a resolver that refuses a name resolving to any
//! address that is not public (loopback, private, link-local, shared, multicast,
//! documentation, unspecified), so a granted name cannot be rebound to the gateway's own
//! network. An origin granted as an address is connected to as it is. Internal services are
//! reached through upstreams (`upstream:NAME`), which the operator names.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::Error;

use crate::upstream::discovery::Resolver;

/// Idle connections to an origin are closed after this long.
const IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per origin.
const IDLE_PER_ORIGIN: usize = 8;

/// A name that resolves to an address no plugin may reach by name.
#[derive(Debug, thiserror::Error)]
#[error("{name} resolves to {ip}, which is not a public address")]
struct NotPublic {
    name: String,
    ip: IpAddr,
}

/// Resolves names for the client, refusing any that resolves to an address that is not public.
#[derive(Clone)]
struct Checked(Arc<Resolver>);

impl tower_service::Service<Name> for Checked {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.0.clone();
        Box::pin(async move {
            let ips = resolver.resolve(name.as_str(), 0).await?;
            if let Some(ip) = ips.iter().find(|ip| !public(**ip)) {
                return Err(NotPublic {
                    name: name.as_str().to_owned(),
                    ip: *ip,
                }
                .into());
            }
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// Whether `ip` is an address on the public internet.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24, protocol assignments.
        || (a == 192 && b == 0 && c == 0)
        // 198.18.0.0/15, benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7, unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // 64:ff9b:1::/48, local-use translation.
        || (first == 0x0064 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1))
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<Checked>>;

/// The client of every call to an origin, shared by a config's plugins.
pub struct Client {
    pooled: Pooled<Connector, Full<Bytes>>,
}

impl Client {
    /// A client resolving names with `dns` (or the system's resolver), verifying certificates
    /// against `tls` (the system's roots, unless a test brings its own).
    pub fn new(dns: Option<crate::config::DnsConfig>, tls: Arc<rustls::ClientConfig>) -> Self {
        let mut http = HttpConnector::new_with_resolver(Checked(Arc::new(Resolver::new(dns))));
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnector::from((http, tls));
        let pooled = Pooled::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(IDLE_PER_ORIGIN)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Self { pooled }
    }

    /// Sends `req`, whose URI is absolute; a name resolving to an address that is not public
    /// is refused with `HTTP-request-denied`. A failure comes with its cause, for the log.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response<Incoming>, (Error, String)> {
        self.pooled
            .request(req.map(Full::new))
            .await
            .map_err(|e| (from_client(&e), cause(&e)))
    }
}

/// The innermost cause of a failure.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// What the client's failure is to the plugin.
fn from_client(e: &hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<NotPublic>() {
            return Error::HttpRequestDenied;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => Error::ConnectionTimeout,
                std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                _ if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
                    Error::TlsCertificateError
                }
                _ => Error::ConnectionTerminated,
            };
        }
        source = s.source();
    }
    if e.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::HttpProtocolError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(ip.parse().unwrap()), "{ip}");
        }
    }
}
