//! The plugin against the SDK's mock host: config errors, origin matching, preflights, and the
//! headers an actual response ends up with (the queued ones and the header rules together).

use serde_json::{Value, json};
use wasmgate_sdk::testing::{self, MockRequest, MockResponse};
use wasmgate_sdk::{Decision, Plugin, Reply};

use crate::{Cors, MAX_ORIGINS};

const A: &str = "https://app.example.com";

fn cors(config: Value) -> Cors {
    testing::init::<Cors>(config).expect("valid config")
}

fn error(config: Value) -> (String, String) {
    let err = testing::init::<Cors>(config).err().expect("refused");
    (err.key.unwrap_or_default(), err.message)
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> MockRequest {
    let req = MockRequest::new("OPTIONS", "/api/items")
        .with_header("Origin", origin)
        .with_header("Access-Control-Request-Method", method);
    match headers {
        Some(h) => req.with_header("Access-Control-Request-Headers", h),
        None => req,
    }
}

fn reply(plugin: &mut Cors, req: &mut MockRequest) -> Reply {
    match testing::on_request(plugin, req).unwrap() {
        Decision::Respond(reply) => reply,
        Decision::Continue => panic!("the preflight went on upstream"),
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Runs a request that is not a preflight through both phases and returns the response's
/// headers.
fn actual(plugin: &mut Cors, req: MockRequest, upstream: MockResponse) -> MockResponse {
    let mut req = req;
    assert_eq!(
        testing::on_request(plugin, &mut req).unwrap(),
        Decision::Continue
    );
    let mut resp = upstream;
    testing::on_response(plugin, &mut req, &mut resp).unwrap();
    resp
}

fn allows(config: Value, origin: &str) -> bool {
    let mut p = cors(config);
    let resp = actual(
        &mut p,
        MockRequest::new("GET", "/").with_header("origin", origin),
        MockResponse::new(200),
    );
    resp.header("access-control-allow-origin").is_some()
}

#[test]
fn config_errors_name_the_key() {
    let cases: &[(Value, &str, &str)] = &[
        (json!({}), "origins", "required"),
        (json!({"origins": []}), "origins", "at least one"),
        (
            json!({"origins": [A, "https://b.example.com/"]}),
            "origins[1]",
            "trailing slash",
        ),
        (
            json!({"origins": ["https://a.com/app"]}),
            "origins[0]",
            "no path",
        ),
        (
            json!({"origins": ["app.example.com"]}),
            "origins[0]",
            "scheme://host",
        ),
        (
            json!({"origins": ["https://u@a.com"]}),
            "origins[0]",
            "user info",
        ),
        (
            json!({"origins": ["https://a.com:443"]}),
            "origins[0]",
            "default port 443",
        ),
        (
            json!({"origins": ["http://a.com:80"]}),
            "origins[0]",
            "default port 80",
        ),
        (
            json!({"origins": ["http://a.com:0"]}),
            "origins[0]",
            "not a port",
        ),
        (
            json!({"origins": ["http://a.com:99999"]}),
            "origins[0]",
            "not a port",
        ),
        (
            json!({"origins": ["https://bücher.de"]}),
            "origins[0]",
            "punycode",
        ),
        (
            json!({"origins": ["https://a..com"]}),
            "origins[0]",
            "not a host name",
        ),
        (
            json!({"origins": ["https://a*.example.com"]}),
            "origins[0]",
            "leading labels",
        ),
        (
            json!({"origins": ["https://*.*.example.com"]}),
            "origins[0]",
            "only one",
        ),
        (
            json!({"origins": ["https://*.com"]}),
            "origins[0]",
            "every site under \"com\"",
        ),
        (
            json!({"origins": ["https://*.0.0.1"]}),
            "origins[0]",
            "not IP addresses",
        ),
        (json!({"origins": ["*", A]}), "origins[0]", "only entry"),
        (
            json!({"origins": ["*"], "credentials": true}),
            "origins[0]",
            "credentials",
        ),
        (
            json!({"origins": [A], "methods": []}),
            "methods",
            "at least one",
        ),
        (
            json!({"origins": [A], "methods": ["put"]}),
            "methods[0]",
            "upper-case",
        ),
        (
            json!({"origins": [A], "methods": ["GET", "BAD METHOD"]}),
            "methods[1]",
            "not an HTTP method",
        ),
        (
            json!({"origins": [A], "methods": ["*"], "credentials": true}),
            "methods[0]",
            "credentials",
        ),
        (
            json!({"origins": [A], "methods": ["GET", "*"]}),
            "methods[1]",
            "only entry",
        ),
        (
            json!({"origins": [A], "allowed_headers": ["x-ok", "bad header"]}),
            "allowed_headers[1]",
            "not a header name",
        ),
        (
            json!({"origins": [A], "allowed_headers": ["*"], "credentials": true}),
            "allowed_headers[0]",
            "credentials",
        ),
        (
            json!({"origins": [A], "exposed_headers": ["x:y"]}),
            "exposed_headers[0]",
            "not a header name",
        ),
        (
            json!({"origins": [A], "exposed_headers": ["*"], "credentials": true}),
            "exposed_headers[0]",
            "credentials",
        ),
        (
            json!({"origins": [A], "max_age_seconds": 86401}),
            "max_age_seconds",
            "at most 86400",
        ),
        (
            json!({"origins": [A], "max_age_seconds": -1}),
            "max_age_seconds",
            "",
        ),
        (
            json!({"origins": [A], "credentials": "yes"}),
            "credentials",
            "",
        ),
    ];
    for (config, key, message) in cases {
        let (k, m) = error(config.clone());
        assert_eq!(k, *key, "{config}: {m}");
        assert!(m.contains(message), "{config}: {m}");
    }
    let (_, m) = error(json!({"origins": [A], "origin": [A]}));
    assert!(m.contains("origin"), "{m}");
}

#[test]
fn origins_are_bounded() {
    let many: Vec<String> = (0..=MAX_ORIGINS)
        .map(|i| format!("https://app{i}.example.com"))
        .collect();
    let (key, message) = error(json!({ "origins": many }));
    assert_eq!(key, "origins");
    assert!(message.contains("more than the 256"), "{message}");
    cors(json!({ "origins": many[..MAX_ORIGINS] }));
}

#[test]
fn exact_origins_match_whole_origins_only() {
    let config = json!({"origins": [A, "http://localhost:8080", "http://[::1]:3000", "HTTPS://Upper.Example.com"]});
    for ok in [
        A,
        "http://localhost:8080",
        "http://[::1]:3000",
        "https://upper.example.com",
        "HTTPS://APP.EXAMPLE.COM",
    ] {
        assert!(allows(config.clone(), ok), "{ok}");
    }
    for no in [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.org",
        "https://evil-app.example.com",
        "https://x.app.example.com",
        "http://localhost",
        "http://localhost:8081",
        "null",
        "",
    ] {
        assert!(!allows(config.clone(), no), "{no}");
    }
}

#[test]
fn patterns_match_subdomains_at_any_depth_and_nothing_else() {
    let config = json!({"origins": ["https://*.example.com", "http://*.dev.example.org:8080"]});
    for ok in [
        "https://a.example.com",
        "https://a.b.example.com",
        "https://xn--bcher-kva.example.com",
        "http://api.dev.example.org:8080",
    ] {
        assert!(allows(config.clone(), ok), "{ok}");
    }
    for no in [
        "https://example.com",
        "https://.example.com",
        "https://a..example.com",
        "https://evil-example.com",
        "https://evilexample.com",
        "https://example.com.evil.org",
        "https://a.example.com.evil.org",
        "https://a.example.com:8443",
        "http://a.example.com",
        "https://evil.org/.example.com",
        "https://evil.org?.example.com",
        "https://evil.org#.example.com",
        "https://u@a.example.com",
        "https://a:1.example.com",
        "http://api.dev.example.org",
        "http://api.dev.example.org:8081",
        "http://api.dev.example.org:80800",
    ] {
        assert!(!allows(config.clone(), no), "{no}");
    }
}

#[test]
fn null_is_allowed_only_when_listed_or_by_a_star() {
    assert!(!allows(json!({"origins": [A]}), "null"));
    assert!(!allows(
        json!({"origins": ["https://*.example.com"]}),
        "null"
    ));
    assert!(allows(json!({"origins": [A, "null"]}), "null"));
    assert!(allows(json!({"origins": ["*"]}), "null"));
}

#[test]
fn a_preflight_is_answered_with_204_and_the_policy() {
    let mut p = cors(json!({
        "origins": [A],
        "methods": ["GET", "PUT", "PATCH"],
        "allowed_headers": ["Content-Type", "X-Custom"],
        "exposed_headers": ["x-request-id"],
        "max_age_seconds": 600
    }));
    let mut req = preflight(A, "PUT", Some("content-type,x-custom"));
    let r = reply(&mut p, &mut req);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(
        r.headers,
        [
            ("access-control-allow-origin", A),
            ("access-control-allow-methods", "GET, PUT, PATCH"),
            ("access-control-allow-headers", "content-type, x-custom"),
            ("access-control-max-age", "600"),
            (
                "vary",
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
            ),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    // Requested header names are matched case-insensitively, with or without spaces.
    let r = reply(
        &mut p,
        &mut preflight(A, "PATCH", Some(" X-CUSTOM , Content-Type")),
    );
    assert_eq!(r.status, 204);
    // No requested headers: the allowed ones are still listed, for the browser's cache.
    let r = reply(&mut p, &mut preflight(A, "GET", None));
    assert_eq!(r.status, 204);
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type, x-custom")
    );
}

#[test]
fn a_refused_preflight_is_a_403_without_cors_headers() {
    let mut p =
        cors(json!({"origins": [A], "methods": ["GET", "PUT"], "allowed_headers": ["x-custom"]}));
    for (mut req, why) in [
        (preflight("https://evil.example.org", "PUT", None), "origin"),
        (preflight(A, "DELETE", None), "method"),
        (preflight(A, "put", None), "method"),
        (preflight(A, "PUT", Some("x-custom, x-other")), "header"),
        (
            MockRequest::new("OPTIONS", "/").with_header("access-control-request-method", "PUT"),
            "origin",
        ),
    ] {
        let r = reply(&mut p, &mut req);
        assert_eq!(r.status, 403, "{why}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(&format!("{why} not allowed")),
            "{why}: {:?}",
            r.body
        );
        assert!(
            r.headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{:?}",
            r.headers
        );
        assert_eq!(
            header(&r, "vary"),
            Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
    }
}

#[test]
fn wildcards_echo_what_was_asked() {
    let mut p = cors(
        json!({"origins": ["*"], "methods": ["*"], "allowed_headers": ["*"], "exposed_headers": ["*"]}),
    );
    let r = reply(
        &mut p,
        &mut preflight(
            "https://anyone.test",
            "PROPFIND",
            Some("authorization, x-b"),
        ),
    );
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-methods"), Some("PROPFIND"));
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("authorization, x-b")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    // Nothing asked, nothing echoed.
    let r = reply(&mut p, &mut preflight("https://anyone.test", "PUT", None));
    assert_eq!(header(&r, "access-control-allow-headers"), None);
    // Garbage is not echoed.
    let r = reply(
        &mut p,
        &mut preflight("https://anyone.test", "PUT", Some("x-a, not a name")),
    );
    assert_eq!(r.status, 403);

    let resp = actual(
        &mut p,
        MockRequest::new("GET", "/").with_header("origin", "https://anyone.test"),
        MockResponse::new(200),
    );
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("access-control-expose-headers"), Some("*"));
}

#[test]
fn credentials_echo_the_origin_and_say_true() {
    let mut p = cors(
        json!({"origins": ["https://*.example.com"], "credentials": true, "methods": ["PUT"]}),
    );
    let r = reply(&mut p, &mut preflight("https://a.example.com", "PUT", None));
    assert_eq!(r.status, 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://a.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    let resp = actual(
        &mut p,
        MockRequest::new("POST", "/").with_header("origin", "https://b.a.example.com"),
        MockResponse::new(201),
    );
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://b.a.example.com")
    );
    assert_eq!(
        resp.header("access-control-allow-credentials"),
        Some("true")
    );
}

#[test]
fn an_actual_response_gets_the_headers_and_loses_the_upstreams() {
    let mut p = cors(json!({"origins": [A], "exposed_headers": ["X-Request-ID", "x-total"]}));
    let upstream = || {
        MockResponse::new(200)
            .with_header("vary", "Accept-Encoding")
            .with_header("access-control-allow-origin", "*")
            .with_header("access-control-allow-credentials", "true")
            .with_header("access-control-expose-headers", "x-secret")
            .with_header("access-control-max-age", "99")
            .with_header("x-request-id", "r1")
    };
    let resp = actual(
        &mut p,
        MockRequest::new("GET", "/").with_header("origin", A),
        upstream(),
    );
    assert_eq!(resp.header_values("access-control-allow-origin"), [A]);
    assert_eq!(
        resp.header("access-control-expose-headers"),
        Some("X-Request-ID, x-total")
    );
    assert_eq!(resp.header("access-control-allow-credentials"), None);
    assert_eq!(resp.header("access-control-max-age"), None);
    assert_eq!(resp.header_values("vary"), ["Accept-Encoding", "Origin"]);
    assert_eq!(resp.header("x-request-id"), Some("r1"));

    // Another origin, and no origin at all: no CORS headers, the upstream's gone too, and
    // `Vary: Origin` all the same.
    for req in [
        MockRequest::new("GET", "/").with_header("origin", "https://evil.example.org"),
        MockRequest::new("GET", "/"),
    ] {
        let resp = actual(&mut p, req, upstream());
        assert!(
            resp.headers()
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{:?}",
            resp.headers()
        );
        assert_eq!(resp.header_values("vary"), ["Accept-Encoding", "Origin"]);
    }
}

#[test]
fn an_options_request_without_request_method_is_not_a_preflight() {
    let mut p = cors(json!({"origins": [A]}));
    let resp = actual(
        &mut p,
        MockRequest::new("OPTIONS", "/").with_header("origin", A),
        MockResponse::new(200),
    );
    assert_eq!(resp.header("access-control-allow-origin"), Some(A));
    // A request method on another method is not a preflight either.
    let resp = actual(
        &mut p,
        MockRequest::new("GET", "/")
            .with_header("origin", A)
            .with_header("access-control-request-method", "PUT"),
        MockResponse::new(200),
    );
    assert_eq!(resp.header("access-control-allow-origin"), Some(A));
}

#[test]
fn the_plugin_has_no_response_phase() {
    let r = cors(json!({"origins": [A]})).registration();
    assert!(r.on_request && !r.on_response && !r.request_body && !r.response_body);
}
