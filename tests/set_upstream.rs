//! `request.set-upstream` (contract 0.1.5) through the real gateway: a plugin sends a request
//! to another upstream of the config by a request header; a name the config lacks is an error
//! the plugin sees and the request is not sent elsewhere; the chosen upstream's balancer,
//! hash key and `Host` apply.

mod support;

use http::StatusCode;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, plugin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_plugin_sends_a_request_by_its_header_to_one_of_two_upstreams() {
    let v1 = Upstream::start("v1", Behaviour::Echo).await;
    let v2 = Upstream::start("v2", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin_with("router", &plugin("router"), &["capabilities = []"])
            .upstream("v1", &v1.url())
            .upstream("v2", &v2.url())
            .route("api", "/api", "v1")
            .stage(
                "router",
                r#"{ header = "x-version", upstreams = { "2" = "v2", "1" = "v1" } }"#,
            )
            .to_string(),
    );
    let client = Client::new();
    let served_by = |r: &support::Resp| r.json()["upstream"].as_str().unwrap().to_owned();
    for (version, expected) in [
        (None, "v1"),
        (Some("2"), "v2"),
        (Some("1"), "v1"),
        (Some("3"), "v1"),
    ] {
        let headers: Vec<(&str, &str)> = version.map(|v| ("x-version", v)).into_iter().collect();
        let r = client.get_with(&gw.url("/api/items"), &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{version:?}: {}", r.text());
        assert_eq!(served_by(&r), expected, "{version:?}");
        assert_eq!(r.json()["path"], "/api/items");
    }
    assert_eq!((v1.hits(), v2.hits()), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_the_config_lacks_is_refused_and_the_request_goes_nowhere_else() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("fixture", &plugin("fixture"))
            .plugin("router", &plugin("router"))
            .upstream("a", &a.url())
            .upstream("b", &b.url())
            .route("pick", "/pick", "a")
            .stage("fixture", r#"{ upstream_from_header = "x-upstream" }"#)
            .route("typo", "/typo", "a")
            .stage(
                "router",
                r#"{ header = "x-to", upstreams = { canary = "bb" } }"#,
            )
            .to_string(),
    );
    let client = Client::new();

    // The plugin sees the error, and the request keeps its route's upstream.
    let r = client
        .get_with(&gw.url("/pick"), &[("x-upstream", "nope")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["upstream"], "a");
    assert_eq!(
        r.json()["headers"]["x-set-upstream"],
        "no upstream of that name"
    );
    let r = client
        .get_with(&gw.url("/pick"), &[("x-upstream", "b")])
        .await;
    assert_eq!(r.json()["upstream"], "b");
    assert_eq!(r.json()["headers"]["x-set-upstream"], "ok");
    assert_eq!((a.hits(), b.hits()), (1, 1));

    // A plugin that fails on the error fails the request: nothing is sent.
    let r = client
        .get_with(&gw.url("/typo"), &[("x-to", "canary")])
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((a.hits(), b.hits()), (1, 1));
    let logs = gw.logs_containing(&[r#""kind":"upstream""#, "no upstream `bb`"]);
    assert!(
        logs.contains(r#"set-upstream \"nope\": no upstream of that name"#),
        "{logs}"
    );
    assert!(
        logs.contains("router: the gateway has no upstream `bb`"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chosen_upstream_balances_by_its_own_hash_key_and_host_header() {
    let route_up = Upstream::start("route", Behaviour::Echo).await;
    let h1 = Upstream::start("h1", Behaviour::Echo).await;
    let h2 = Upstream::start("h2", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("fixture", &plugin("fixture"))
            .upstream("plain", &route_up.url())
            .upstream_with(
                "sticky",
                &[&h1.url(), &h2.url()],
                &[
                    r#"balance = "hash""#,
                    r#"hash_on = "header:x-user""#,
                    r#"host_header = "sticky.internal""#,
                ],
            )
            .route("api", "/", "plain")
            .stage("fixture", r#"{ upstream_from_header = "x-upstream" }"#)
            .to_string(),
    );
    let client = Client::new();
    for user in ["alice", "bob", "carol"] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let r = client
                .get_with(&gw.url("/x"), &[("x-upstream", "sticky"), ("x-user", user)])
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            assert_eq!(r.json()["headers"]["host"], "sticky.internal");
            seen.insert(r.json()["upstream"].as_str().unwrap().to_owned());
        }
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
    }
    assert_eq!(route_up.hits(), 0);
    assert_eq!(h1.hits() + h2.hits(), 24);
    // Without a choice the route's own upstream, and its target's Host.
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.json()["upstream"], "route");
    assert_eq!(r.json()["headers"]["host"], route_up.addr.to_string());
}
