//! Header rules (`wasmgate:plugin/header-rules`, new in 0.1.3) through the real gateway: the
//! `headers` plugin declares its whole config at init and the gateway makes the changes itself,
//! on the upstream's answer and on its own errors; a rule's template is checked once and its
//! rendering per request; rules are taken only at init; and components built against 0.1.2
//! (the plugin's calls), 0.1.3 (its header rules), 0.1.4 (the last contract before
//! `set-upstream`) and 0.1.5 (the last before `limit-response-body`), kept in
//! `tests/fixtures/`, still load and work beside the current build.

mod support;

use std::path::PathBuf;

use http::StatusCode;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, closed_port, plugin, workspace_root};

/// The sample headers plugin's config the tests give both the old and the new build.
const HEADERS: &str = r#"{ request_id = true, request = { set = { "x-client-ip" = "${client_ip}", "x-route" = "${route}", "x-echo" = "${header.x-in}/${method}" }, add = { "x-multi" = "two" }, remove = ["x-internal"] }, response = { set = { "x-served-by" = "wasmgate (route ${route})", "x-path" = "${path}" }, add = { "x-upstream" = "gw" }, remove = ["content-type"] } }"#;

/// The headers plugin as built against an earlier contract version.
fn old_headers(version: &str) -> PathBuf {
    workspace_root().join(format!("tests/fixtures/headers-{version}.wasm"))
}

/// Checks what the headers config above does to a request and its answer.
async fn check_headers_route(gw: &Gateway, prefix: &str, route: &str) {
    let c = Client::new();
    let r = c
        .get_with(
            &gw.url(&format!("{prefix}/a")),
            &[
                ("x-in", "hello"),
                ("x-internal", "secret"),
                ("x-multi", "one"),
                ("x-request-id", "client-id-7"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let h = &r.json()["headers"];
    assert_eq!(h["x-client-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["x-route"], route);
    assert_eq!(h["x-echo"], "hello/GET");
    // (The echo upstream shows the last value of a header.)
    assert_eq!(h["x-multi"], "two");
    assert!(h.get("x-internal").is_none(), "{h}");
    assert_eq!(h["x-request-id"], "client-id-7");
    assert_eq!(r.header("x-request-id"), Some("client-id-7"));
    assert_eq!(
        r.header("x-served-by"),
        Some(format!("wasmgate (route {route})").as_str())
    );
    assert_eq!(r.header("x-path"), Some(format!("{prefix}/a").as_str()));
    let upstream: Vec<_> = r.headers.get_all("x-upstream").iter().collect();
    assert_eq!(upstream, ["up", "gw"], "{:?}", r.headers);
    assert!(r.header("content-type").is_none(), "{:?}", r.headers);

    // A client's id that is not plain is replaced by a UUID, the same both ways.
    let r = c
        .get_with(
            &gw.url(&format!("{prefix}/a")),
            &[("x-request-id", "no spaces allowed")],
        )
        .await;
    let sent = r.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sent.len(), 36, "{sent}");
    assert_eq!(sent.as_bytes()[14], b'4', "a version 4 UUID: {sent}");
    assert_eq!(r.header("x-request-id"), Some(sent.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headers_plugin_is_made_of_rules_and_its_0_1_2_to_0_1_5_builds_still_work_beside_it() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin_with("headers", &plugin("headers"), &["capabilities = []"])
            .plugin("old", &old_headers("0.1.2"))
            .plugin_with(
                "headers-v013",
                &old_headers("0.1.3"),
                &["capabilities = []"],
            )
            .plugin_with(
                "headers-v014",
                &old_headers("0.1.4"),
                &["capabilities = []"],
            )
            .plugin_with(
                "headers-v015",
                &old_headers("0.1.5"),
                &["capabilities = []"],
            )
            .upstream("up", &up.url())
            .route("new", "/new", "up")
            .stage("headers", HEADERS)
            .route("old", "/old", "up")
            .stage("old", HEADERS)
            .route("v013", "/v013", "up")
            .stage("headers-v013", HEADERS)
            .route("v014", "/v014", "up")
            .stage("headers-v014", HEADERS)
            .route("v015", "/v015", "up")
            .stage("headers-v015", HEADERS)
            .to_string(),
    );
    check_headers_route(&gw, "/new", "new").await;
    check_headers_route(&gw, "/old", "old").await;
    check_headers_route(&gw, "/v013", "v013").await;
    check_headers_route(&gw, "/v014", "v014").await;
    check_headers_route(&gw, "/v015", "v015").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_rules_apply_to_the_gateways_own_errors() {
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("headers", &plugin("headers"))
            .upstream("dead", &format!("http://127.0.0.1:{}", closed_port()))
            .route("dead", "/", "dead")
            .stage(
                "headers",
                r#"{ request_id = true, response = { set = { "x-r" = "${route}" } } }"#,
            )
            .to_string(),
    );
    let r = Client::new().get(&gw.url("/x")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("x-r"), Some("dead"));
    assert_eq!(r.header("x-request-id").map(str::len), Some(36));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_value_that_is_not_a_header_value_is_left_out() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("fixture", &plugin("fixture"))
            .plugin("headers", &plugin("headers"))
            .upstream("up", &up.url())
            .route("r", "/", "up")
            .stage(
                "fixture",
                r#"{ set_var = { evil = "a\r\nx-injected: 1" } }"#,
            )
            .stage(
                "headers",
                r#"{ request = { set = { "x-echo" = "v=${var.evil}", "x-ok" = "1" } } }"#,
            )
            .to_string(),
    );
    let r = Client::new().get(&gw.url("/")).await;
    assert_eq!(r.status, StatusCode::OK);
    let h = &r.json()["headers"];
    assert!(h.get("x-echo").is_none(), "{h}");
    assert!(h.get("x-injected").is_none(), "{h}");
    assert_eq!(h["x-ok"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_declared_only_at_init_and_run_before_the_plugins_own_call() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("fixture", &plugin("fixture"))
            .upstream("up", &up.url())
            .route("r", "/", "up")
            .stage(
                "fixture",
                r#"{ declare_late = true, rule_request_set = { "x-order" = "rule", "x-rule" = "${route}" }, request_set = { "x-order" = "call" } }"#,
            )
            .to_string(),
    );
    let r = Client::new().get(&gw.url("/")).await;
    assert_eq!(r.status, StatusCode::OK);
    let h = &r.json()["headers"];
    assert_eq!(h["x-declare-late"], "Err(NotAllowed)", "{h}");
    assert!(h.get("x-late").is_none(), "{h}");
    assert_eq!(h["x-rule"], "r");
    assert_eq!(
        h["x-order"], "call",
        "the plugin's call runs after its rules"
    );
}

#[test]
fn bad_rules_are_config_errors_that_name_the_key() {
    for (config, key, why) in [
        (
            r#"{ request = { set = { "x-a" = "${nope}" } } }"#,
            "request.set.x-a",
            "unknown variable",
        ),
        (
            r#"{ response = { remove = ["transfer-encoding"] } }"#,
            "response.remove[0]",
            "manages itself",
        ),
        (
            r#"{ request = { add = { "x-a" = "a\u0001b" } } }"#,
            "request.add.x-a",
            "control byte",
        ),
    ] {
        let (ok, out) = support::check(
            &GatewayConfig::new()
                .plugin("headers", &plugin("headers"))
                .upstream("up", "http://127.0.0.1:9")
                .route("r", "/", "up")
                .stage("headers", config)
                .to_string(),
        );
        assert!(!ok, "{config}: {out}");
        assert!(out.contains(key) && out.contains(why), "{config}: {out}");
    }
}
