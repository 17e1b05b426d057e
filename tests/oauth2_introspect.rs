//! The oauth2-introspect plugin through the real gateway, against a real authorization server
//! (Authlib's, `tests/peers/oauth2_server.py`): real clients get real tokens from it with
//! curl, and the gateway introspects them (RFC 7662) through an upstream, checks their scopes
//! per route, hands the consumer on, caches active answers, and answers 503 when the server
//! cannot vouch for a token, while it goes on serving.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::config::GatewayConfig;
use support::peers::PeerServer;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, plugin};

const ISSUER: &str = "https://idp.example.test";

/// A token from the authorization server for `client` (its secret is `<first word>-secret`),
/// by the client_credentials grant, asked for with curl as a client would.
fn token(idp: &PeerServer, client: &str, scope: &str) -> String {
    let secret = format!("{}-secret", client.split('-').next().unwrap());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-u",
            &format!("{client}:{secret}"),
        ])
        .args([
            "-d",
            "grant_type=client_credentials",
            "-d",
            &format!("scope={scope}"),
        ])
        .arg(format!("{}/oauth/token", idp.url()))
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "token for {client}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["scope"], scope, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

/// Revokes a token at the server (RFC 7009), as its client would.
fn revoke(idp: &PeerServer, client: &str, token: &str) {
    let secret = format!("{}-secret", client.split('-').next().unwrap());
    let status = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-u",
            &format!("{client}:{secret}"),
        ])
        .args(["-d", &format!("token={token}")])
        .arg(format!("{}/oauth/revoke", idp.url()))
        .status()
        .unwrap();
    assert!(status.success());
}

/// The server's counts: introspections answered, and refused for bad client credentials.
async fn stats(idp: &PeerServer) -> (u64, u64) {
    let s = Client::new()
        .get(&format!("{}/stats", idp.url()))
        .await
        .json();
    (
        s["introspections"].as_u64().unwrap(),
        s["refused"].as_u64().unwrap(),
    )
}

