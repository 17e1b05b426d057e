//! The network facts a config names and every layer reads: who is at the other end of a
//! connection, which peers are trusted to say who the client really is, and what an upstream
//! target is.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use ipnet::IpNet;

/// An address at the other end: the connection's peer (its socket address, or the source a
/// PROXY protocol header gave), or the client a trusted peer spoke for. Its IP is rendered as
/// header text once, for `X-Forwarded-For` and the plugins' `client-addr`.
#[derive(Debug, Clone)]
pub struct Peer {
    ip: HeaderValue,
    /// Whether this peer is in `server.trusted_proxies`, so its `X-Forwarded-For` and
    /// `X-Real-IP` are believed.
    trusted: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Self::from_ip(addr.ip(), false)
    }

    pub fn from_ip(addr: IpAddr, trusted: bool) -> Self {
        let ip = HeaderValue::from_str(&addr.to_string())
            .expect("an IP address is a valid header value");
        Self { ip, trusted }
    }

    /// The IP address, as a header value.
    pub fn ip(&self) -> &HeaderValue {
        &self.ip
    }

    /// The IP address, as text.
    pub fn ip_str(&self) -> &str {
        self.ip.to_str().unwrap_or_default()
    }

    pub fn trusted(&self) -> bool {
        self.trusted
    }
}

/// A parsed upstream target (`http://host:port` or `https://host:port`).
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: Authority,
    /// `https://`: the connection speaks TLS.
    pub tls: bool,
    /// `host:port` to connect to.
    pub addr: String,
    /// The `Host` header requests to this target carry.
    pub host: HeaderValue,
}

/// Checks and parses a target URL.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) if *s == Scheme::HTTPS => true,
        Some(other) => {
            return Err(format!(
                "scheme `{other}` is not supported (use http:// or https://)"
            ));
        }
        None => return Err(format!("`{s}` needs a scheme, as in http://{s}")),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{s}` has no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "`{s}`: a target is scheme://host:port, without a path"
        ));
    }
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(if tls { 443 } else { 80 })
    );
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("`{s}`: {e}"))?;
    Ok(Target {
        authority,
        tls,
        addr,
        host,
    })
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// `server.trusted_proxies`: the networks whose peers may say who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8`-style networks; a bare address is a network of one.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                IpNet::from_str(e)
                    .or_else(|_| IpAddr::from_str(e).map(IpNet::from))
                    .map_err(|_| format!("`{e}` is not an IP address or network (as 10.0.0.0/8)"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The connection's peer, marked trusted when it is.
    pub fn peer(&self, addr: IpAddr) -> Peer {
        let addr = addr.to_canonical();
        Peer::from_ip(addr, !self.is_empty() && self.contains(addr))
    }

    /// The client a request comes from. From an untrusted peer, the peer itself. From a
    /// trusted one, the last address in `X-Forwarded-For` that is not a trusted proxy (each
    /// proxy appends the address it was reached from, so the first untrusted one from the
    /// right is the first that cannot have been forged by a proxy we trust), else
    /// `X-Real-IP`, else the peer. Unreadable values are skipped, never believed.
    pub fn client(&self, peer: &Peer, headers: &HeaderMap) -> Peer {
        if !peer.trusted {
            return peer.clone();
        }
        let mut leftmost = None;
        let forwarded: Vec<IpAddr> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| parse_ip(a.trim()))
            .collect();
        for &ip in forwarded.iter().rev() {
            if !self.contains(ip) {
                return Peer::from_ip(ip, false);
            }
            leftmost = Some(ip);
        }
        if forwarded.is_empty()
            && let Some(ip) = headers
                .get(&X_REAL_IP)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_ip(v.trim()))
        {
            return Peer::from_ip(ip, self.contains(ip));
        }
        match leftmost {
            Some(ip) => Peer::from_ip(ip, true),
            None => peer.clone(),
        }
    }
}

/// An IP address as `X-Forwarded-For` writes it: bare, or IPv6 in brackets, maybe with a port.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(ip.to_canonical());
    }
    SocketAddr::from_str(s).ok().map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&nets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn client(t: &TrustedProxies, peer: &str, headers: &[(&str, &str)]) -> String {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        t.client(&t.peer(peer.parse().unwrap()), &h)
            .ip_str()
            .to_owned()
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.1"]);
        let xff = [("x-forwarded-for", "1.2.3.4")];
        assert_eq!(client(&t, "10.1.2.3", &xff), "1.2.3.4");
        assert_eq!(client(&t, "192.168.1.1", &xff), "1.2.3.4");
        assert_eq!(client(&t, "8.8.8.8", &xff), "8.8.8.8");
        assert_eq!(
            client(&TrustedProxies::default(), "10.1.2.3", &xff),
            "10.1.2.3"
        );
        assert_eq!(
            client(&t, "10.1.2.3", &[("x-real-ip", "5.6.7.8")]),
            "5.6.7.8"
        );
        assert_eq!(
            client(&t, "8.8.8.8", &[("x-real-ip", "5.6.7.8")]),
            "8.8.8.8"
        );
        // IPv4 peers reached over an IPv6 socket are matched as IPv4.
        assert_eq!(client(&t, "::ffff:10.0.0.1", &xff), "1.2.3.4");
    }

    #[test]
    fn the_first_untrusted_address_from_the_right_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client forged the first entry; the trusted proxy appended the real one.
        let h = [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")];
        assert_eq!(client(&t, "10.0.0.2", &h), "1.2.3.4");
        let h = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ];
        assert_eq!(client(&t, "10.0.0.2", &h), "1.2.3.4");
        // Every entry trusted: the leftmost.
        let h = [("x-forwarded-for", "10.0.0.9, 10.0.0.7")];
        assert_eq!(client(&t, "10.0.0.2", &h), "10.0.0.9");
        // Garbage is skipped, ports and brackets read.
        let h = [(
            "x-forwarded-for",
            "1.2.3.4:5555, nonsense, [2001:db8::1]:80",
        )];
        assert_eq!(client(&t, "10.0.0.2", &h), "2001:db8::1");
        let h = [("x-forwarded-for", "nonsense")];
        assert_eq!(client(&t, "10.0.0.2", &h), "10.0.0.2");
    }

    #[test]
    fn targets_are_checked() {
        assert!(parse_target("http://127.0.0.1:9000").is_ok());
        assert!(
            parse_target("127.0.0.1:9000")
                .unwrap_err()
                .contains("scheme")
        );
        let https = parse_target("https://x").unwrap();
        assert!(https.tls);
        assert_eq!(https.addr, "x:443");
        assert!(!parse_target("http://x").unwrap().tls);
        assert_eq!(parse_target("http://x").unwrap().addr, "x:80");
        assert!(
            parse_target("ftp://x")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            parse_target("http://x/path")
                .unwrap_err()
                .contains("without a path")
        );
    }

    #[test]
    fn networks_are_checked() {
        assert!(TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).is_ok());
        let err = TrustedProxies::parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(TrustedProxies::parse(&["example.com".into()]).is_err());
    }
}
