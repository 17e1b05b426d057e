//! A set of IP networks, parsed once and kept as sorted, merged address ranges per family, so
//! a lookup is a binary search: O(log n) for any number of entries.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// The IPv6 block that embeds IPv4 addresses (`::ffff:0:0/96`).
const MAPPED_PREFIX: u8 = 96;

/// One list's networks: inclusive `(first, last)` ranges, sorted and without overlaps or
/// neighbours (two ranges that touch are one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Ranges {
    /// The ranges of these networks.
    pub fn new(nets: &[IpNet]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merged(v4),
            v6: merged(v6),
        }
    }

    /// Whether `ip` is in one of the networks. An IPv4 address is matched against the IPv4
    /// networks only (give it in canonical form: see [`parse_client`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => within(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => within(&self.v6, u128::from(ip)),
        }
    }

    /// How many ranges are kept (networks that overlap or touch count once).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Sorts ranges and merges those that overlap or touch.
fn merged<T: Copy + Ord + Bump>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some((_, end)) if end.next().is_none_or(|after| first <= after) => {
                *end = (*end).max(last);
            }
            _ => out.push((first, last)),
        }
    }
    out
}

/// Whether `x` is in one of `ranges` (sorted, disjoint).
fn within<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // The ranges starting at or before `x`; only the last of them can hold it.
    let i = ranges.partition_point(|&(first, _)| first <= x);
    i > 0 && x <= ranges[i - 1].1
}

/// The address right after, when there is one.
trait Bump: Sized {
    fn next(self) -> Option<Self>;
}

impl Bump for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Bump for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Parses a list entry: a network (`10.0.0.0/8`, `2001:db8::/32`) or one address (`192.0.2.7`,
/// `2001:db8::1`). A network with bits set past its prefix (`10.0.0.1/8`) is refused, as a
/// likely typo. An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is turned into the IPv4
/// one it spells, since the gateway gives IPv4 clients' addresses as IPv4.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let net = match IpNet::from_str(text) {
        Ok(net) => net,
        Err(_) => match IpAddr::from_str(text) {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "`{text}` is not an IP address or network (as 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7)"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has bits set past its /{} prefix: the network is `{}`",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(unmapped(net))
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it embeds; any other as it is.
fn unmapped(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= MAPPED_PREFIX
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(v4) = Ipv4Net::new(v4, v6.prefix_len() - MAPPED_PREFIX)
    {
        return IpNet::V4(v4);
    }
    net
}

/// The client address the gateway gives (`Request::client_addr`): an IPv4 or IPv6 address as
/// text. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is taken as the IPv4 address it is;
/// the gateway already gives those as IPv4.
pub fn parse_client(text: &str) -> Option<IpAddr> {
    IpAddr::from_str(text).ok().map(|ip| ip.to_canonical())
}