/// The gateway's client secret, in a file of its own as `config_files` reads it.
fn secret_file(dir: &Path, secret: &str) -> String {
    let path = dir.join(format!("introspect-{secret}.txt"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.display().to_string()
}

/// The plugin, granted the upstream `idp`; and the headers plugin, which shows the upstream
/// what the token was found to be.
fn plugins(cfg: GatewayConfig) -> GatewayConfig {
    cfg.plugin_with(
        "oauth2-introspect",
        &plugin("oauth2_introspect"),
        &[
            r#"capabilities = ["log", "clock", "kv", "outbound"]"#,
            r#"outbound = ["upstream:idp"]"#,
        ],
    )
    .plugin("headers", &plugin("headers"))
}

/// A route guarded by the plugin with these extra config keys, then the headers plugin.
fn guarded(
    cfg: GatewayConfig,
    name: &str,
    prefix: &str,
    secret: &str,
    keys: &str,
) -> GatewayConfig {
    let config = format!(
        r#"config = {{ introspection_url = "http://idp/oauth/introspect", client_id = "gateway", issuer = "{ISSUER}", audience = "orders-api"{keys} }}"#
    );
    let files = format!(r#"config_files = {{ client_secret = "{secret}" }}"#);
    cfg.route(name, prefix, "orders")
        .stage_with("oauth2-introspect", &[&config, &files])
        .stage(
            "headers",
            r#"{ request = { set = { "x-consumer" = "${var.consumer}", "x-scope" = "${var.scope}", "x-client-id" = "${var.client_id}" } } }"#,
        )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tokens_are_introspected_checked_per_route_and_cached() {
    let idp = PeerServer::start("oauth2_server.py");
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "gateway-secret");
    let cfg = plugins(GatewayConfig::new())
        .upstream("idp", &idp.url())
        .upstream("orders", &orders.url());
    let cfg = guarded(
        cfg,
        "orders",
        "/orders",
        &secret,
        r#", required_scopes = ["orders:read"]"#,
    );
    let cfg = guarded(
        cfg,
        "reports",
        "/reports",
        &secret,
        r#", required_scopes = ["reports:read"], client_auth = "post""#,
    );
    let cfg = guarded(cfg, "short", "/short", &secret, ", cache_max_ms = 300");
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();

    let mobile = token(&idp, "mobile-app", "orders:read profile");
    let reporter = token(&idp, "reporter", "reports:read");

    // An active token with the route's scope goes on; the upstream sees whose it is.
    let resp = client
        .get_with(&gw.url("/orders/7"), &[("authorization", &bearer(&mobile))])
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.json();
    assert_eq!(seen["headers"]["x-consumer"], "mobile-app");
    assert_eq!(seen["headers"]["x-client-id"], "mobile-app");
    assert_eq!(seen["headers"]["x-scope"], "orders:read profile");
    assert_eq!(stats(&idp).await, (1, 0));

    // Cached: more requests, on this route and another, ask the server nothing more.
    for _ in 0..20 {
        let resp = client
            .get_with(&gw.url("/orders/7"), &[("authorization", &bearer(&mobile))])
            .await;
        assert_eq!(resp.status, 200);
    }
    // ... and the other route checks its own scope against the same answer.
    let resp = client
        .get_with(
            &gw.url("/reports/q4"),
            &[("authorization", &bearer(&mobile))],
        )
        .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["error"], "insufficient_scope");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer, error="insufficient_scope", scope="reports:read""#)
    );
    assert_eq!(
        stats(&idp).await,
        (1, 0),
        "one introspection for 22 requests"
    );

    // The reporter's token, introspected with the credentials in the form (client_secret_post).
    let resp = client
        .get_with(
            &gw.url("/reports/q4"),
            &[("authorization", &bearer(&reporter))],
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["headers"]["x-consumer"], "reporter");
    let resp = client
        .get_with(
            &gw.url("/orders/7"),
            &[("authorization", &bearer(&reporter))],
        )
        .await;
    assert_eq!(resp.status, 403);
    assert_eq!(stats(&idp).await, (2, 0));

    // No token: a bare challenge, and no call. A token the server never issued: 401.
    let resp = client.get(&gw.url("/orders/7")).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    assert_eq!(resp.json()["error"], "missing_token");
    let resp = client
        .get_with(
            &gw.url("/orders/7"),
            &[("authorization", "Bearer not-a-real-token")],
        )
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["message"], "the token is not active");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer, error="invalid_token", error_description="the token is not active""#)
    );
    assert_eq!(stats(&idp).await, (3, 0));
    assert_eq!(orders.hits(), 22, "no refused request reached the upstream");

    // Revoked at the server: refused once the route's 300 ms cache lets go of the answer.
    let revoked = token(&idp, "mobile-app", "orders:read");
    let resp = client
        .get_with(&gw.url("/short/1"), &[("authorization", &bearer(&revoked))])
        .await;
    assert_eq!(resp.status, 200);
    revoke(&idp, "mobile-app", &revoked);
    let started = Instant::now();
    loop {
        let resp = client
            .get_with(&gw.url("/short/1"), &[("authorization", &bearer(&revoked))])
            .await;
        if resp.status == 401 {
            break;
        }
        assert_eq!(resp.status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a revoked token was still let through well after the cache's 300 ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A token that lives 2 s is refused once its `exp` passes, cache or not.
    let short = token(&idp, "short-lived", "orders:read");
    let resp = client
        .get_with(&gw.url("/orders/7"), &[("authorization", &bearer(&short))])
        .await;
    assert_eq!(resp.status, 200);
    let before = stats(&idp).await.0;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = client
        .get_with(&gw.url("/orders/7"), &[("authorization", &bearer(&short))])
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(
        stats(&idp).await.0 > before,
        "the expired answer was not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_vouch_gives_503_and_the_gateway_goes_on() {
    let idp = PeerServer::start("oauth2_server.py");
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "gateway-secret");
    let wrong = secret_file(dir.path(), "not-the-secret");
    let peer = &idp;
    let cfg = plugins(GatewayConfig::new().admin())
        .upstream("idp", &peer.url())
        .upstream("orders", &orders.url());
    let cfg = guarded(cfg, "orders", "/orders", &good, ", timeout_ms = 500");
    let cfg = guarded(cfg, "wrong", "/wrong", &wrong, "");
    let cfg = cfg
        .route("elsewhere", "/elsewhere", "orders")
        .stage(
            "oauth2-introspect",
            r#"{ introspection_url = "https://idp.example.com/introspect", client_id = "gateway", client_secret = "x" }"#,
        )
        .route("open", "/open", "orders");
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    let mobile = token(peer, "mobile-app", "orders:read");
    let auth = [("authorization", bearer(&mobile))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();

    // The server refuses the gateway's own credentials: 503, and the log says why.
    let resp = client.get_with(&gw.url("/wrong/1"), &auth).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.json()["error"], "temporarily_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(stats(peer).await, (0, 1));
    let needle = "http://idp/oauth/introspect answered 401: the server refused the gateway's client credentials";
    assert!(gw.logs_containing(&[needle]).contains(needle));

    // An origin the plugin was not granted: refused before any socket opens.
    let resp = client.get_with(&gw.url("/elsewhere/1"), &auth).await;
    assert_eq!(resp.status, 503);
    let needle = "https://idp.example.com/introspect denied";
    assert!(gw.logs_containing(&[needle]).contains(needle));

    // The server dies: every new token gets 503 within the timeout, a cached one still
    // passes, and the rest of the gateway serves on.
    let resp = client.get_with(&gw.url("/orders/1"), &auth).await;
    assert_eq!(resp.status, 200);
    let other = token(peer, "mobile-app", "profile");
    drop(idp);
    let started = Instant::now();
    let resp = client
        .get_with(&gw.url("/orders/1"), &[("authorization", &bearer(&other))])
        .await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_millis(1500));
    let resp = client.get_with(&gw.url("/orders/1"), &auth).await;
    assert_eq!(resp.status, 200, "a cached answer needs no server");
    assert_eq!(client.get(&gw.url("/open/1")).await.status, 200);
    let resp = client.get(&gw.url("/orders/1")).await;
    assert_eq!(resp.status, 401, "no token needs no server either");
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "wasmgate_plugin_outbound_requests_total{plugin=\"oauth2-introspect\",destination=\"upstream:idp\""
        )),
        "{metrics}"
    );
}
