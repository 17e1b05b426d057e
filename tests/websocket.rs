//! WebSocket through the gateway, with the `websockets` package (from PyPI) on both sides:
//! the request phase runs on the upgrade (jwt-auth refuses one without a token), frames are
//! copied both ways until a side closes, a quiet tunnel is closed after its idle timeout,
//! and an upstream that does not switch is answered as it answered.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::config::GatewayConfig;
use support::peers::{self, PeerServer};
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, plugin};

const SECRET: &str = "a-websocket-secret-long-enough-for-hs256";

/// The WebSocket client with these arguments: the JSON it printed.
fn client(args: &[&str]) -> Value {
    peers::run("ws_peer.py", args, "")
}

/// An HS256 token for `sub`, signed by PyJWT (`tests/peers/jwt_issuer.py`).
fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let request = serde_json::json!({
        "keys": { "h": { "type": "oct", "secret": SECRET } },
        "tokens": [{ "key": "h", "alg": "HS256", "claims": { "sub": sub, "exp": exp } }],
    });
    let issued = peers::run("jwt_issuer.py", &[], &request.to_string());
    issued["tokens"][0].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_authenticates_the_upgrade_and_frames_pass_both_ways() {
    let server = PeerServer::start("ws_peer.py");
    let cfg = GatewayConfig::new()
        .plugin("jwt", &plugin("jwt_auth"))
        .upstream("ws", &server.url())
        .route("ws", "/ws", "ws")
        .with("strip_prefix = true")
        .stage(
            "jwt",
            &format!(
                r#"{{ algorithms = ["HS256"], secret = "{SECRET}", claims_to_headers = {{ sub = "X-User-ID" }} }}"#
            ),
        );
    let gw = Gateway::start(&cfg.to_string());
    let url = format!("ws://{}/ws/chat?room=1", gw.addr);

    // No token: the plugin answers the handshake, which never reaches the server.
    let refused = client(&["client", &url]);
    assert_eq!(refused["refused"], 401, "{refused}");
    assert!(
        refused["body"].as_str().unwrap().contains("missing_token"),
        "{refused}"
    );

    let auth = format!("Authorization: Bearer {}", token("alice"));
    let got = client(&["client", &url, "-H", &auth]);
    // The server saw the handshake as the pipeline left it: prefix stripped, claim added.
    assert_eq!(got["hello"]["path"], "/chat?room=1", "{got}");
    let headers = &got["hello"]["headers"];
    assert_eq!(headers["x-user-id"], "alice");
    assert_eq!(headers["upgrade"], "websocket");
    assert!(headers["x-forwarded-for"].is_string());
    let expected: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    assert_eq!(got["echoes"], serde_json::json!(expected));
    assert_eq!(
        got["big_echoed"], true,
        "a 1 MiB binary message comes back whole"
    );
    // The server's close frame, code and reason, reached the client.
    assert_eq!(got["close"]["code"], 4000, "{got}");
    assert_eq!(got["close"]["reason"], "bye");

    // The gateway still serves plain requests beside its tunnels.
    let resp = Client::new().get(&gw.url("/nowhere")).await;
    assert_eq!(resp.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_tunnel_is_closed_after_its_idle_timeout_and_a_busy_one_is_not() {
    let server = PeerServer::start("ws_peer.py");
    let cfg = GatewayConfig::new()
        // HTTP's own deadlines are far shorter than the tunnel's: they no longer apply.
        .server("keepalive_timeout_ms = 200")
        .server("header_read_timeout_ms = 200")
        .upstream("ws", &server.url())
        .route("ws", "/", "ws")
        .with("websocket_idle_timeout_ms = 1200");
    let gw = Gateway::start(&cfg.to_string());
    let got = client(&["idle", &format!("ws://{}/", gw.addr), "0.6", "2.5"]);
    // Busy for longer than the timeout, a message every 200 ms: still open.
    assert!(got["busy_seconds"].as_f64().unwrap() > 1.2, "{got}");
    // Quiet for longer than the keep-alive timeout, shorter than the tunnel's: still open.
    assert_eq!(got["open_after_short"], true, "{got}");
    // Quiet for longer than the tunnel's: closed under it.
    assert_eq!(got["open_after_long"], false, "{got}");
    let logs = gw.logs_containing(&["websocket tunnel closed"]);
    assert!(
        logs.contains("nothing moved either way for 1200 ms"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_does_not_switch_is_answered_as_it_answered() {
    // A plain HTTP server: it answers the handshake with an ordinary 200.
    let up = Upstream::start("plain", Behaviour::Echo).await;
    let cfg = GatewayConfig::new()
        .upstream("plain", &up.url())
        .route("all", "/", "plain");
    let gw = Gateway::start(&cfg.to_string());
    let resp = Client::new()
        .get_with(
            &gw.url("/socket"),
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!(resp.status, 200);
    let echoed = resp.json();
    assert_eq!(echoed["path"], "/socket");
    // It was asked to switch, as the client asked.
    assert_eq!(echoed["headers"]["upgrade"], "websocket");
    assert_eq!(echoed["headers"]["connection"], "upgrade");

    // A client refused by the WebSocket library itself gets the server's refusal.
    let server = PeerServer::start("ws_peer.py");
    let cfg = GatewayConfig::new()
        .upstream("ws", &server.url())
        .route("ws", "/", "ws");
    let gw = Gateway::start(&cfg.to_string());
    let resp = Client::new()
        .get_with(
            &gw.url("/"),
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
        )
        .await;
    assert_eq!(resp.status, 400, "no Sec-WebSocket-Key: {}", resp.text());
}
