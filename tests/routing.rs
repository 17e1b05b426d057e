//! Routing by exact path, pattern and prefix, by header and query; `rewrite_prefix`; routes that
//! answer themselves (`respond`); and `config/examples/versioning`, run as it is shipped. The
//! real binary against real upstreams and real clients (curl among them).

mod support;

use std::process::Command;

use http::{Method, StatusCode};
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, check, plugin, workspace_root};

/// `curl -s --path-as-is` (the target goes out as written, dot segments and all): status and
/// body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl wrote the status");
    (status.parse().unwrap_or(0), body.to_owned())
}

/// Requests each route answered, from the admin listener's `/metrics`.
async fn answered(c: &Client, gw: &Gateway, route: &str) -> u64 {
    let metrics = c.get(&gw.admin_url("/metrics")).await.text();
    let prefix = format!("wasmgate_requests_total{{route=\"{route}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A request's headers, as a case lists them.
type Headers = &'static [(&'static str, &'static str)];

fn upstream_of(r: &Resp) -> String {
    r.json()["upstream"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_paths_then_patterns_then_the_longest_prefix() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("up", &up.url())
            .route("api", "/api", "up")
            .route("users", "/api/users", "up")
            .raw(
                r#"
[[routes]]
name = "profile"
path_pattern = "/api/users/*/profile"
upstream = "up"
[[routes]]
name = "any-profile"
path_pattern = "/api/*/*/profile"
upstream = "up"
[[routes]]
name = "my-profile"
path = "/api/users/me/profile"
upstream = "up"
[[routes]]
name = "login"
path = "/api/auth/login"
methods = ["POST"]
upstream = "up"
"#,
            )
            .admin()
            .to_string(),
    );
    let c = Client::new();
    let cases = [
        (Method::GET, "/api/users/me/profile", "my-profile"),
        (Method::GET, "/api/users/7/profile", "profile"),
        (Method::GET, "/api/teams/7/profile", "any-profile"),
        (Method::GET, "/api/users/7/profile/photo", "users"),
        // An exact path is that path alone: not with a trailing slash, not its children.
        (Method::GET, "/api/users/me/profile/", "users"),
        (Method::GET, "/api/users/7", "users"),
        (Method::GET, "/api/orders", "api"),
        (Method::POST, "/api/auth/login", "login"),
        // A method the exact route refuses falls through to the prefixes.
        (Method::GET, "/api/auth/login", "api"),
        (Method::GET, "/api/auth/login/x", "api"),
    ];
    for (method, path, route) in &cases {
        let before = answered(&c, &gw, route).await;
        let r = c.request(method.clone(), &gw.url(path), &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json()["path"], *path, "routing leaves the path alone");
        assert_eq!(
            answered(&c, &gw, route).await,
            before + 1,
            "{method} {path} should be {route}'s"
        );
    }
    assert_eq!(
        c.get(&gw.url("/nothing")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(up.hits(), cases.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_query_choose_and_the_most_matchers_win() {
    let v1 = Upstream::start("v1", Behaviour::Echo).await;
    let v2 = Upstream::start("v2", Behaviour::Echo).await;
    let beta = Upstream::start("beta", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("v1", &v1.url())
            .upstream("v2", &v2.url())
            .upstream("beta", &beta.url())
            .route("default", "/api", "v1")
            .route("by-header", "/api", "v2")
            .with(r#"headers = { X-API-Version = "2" }"#)
            .route("by-query", "/api", "v2")
            .with(r#"query = { version = { prefix = "2." } }"#)
            .route("both", "/api", "v2")
            .with(r#"headers = { x-api-version = "2" }"#)
            .with(r#"query = { version = { prefix = "2." } }"#)
            .route("beta", "/api", "beta")
            .with(r#"headers = { x-api-version = "2", x-beta = { present = true } }"#)
            .with(r#"query = { version = { prefix = "2." } }"#)
            .admin()
            .to_string(),
    );
    let c = Client::new();
    let cases: [(&str, Headers, &str, &str); 10] = [
        ("/api/x", &[], "default", "v1"),
        ("/api/x", &[("x-api-version", "2")], "by-header", "v2"),
        // Header names in any case; values exactly.
        ("/api/x", &[("X-Api-Version", "2")], "by-header", "v2"),
        ("/api/x", &[("x-api-version", "20")], "default", "v1"),
        ("/api/x?version=2.1", &[], "by-query", "v2"),
        // Compared percent-decoded, `+` as a space; the first value counts.
        ("/api/x?ver%73ion=2%2E1", &[], "by-query", "v2"),
        ("/api/x?version=1&version=2.1", &[], "default", "v1"),
        (
            "/api/x?version=2.1",
            &[("x-api-version", "2")],
            "both",
            "v2",
        ),
        (
            "/api/x?version=2.1",
            &[("x-api-version", "2"), ("x-beta", "")],
            "beta",
            "beta",
        ),
        // A matcher that does not hold leaves the route out, whatever else holds.
        ("/api/x?version=3", &[("x-beta", "yes")], "default", "v1"),
    ];
    for (target, headers, route, upstream) in cases {
        let before = answered(&c, &gw, route).await;
        let r = c.get_with(&gw.url(target), headers).await;
        assert_eq!(upstream_of(&r), upstream, "{target} {headers:?}");
        assert_eq!(
            answered(&c, &gw, route).await,
            before + 1,
            "{target} {headers:?} should be {route}'s"
        );
        // The query goes on as the client wrote it.
        assert_eq!(
            r.json()["query"].as_str(),
            target.split_once('?').map(|(_, q)| q)
        );
    }
    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    let both = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "both")
        .unwrap()
        .clone();
    assert_eq!(both["path_prefix"], "/api");
    assert_eq!(both["headers"], serde_json::json!({ "x-api-version": "2" }));
    assert_eq!(
        both["query"],
        serde_json::json!({ "version": { "prefix": "2." } })
    );
}

#[test]
fn check_refuses_a_tie_naming_both_routes() {
    let base = GatewayConfig::new()
        .upstream("up", "http://127.0.0.1:9")
        .route("by-header", "/api", "up")
        .with(r#"headers = { x-api-version = "2" }"#)
        .route("by-query", "/api", "up")
        .with(r#"query = { version = "2" }"#)
        .to_string();
    let (ok, out) = check(&base);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "routes[0] (\"by-header\") and routes[1] (\"by-query\") tie: one request can match both (path_prefix `/api`, the same host, 1 matcher each)"
        ),
        "{out}"
    );
    // A route with the matchers of both takes the requests that would tie.
    let settled = format!(
        "{base}[[routes]]\nname = \"both\"\npath_prefix = \"/api\"\nupstream = \"up\"\nheaders = {{ x-api-version = \"2\" }}\nquery = {{ version = \"2\" }}\n"
    );
    let (ok, out) = check(&settled);
    assert!(ok, "{out}");
    // Two routes that differ by nothing are the same kind of tie.
    let (ok, out) = check(
        &GatewayConfig::new()
            .upstream("up", "http://127.0.0.1:9")
            .route("a", "/x", "up")
            .route("b", "/x/", "up")
            .to_string(),
    );
    assert!(
        !ok && out.contains("(\"a\") and routes[1] (\"b\") tie"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_prefix_replaces_the_matched_prefix_on_the_way_upstream() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("headers", &plugin("headers"))
            .upstream("up", &up.url())
            .route("v1", "/api/v1", "up")
            .with(r#"rewrite_prefix = "/v2""#)
            .stage(
                "headers",
                r#"{ request = { set = { "x-plugin-saw" = "${path}" } } }"#,
            )
            .route("root", "/", "up")
            .with(r#"rewrite_prefix = "/site""#)
            .route("strip", "/strip", "up")
            .with("strip_prefix = true")
            .raw(
                "[[routes]]\nname = \"login\"\npath = \"/api/login\"\nupstream = \"up\"\nrewrite_prefix = \"/auth/v2/login\"\n",
            )
            .to_string(),
    );
    let c = Client::new();
    for (target, path, query) in [
        ("/api/v1/users", "/v2/users", None),
        ("/api/v1/users/7?full=1", "/v2/users/7", Some("full=1")),
        ("/api/v1", "/v2", None),
        ("/api/v1/", "/v2/", None),
        ("/api/v10", "/site/api/v10", None),
        ("/", "/site", None),
        ("/strip/a", "/a", None),
        ("/strip", "/", None),
        ("/api/login?next=%2F", "/auth/v2/login", Some("next=%2F")),
    ] {
        let r = c.get(&gw.url(target)).await;
        assert_eq!(r.json()["path"], path, "{target}");
        assert_eq!(r.json()["query"].as_str(), query, "{target}");
    }
    // Plugins see the path the route matched; the rewrite is made when forwarding.
    let r = c.get(&gw.url("/api/v1/users")).await;
    assert_eq!(r.json()["headers"]["x-plugin-saw"], "/api/v1/users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_routes_answer_themselves_and_their_plugins_still_run() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("headers", &plugin("headers"))
            .plugin("jwt-auth", &plugin("jwt_auth"))
            .plugin("fixture", &plugin("fixture"))
            .upstream("up", &up.url())
            .route("rest", "/", "up")
            .raw(
                r#"
[[routes]]
name = "health"
path = "/health"
respond = { headers = { content-type = "text/plain", x-served-by = "gateway" }, body = "API Gateway is up" }

[[routes]]
name = "gone"
path_prefix = "/old"
respond = { status = 410 }

[[routes]]
name = "tagged"
path = "/tagged"
respond = { status = 202, body = "accepted" }
[[routes.pipeline]]
plugin = "headers"
config = { response = { set = { "x-route" = "${route}" } } }

[[routes]]
name = "guarded"
path = "/internal/status"
respond = { body = "all green" }
[[routes.pipeline]]
plugin = "jwt-auth"
config = { algorithms = ["HS256"], secret = "0123456789abcdef0123456789abcdef" }

[[routes]]
name = "maintenance"
path_prefix = "/shop"
respond = { status = 503, body = "back soon" }
[[routes.pipeline]]
plugin = "fixture"
config = { upstream_from_header = "x-upstream" }
"#,
            )
            .admin()
            .to_string(),
    );
    let c = Client::new();

    let r = c.get(&gw.url("/health")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "API Gateway is up");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-served-by"), Some("gateway"));
    assert_eq!(r.header("content-length"), Some("17"));
    // Any method, and a body the route never reads.
    let r = c
        .request(Method::POST, &gw.url("/health"), &[], "ping")
        .await;
    assert_eq!(r.text(), "API Gateway is up");
    let r = c.request(Method::HEAD, &gw.url("/health"), &[], "").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    assert_eq!(r.header("content-length"), Some("17"));

    let r = c.get(&gw.url("/old/page")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::GONE, 0));

    let r = c.get(&gw.url("/tagged")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::ACCEPTED, "accepted")
    );
    assert_eq!(r.header("x-route"), Some("tagged"));

    // A plugin that refuses answers instead of the route.
    let r = c.get(&gw.url("/internal/status")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(!r.text().contains("all green"));

    let r = c.get(&gw.url("/shop/cart")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "back soon")
    );
    assert_eq!(up.hits(), 0, "no answer came from an upstream");
    // A plugin that chooses an upstream sends the request there instead.
    let r = c
        .get_with(&gw.url("/shop/cart"), &[("x-upstream", "up")])
        .await;
    assert_eq!(r.json()["path"], "/shop/cart");
    assert_eq!(r.json()["headers"]["x-set-upstream"], "ok");
    assert_eq!(c.get(&gw.url("/other")).await.status, StatusCode::OK);
    assert_eq!(up.hits(), 2);
    // The routes are counted like any other.
    assert_eq!(answered(&c, &gw, "health").await, 3);
    assert_eq!(answered(&c, &gw, "guarded").await, 1);
    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    let health = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "health")
        .unwrap()
        .clone();
    assert_eq!(health["respond"], 200, "{health}");
    assert_eq!(health["path"], "/health", "{health}");
    assert!(health["upstream"].is_null(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_queries_neither_crash_nor_walk_around_a_route() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = |escaped: &str| {
        GatewayConfig::new()
            .server(&format!("escaped_slashes = \"{escaped}\""))
            .upstream("up", &up.url())
            .route("open", "/", "up")
            .route("v1", "/api/v1", "up")
            .with(r#"rewrite_prefix = "/v2""#)
            .route("beta", "/api", "up")
            .with(r#"query = { beta = "on" }"#)
            .with(r#"rewrite_prefix = "/beta""#)
            .raw(
                r#"
[[routes]]
name = "blocked"
path_prefix = "/admin"
respond = { status = 403, body = "no" }
[[routes]]
name = "profile"
path_pattern = "/api/users/*/profile"
upstream = "up"
"#,
            )
            .to_string()
    };
    let gw = Gateway::start(&cfg("reject"));
    let url = |p: &str| gw.url(p);
    let path_of = |body: &str| -> String {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["path"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // Dot segments, raw or encoded, are resolved before routing: the blocked route stays
    // blocked, and a rewritten path never climbs out of its prefix.
    for target in [
        "/api/v1/../../admin",
        "/api/v1/%2e%2e/%2E%2E/admin",
        "/api/v1/.%2e/..//admin/x",
        "//admin",
        "/%61dmin",
    ] {
        let (status, body) = curl(&[&url(target)]);
        assert_eq!((status, body.as_str()), (403, "no"), "{target}");
    }
    let (status, body) = curl(&[&url("/api/v1/x/%2e%2e/users")]);
    assert_eq!((status, path_of(&body).as_str()), (200, "/v2/users"));
    let (status, body) = curl(&[&url("/api/v1/%2e%2e")]);
    assert_eq!((status, path_of(&body).as_str()), (200, "/api/"));
    // Encoded slashes are refused by default, so `*` never spans two segments.
    for target in [
        "/api/v1/..%2fadmin",
        "/api/users/a%2Fb/profile",
        "/admin%5c",
    ] {
        assert_eq!(curl(&[&url(target)]).0, 400, "{target}");
    }
    // A very long query, or one full of the name a route matches, is read once: the first
    // value decides.
    let c = Client::new();
    let long = format!("/api/x?{}beta=on", "a=b&".repeat(12_000));
    assert_eq!(c.get(&gw.url(&long)).await.json()["path"], "/beta/x");
    let many = format!("/api/x?{}", "beta=off&".repeat(5_000) + "beta=on");
    assert_eq!(c.get(&gw.url(&many)).await.json()["path"], "/api/x");
    for q in [
        "beta=on%00",
        "beta=%6fn%",
        "beta=o%6E",
        "b%65ta=on",
        "beta=on&beta",
    ] {
        let r = c.get(&gw.url(&format!("/api/x?{q}"))).await;
        let want = if q.starts_with("beta=on%00") || q.starts_with("beta=%6fn%") {
            "/api/x"
        } else {
            "/beta/x"
        };
        assert_eq!(r.json()["path"], want, "{q}");
    }
    // Past server.max_header_bytes the request is refused, and the gateway goes on.
    let huge = format!("/api/x?beta=on&{}", "a".repeat(70_000));
    assert_eq!(curl(&[&url(&huge)]).0, 431);
    assert_eq!(
        c.get(&gw.url("/api/users/7/profile")).await.status,
        StatusCode::OK
    );
    drop(gw);

    // With escaped slashes kept, an encoded slash is part of one segment.
    let gw = Gateway::start(&cfg("keep"));
    let c = Client::new();
    let r = c.get(&gw.url("/api/users/a%2Fb/profile")).await;
    assert_eq!(r.json()["path"], "/api/users/a%2Fb/profile");
    let r = c.get(&gw.url("/api/v1/a%2F..%2Fb")).await;
    assert_eq!(r.json()["path"], "/v2/a%2F..%2Fb");
    assert_eq!(c.get(&gw.url("/admin%2Fx")).await.status, StatusCode::OK);
    assert_eq!(
        c.get(&gw.url("/admin/x")).await.status,
        StatusCode::FORBIDDEN
    );
}

/// `config/examples/versioning/gateway.toml`, with the v2 service at `v2`, a free port, the
/// plugins by absolute path and an admin listener (for the counts by route).
fn versioning_example(v2: &str) -> String {
    let path = workspace_root().join("config/examples/versioning/gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let root = workspace_root().display().to_string();
    let mut out = text.clone();
    for (from, to) in [
        (
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        ("\"http://127.0.0.1:9002\"", format!("\"{v2}\"")),
        ("\"../../../target/", format!("\"{root}/target/")),
    ] {
        assert!(out.contains(from), "the example no longer has {from}");
        out = out.replace(from, &to);
    }
    out + "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
}

#[test]
fn the_versioning_example_checks_as_shipped() {
    plugin("transform");
    plugin("headers");
    let path = workspace_root().join("config/examples/versioning/gateway.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok (8 routes, 2 plugins)"), "{text}");
    // Without the route that has both matchers, the header and query routes tie.
    let without = versioning_example("http://127.0.0.1:9");
    let cut = without
        .find("[[routes]]\nname = \"v2-by-header-and-query\"")
        .unwrap();
    let (ok, out) = check(&without[..cut]);
    assert!(!ok);
    assert!(
        out.contains("(\"v2-by-header\") and routes[6] (\"v2-by-query\") tie"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_versioning_example_serves_by_path_header_and_query() {
    let v2 = Upstream::start("users-v2", Behaviour::Echo).await;
    let gw = Gateway::start(&versioning_example(&v2.url()));
    let c = Client::new();

    let r = c.get(&gw.url("/health")).await;
    assert_eq!(r.text(), "API Gateway is up");
    let r = c.get(&gw.url("/api/versions")).await;
    assert_eq!(r.json()["default"], "1");
    assert!(r.header("x-request-id").is_some(), "the plugin ran");
    assert_eq!(v2.hits(), 0);

    // (target, headers, route, path upstream, through the bridge)
    let cases: [(&str, Headers, &str, &str, bool); 8] = [
        ("/api/v2/users/7", &[], "v2", "/v2/users/7", false),
        ("/api/v1/users/7", &[], "v1", "/v2/users/7", true),
        ("/api/v1", &[], "v1", "/v2", true),
        // The longer prefix first, whatever the shorter one's matchers.
        (
            "/api/v1/users",
            &[("x-api-version", "2")],
            "v1",
            "/v2/users",
            true,
        ),
        ("/api/users/7", &[], "unversioned", "/v2/users/7", true),
        (
            "/api/users/7",
            &[("X-API-Version", "2")],
            "v2-by-header",
            "/v2/users/7",
            false,
        ),
        (
            "/api/users/7?version=2",
            &[],
            "v2-by-query",
            "/v2/users/7",
            false,
        ),
        (
            "/api/users/7?version=%32",
            &[("x-api-version", "2")],
            "v2-by-header-and-query",
            "/v2/users/7",
            false,
        ),
    ];
    for (target, headers, route, path, bridged) in cases {
        let before = answered(&c, &gw, route).await;
        let r = c
            .request(
                Method::POST,
                &gw.url(target),
                headers,
                r#"{"fullName": "Ann"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{target}");
        let echo = r.json();
        assert_eq!(echo["path"], path, "{target} {headers:?}");
        assert_eq!(
            echo["query"].as_str(),
            target.split_once('?').map(|(_, q)| q)
        );
        let sent: serde_json::Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
        let field = if bridged { "name" } else { "fullName" };
        assert_eq!(sent[field], "Ann", "{target}: the service got {sent}");
        assert_eq!(r.header("deprecation").is_some(), bridged, "{target}");
        assert_eq!(
            answered(&c, &gw, route).await,
            before + 1,
            "{target} {headers:?} should be {route}'s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_versioning_example_bridges_v2_answers_back_to_v1() {
    let v2 = Upstream::start(
        "users-v2",
        Behaviour::Fixed("application/json", r#"{"id": 7, "name": "Ann"}"#),
    )
    .await;
    let gw = Gateway::start(&versioning_example(&v2.url()));
    let c = Client::new();
    let v1 = c.get(&gw.url("/api/v1/users/7")).await.json();
    assert_eq!(v1, serde_json::json!({"id": 7, "fullName": "Ann"}));
    let v1 = c.get(&gw.url("/api/users/7")).await.json();
    assert_eq!(v1, serde_json::json!({"id": 7, "fullName": "Ann"}));
    let v2_answer = c
        .get_with(&gw.url("/api/users/7"), &[("x-api-version", "2")])
        .await
        .json();
    assert_eq!(v2_answer, serde_json::json!({"id": 7, "name": "Ann"}));
}
