use serde_json::{Value, json};
use wasmgate_sdk::testing::{self, MockRequest, MockResponse};

use super::*;

const T0: u64 = 1_700_000_000_000;

fn start() {
    testing::reset();
    testing::set_now_millis(T0);
}

fn plugin(config: Value) -> RateLimit {
    testing::init::<RateLimit>(config).expect("valid config")
}

fn config_error(config: Value) -> ConfigError {
    testing::init::<RateLimit>(config).expect_err("config must be refused")
}

fn get() -> MockRequest {
    MockRequest::new("GET", "/items")
}

/// What the client would see: the plugin's reply, or a 200 from the upstream after the
/// plugin's response phase.
#[derive(Debug)]
struct Outcome {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Outcome {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `RateLimit-Limit`, `-Remaining` and `-Reset`.
    fn rate_headers(&self) -> (u64, u64, u64) {
        let num = |name: &str| -> u64 {
            self.header(name)
                .unwrap_or_else(|| panic!("no {name}: {self:?}"))
                .parse()
                .unwrap()
        };
        (
            num("ratelimit-limit"),
            num("ratelimit-remaining"),
            num("ratelimit-reset"),
        )
    }

    fn retry_after(&self) -> u64 {
        assert_eq!(self.status, 429, "{self:?}");
        self.header("retry-after").unwrap().parse().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn run(p: &mut RateLimit, mut req: MockRequest) -> Outcome {
    match testing::on_request(p, &mut req).unwrap() {
        Decision::Continue => {
            let mut resp = MockResponse::new(200);
            testing::on_response(p, &mut req, &mut resp).unwrap();
            Outcome {
                status: resp.status(),
                headers: resp.headers().to_vec(),
                body: resp.body().to_vec(),
            }
        }
        Decision::Respond(reply) => Outcome {
            status: reply.status,
            headers: reply.headers,
            body: reply.body,
        },
    }
}

fn statuses(p: &mut RateLimit, n: usize, req: impl Fn() -> MockRequest) -> Vec<u16> {
    (0..n).map(|_| run(p, req()).status).collect()
}

#[test]
fn burst_passes_exactly_then_refuses_with_headers() {
    start();
    let mut p = plugin(json!({ "rate": 1, "per": "hour", "burst": 5 }));
    let outcomes: Vec<Outcome> = (0..8).map(|_| run(&mut p, get())).collect();
    for (i, o) in outcomes[..5].iter().enumerate() {
        assert_eq!(o.status, 200, "request {i}");
        let i = i as u64;
        assert_eq!(o.rate_headers(), (5, 4 - i, 3_600 * (i + 1)), "request {i}");
        assert_eq!(o.header("retry-after"), None);
    }
    for o in &outcomes[5..] {
        assert_eq!(o.status, 429);
        assert_eq!(o.retry_after(), 3_600);
        assert_eq!(o.rate_headers(), (5, 0, 18_000));
        assert_eq!(o.header("content-type"), Some("application/json"));
        assert_eq!(
            o.json(),
            json!({ "error": "rate_limited", "message": "too many requests", "retry_after": 3600 })
        );
    }
}

#[test]
fn burst_defaults_to_rate() {
    start();
    let mut p = plugin(json!({ "rate": 3, "per": "minute" }));
    assert_eq!(statuses(&mut p, 5, get), [200, 200, 200, 429, 429]);
    assert_eq!(run(&mut p, get()).rate_headers().0, 3);
}

#[test]
fn tokens_come_back_as_time_passes() {
    start();
    let mut p = plugin(json!({ "rate": 2, "per": "second", "burst": 2 }));
    assert_eq!(statuses(&mut p, 3, get), [200, 200, 429]);
    testing::advance_millis(499);
    assert_eq!(run(&mut p, get()).status, 429);
    testing::advance_millis(1);
    let o = run(&mut p, get());
    assert_eq!(o.status, 200);
    assert_eq!(o.rate_headers(), (2, 0, 1));
    assert_eq!(run(&mut p, get()).status, 429);
    testing::advance_millis(60_000);
    assert_eq!(statuses(&mut p, 3, get), [200, 200, 429]);
}

#[test]
fn retry_after_and_reset_round_up_to_whole_seconds() {
    start();
    let mut p = plugin(json!({ "rate": 1, "per": "minute" }));
    assert_eq!(run(&mut p, get()).rate_headers(), (1, 0, 60));
    let o = run(&mut p, get());
    assert_eq!((o.retry_after(), o.rate_headers()), (60, (1, 0, 60)));
    testing::advance_millis(58_500);
    let o = run(&mut p, get());
    assert_eq!((o.retry_after(), o.rate_headers().2), (2, 2));
    testing::advance_millis(500);
    assert_eq!(run(&mut p, get()).retry_after(), 1);
    testing::advance_millis(999);
    // 1 ms to go still asks for a whole second, never 0.
    assert_eq!(run(&mut p, get()).retry_after(), 1);
    testing::advance_millis(1);
    assert_eq!(run(&mut p, get()).status, 200);

    // 500 ms refills: both headers round up to 1.
    let mut p = plugin(json!({ "rate": 2, "per": "second", "burst": 1 }));
    assert_eq!(run(&mut p, get()).rate_headers(), (1, 0, 1));
    assert_eq!(run(&mut p, get()).retry_after(), 1);
}

/// Limits listed in either order behave the same: the fast-refilling one is checked first, so
/// requests it refuses never charge the slow one.
#[test]
fn several_limits_must_all_pass_and_refusals_spare_the_slow_limit() {
    let per_second = json!({ "rate": 1, "per": "second", "burst": 1 });
    let per_hour = json!({ "rate": 3, "per": "hour", "burst": 3 });
    for limits in [
        json!([per_hour.clone(), per_second.clone()]),
        json!([per_second.clone(), per_hour.clone()]),
    ] {
        start();
        let mut p = plugin(json!({ "limits": limits }));
        // Per second: 0 left, refills in 1 s; per hour: 2 left. The first is reported.
        assert_eq!(run(&mut p, get()).rate_headers(), (1, 0, 1));
        // A client hammering within the second is refused by the per-second limit only.
        for _ in 0..10 {
            let o = run(&mut p, get());
            assert_eq!((o.retry_after(), o.rate_headers()), (1, (1, 0, 1)));
        }
        testing::advance_millis(1_000);
        assert_eq!(run(&mut p, get()).rate_headers(), (1, 0, 1));
        testing::advance_millis(1_000);
        // Both have 0 left: the hourly one, which takes longer to refill, is reported.
        assert_eq!(run(&mut p, get()).rate_headers(), (3, 0, 3_598));
        testing::advance_millis(1_000);
        let o = run(&mut p, get());
        assert_eq!(o.status, 429);
        assert_eq!(o.rate_headers().0, 3);
        assert_eq!(o.retry_after(), 1_197);
    }
}

#[test]
fn client_ip_key_is_the_default() {
    start();
    let mut p = plugin(json!({ "rate": 1, "per": "hour" }));
    let from = |ip: &'static str| move || get().with_client_addr(ip);
    assert_eq!(statuses(&mut p, 2, from("10.0.0.1")), [200, 429]);
    assert_eq!(statuses(&mut p, 2, from("10.0.0.2")), [200, 429]);
    assert_eq!(statuses(&mut p, 2, from("2001:db8::1")), [200, 429]);
}

#[test]
fn header_key_gives_each_value_its_own_bucket() {
    start();
    let mut p = plugin(json!({ "rate": 1, "per": "hour", "key": "header:X-Api-Key" }));
    let with = |key: &'static str, ip: &'static str| {
        move || get().with_header("x-api-key", key).with_client_addr(ip)
    };
    assert_eq!(statuses(&mut p, 2, with("alpha", "10.0.0.1")), [200, 429]);
    // The key, not the client, picks the bucket.
    assert_eq!(statuses(&mut p, 1, with("alpha", "10.0.0.2")), [429]);
    assert_eq!(statuses(&mut p, 2, with("beta", "10.0.0.1")), [200, 429]);
    // Only the first value counts.
    let two = || {
        get()
            .with_header("X-API-KEY", "gamma")
            .with_header("x-api-key", "alpha")
    };
    assert_eq!(statuses(&mut p, 2, two), [200, 429]);
}

#[test]
fn var_key_follows_an_earlier_plugins_variable() {
    start();
    let mut p = plugin(json!({ "rate": 2, "per": "minute", "key": "var:consumer" }));
    let as_ = |who: &'static str| move || get().with_var("consumer", who);
    assert_eq!(statuses(&mut p, 3, as_("alice")), [200, 200, 429]);
    assert_eq!(statuses(&mut p, 3, as_("bob")), [200, 200, 429]);
    assert_eq!(statuses(&mut p, 1, as_("Alice")), [200]);
}

#[test]
fn routes_do_not_share_buckets_unless_they_share_a_scope() {
    start();
    let config = json!({ "rate": 1, "per": "hour" });
    let on = |route: &'static str| move || get().with_route(route);
    // Two instances of one route share its buckets, as pooled instances on workers do.
    let mut a1 = plugin(config.clone());
    let mut a2 = plugin(config.clone());
    let mut b = plugin(config.clone());
    assert_eq!(statuses(&mut a1, 1, on("a")), [200]);
    assert_eq!(statuses(&mut a2, 1, on("a")), [429]);
    assert_eq!(statuses(&mut b, 2, on("b")), [200, 429]);

    // A shared scope joins routes; a different key or quota still keeps buckets apart.
    let shared = json!({ "rate": 1, "per": "hour", "scope": "team" });
    let mut a = plugin(shared.clone());
    let mut b = plugin(shared);
    assert_eq!(statuses(&mut a, 1, on("a")), [200]);
    assert_eq!(statuses(&mut b, 1, on("b")), [429]);
    let mut other_quota = plugin(json!({ "rate": 2, "per": "hour", "scope": "team" }));
    assert_eq!(statuses(&mut other_quota, 1, on("c")), [200]);
    let mut other_key =
        plugin(json!({ "rate": 1, "per": "hour", "scope": "team", "key": "global" }));
    assert_eq!(statuses(&mut other_key, 1, on("c")), [200]);
    // A scope never meets a route of the same name.
    let mut named_like_scope = plugin(json!({ "rate": 1, "per": "hour" }));
    assert_eq!(statuses(&mut named_like_scope, 1, on("team")), [200]);
}

#[test]
fn route_and_global_keys() {
    start();
    let on = |route: &'static str, ip: &'static str| {
        move || get().with_route(route).with_client_addr(ip)
    };
    // `route` in a shared scope: one bucket per route, whatever the client.
    let per_route = json!({ "rate": 1, "per": "hour", "scope": "s", "key": "route" });
    let mut a = plugin(per_route.clone());
    let mut b = plugin(per_route);
    assert_eq!(statuses(&mut a, 1, on("a", "10.0.0.1")), [200]);
    assert_eq!(statuses(&mut a, 1, on("a", "10.0.0.2")), [429]);
    assert_eq!(statuses(&mut b, 1, on("b", "10.0.0.1")), [200]);

    // `global` in a shared scope: one bucket for every route and client.
    let global = json!({ "rate": 2, "per": "hour", "scope": "s", "key": "global" });
    let mut a = plugin(global.clone());
    let mut b = plugin(global);
    assert_eq!(statuses(&mut a, 1, on("a", "10.0.0.1")), [200]);
    assert_eq!(statuses(&mut b, 1, on("b", "10.0.0.2")), [200]);
    assert_eq!(statuses(&mut a, 1, on("a", "10.0.0.3")), [429]);
}

#[test]
fn missing_key_is_refused_by_default() {
    start();
    for config in [
        json!({ "rate": 1, "per": "hour", "key": "header:x-api-key" }),
        json!({ "rate": 1, "per": "hour", "key": "header:x-api-key", "on_missing_key": "reject" }),
    ] {
        let mut p = plugin(config);
        for req in [get(), get().with_header("x-api-key", "")] {
            let o = run(&mut p, req);
            assert_eq!(o.status, 400);
            assert_eq!(o.header("content-type"), Some("application/json"));
            assert_eq!(o.json()["error"], "bad_request");
            assert_eq!(
                o.json()["message"],
                "missing rate limit key (header:x-api-key)"
            );
            assert_eq!(o.header("ratelimit-limit"), None);
        }
    }
    let mut p = plugin(json!({ "rate": 1, "per": "hour", "key": "var:consumer" }));
    assert_eq!(run(&mut p, get()).status, 400);
    assert_eq!(run(&mut p, get().with_var("consumer", "")).status, 400);
}

#[test]
fn missing_key_can_fall_back_to_the_client_ip() {
    start();
    let mut p = plugin(json!({
        "rate": 1, "per": "hour", "key": "header:x-api-key", "on_missing_key": "client_ip"
    }));
    let anonymous = |ip: &'static str| move || get().with_client_addr(ip);
    assert_eq!(statuses(&mut p, 2, anonymous("10.0.0.1")), [200, 429]);
    assert_eq!(statuses(&mut p, 2, anonymous("10.0.0.2")), [200, 429]);
    // A key that spells a client IP is not that client's fallback bucket.
    let spelled = || get().with_header("x-api-key", "10.0.0.1");
    assert_eq!(statuses(&mut p, 2, spelled), [200, 429]);
    let keyed = || {
        get()
            .with_client_addr("10.0.0.1")
            .with_header("x-api-key", "k")
    };
    assert_eq!(statuses(&mut p, 1, keyed), [200]);
}

#[test]
fn response_phase_replaces_upstream_rate_limit_headers() {
    start();
    let mut p = plugin(json!({ "rate": 10, "per": "second", "burst": 4 }));
    let mut req = get();
    assert!(testing::on_request(&mut p, &mut req).unwrap().is_continue());
    let mut resp = MockResponse::new(200)
        .with_header("RateLimit-Limit", "999")
        .with_header("RateLimit-Remaining", "999");
    testing::on_response(&mut p, &mut req, &mut resp).unwrap();
    assert_eq!(resp.header_values("ratelimit-limit"), ["4"]);
    assert_eq!(resp.header_values("ratelimit-remaining"), ["3"]);
    assert_eq!(resp.header_values("ratelimit-reset"), ["1"]);
}

#[test]
fn response_phase_ignores_a_missing_or_garbled_status() {
    start();
    let mut p = plugin(json!({ "rate": 1, "per": "hour" }));
    for var in [
        None,
        Some("junk"),
        Some("1 2"),
        Some("1 2 3 4"),
        Some("-1 0 0"),
    ] {
        let mut req = get();
        if let Some(v) = var {
            req = req.with_var(STATUS_VAR, v);
        }
        let mut resp = MockResponse::new(502);
        assert!(
            testing::on_response(&mut p, &mut req, &mut resp)
                .unwrap()
                .is_continue()
        );
        assert!(resp.headers().is_empty(), "{var:?}: {resp:?}");
    }
    // In the request phase a garbled status is overwritten with this plugin's own.
    let o = run(&mut p, get().with_var(STATUS_VAR, "x y z"));
    assert_eq!(o.rate_headers(), (1, 0, 3_600));
}

/// Two rate-limit entries on one route: the tighter numbers win in both phases, including on
/// the second entry's 429, which the first entry's response phase sees.
#[test]
fn stacked_entries_report_the_tighter_limit() {
    start();
    let mut per_ip = plugin(json!({ "rate": 10, "per": "minute" }));
    let mut per_key = plugin(json!({ "rate": 2, "per": "hour", "key": "header:x-k" }));
    let req = || get().with_header("x-k", "k");
    let through = |per_ip: &mut RateLimit, per_key: &mut RateLimit| {
        let mut req = req();
        assert!(testing::on_request(per_ip, &mut req).unwrap().is_continue());
        let mut resp = match testing::on_request(per_key, &mut req).unwrap() {
            Decision::Continue => {
                let mut resp = MockResponse::new(200);
                testing::on_response(per_key, &mut req, &mut resp).unwrap();
                resp
            }
            Decision::Respond(reply) => {
                let mut resp = MockResponse::new(reply.status);
                for (n, v) in &reply.headers {
                    resp = resp.with_header(n, v);
                }
                resp
            }
        };
        testing::on_response(per_ip, &mut req, &mut resp).unwrap();
        let headers = |n: &str| resp.header_values(n).join(",");
        (
            resp.status(),
            headers("ratelimit-limit"),
            headers("ratelimit-remaining"),
            headers("retry-after"),
        )
    };
    let s = |v: &str| v.to_string();
    assert_eq!(
        through(&mut per_ip, &mut per_key),
        (200, s("2"), s("1"), s(""))
    );
    assert_eq!(
        through(&mut per_ip, &mut per_key),
        (200, s("2"), s("0"), s(""))
    );
    assert_eq!(
        through(&mut per_ip, &mut per_key),
        (429, s("2"), s("0"), s("1800"))
    );
}

#[test]
fn hostile_keys_are_bounded_and_kept_apart() {
    start();
    let mut p = plugin(json!({ "rate": 1, "per": "hour", "key": "header:authorization" }));
    let long_a = format!("Bearer {}a", "x".repeat(4_000));
    let long_b = format!("Bearer {}b", "x".repeat(4_000));
    let with = |v: &str| {
        let v = v.to_owned();
        move || get().with_header("authorization", &v)
    };
    assert_eq!(statuses(&mut p, 2, with(&long_a)), [200, 429]);
    assert_eq!(statuses(&mut p, 2, with(&long_b)), [200, 429]);
    let at_limit = "y".repeat(MAX_HOST_KEY);
    assert_eq!(statuses(&mut p, 2, with(&at_limit)), [200, 429]);
    assert_eq!(statuses(&mut p, 1, with("\u{e9}\u{1f600} \t")), [200]);

    let mut p = plugin(json!({ "rate": 1, "per": "hour", "key": "var:who" }));
    let weird = || get().with_var("who", "a\0b\r\nx-injected: 1");
    assert_eq!(statuses(&mut p, 2, weird), [200, 429]);

    // A huge route name still opens (its limiter name is hashed).
    let route = "r".repeat(5_000);
    let mut p = plugin(json!({ "rate": 1, "per": "hour" }));
    let on = || get().with_route(&route);
    assert_eq!(statuses(&mut p, 2, on), [200, 429]);
}

#[test]
fn bounded_hashes_only_what_the_host_would_refuse() {
    let short = "k".repeat(MAX_HOST_KEY);
    assert_eq!(bounded(Cow::Borrowed(&short)), short.as_str());
    let long = "k".repeat(MAX_HOST_KEY + 1);
    let hashed = bounded(Cow::Borrowed(&long)).into_owned();
    assert_eq!(hashed.len(), 7 + 64);
    assert!(hashed.starts_with("sha256:"), "{hashed}");
    assert!(hashed[7..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(bounded(Cow::Borrowed(&long)), hashed.as_str());
    assert_ne!(bounded(Cow::Owned(format!("{long}x"))), hashed.as_str());
}

#[test]
fn status_round_trips_and_picks_the_tighter() {
    let s = Status {
        limit: 5,
        remaining: 2,
        reset_ms: 1_001,
    };
    assert_eq!(Status::decode(&s.encode()), Some(s));
    assert_eq!(Status::decode("5 2"), None);
    assert_eq!(Status::decode("5 2 1 1"), None);
    assert_eq!(Status::decode("5 2 x"), None);
    assert_eq!(Status::decode(""), None);
    let fewer = Status { remaining: 1, ..s };
    let slower = Status {
        reset_ms: 9_000,
        ..s
    };
    assert_eq!(s.tighter(Some(fewer)), fewer);
    assert_eq!(fewer.tighter(Some(s)), fewer);
    assert_eq!(s.tighter(Some(slower)), slower);
    assert_eq!(s.tighter(None), s);
    assert_eq!(
        s.headers().map(|(_, v)| v),
        ["5".to_string(), "2".into(), "2".into()]
    );
}

#[test]
fn bad_configs_name_the_key() {
    let limit = || json!({ "rate": 1, "per": "second" });
    let cases = [
        (json!({}), "rate"),
        (json!({ "per": "second" }), "rate"),
        (json!({ "burst": 3 }), "rate"),
        (json!({ "rate": 1 }), "per"),
        (json!({ "rate": 0, "per": "second" }), "rate"),
        (json!({ "rate": -1, "per": "second" }), "rate"),
        (json!({ "rate": 1.5, "per": "second" }), "rate"),
        (json!({ "rate": 1, "per": "day" }), "per"),
        (json!({ "rate": 1, "per": "second", "burst": 0 }), "burst"),
        (
            json!({ "rate": 1, "per": "second", "burst": 5_000_000_000u64 }),
            "burst",
        ),
        (
            json!({ "rate": 1, "per": "second", "limits": [limit()] }),
            "limits",
        ),
        (json!({ "limits": [] }), "limits"),
        (json!({ "limits": vec![limit(); 2] }), "limits[1]"),
        (
            json!({ "limits": (1..=9).map(|r| json!({ "rate": r, "per": "hour" })).collect::<Vec<_>>() }),
            "limits",
        ),
        (
            json!({ "limits": [limit(), { "rate": 1, "per": "days" }] }),
            "limits[1].per",
        ),
        (
            json!({ "limits": [limit(), { "rate": 0, "per": "hour" }] }),
            "limits[1].rate",
        ),
        (
            json!({ "limits": [limit(), { "rate": 2, "per": "hour", "burst": 0 }] }),
            "limits[1].burst",
        ),
        (
            json!({ "limits": [limit(), { "per": "hour" }] }),
            "limits[1]",
        ),
        (
            json!({ "limits": [limit(), { "rate": 2, "per": "hour", "brust": 1 }] }),
            "limits[1].brust",
        ),
        (json!({ "limits": limit() }), "limits"),
        (json!({ "rate": 1, "per": "second", "key": "ip" }), "key"),
        (
            json!({ "rate": 1, "per": "second", "key": "header:" }),
            "key",
        ),
        (
            json!({ "rate": 1, "per": "second", "key": "header:bad name" }),
            "key",
        ),
        (json!({ "rate": 1, "per": "second", "key": "var:" }), "key"),
        (
            json!({ "rate": 1, "per": "second", "key": "cookie:sid" }),
            "key",
        ),
        (json!({ "rate": 1, "per": "second", "key": 7 }), "key"),
        (
            json!({ "rate": 1, "per": "second", "on_missing_key": "allow" }),
            "on_missing_key",
        ),
        (json!({ "rate": 1, "per": "second", "scope": "" }), "scope"),
        (
            json!({ "rate": 1, "per": "second", "scope": "a\nb" }),
            "scope",
        ),
        (
            json!({ "rate": 1, "per": "second", "scope": "s".repeat(MAX_NAME + 1) }),
            "scope",
        ),
        (json!({ "rate": 1, "per": "second", "ratee": 1 }), "ratee"),
    ];
    for (config, key) in cases {
        let err = config_error(config.clone());
        assert_eq!(err.key.as_deref(), Some(key), "{config}: {err}");
        assert!(!err.message.is_empty());
    }
    assert!(
        config_error(json!({ "limits": [{ "rate": 1, "per": "days" }] }))
            .message
            .contains("second"),
    );
}

#[test]
fn good_configs_load() {
    for config in [
        json!({ "rate": 1, "per": "second" }),
        json!({ "rate": 100, "per": "minute", "burst": 20, "key": "header:X-Api-Key", "on_missing_key": "client_ip" }),
        json!({ "rate": 1, "per": "hour", "key": "var:consumer", "scope": "partners" }),
        json!({ "rate": 1, "per": "hour", "key": "route", "on_missing_key": "client_ip" }),
        json!({ "limits": [
            { "rate": 10, "per": "second" },
            { "rate": 10, "per": "second", "burst": 20 },
            { "rate": 1000, "per": "hour", "burst": 100 },
        ] }),
        json!({ "rate": u32::MAX, "per": "second", "burst": u32::MAX, "key": "global" }),
    ] {
        let p = plugin(config);
        assert_eq!(p.registration(), Registration::request_only());
    }
    let p = plugin(json!({ "limits": [
        { "rate": 1, "per": "hour" },
        { "rate": 5, "per": "second", "burst": 50 },
        { "rate": 5, "per": "second", "burst": 5 },
        { "rate": 1, "per": "minute" },
    ] }));
    assert_eq!(
        p.quotas
            .iter()
            .map(|q| (q.count, q.period_ms, q.burst))
            .collect::<Vec<_>>(),
        [
            (5, 1_000, 5),
            (5, 1_000, 50),
            (1, 60_000, 1),
            (1, 3_600_000, 1)
        ]
    );
}
