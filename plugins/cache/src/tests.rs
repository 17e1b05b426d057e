use serde_json::{Value, json};
use wasmgate_sdk::Reply;
use wasmgate_sdk::testing::{self, KvLimits, MockRequest, MockResponse};

use super::*;

const T0: u64 = 1_700_000_000_000;

fn start() {
    testing::reset();
    testing::set_now_millis(T0);
}

fn secs(s: u64) {
    testing::advance_millis(s * 1000);
}

/// The README's example: `/api/products` for 300 s, `/api/users` for 60 s.
fn seed() -> Value {
    json!({ "paths": [
        { "prefix": "/api/products", "ttl_s": 300 },
        { "prefix": "/api/users", "ttl_s": 60 },
    ] })
}

fn with(mut config: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn plugin(config: Value) -> Cache {
    testing::init::<Cache>(config).expect("valid config")
}

fn config_error(config: Value) -> ConfigError {
    testing::init::<Cache>(config).expect_err("config must be refused")
}

fn get(target: &str) -> MockRequest {
    MockRequest::new("GET", target).with_header("host", "api.example.com")
}

fn ok(body: &str) -> MockResponse {
    MockResponse::new(200)
        .with_header("content-type", "application/json")
        .with_body(body)
}

/// What the client got, and whether the upstream was asked.
#[derive(Debug)]
struct Outcome {
    upstream: bool,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The bound the request phase put on the response body.
    bound: Option<usize>,
}

impl Outcome {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn x_cache(&self) -> &str {
        self.header("x-cache")
            .unwrap_or_else(|| panic!("no x-cache: {self:?}"))
    }

    fn age(&self) -> Option<u64> {
        self.header("age").map(|a| a.parse().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// One request through the plugin, with `upstream` as the upstream's answer when it is asked.
fn run(p: &mut Cache, mut req: MockRequest, mut upstream: MockResponse) -> Outcome {
    let reply = |upstream, reply: Reply, bound| Outcome {
        upstream,
        status: reply.status,
        headers: reply.headers,
        body: reply.body,
        bound,
    };
    match testing::on_request(p, &mut req).unwrap() {
        Decision::Respond(r) => reply(false, r, req.response_body_bound()),
        Decision::Continue => {
            let bound = req.response_body_bound();
            match testing::on_response(p, &mut req, &mut upstream).unwrap() {
                Decision::Respond(r) => reply(true, r, bound),
                Decision::Continue => Outcome {
                    upstream: true,
                    status: upstream.status(),
                    headers: upstream.headers().to_vec(),
                    body: upstream.body().to_vec(),
                    bound,
                },
            }
        }
    }
}

/// Runs `req` twice with the same upstream answer; returns whether the second was a hit.
fn stored(
    p: &mut Cache,
    req: impl Fn() -> MockRequest,
    upstream: impl Fn() -> MockResponse,
) -> bool {
    let first = run(p, req(), upstream());
    assert!(first.upstream, "{first:?}");
    let second = run(p, req(), upstream());
    !second.upstream
}

#[test]
fn a_miss_is_stored_and_then_answered_with_its_age() {
    start();
    let mut p = plugin(seed());
    let miss = run(&mut p, get("/api/products/1"), ok(r#"{"id":1}"#));
    assert!(miss.upstream);
    assert_eq!(miss.x_cache(), "MISS");
    assert_eq!(miss.age(), None);
    assert_eq!(miss.bound, Some(60 * 1024));

    testing::advance_millis(5_500);
    let hit = run(&mut p, get("/api/products/1"), MockResponse::new(500));
    assert!(!hit.upstream, "{hit:?}");
    assert_eq!(hit.status, 200);
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.age(), Some(5));
    assert_eq!(hit.text(), r#"{"id":1}"#);
    assert_eq!(hit.header("content-type"), Some("application/json"));

    secs(290);
    assert_eq!(run(&mut p, get("/api/products/1"), ok("")).age(), Some(295));
    // Fresh for 300 s from the store, then a miss again.
    testing::advance_millis(4_500);
    let again = run(&mut p, get("/api/products/1"), ok(r#"{"id":1,"v":2}"#));
    assert!(again.upstream);
    assert_eq!(again.x_cache(), "MISS");
    assert_eq!(
        run(&mut p, get("/api/products/1"), ok("")).text(),
        r#"{"id":1,"v":2}"#
    );
}

#[test]
fn the_key_holds_host_path_and_query() {
    start();
    let mut p = plugin(seed());
    run(&mut p, get("/api/products?page=1"), ok("page 1"));
    assert!(run(&mut p, get("/api/products?page=1"), ok("")).text() == "page 1");
    for other in [
        get("/api/products?page=2"),
        get("/api/products"),
        get("/api/products?"),
        MockRequest::new("GET", "/api/products?page=1").with_header("host", "other.example.com"),
    ] {
        assert!(run(&mut p, other, ok("other")).upstream);
    }
    // Host names are case-insensitive.
    let upper =
        MockRequest::new("GET", "/api/products?page=1").with_header("host", "API.Example.COM");
    assert!(!run(&mut p, upper, ok("")).upstream);
}

#[test]
fn each_prefix_has_its_ttl_and_the_longest_wins() {
    start();
    let mut p = plugin(json!({ "paths": [
        { "prefix": "/api", "ttl_s": 10 },
        { "prefix": "/api/products", "ttl_s": 300 },
        { "prefix": "/api/products/live", "ttl_s": 0 },
    ] }));
    for path in ["/api/products/1", "/api/users/1", "/api/productsx", "/api"] {
        run(&mut p, get(path), ok(path));
    }
    secs(9);
    for path in ["/api/products/1", "/api/users/1", "/api/productsx", "/api"] {
        assert!(!run(&mut p, get(path), ok("")).upstream, "{path}");
    }
    secs(1);
    assert!(!run(&mut p, get("/api/products/1"), ok("")).upstream);
    for path in ["/api/users/1", "/api/productsx", "/api"] {
        assert!(run(&mut p, get(path), ok("")).upstream, "{path}");
    }

    // A ttl of 0 and a path under no prefix are not cached: not read, no body buffered.
    for path in ["/api/products/live", "/api/products/live/9", "/other"] {
        let o = run(&mut p, get(path), ok("x"));
        assert_eq!((o.x_cache(), o.bound), ("BYPASS", Some(0)), "{path}");
        assert!(run(&mut p, get(path), ok("x")).upstream, "{path}");
    }

    // `default_ttl_s` covers paths under no prefix.
    let mut p = plugin(with(seed(), json!({ "default_ttl_s": 30 })));
    assert!(stored(&mut p, || get("/other"), || ok("x")));
    secs(30);
    assert!(run(&mut p, get("/other"), ok("x")).upstream);
}

#[test]
fn max_age_s_maxage_and_expires_shorten_the_ttl_never_lengthen_it() {
    start();
    let mut p = plugin(seed());
    let cc = |v: &str| ok("x").with_header("cache-control", v);

    run(&mut p, get("/api/products/a"), cc("max-age=10"));
    run(&mut p, get("/api/products/b"), cc("public, max-age=1000"));
    run(
        &mut p,
        get("/api/products/c"),
        cc("max-age=100, s-maxage=5"),
    );
    // Already 3 s old upstream: fresh for 7 more, and the age counts on.
    run(
        &mut p,
        get("/api/products/d"),
        cc("max-age=10").with_header("age", "3"),
    );
    let date = "Tue, 14 Nov 2023 22:13:20 GMT"; // T0
    let expires = |at: &str| ok("x").with_header("date", date).with_header("expires", at);
    run(
        &mut p,
        get("/api/products/e"),
        expires("Tue, 14 Nov 2023 22:13:40 GMT"),
    );

    secs(4);
    let d = run(&mut p, get("/api/products/d"), ok(""));
    assert_eq!((d.upstream, d.age()), (false, Some(7)));
    secs(1);
    let hits = |p: &mut Cache| -> Vec<bool> {
        ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| !run(p, get(&format!("/api/products/{n}")), ok("x")).upstream)
            .collect()
    };
    // At 5 s: c (s-maxage=5) is stale.
    assert_eq!(hits(&mut p), [true, true, false, true, true]);
    secs(2);
    // At 7 s: d (10 s, 3 of them upstream) too.
    assert_eq!(hits(&mut p), [true, true, true, false, true]);
    // c was stored again at 5 s; d at 7 s without `max-age`, for the prefix's 300 s.
    secs(3);
    // At 10 s: a; e (`Expires` 20 s after `Date`) holds.
    assert!(!hits(&mut p)[0]);
    assert!(!run(&mut p, get("/api/products/e"), ok("")).upstream);
    secs(10);
    assert!(run(&mut p, get("/api/products/e"), ok("")).upstream);
    // b is held for the prefix's 300 s, not the upstream's 1000.
    secs(279);
    assert!(!run(&mut p, get("/api/products/b"), ok("")).upstream);
    secs(1);
    assert!(run(&mut p, get("/api/products/b"), ok("")).upstream);

    // Zero or past freshness, or an `Expires` that is no date: not stored.
    for (i, resp) in [
        cc("max-age=0"),
        cc("s-maxage=0, max-age=60"),
        cc("max-age=10").with_header("age", "10"),
        expires("Tue, 14 Nov 2023 22:13:19 GMT"),
        expires("0"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/api/products/none-{i}");
        assert!(!stored(&mut p, || get(&path), || resp.clone()), "{i}");
    }
}

#[test]
fn no_store_private_no_cache_and_set_cookie_are_not_stored() {
    start();
    let mut p = plugin(seed());
    for (i, resp) in [
        ok("x").with_header("cache-control", "no-store"),
        ok("x").with_header("cache-control", "private, max-age=60"),
        ok("x").with_header("cache-control", r#"private="x-user""#),
        ok("x")
            .with_header("Cache-Control", "max-age=60")
            .with_header("cache-control", "no-cache"),
        ok("x").with_header("set-cookie", "session=abc"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/api/products/{i}");
        assert!(!stored(&mut p, || get(&path), || resp.clone()), "{i}");
    }

    // `strip`: stored without the cookie, which only the client of the miss gets.
    let mut p = plugin(with(seed(), json!({ "set_cookie": "strip" })));
    let cookie = || {
        ok("x")
            .with_header("set-cookie", "session=abc")
            .with_header("x-a", "1")
    };
    let miss = run(&mut p, get("/api/products/c"), cookie());
    assert_eq!(miss.header("set-cookie"), Some("session=abc"));
    let hit = run(&mut p, get("/api/products/c"), cookie());
    assert!(!hit.upstream);
    assert_eq!(hit.header("set-cookie"), None);
    assert_eq!(hit.header("x-a"), Some("1"));
}

#[test]
fn only_the_configured_statuses_are_stored() {
    start();
    let mut p = plugin(seed());
    for (status, kept) in [
        (200, true),
        (203, true),
        (204, true),
        (301, true),
        (404, true),
        (410, true),
        (201, false),
        (206, false),
        (302, false),
        (304, false),
        (400, false),
        (403, false),
    ] {
        let path = format!("/api/products/{status}");
        let is_stored = stored(&mut p, || get(&path), || MockResponse::new(status));
        assert_eq!(is_stored, kept, "{status}");
    }
    let config = json!({ "statuses": [200, 308, 501], "stale_if_error_s": 60 });
    let mut p = plugin(with(seed(), config));
    let moved = || MockResponse::new(308);
    assert!(stored(&mut p, || get("/api/products/a"), moved));
    // A 501 stored is an answer, not a failure a stale entry stands in for.
    let unimplemented = || MockResponse::new(501);
    assert!(stored(&mut p, || get("/api/products/c"), unimplemented));
    assert!(!stored(
        &mut p,
        || get("/api/products/b"),
        || MockResponse::new(404)
    ));
    let hit = run(&mut p, get("/api/products/a"), ok(""));
    assert_eq!(hit.status, 308);
}

#[test]
fn a_client_no_cache_refreshes_bypasses_or_is_ignored_as_configured() {
    start();
    let no_cache = |target: &str| get(target).with_header("cache-control", "no-cache");
    let reload = |target: &str| get(target).with_header("Cache-Control", "max-age=0");

    // refresh (the default): not read; the answer replaces the entry.
    let mut p = plugin(seed());
    run(&mut p, get("/api/products/1"), ok("v1"));
    let o = run(&mut p, no_cache("/api/products/1"), ok("v2"));
    assert!(o.upstream);
    assert_eq!((o.x_cache(), o.text()), ("BYPASS", "v2"));
    assert_eq!(run(&mut p, get("/api/products/1"), ok("")).text(), "v2");
    let o = run(&mut p, reload("/api/products/1"), ok("v3"));
    assert_eq!((o.upstream, o.x_cache()), (true, "BYPASS"));
    assert_eq!(run(&mut p, get("/api/products/1"), ok("")).text(), "v3");

    // bypass: not read, not stored, no body buffered.
    let mut p = plugin(with(seed(), json!({ "client_no_cache": "bypass" })));
    let o = run(&mut p, no_cache("/api/products/2"), ok("v1"));
    assert_eq!(
        (o.upstream, o.x_cache(), o.bound),
        (true, "BYPASS", Some(0))
    );
    assert!(run(&mut p, get("/api/products/2"), ok("v2")).upstream);
    assert!(run(&mut p, no_cache("/api/products/2"), ok("v3")).upstream);
    assert_eq!(run(&mut p, get("/api/products/2"), ok("")).text(), "v2");

    // ignore: a hit like any other request.
    let mut p = plugin(with(seed(), json!({ "client_no_cache": "ignore" })));
    run(&mut p, get("/api/products/3"), ok("v1"));
    let o = run(&mut p, no_cache("/api/products/3"), ok("v2"));
    assert_eq!((o.upstream, o.x_cache(), o.text()), (false, "HIT", "v1"));

    // A client's no-store: answered from the cache, but its own response is not stored.
    let mut p = plugin(seed());
    let no_store = || get("/api/products/4").with_header("cache-control", "no-store");
    let o = run(&mut p, no_store(), ok("v1"));
    assert_eq!((o.x_cache(), o.bound), ("MISS", Some(0)));
    assert!(run(&mut p, get("/api/products/4"), ok("v2")).upstream);
    assert!(!run(&mut p, no_store(), ok("")).upstream);
}

#[test]
fn vary_headers_key_separate_entries() {
    start();
    let mut p = plugin(with(seed(), json!({ "vary": ["Accept", "x-tenant"] })));
    let req = |accept: &str| get("/api/products").with_header("accept", accept);
    run(&mut p, req("application/json"), ok("json"));
    run(&mut p, req("application/xml"), ok("xml"));
    run(&mut p, get("/api/products"), ok("none"));
    assert_eq!(run(&mut p, req("application/json"), ok("")).text(), "json");
    assert_eq!(run(&mut p, req("application/xml"), ok("")).text(), "xml");
    assert_eq!(run(&mut p, get("/api/products"), ok("")).text(), "none");
    // An empty value is not an absent one; a second header is a part of the value.
    assert!(run(&mut p, req(""), ok("")).upstream);
    let tenant = req("application/json").with_header("x-tenant", "a");
    assert!(run(&mut p, tenant.clone(), ok("a")).upstream);
    assert!(!run(&mut p, tenant.clone(), ok("")).upstream);
    assert!(run(&mut p, tenant.with_header("x-tenant", "b"), ok("ab")).upstream);

    // The upstream's own `Vary` must name only headers the key holds.
    for (i, vary) in ["accept-language", "*", "Accept, Cookie"]
        .into_iter()
        .enumerate()
    {
        let path = format!("/api/users/{i}");
        let resp = || ok("x").with_header("vary", vary);
        assert!(!stored(&mut p, || get(&path), resp), "{vary}");
    }
    let resp = || ok("x").with_header("vary", "Accept, X-Tenant");
    assert!(stored(&mut p, || get("/api/users/ok"), resp));
}

#[test]
fn var_consumer_keys_each_consumer_and_lets_authorized_responses_be_stored() {
    start();
    let mut p = plugin(with(seed(), json!({ "vary": ["var:consumer"] })));
    let as_ = |who: &str| {
        get("/api/users/me")
            .with_header("authorization", &format!("Bearer {who}"))
            .with_var("consumer", who)
    };
    run(&mut p, as_("alice"), ok("alice"));
    run(&mut p, as_("bob"), ok("bob"));
    assert_eq!(run(&mut p, as_("alice"), ok("")).text(), "alice");
    assert_eq!(run(&mut p, as_("bob"), ok("")).text(), "bob");
    assert!(run(&mut p, get("/api/users/me"), ok("anonymous")).upstream);

    // Without the identity in the key, a response to a request with `Authorization` is
    // stored only when it says it may be (RFC 9111 §3.5).
    let mut p = plugin(seed());
    let authorized = || get("/api/products/1").with_header("authorization", "Bearer t");
    assert!(!stored(&mut p, authorized, || ok("x")));
    for (i, cc) in ["public", "s-maxage=60", "must-revalidate"]
        .into_iter()
        .enumerate()
    {
        let req = || get(&format!("/api/products/{i}")).with_header("authorization", "Bearer t");
        assert!(
            stored(&mut p, req, || ok("x").with_header("cache-control", cc)),
            "{cc}"
        );
    }
}

#[test]
fn head_is_answered_from_the_get_entry() {
    start();
    let mut p = plugin(seed());
    let head =
        || MockRequest::new("HEAD", "/api/products/1").with_header("host", "api.example.com");

    // A HEAD miss goes upstream and stores nothing (it has no body to store).
    let o = run(&mut p, head(), MockResponse::new(200));
    assert_eq!((o.upstream, o.x_cache(), o.bound), (true, "MISS", Some(0)));
    assert!(run(&mut p, get("/api/products/1"), ok("body")).upstream);

    secs(2);
    let o = run(&mut p, head(), MockResponse::new(500));
    assert_eq!(
        (o.upstream, o.status, o.x_cache(), o.age()),
        (false, 200, "HIT", Some(2))
    );
    assert!(o.body.is_empty());
    assert_eq!(o.header("content-type"), Some("application/json"));
}

#[test]
fn other_methods_pass_by_unread_and_unbuffered() {
    start();
    let mut p = plugin(seed());
    run(&mut p, get("/api/products/1"), ok("cached"));
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let req =
            MockRequest::new(method, "/api/products/1").with_header("host", "api.example.com");
        let o = run(&mut p, req, ok("fresh"));
        assert_eq!(
            (o.upstream, o.x_cache(), o.bound),
            (true, "BYPASS", Some(0)),
            "{method}"
        );
    }
}

#[test]
fn stale_entries_answer_upstream_failures_within_the_window() {
    start();
    let mut p = plugin(with(seed(), json!({ "stale_if_error_s": 30 })));
    run(&mut p, get("/api/products/1"), ok("kept"));
    run(
        &mut p,
        get("/api/products/2"),
        ok("x").with_header("cache-control", "must-revalidate"),
    );
    run(
        &mut p,
        get("/api/products/3"),
        ok("x").with_header("cache-control", "s-maxage=300"),
    );

    secs(310);
    for status in [500, 502, 503, 504] {
        let o = run(
            &mut p,
            get("/api/products/1"),
            MockResponse::new(status).with_body("down"),
        );
        assert!(o.upstream);
        assert_eq!(
            (o.status, o.x_cache(), o.age(), o.text()),
            (200, "STALE", Some(310), "kept")
        );
    }
    // A HEAD gets it too, without the body.
    let head = MockRequest::new("HEAD", "/api/products/1").with_header("host", "api.example.com");
    let o = run(&mut p, head, MockResponse::new(502));
    assert_eq!((o.status, o.x_cache(), o.body.len()), (200, "STALE", 0));
    // Revalidation required: never stale.
    for path in ["/api/products/2", "/api/products/3"] {
        assert_eq!(
            run(&mut p, get(path), MockResponse::new(502)).status,
            502,
            "{path}"
        );
    }
    // Past the window, the failure is the answer.
    secs(20);
    let o = run(
        &mut p,
        get("/api/products/1"),
        MockResponse::new(502).with_body("down"),
    );
    assert_eq!((o.status, o.x_cache(), o.text()), (502, "MISS", "down"));

    // Without a window, a stored entry never answers a failure.
    let mut p = plugin(seed());
    run(&mut p, get("/api/products/9"), ok("x"));
    let refresh = get("/api/products/9").with_header("cache-control", "no-cache");
    assert_eq!(run(&mut p, refresh, MockResponse::new(503)).status, 503);
    secs(301);
    assert_eq!(
        run(&mut p, get("/api/products/9"), MockResponse::new(503)).status,
        503
    );
}

#[test]
fn a_fresh_entry_answers_a_failed_refresh() {
    start();
    let mut p = plugin(with(seed(), json!({ "stale_if_error_s": 30 })));
    run(&mut p, get("/api/products/1"), ok("kept"));
    let refresh = get("/api/products/1").with_header("cache-control", "no-cache");
    let o = run(&mut p, refresh, MockResponse::new(503));
    assert_eq!(
        (o.upstream, o.status, o.x_cache(), o.text()),
        (true, 200, "STALE", "kept")
    );
}

#[test]
fn a_response_larger_than_max_entry_bytes_is_not_stored() {
    start();
    let mut p = plugin(with(seed(), json!({ "max_entry_bytes": 100 })));
    let body = |n: usize| ok(&"x".repeat(n));
    let o = run(&mut p, get("/api/products/big"), body(101));
    assert_eq!(
        (o.bound, o.body.len(), o.x_cache()),
        (Some(100), 101, "MISS")
    );
    assert!(run(&mut p, get("/api/products/big"), body(101)).upstream);
    assert!(stored(&mut p, || get("/api/products/fits"), || body(100)));
    assert!(
        testing::logs()
            .iter()
            .any(|(level, line)| *level == Level::Debug
                && line == "/api/products/big not stored: body larger than max_entry_bytes")
    );
}

#[test]
fn a_value_kv_refuses_is_not_cached() {
    start();
    let mut p = plugin(with(seed(), json!({ "max_entry_bytes": 250_000 })));
    // The plugin's `kv_max_value_bytes` left at its default, 64 KiB.
    assert!(!stored(
        &mut p,
        || get("/api/products/a"),
        || ok(&"x".repeat(70_000))
    ));
    assert!(
        testing::logs()
            .iter()
            .any(|(_, line)| line.contains("kv refused it"))
    );
    // Raised, it fits.
    testing::set_kv_limits(KvLimits {
        max_value_bytes: 256 * 1024,
        ..KvLimits::default()
    });
    assert!(stored(
        &mut p,
        || get("/api/products/b"),
        || ok(&"x".repeat(200 * 1024))
    ));
    // And a full store refuses too, still without failing the request.
    testing::set_kv_limits(KvLimits {
        max_entries: 1,
        ..KvLimits::default()
    });
    assert!(!stored(&mut p, || get("/api/products/c"), || ok("x")));
}

#[test]
fn stored_headers_leave_out_hop_by_hop_age_and_x_cache() {
    start();
    let mut p = plugin(seed());
    let resp = ok("x")
        .with_header("connection", "close")
        .with_header("keep-alive", "timeout=5")
        .with_header("age", "1")
        .with_header("x-cache", "HIT from elsewhere")
        .with_header("etag", "\"v1\"");
    run(&mut p, get("/api/products/1"), resp);
    let hit = run(&mut p, get("/api/products/1"), ok(""));
    let names: Vec<&str> = hit.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["content-type", "etag", "x-cache", "age"]);
    assert_eq!((hit.x_cache(), hit.age()), ("HIT", Some(1)));
}

#[test]
fn an_entry_that_does_not_decode_is_a_miss_and_is_replaced() {
    start();
    let mut p = plugin(seed());
    let mut req = get("/api/products/1");
    testing::on_request(&mut p, &mut req).unwrap();
    let key = Pending::decode(req.var(PENDING_VAR).unwrap()).unwrap().key;
    testing::on_response(&mut p, &mut req, &mut ok("v1")).unwrap();
    assert_eq!(kv::get(&key).map(|v| v.starts_with(b"v1")), Some(true));
    kv::set(&key, b"not an entry", None).unwrap();
    assert!(run(&mut p, get("/api/products/1"), ok("v2")).upstream);
    assert_eq!(run(&mut p, get("/api/products/1"), ok("")).text(), "v2");
}

#[test]
fn the_pending_var_round_trips() {
    let pending = Pending {
        store: true,
        authorized: false,
        head: true,
        ttl_ms: 300_000,
        key: "c1:ab".into(),
    };
    assert_eq!(pending.encode(), "101 300000 c1:ab");
    assert_eq!(Pending::decode(&pending.encode()), Some(pending));
    for bad in [
        "",
        "10 1 k",
        "1011 1 k",
        "102 1 k",
        "101 x k",
        "101 1",
        "101 1 k x",
    ] {
        assert_eq!(Pending::decode(bad), None, "{bad}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let key = |config: Value| config_error(config).key;
    let at = |k: &str| Some(k.to_string());
    assert_eq!(key(json!({})), at("paths"));
    assert_eq!(
        key(json!({ "paths": [{ "prefix": "/a", "ttl_s": 0 }] })),
        at("paths")
    );
    assert_eq!(
        key(json!({ "paths": [{ "prefix": "a", "ttl_s": 1 }] })),
        at("paths[0].prefix")
    );
    assert_eq!(
        key(json!({ "paths": [{ "prefix": "/a?b", "ttl_s": 1 }] })),
        at("paths[0].prefix")
    );
    assert_eq!(
        key(json!({ "paths": [{ "prefix": "/a", "ttl": 1 }] })),
        at("paths[0].ttl")
    );
    assert_eq!(
        key(json!({ "paths": [{ "prefix": "/a" }] })),
        at("paths[0]")
    );
    let dup = json!({ "paths": [{ "prefix": "/a", "ttl_s": 1 }, { "prefix": "/a", "ttl_s": 2 }] });
    let err = config_error(dup);
    assert_eq!(
        (err.key, err.message),
        (at("paths[1].prefix"), "repeats paths[0].prefix".into())
    );
    assert_eq!(
        key(json!({ "default_ttl_s": 31_536_001 })),
        at("default_ttl_s")
    );
    assert_eq!(
        key(json!({ "paths": [{ "prefix": "/a", "ttl_s": 31_536_001 }] })),
        at("paths[0].ttl_s")
    );
    assert_eq!(key(with(seed(), json!({ "ttl_s": 1 }))), at("ttl_s"));
    assert_eq!(
        key(with(seed(), json!({ "vary": ["ok", "bad name"] }))),
        at("vary[1]")
    );
    assert_eq!(
        key(with(seed(), json!({ "vary": ["var:"] }))),
        at("vary[0]")
    );
    assert_eq!(
        key(with(seed(), json!({ "vary": ["Accept", "accept"] }))),
        at("vary[1]")
    );
    let many: Vec<String> = (0..17).map(|i| format!("x-{i}")).collect();
    assert_eq!(key(with(seed(), json!({ "vary": many }))), at("vary"));
    assert_eq!(
        key(with(seed(), json!({ "max_entry_bytes": 0 }))),
        at("max_entry_bytes")
    );
    assert_eq!(
        key(with(
            seed(),
            json!({ "max_entry_bytes": 8 * 1024 * 1024 + 1 })
        )),
        at("max_entry_bytes")
    );
    assert_eq!(
        key(with(seed(), json!({ "stale_if_error_s": -1 }))),
        at("stale_if_error_s")
    );
    assert_eq!(
        key(with(seed(), json!({ "client_no_cache": "never" }))),
        at("client_no_cache")
    );
    assert_eq!(
        key(with(seed(), json!({ "set_cookie": "keep" }))),
        at("set_cookie")
    );
    assert_eq!(key(with(seed(), json!({ "statuses": [] }))), at("statuses"));
    assert_eq!(
        key(with(seed(), json!({ "statuses": [200, 500] }))),
        at("statuses[1]")
    );
    assert_eq!(
        key(with(seed(), json!({ "statuses": [200, 200] }))),
        at("statuses[1]")
    );

    // The README's example, and the largest values, load.
    testing::init::<Cache>(seed()).unwrap();
    testing::init::<Cache>(json!({
        "paths": [{ "prefix": "/", "ttl_s": 31_536_000 }],
        "default_ttl_s": 31_536_000,
        "vary": ["accept", "var:consumer"],
        "max_entry_bytes": 8 * 1024 * 1024,
        "stale_if_error_s": 31_536_000,
        "client_no_cache": "bypass",
        "set_cookie": "strip",
        "statuses": [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501],
    }))
    .unwrap();
}
