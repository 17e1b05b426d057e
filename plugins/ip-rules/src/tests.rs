use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use serde_json::{Value, json};
use wasmgate_sdk::testing::{self, MockRequest};

use super::*;

fn plugin(config: Value) -> IpRules {
    testing::init::<IpRules>(config).expect("valid config")
}

fn config_error(config: Value) -> ConfigError {
    testing::init::<IpRules>(config)
        .err()
        .expect("config must be refused")
}

/// The status a request from `addr` gets: 200 when it passes.
fn status(p: &mut IpRules, addr: &str) -> u16 {
    let mut req = MockRequest::new("GET", "/").with_client_addr(addr);
    match testing::on_request(p, &mut req).unwrap() {
        Decision::Continue => 200,
        Decision::Respond(reply) => reply.status,
    }
}

#[test]
fn an_allow_list_lets_only_its_networks_through() {
    let mut p = plugin(json!({ "allow": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"] }));
    for addr in [
        "10.0.0.0",
        "10.255.255.255",
        "10.1.2.3",
        "192.0.2.7",
        "2001:db8::1",
    ] {
        assert_eq!(status(&mut p, addr), 200, "{addr}");
    }
    for addr in [
        "9.255.255.255",
        "11.0.0.0",
        "192.0.2.6",
        "192.0.2.8",
        "2001:db9::1",
        "::1",
        "127.0.0.1",
    ] {
        assert_eq!(status(&mut p, addr), 403, "{addr}");
    }
}

#[test]
fn deny_wins_over_allow() {
    let mut p = plugin(json!({
        "allow": ["10.0.0.0/8", "2001:db8::/32"],
        "deny": ["10.9.0.0/16", "2001:db8:bad::/48"],
    }));
    assert_eq!(status(&mut p, "10.8.255.255"), 200);
    assert_eq!(status(&mut p, "10.9.0.0"), 403);
    assert_eq!(status(&mut p, "10.9.255.255"), 403);
    assert_eq!(status(&mut p, "10.10.0.0"), 200);
    assert_eq!(status(&mut p, "2001:db8:bad::1"), 403);
    assert_eq!(status(&mut p, "2001:db8:bad0::1"), 200);
}

#[test]
fn a_deny_list_alone_lets_everything_else_through() {
    let mut p = plugin(json!({ "deny": ["203.0.113.0/24", "2001:db8::dead"] }));
    assert_eq!(status(&mut p, "203.0.113.200"), 403);
    assert_eq!(status(&mut p, "203.0.114.1"), 200);
    assert_eq!(status(&mut p, "2001:db8::dead"), 403);
    assert_eq!(status(&mut p, "2001:db8::beef"), 200);
    assert_eq!(status(&mut p, "::1"), 200);
}

#[test]
fn ipv4_mapped_addresses_are_matched_as_ipv4() {
    // A client given as `::ffff:10.1.2.3` is the IPv4 client 10.1.2.3, and a rule written
    // in the mapped form is the IPv4 rule it spells.
    let mut p = plugin(json!({ "allow": ["10.0.0.0/8", "::ffff:192.0.2.0/120"] }));
    assert_eq!(status(&mut p, "::ffff:10.1.2.3"), 200);
    assert_eq!(status(&mut p, "::ffff:11.1.2.3"), 403);
    assert_eq!(status(&mut p, "192.0.2.99"), 200);
    assert_eq!(status(&mut p, "192.0.3.1"), 403);
    // IPv6 rules do not hold IPv4 clients, whatever socket they came over.
    let mut p = plugin(json!({ "deny": ["::/0"] }));
    assert_eq!(status(&mut p, "::ffff:10.1.2.3"), 200);
    assert_eq!(status(&mut p, "10.1.2.3"), 200);
    assert_eq!(status(&mut p, "2001:db8::1"), 403);
}

#[test]
fn whole_address_spaces_and_their_edges() {
    let mut p = plugin(json!({ "allow": ["0.0.0.0/0"], "deny": ["255.255.255.255", "::/128"] }));
    assert_eq!(status(&mut p, "0.0.0.0"), 200);
    assert_eq!(status(&mut p, "255.255.255.254"), 200);
    assert_eq!(status(&mut p, "255.255.255.255"), 403);
    assert_eq!(status(&mut p, "::"), 403);
    assert_eq!(
        status(&mut p, "::1"),
        403,
        "not in the IPv4-only allow list"
    );
    let mut p =
        plugin(json!({ "allow": ["::/0"], "deny": ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"] }));
    assert_eq!(status(&mut p, "::"), 200);
    assert_eq!(
        status(&mut p, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
        200
    );
    assert_eq!(
        status(&mut p, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        403
    );
}

#[test]
fn the_refusal_is_json_with_the_configured_message() {
    let mut p = plugin(json!({ "deny": ["10.0.0.0/8"] }));
    let mut req = MockRequest::new("GET", "/").with_client_addr("10.0.0.1");
    let reply = testing::on_request(&mut p, &mut req).unwrap();
    let reply = reply.reply().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.headers,
        [("content-type".to_string(), "application/json".to_string())]
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({ "error": "forbidden", "message": DEFAULT_MESSAGE })
    );

    let mut p = plugin(json!({ "deny": ["10.0.0.0/8"], "message": "office network only" }));
    let mut req = MockRequest::new("GET", "/").with_client_addr("10.0.0.1");
    let reply = testing::on_request(&mut p, &mut req).unwrap();
    let body: Value = serde_json::from_slice(&reply.reply().unwrap().body).unwrap();
    assert_eq!(body["message"], "office network only");
}

#[test]
fn a_client_address_that_does_not_parse_is_refused() {
    testing::reset();
    let mut p = plugin(json!({ "deny": ["10.0.0.0/8"] }));
    assert_eq!(status(&mut p, "not-an-ip"), 403);
    assert_eq!(status(&mut p, "10.0.0.1:443"), 403);
    assert!(
        testing::logs()
            .iter()
            .any(|(level, line)| *level == log::Level::Warn && line.contains("not-an-ip")),
        "{:?}",
        testing::logs()
    );
}

#[test]
fn only_the_request_phase_is_registered() {
    let p = plugin(json!({ "deny": ["10.0.0.0/8"] }));
    assert_eq!(p.registration(), Registration::request_only());
}

#[test]
fn bad_configs_name_the_entry_at_fault() {
    let cases = [
        (
            json!({ "deny": ["10.0.0.0/8", "::1", "10.0.0.0/33"] }),
            "deny[2]",
            "not an IP address",
        ),
        (
            json!({ "allow": ["10.0.0.1/8"] }),
            "allow[0]",
            "the network is `10.0.0.0/8`",
        ),
        (
            json!({ "allow": ["2001:db8::1/32"] }),
            "allow[0]",
            "`2001:db8::/32`",
        ),
        (
            json!({ "allow": ["example.com"] }),
            "allow[0]",
            "not an IP address",
        ),
        (
            json!({ "allow": [" 10.0.0.0/8"] }),
            "allow[0]",
            "not an IP address",
        ),
        (
            json!({ "allow": ["010.0.0.1"] }),
            "allow[0]",
            "not an IP address",
        ),
        (
            json!({ "allow": ["10.0.0.0/8/8"] }),
            "allow[0]",
            "not an IP address",
        ),
        (json!({ "allow": [] }), "allow", "must not be an empty list"),
        (json!({ "deny": [] }), "deny", "must not be an empty list"),
        (
            json!({ "deny": ["10.0.0.0/8"], "message": "" }),
            "message",
            "1 to 1024 bytes",
        ),
        (json!({ "deny": "10.0.0.0/8" }), "deny", "invalid type"),
        (
            json!({ "deny": ["10.0.0.0/8"], "alow": [] }),
            "alow",
            "unknown field",
        ),
    ];
    for (config, key, message) in cases {
        let err = config_error(config.clone());
        assert_eq!(err.key.as_deref(), Some(key), "{config}: {err}");
        assert!(err.message.contains(message), "{config}: {err}");
    }
    let err = config_error(json!({}));
    assert_eq!(err.key, None);
    assert!(
        err.message.contains("give `allow`, `deny` or both"),
        "{err}"
    );

    let many: Vec<String> = (0..=MAX_ENTRIES)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let err = config_error(json!({ "deny": many }));
    assert_eq!(err.key.as_deref(), Some("deny"));
}

#[test]
fn overlapping_and_touching_networks_are_merged() {
    let nets: Vec<_> = [
        "10.0.0.0/9",
        "10.128.0.0/9",
        "10.1.0.0/16",
        "11.0.0.0/8",
        "192.0.2.1",
        "192.0.2.3",
        "2001:db8::/33",
        "2001:db8:8000::/33",
    ]
    .iter()
    .map(|n| parse_net(n).unwrap())
    .collect();
    let ranges = Ranges::new(&nets);
    // 10/8 and 11/8 are one range, the two /33s another; the two hosts stay apart.
    assert_eq!(ranges.len(), 4);
    for (ip, inside) in [
        ("10.0.0.0", true),
        ("11.255.255.255", true),
        ("12.0.0.0", false),
        ("9.255.255.255", false),
        ("192.0.2.2", false),
        ("192.0.2.3", true),
        ("2001:db8:ffff::1", true),
        ("2001:db9::", false),
    ] {
        assert_eq!(ranges.contains(ip.parse().unwrap()), inside, "{ip}");
    }
}

/// A small deterministic generator (xorshift64*), so the comparison below is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn lookups_agree_with_a_linear_scan() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        // Few distinct high bits, so networks nest, overlap and touch often.
        let nets: Vec<IpNet> = (0..(round % 40 + 1))
            .map(|_| {
                let bits = rng.next();
                if bits & 1 == 0 {
                    let addr = Ipv4Addr::from((bits >> 8) as u32 & 0xff0f_ffff);
                    let prefix = (bits >> 40) as u8 % 33;
                    IpNet::V4(Ipv4Net::new(addr, prefix).unwrap().trunc())
                } else {
                    let high = u128::from(bits >> 8) << 64 & (0xff0f_u128 << 112 | u128::MAX >> 16);
                    let addr = Ipv6Addr::from(high | u128::from(rng.next()));
                    let prefix = (bits >> 40) as u8 % 129;
                    IpNet::V6(Ipv6Net::new(addr, prefix).unwrap().trunc())
                }
            })
            .collect();
        let ranges = Ranges::new(&nets);
        for _ in 0..200 {
            // Probe around the networks' edges as well as at random.
            let net = nets[rng.next() as usize % nets.len()];
            let ip: IpAddr = match (net, rng.next() % 4) {
                (IpNet::V4(n), 0) => n.network().into(),
                (IpNet::V4(n), 1) => n.broadcast().into(),
                (IpNet::V4(n), 2) => {
                    Ipv4Addr::from(u32::from(n.broadcast()).wrapping_add(1)).into()
                }
                (IpNet::V4(_), _) => Ipv4Addr::from(rng.next() as u32).into(),
                (IpNet::V6(n), 0) => n.network().into(),
                (IpNet::V6(n), 1) => n.broadcast().into(),
                (IpNet::V6(n), 2) => Ipv6Addr::from(u128::from(n.network()).wrapping_sub(1)).into(),
                (IpNet::V6(_), _) => Ipv6Addr::from(u128::from(rng.next()) << 64).into(),
            };
            let expected = nets.iter().any(|n| n.contains(&ip));
            assert_eq!(ranges.contains(ip), expected, "{ip} in {nets:?}");
        }
    }
}
