//! Plugins' outbound calls (`wasi:http/outgoing-handler`) through the real gateway, made by
//! the aggregate plugin against real servers: parts fanned out at once, upstreams called by
//! name, grants (an ungranted origin, a granted name that resolves to a private address, a
//! plugin without the capability), and the limits (a slow server, a huge body, too many
//! calls), each a failure the plugin sees while the gateway goes on serving. Then the same
//! calls from Python (componentize-py's wasi:http bindings) and JavaScript (componentize-js's
//! `fetch`): an upstream by name, an ungranted destination, a slow upstream.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, plugin};

/// The aggregate plugin, granted `grants` (TOML strings), with more lines of its table.
fn aggregate(cfg: GatewayConfig, grants: &[&str], lines: &[&str]) -> GatewayConfig {
    let grants = format!(
        "outbound = [{}]",
        grants
            .iter()
            .map(|g| format!("\"{g}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut all = vec!["capabilities = [\"log\", \"outbound\"]", grants.as_str()];
    all.extend_from_slice(lines);
    cfg.plugin_with("aggregate", &plugin("aggregate"), &all)
}

/// Each failed part's error, by part.
fn errors(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| {
            (
                e["part"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_slow_parts_are_fetched_at_once_through_their_upstreams_and_merged() {
    let wait = Duration::from_millis(200);
    let users = Upstream::start("users", Behaviour::Slow(wait)).await;
    let orders = Upstream::start("orders", Behaviour::Slow(wait)).await;
    let notify = Upstream::start("notify", Behaviour::Slow(wait)).await;
    let cfg = aggregate(
        GatewayConfig::new().admin(),
        &[
            "upstream:users",
            "upstream:orders",
            "upstream:notify",
            "upstream:gone",
        ],
        &[],
    )
    .upstream("gone", &format!("http://127.0.0.1:{}", support::closed_port()))
    .upstream("users", &users.url())
    .upstream("orders", &orders.url())
    .upstream("notify", &notify.url())
    .route("me", "/me", "users")
    .stage(
        "aggregate",
        r#"{ parts = { user = { url = "http://users/users/${header.x-user}", required = true }, orders = { url = "http://orders/orders?user=${header.x-user}" }, notifications = { url = "http://notify/unread/${header.x-user}" } } }"#,
    )
    .route("down", "/down", "users")
    .stage(
        "aggregate",
        r#"{ parts = { user = { url = "http://gone/users/${header.x-user}", required = true }, notifications = { url = "http://notify/unread/${header.x-user}" } } }"#,
    );
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();

    // Warm: the first call of a route instantiates, and opens each upstream's connection.
    let r = client
        .get_with(&gw.url("/me"), &[("x-user", "al ice")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let started = Instant::now();
    let r = client
        .get_with(&gw.url("/me"), &[("x-user", "al ice")])
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(errors(&body), vec![], "{body}");
    // Each part is its upstream's answer (the echo of the request it was sent).
    assert_eq!(body["user"]["upstream"], "users", "{body}");
    assert_eq!(body["user"]["path"], "/users/al%20ice");
    assert_eq!(body["orders"]["upstream"], "orders");
    assert_eq!(body["orders"]["query"], "user=al%20ice");
    assert_eq!(body["notifications"]["path"], "/unread/al%20ice");
    // The upstream's name is no host: it is sent its target's.
    assert_eq!(
        body["user"]["headers"]["host"],
        users.addr.to_string(),
        "{body}"
    );
    // Sent one after another, the three would take 600 ms.
    assert!(
        took < Duration::from_millis(500),
        "three 200 ms parts took {took:?}"
    );
    assert_eq!((users.hits(), orders.hits(), notify.hits()), (2, 2, 2));

    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for destination in ["upstream:users", "upstream:orders", "upstream:notify"] {
        let line = format!(
            "wasmgate_plugin_outbound_requests_total{{plugin=\"aggregate\",destination=\"{destination}\",outcome=\"ok\"}} 2"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains(
        "wasmgate_plugin_outbound_duration_seconds_count{plugin=\"aggregate\",destination=\"upstream:users\"} 2"
    ));

    // A required part that fails makes the answer a 502 naming it.
    let r = client
        .get_with(&gw.url("/down"), &[("x-user", "bob")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["part"], "user", "{}", r.text());
    assert_eq!(notify.hits(), 3, "the optional part is still fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_granted_destinations_are_called_and_a_granted_name_cannot_point_inside() {
    let granted = Upstream::start("granted", Behaviour::Echo).await;
    let ungranted = Upstream::start("ungranted", Behaviour::Echo).await;
    let inside = Upstream::start("inside", Behaviour::Echo).await;
    let mut dns = support::dns::Dns::start();
    // A name granted as an origin, rebound to the gateway's own machine.
    dns.set(serde_json::json!({ "idp.test": ["127.0.0.1"] }));
    let rebound = format!("http://idp.test:{}", inside.addr.port());
    let cfg = aggregate(
        GatewayConfig::new().admin(),
        &[&granted.url(), &rebound],
        &[],
    )
    .upstream("app", &granted.url())
    .route("parts", "/parts", "app")
    .stage(
        "aggregate",
        &format!(
            r#"{{ parts = {{ granted = {{ url = "{}/a" }}, ungranted = {{ url = "{}/b" }}, rebound = {{ url = "{rebound}/c" }} }} }}"#,
            granted.url(),
            ungranted.url()
        ),
    )
    .raw(&format!("[dns]\nservers = [\"127.0.0.1:{}\"]\n", dns.port));
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    let r = client.get(&gw.url("/parts")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["granted"]["path"], "/a", "{body}");
    assert_eq!(
        errors(&body),
        vec![
            ("rebound".to_owned(), "denied".to_owned()),
            ("ungranted".to_owned(), "denied".to_owned()),
        ],
        "{body}"
    );
    assert_eq!(
        (granted.hits(), ungranted.hits(), inside.hits()),
        (1, 0, 0),
        "no socket opened for a refused call"
    );
    let needles = [
        "outbound call refused",
        "not granted",
        "resolves to 127.0.0.1, which is not a public address",
    ];
    gw.assert_logged(&needles);
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for line in [
        "destination=\"ungranted\",outcome=\"denied\"} 1",
        &format!("destination=\"{rebound}\",outcome=\"denied\"}} 1"),
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[test]
fn a_plugin_without_the_outbound_capability_is_refused_at_load() {
    let base = || {
        GatewayConfig::new()
            .upstream("app", "http://127.0.0.1:9")
            .route("parts", "/parts", "app")
            .stage(
                "aggregate",
                r#"{ parts = { a = { url = "http://app/a" } } }"#,
            )
    };
    // It imports wasi:http/outgoing-handler, which `capabilities` must grant.
    let (ok, out) = support::check(
        &base()
            .plugin_with(
                "aggregate",
                &plugin("aggregate"),
                &["capabilities = [\"log\"]"],
            )
            .to_string(),
    );
    assert!(!ok);
    assert!(
        out.contains("imports wasi:http/outgoing-handler@")
            && out.contains("which it was not granted"),
        "{out}"
    );
    // Destinations without the capability are a config error.
    let (ok, out) = support::check(
        &base()
            .plugin_with(
                "aggregate",
                &plugin("aggregate"),
                &["capabilities = [\"log\"]", "outbound = [\"upstream:app\"]"],
            )
            .to_string(),
    );
    assert!(!ok);
    assert!(out.contains("does not grant \"outbound\""), "{out}");
    // Granted, it loads.
    let (ok, out) = support::check(&aggregate(base(), &["upstream:app"], &[]).to_string());
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_servers_huge_bodies_and_too_many_calls_fail_the_call_and_nothing_else() {
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_secs(5))).await;
    let huge = Upstream::start("huge", Behaviour::Download(2 << 20)).await;
    let fine = Upstream::start("fine", Behaviour::Echo).await;
    let many: String = (0..17)
        .map(|i| format!("p{i:02} = {{ url = \"http://fine/{i}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = aggregate(
        GatewayConfig::new().admin(),
        &["upstream:slow", "upstream:huge", "upstream:fine"],
        &["outbound_timeout_ms = 300", "outbound_per_request = 4"],
    )
    .upstream("slow", &slow.url())
    .upstream("huge", &huge.url())
    .upstream("fine", &fine.url())
    .route("limits", "/limits", "fine")
    .stage(
        "aggregate",
        r#"{ parts = { slow = { url = "http://slow/x" }, huge = { url = "http://huge/big" }, fine = { url = "http://fine/ok" } } }"#,
    )
    .route("many", "/many", "fine")
    .stage("aggregate", &format!("{{ parts = {{ {many} }} }}"))
    .route("plain", "/plain", "fine");
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();

    let started = Instant::now();
    let r = client.get(&gw.url("/limits")).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["fine"]["path"], "/ok", "{body}");
    assert_eq!(
        errors(&body),
        vec![
            ("huge".to_owned(), "body too large".to_owned()),
            ("slow".to_owned(), "timeout".to_owned()),
        ],
        "{body}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the 300 ms outbound timeout let the slow part take {took:?}"
    );

    // 17 parts, 4 calls allowed per request: the first 4 are made, the rest refused.
    let r = client.get(&gw.url("/many")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    let failed = errors(&body);
    assert_eq!(failed.len(), 13, "{body}");
    assert!(failed.iter().all(|(_, e)| e == "limited"), "{body}");
    let answered = (0..17)
        .filter(|i| body[format!("p{i:02}")].is_object())
        .count();
    assert_eq!(answered, 4, "{body}");

    // The gateway serves on, plugin routes and plain ones alike.
    let r = client.get(&gw.url("/plain/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = client.get(&gw.url("/limits")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for line in [
        "destination=\"upstream:slow\",outcome=\"timeout\"} 2",
        "destination=\"upstream:fine\",outcome=\"limited\"} 13",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

/// The Python and JavaScript fixtures (`tests/plugins/fetch-py`, `tests/plugins/fetch-js`):
/// each calls `http://users/users/<x-user>` with its language's own client (the wasi:http
/// bindings and `fetch`), and answers 200 with the body it got, or 502 `call failed: ...`.
const FETCHERS: [&str; 2] = ["fetch-py", "fetch-js"];

/// What each fixture answers when its call fails: componentize-py's bindings hand the plugin
/// wasi:http's error code; componentize-js's `fetch` rejects every failure with the same
/// `TypeError`, without the code.
fn failure(plugin: &str, code: &str) -> String {
    match plugin {
        "fetch-py" => format!("call failed: ErrorCode_{code}"),
        _ => "call failed: TypeError: NetworkError when attempting to fetch resource".to_owned(),
    }
}

/// Both fixtures, granted `grants`, each on a route `/NAME` to the upstream `users`.
fn fetchers(mut cfg: GatewayConfig, grants: &str, lines: &[&str]) -> GatewayConfig {
    let grants = format!("outbound = [{grants}]");
    for name in FETCHERS {
        // Python's first calls on an instance take longer than the default 50 ms of running.
        let mut all = vec![
            "capabilities = [\"log\", \"clock\", \"rate-limit\", \"kv\", \"outbound\"]",
            "call_timeout_ms = 1000",
            grants.as_str(),
        ];
        all.extend_from_slice(lines);
        cfg = cfg
            .plugin_with(name, &plugin(name), &all)
            .route(name, &format!("/{name}"), "users")
            .stage(name, "{}");
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_clients_call_an_upstream_by_name() {
    let users = Upstream::start("users", Behaviour::Echo).await;
    let cfg = fetchers(GatewayConfig::new().admin(), "\"upstream:users\"", &[])
        .upstream("users", &users.url());
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    for name in FETCHERS {
        for user in ["al ice", "bob"] {
            let r = client
                .get_with(&gw.url(&format!("/{name}")), &[("x-user", user)])
                .await;
            assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
            // The upstream's own answer: the echo of the request the plugin sent it.
            let body = r.json();
            assert_eq!(body["upstream"], "users", "{name}: {body}");
            assert_eq!(body["method"], "GET", "{name}: {body}");
            let path = format!("/users/{}", user.replace(' ', "%20"));
            assert_eq!(body["path"], path, "{name}: {body}");
            // Sent the upstream's target as `Host`, not the name the plugin used.
            assert_eq!(
                body["headers"]["host"],
                users.addr.to_string(),
                "{name}: {body}"
            );
        }
    }
    // The plugins answered: the route's upstream was only called by them.
    assert_eq!(users.hits(), 4);
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for name in FETCHERS {
        let line = format!(
            "wasmgate_plugin_outbound_requests_total{{plugin=\"{name}\",destination=\"upstream:users\",outcome=\"ok\"}} 2"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_calls_to_an_ungranted_destination_are_refused() {
    let users = Upstream::start("users", Behaviour::Echo).await;
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    // `users` is in the config, but the plugins may call `orders` only.
    let cfg = fetchers(GatewayConfig::new().admin(), "\"upstream:orders\"", &[])
        .upstream("users", &users.url())
        .upstream("orders", &orders.url());
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    for name in FETCHERS {
        let r = client
            .get_with(&gw.url(&format!("/{name}")), &[("x-user", "7")])
            .await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{name}: {}", r.text());
        assert_eq!(r.text(), failure(name, "HttpRequestDenied"), "{name}");
    }
    assert_eq!(
        (users.hits(), orders.hits()),
        (0, 0),
        "no socket opened for a refused call"
    );
    let needles = [
        "outbound call refused: not granted",
        "\"plugin\":\"fetch-py\"",
        "\"plugin\":\"fetch-js\"",
    ];
    gw.assert_logged(&needles);
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for name in FETCHERS {
        let line = format!(
            "wasmgate_plugin_outbound_requests_total{{plugin=\"{name}\",destination=\"ungranted\",outcome=\"denied\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }

    // Without the capability, neither component loads: both import wasi:http.
    for name in FETCHERS {
        let cfg = GatewayConfig::new()
            .plugin_with(
                name,
                &plugin(name),
                &["capabilities = [\"log\", \"clock\", \"rate-limit\", \"kv\"]"],
            )
            .upstream("users", &users.url())
            .route(name, "/", "users")
            .stage(name, "{}");
        let (ok, out) = support::check(&cfg.to_string());
        assert!(!ok, "{name}: {out}");
        assert!(
            out.contains("imports wasi:http/outgoing-handler@")
                && out.contains("which it was not granted"),
            "{name}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_calls_past_the_outbound_timeout_fail_and_the_gateway_serves_on() {
    let users = Upstream::start("users", Behaviour::Slow(Duration::from_secs(5))).await;
    let fine = Upstream::start("fine", Behaviour::Echo).await;
    let cfg = fetchers(
        GatewayConfig::new().admin(),
        "\"upstream:users\"",
        &["outbound_timeout_ms = 300"],
    )
    .upstream("users", &users.url())
    .upstream("fine", &fine.url())
    .route("plain", "/plain", "fine");
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    for name in FETCHERS {
        for _ in 0..2 {
            let started = Instant::now();
            let r = client
                .get_with(&gw.url(&format!("/{name}")), &[("x-user", "7")])
                .await;
            let took = started.elapsed();
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{name}: {}", r.text());
            assert_eq!(r.text(), failure(name, "ConnectionReadTimeout"), "{name}");
            assert!(
                took < Duration::from_secs(3),
                "{name}: the 300 ms outbound timeout let the call take {took:?}"
            );
        }
    }
    // The gateway serves on, plain routes and the plugins' alike.
    let r = client.get(&gw.url("/plain/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for name in FETCHERS {
        let line = format!(
            "wasmgate_plugin_outbound_requests_total{{plugin=\"{name}\",destination=\"upstream:users\",outcome=\"timeout\"}} 2"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
        let r = client.get(&gw.url(&format!("/{name}"))).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{name}: {}", r.text());
    }
}

/// The enrich plugin (`plugins/enrich`, JavaScript: componentize-js's `fetch`), granted
/// `grants` (TOML strings), with more lines of its table. A JavaScript component imports every
/// interface of the world, so `capabilities` lists them all.
fn enrich(cfg: GatewayConfig, grants: &[&str], lines: &[&str]) -> GatewayConfig {
    let grants = format!(
        "outbound = [{}]",
        grants
            .iter()
            .map(|g| format!("\"{g}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut all = vec![
        "capabilities = [\"log\", \"clock\", \"rate-limit\", \"kv\", \"outbound\"]",
        grants.as_str(),
    ];
    all.extend_from_slice(lines);
    cfg.plugin_with("enrich", &plugin("enrich"), &all)
}

/// The users service's answer the enrich tests look up.
const USER: &str =
    r#"{"id":7,"tier":"gold","address":{"region":"eu-west"},"score":42,"beta":true}"#;

/// An enrich config looking up `http://LOOKUP/users/${header.x-user-id}` and setting
/// `x-user-tier` from `tier`, with more keys (`on_error = "deny"`).
fn enrich_tier(lookup: &str, more: &str) -> String {
    format!(
        r#"{{ url = "http://{lookup}/users/${{header.x-user-id}}", headers = {{ "x-user-tier" = "tier" }}{more} }}"#
    )
}

/// The request headers the route's upstream (an echo) was sent.
fn sent_headers(r: &support::Resp) -> serde_json::Map<String, Value> {
    let body = r.json();
    assert_eq!(body["upstream"], "app", "not the upstream's echo: {body}");
    body["headers"].as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_sends_the_upstream_looked_up_headers_and_never_a_clients_own() {
    let users = Upstream::start("users", Behaviour::Fixed("application/json", USER)).await;
    // Answers with the request it was sent, so the lookup's own request can be read back.
    let lookup = Upstream::start("lookup", Behaviour::Echo).await;
    let app = Upstream::start("app", Behaviour::Echo).await;
    let cfg = enrich(
        GatewayConfig::new().admin(),
        &["upstream:users", "upstream:lookup"],
        &[],
    )
    .upstream("users", &users.url())
    .upstream("lookup", &lookup.url())
    .upstream("app", &app.url())
    .route("api", "/api", "app")
    .stage(
        "enrich",
        r#"{ url = "http://users/users/${header.x-user-id}", headers = { "x-user-tier" = "tier", "X-User-Region" = "address.region", "x-user-score" = "score", "x-user-beta" = "beta", "x-user-plan" = "plan" }, timeout_ms = 1000 }"#,
    )
    .route("echoed", "/echoed", "app")
    .stage(
        "enrich",
        r#"{ url = "http://lookup/users/${header.x-user-id}?via=${route}", headers = { "x-lookup-path" = "path", "x-lookup-query" = "query", "x-lookup-accept" = "headers.accept", "x-lookup-host" = "headers.host" } }"#,
    );
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();

    // The client's own tier and plan are spoofs: the upstream gets the looked-up tier, and no
    // plan at all (the answer has none).
    let r = client
        .get_with(
            &gw.url("/api/orders"),
            &[
                ("x-user-id", "7"),
                ("x-user-tier", "platinum"),
                ("X-User-Plan", "enterprise"),
                ("x-user-region", "anywhere"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = sent_headers(&r);
    assert_eq!(sent["x-user-tier"], "gold", "{sent:?}");
    assert_eq!(sent["x-user-region"], "eu-west", "{sent:?}");
    assert_eq!(sent["x-user-score"], "42", "{sent:?}");
    assert_eq!(sent["x-user-beta"], "true", "{sent:?}");
    assert!(!sent.contains_key("x-user-plan"), "{sent:?}");
    assert_eq!(sent["x-user-id"], "7", "{sent:?}");
    assert_eq!((users.hits(), app.hits()), (1, 1));

    // A request goes on as soon as its lookup answers, not at `timeout_ms`.
    let started = Instant::now();
    let r = client
        .get_with(&gw.url("/api/orders"), &[("x-user-id", "7")])
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(sent_headers(&r)["x-user-tier"], "gold");
    assert!(
        took < Duration::from_millis(700),
        "a request with a 1 s lookup timeout took {took:?}"
    );
    assert_eq!((users.hits(), app.hits()), (2, 2));

    // Without the value the URL needs, there is no lookup, and still no spoof gets through.
    let r = client
        .get_with(
            &gw.url("/api/orders"),
            &[("x-user-tier", "platinum"), ("x-user-plan", "enterprise")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = sent_headers(&r);
    assert!(
        !sent.contains_key("x-user-tier") && !sent.contains_key("x-user-plan"),
        "{sent:?}"
    );
    assert_eq!((users.hits(), app.hits()), (2, 3));

    // The lookup's request: the value percent-encoded as one path segment, JSON asked for,
    // sent the upstream's target as `Host`.
    let r = client
        .get_with(&gw.url("/echoed"), &[("x-user-id", "al ice/7")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = sent_headers(&r);
    assert_eq!(sent["x-lookup-path"], "/users/al%20ice%2F7", "{sent:?}");
    assert_eq!(sent["x-lookup-query"], "via=echoed", "{sent:?}");
    assert_eq!(sent["x-lookup-accept"], "application/json", "{sent:?}");
    assert_eq!(sent["x-lookup-host"], lookup.addr.to_string(), "{sent:?}");
    assert_eq!(lookup.hits(), 1);

    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    for (destination, calls) in [("upstream:users", 2), ("upstream:lookup", 1)] {
        let line = format!(
            "wasmgate_plugin_outbound_requests_total{{plugin=\"enrich\",destination=\"{destination}\",outcome=\"ok\"}} {calls}"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_on_a_failed_lookup_goes_on_without_the_headers_or_answers_502() {
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_secs(5))).await;
    let html = Upstream::start("html", Behaviour::Fixed("text/html", "<h1>users</h1>")).await;
    let app = Upstream::start("app", Behaviour::Echo).await;
    let gone = format!("http://127.0.0.1:{}", support::closed_port());
    let cfg = enrich(
        GatewayConfig::new(),
        &["upstream:gone", "upstream:slow", "upstream:html"],
        &[],
    )
    .upstream("gone", &gone)
    .upstream("slow", &slow.url())
    .upstream("html", &html.url())
    .upstream("app", &app.url())
    .route("down", "/down", "app")
    .stage("enrich", &enrich_tier("gone", ""))
    .route("down-deny", "/down-deny", "app")
    .stage("enrich", &enrich_tier("gone", r#", on_error = "deny""#))
    .route("html", "/html", "app")
    .stage("enrich", &enrich_tier("html", r#", on_error = "continue""#))
    .route("html-deny", "/html-deny", "app")
    .stage("enrich", &enrich_tier("html", r#", on_error = "deny""#))
    .route("slow-deny", "/slow-deny", "app")
    .stage(
        "enrich",
        &enrich_tier("slow", r#", timeout_ms = 300, on_error = "deny""#),
    );
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    let spoofed = [("x-user-id", "7"), ("x-user-tier", "platinum")];

    // `continue`: proxied, without the header (the client's value is gone too).
    for path in ["/down", "/html"] {
        let hits = app.hits();
        let r = client.get_with(&gw.url(path), &spoofed).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let sent = sent_headers(&r);
        assert!(!sent.contains_key("x-user-tier"), "{path}: {sent:?}");
        assert_eq!(app.hits(), hits + 1, "{path}");
    }
    // `deny`: a 502 of the plugin's, and the upstream is not called.
    let hits = app.hits();
    for path in ["/down-deny", "/html-deny", "/slow-deny"] {
        let started = Instant::now();
        let r = client.get_with(&gw.url(path), &spoofed).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(
            r.json(),
            serde_json::json!({
                "error": "enrichment_failed",
                "message": "the request could not be enriched",
            }),
            "{path}"
        );
        // The plugin's own 300 ms, well before the gateway's outbound timeout of 2 s.
        assert!(
            took < Duration::from_millis(1500),
            "{path}: the lookup took {took:?}"
        );
    }
    assert_eq!(app.hits(), hits, "a denied request is not proxied");
    assert_eq!(slow.hits(), 1);

    let needles = [
        "enrich: lookup http://gone/users/${header.x-user-id} failed: the call failed (TypeError: NetworkError when attempting to fetch resource; the gateway's log says why); the request goes on without its headers",
        "enrich: lookup http://html/users/${header.x-user-id} failed: answered a body that is not JSON; the request goes on without its headers",
        "enrich: lookup http://html/users/${header.x-user-id} failed: answered a body that is not JSON; answered 502",
        "enrich: lookup http://slow/users/${header.x-user-id} failed: timed out after 300 ms; answered 502",
    ];
    gw.assert_logged(&needles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_lookups_to_an_ungranted_destination_are_refused_and_logged() {
    let users = Upstream::start("users", Behaviour::Fixed("application/json", USER)).await;
    let app = Upstream::start("app", Behaviour::Echo).await;
    // `users` is in the config, but the plugin may call `orders` only.
    let cfg = enrich(GatewayConfig::new().admin(), &["upstream:orders"], &[])
        .upstream("users", &users.url())
        .upstream("orders", &users.url())
        .upstream("app", &app.url())
        .route("api", "/api", "app")
        .stage("enrich", &enrich_tier("users", ""))
        .route("strict", "/strict", "app")
        .stage("enrich", &enrich_tier("users", r#", on_error = "deny""#));
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    let spoofed = [("x-user-id", "7"), ("x-user-tier", "platinum")];

    let r = client.get_with(&gw.url("/api"), &spoofed).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        !sent_headers(&r).contains_key("x-user-tier"),
        "{}",
        r.text()
    );
    let r = client.get_with(&gw.url("/strict"), &spoofed).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["error"], "enrichment_failed", "{}", r.text());
    assert_eq!(
        (users.hits(), app.hits()),
        (0, 1),
        "no socket opened for a refused call"
    );

    let needles = [
        "outbound call refused: not granted",
        "enrich: lookup http://users/users/${header.x-user-id} failed: the call failed (TypeError",
        "\"plugin\":\"enrich\"",
    ];
    gw.assert_logged(&needles);
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    let line = "wasmgate_plugin_outbound_requests_total{plugin=\"enrich\",destination=\"ungranted\",outcome=\"denied\"} 2";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

#[test]
fn enrich_configs_are_checked_at_load_naming_the_key() {
    let check = |config: &str| {
        let cfg = enrich(GatewayConfig::new(), &["upstream:users"], &[])
            .upstream("users", "http://127.0.0.1:9")
            .route("api", "/api", "users")
            .stage("enrich", config);
        support::check(&cfg.to_string())
    };
    let (ok, out) = check(&enrich_tier(
        "users",
        r#", timeout_ms = 300, on_error = "deny""#,
    ));
    assert!(ok, "{out}");
    for (config, needle) in [
        (
            r#"{ headers = { "x-user-tier" = "tier" } }"#,
            "config key `url`: is required",
        ),
        (
            r#"{ url = "http://${header.x-host}/users", headers = { "x-user-tier" = "tier" } }"#,
            "config key `url`: the host must be written out",
        ),
        (
            r#"{ url = "http://users/u/${header.x-user-id}", headers = { "x-user-id" = "id" } }"#,
            "config key `headers.x-user-id`: `x-user-id` is also read by `url`",
        ),
        (
            r#"{ url = "http://users/u", headers = { "host" = "host" } }"#,
            "config key `headers.host`",
        ),
        (
            &enrich_tier("users", ", timeout_ms = 0"),
            "config key `timeout_ms`: must be an integer from 1 to 300000",
        ),
        (
            &enrich_tier("users", r#", on_error = "skip""#),
            "config key `on_error`: must be \"continue\" or \"deny\"",
        ),
        (
            &enrich_tier("users", ", cache_ttl_ms = 100"),
            "config key `cache_ttl_ms`: unknown key",
        ),
    ] {
        let (ok, out) = check(config);
        assert!(!ok, "{config}: {out}");
        let at = format!("route `api`, pipeline[0], plugin `enrich`: {needle}");
        assert!(out.contains(&at), "{config}: {at} not in\n{out}");
    }
}
