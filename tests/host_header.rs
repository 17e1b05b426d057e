//! `host_header` through the real gateway, against an upstream that echoes the `Host` it got:
//! the target's own (the default), the client's (`preserve`), a fixed value, a route's over its
//! upstream's, and a `Host` a plugin or a header rule writes, which wins over all of them.

mod support;

use http::StatusCode;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, check, plugin};

/// The `Host` and `X-Forwarded-Host` the upstream got for a request with `Host: host`.
async fn seen(client: &Client, gw: &Gateway, path: &str, host: &str) -> (String, String) {
    let r = client.get_with(&gw.url(path), &[("host", host)]).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    let headers = &r.json()["headers"];
    let text = |name: &str| headers[name].as_str().unwrap_or("(none)").to_owned();
    (text("host"), text("x-forwarded-host"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_the_targets_the_clients_or_a_fixed_one_and_a_route_overrides_its_upstream() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let url = up.url();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("target", &url)
            .upstream_with("preserve", &[&url], &[r#"host_header = "preserve""#])
            .upstream_with(
                "fixed",
                &[&url],
                &[r#"host_header = "users.internal:8443""#],
            )
            .route("target", "/target", "target")
            .route("preserve", "/preserve", "preserve")
            .route("fixed", "/fixed", "fixed")
            .route("over-preserve", "/over-preserve", "preserve")
            .with(r#"host_header = "target""#)
            .route("over-target", "/over-target", "target")
            .with(r#"host_header = "preserve""#)
            .route("over-fixed", "/over-fixed", "fixed")
            .with(r#"host_header = "other.internal""#)
            .to_string(),
    );
    let client = Client::new();
    let target = up.addr.to_string();
    let client_host = "api.example.com";
    let expect = [
        ("/target", target.as_str()),
        ("/preserve", client_host),
        ("/fixed", "users.internal:8443"),
        ("/over-preserve", target.as_str()),
        ("/over-target", client_host),
        ("/over-fixed", "other.internal"),
    ];
    for (path, host) in expect {
        let got = seen(&client, &gw, path, client_host).await;
        assert_eq!(got, (host.to_owned(), client_host.to_owned()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_a_plugin_or_a_header_rule_writes_is_the_one_the_upstream_gets() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let url = up.url();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("fixture", &plugin("fixture"))
            .plugin("headers", &plugin("headers"))
            .upstream_with("preserve", &[&url], &[r#"host_header = "preserve""#])
            .upstream_with("fixed", &[&url], &[r#"host_header = "users.internal""#])
            .route("plugin", "/plugin", "fixed")
            .stage(
                "fixture",
                r#"{ request_set = { Host = "plugin.example:81" } }"#,
            )
            .route("removed", "/removed", "preserve")
            .stage("fixture", r#"{ request_remove = ["host"] }"#)
            .route("rule", "/rule", "preserve")
            .stage(
                "headers",
                r#"{ request = { set = { host = "${header.x-tenant}.tenants.internal" } } }"#,
            )
            .route("bad", "/bad", "fixed")
            .stage("fixture", r#"{ request_set = { host = "not a host" } }"#)
            .route("untouched", "/untouched", "fixed")
            .stage("fixture", r#"{ request_set = { x-a = "1" } }"#)
            .to_string(),
    );
    let client = Client::new();
    let client_host = "api.example.com";
    let plugin_host = ("plugin.example:81".to_owned(), client_host.to_owned());
    assert_eq!(
        seen(&client, &gw, "/plugin", client_host).await,
        plugin_host
    );
    // Removed: the target's, whatever the policy says.
    let target = (up.addr.to_string(), client_host.to_owned());
    assert_eq!(seen(&client, &gw, "/removed", client_host).await, target);
    assert_eq!(
        seen(&client, &gw, "/untouched", client_host).await,
        ("users.internal".to_owned(), client_host.to_owned())
    );

    let r = client
        .get_with(
            &gw.url("/rule"),
            &[("host", client_host), ("x-tenant", "acme")],
        )
        .await;
    assert_eq!(r.json()["headers"]["host"], "acme.tenants.internal");
    assert_eq!(r.json()["headers"]["x-forwarded-host"], client_host);
    // A rendered value that is not a host leaves the policy's.
    let r = client
        .get_with(
            &gw.url("/rule"),
            &[("host", client_host), ("x-tenant", "a b")],
        )
        .await;
    assert_eq!(r.json()["headers"]["host"], client_host);

    // A value that is no host is refused: the fixture fails on the error.
    let r = client
        .get_with(&gw.url("/bad"), &[("host", client_host)])
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let logs = gw.logs_containing(&["request.set-header \\\"host\\\": invalid-value"]);
    assert!(
        logs.contains("request.set-header \\\"host\\\": invalid-value"),
        "{logs}"
    );
}

#[test]
fn a_header_rule_on_host_is_refused_at_load_for_an_http2_upstream_and_append_everywhere() {
    let headers = plugin("headers");
    let config = |rules: &str| {
        GatewayConfig::new()
            .plugin("headers", &headers)
            .upstream_with("grpc", &["http://127.0.0.1:9"], &[r#"protocol = "h2""#])
            .upstream("plain", "http://127.0.0.1:9")
            .route("r", "/", "grpc")
            .stage("headers", rules)
            .to_string()
    };
    let (ok, out) = check(&config(
        r#"{ request = { set = { host = "a.internal" } } }"#,
    ));
    assert!(!ok);
    assert!(
        out.contains("a header rule writes `host`, but upstream `grpc` speaks HTTP/2"),
        "{out}"
    );
    let (ok, out) = check(&config(
        r#"{ request = { add = { host = "a.internal" } } }"#,
    ));
    assert!(!ok);
    assert!(out.contains("request.add.host"), "{out}");
    // A fixed value that is no host is refused at load too.
    let (ok, out) = check(&config(r#"{ request = { set = { host = "a/b" } } }"#));
    assert!(!ok);
    assert!(out.contains("request.set.host"), "{out}");
    // The same rule on the response, or on a request to an HTTP/1.1 upstream, loads.
    let (ok, out) = check(&config(
        r#"{ response = { set = { host = "a.internal" } } }"#,
    ));
    assert!(ok, "{out}");
    let plain = config(r#"{ request = { set = { host = "a.internal" } } }"#)
        .replace(r#"upstream = "grpc""#, r#"upstream = "plain""#);
    let (ok, out) = check(&plain);
    assert!(ok, "{out}");
}
