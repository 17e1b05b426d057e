mod support;

// The ip-rules plugin through the real gateway, which believes `X-Forwarded-For` from
// 127.0.0.1 only (`server.trusted_proxies`): a test sends from there to present any client
// address, and from 127.0.0.2 (curl, bound to it) to be an untrusted peer, whose
// `X-Forwarded-For` is ignored. Allowed requests reach a real upstream; refused ones get the
// plugin's 403 and never do.

use std::process::Command;

use http::StatusCode;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};

/// The untrusted peer's address: on Linux all of 127.0.0.0/8 is the loopback.
const UNTRUSTED: &str = "127.0.0.2";

/// A gateway trusting 127.0.0.1, with three routes:
/// - `/office`: allow 10/8 and 2001:db8::/32, deny 10.9/16 and 2001:db8:bad::/48;
/// - `/public`: deny 203.0.113.0/24 only;
/// - `/local`: allow the untrusted peer's own address only.
fn gateway(up: &Upstream) -> Gateway {
    let config = GatewayConfig::new()
        .server(r#"trusted_proxies = ["127.0.0.1"]"#)
        .plugin("ip-rules", &plugin("ip_rules"))
        .upstream("up", &up.url())
        .route("office", "/office", "up")
        .stage(
            "ip-rules",
            r#"{ allow = ["10.0.0.0/8", "2001:db8::/32"], deny = ["10.9.0.0/16", "2001:db8:bad::/48"], message = "office networks only" }"#,
        )
        .route("public", "/public", "up")
        .stage("ip-rules", r#"{ deny = ["203.0.113.0/24"] }"#)
        .route("local", "/local", "up")
        .stage("ip-rules", &format!(r#"{{ allow = ["{UNTRUSTED}"] }}"#));
    Gateway::start(&config.to_string())
}

/// Prints the gateway's log when a test fails, so a failure explains itself.
struct LogsOnPanic<'a>(&'a Gateway);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gateway log:\n{}", self.0.logs());
        }
    }
}

/// A GET from 127.0.0.1 (trusted), with `X-Forwarded-For` when given.
async fn from_trusted(c: &Client, gw: &Gateway, path: &str, xff: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
    c.get_with(&gw.url(path), &headers).await
}

/// The plugin's refusal: 403 with its JSON body.
fn assert_refused(r: &Resp, message: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({ "error": "forbidden", "message": message })
    );
}

/// A GET with curl from the untrusted peer, as an operator would check: (status, body).
fn curl_from_untrusted(url: &str, xff: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--interface", UNTRUSTED])
        .args(["-H", &format!("X-Forwarded-For: {xff}")])
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_by_the_forwarded_client_address() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(&up);
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();

    for xff in [
        "10.1.2.3",
        "10.255.255.255",
        "2001:db8::1",
        "[2001:db8::7]:443",
        // An IPv4 client in IPv4-mapped form is that IPv4 client.
        "::ffff:10.1.2.3",
        // The last address no trusted proxy added decides.
        "192.0.2.1, 10.1.2.3",
    ] {
        let hits = up.hits();
        let r = from_trusted(&c, &gw, "/office/x", Some(xff)).await;
        assert_eq!(r.status, StatusCode::OK, "{xff}: {}", r.text());
        assert_eq!(r.json()["path"], "/office/x");
        assert_eq!(up.hits(), hits + 1, "{xff}");
    }

    let hits = up.hits();
    for xff in [
        // Denied inside the allowed networks: deny wins.
        Some("10.9.0.1"),
        Some("10.9.255.255"),
        Some("2001:db8:bad::1"),
        // Outside the allow list.
        Some("192.0.2.1"),
        Some("11.0.0.1"),
        Some("2001:db9::1"),
        Some("::ffff:192.0.2.1"),
        Some("10.1.2.3, 192.0.2.1"),
        // No header: the client is the peer, 127.0.0.1.
        None,
    ] {
        let r = from_trusted(&c, &gw, "/office/x", xff).await;
        assert_refused(&r, "office networks only");
    }
    assert_eq!(up.hits(), hits, "refused requests reached the upstream");

    // A deny list alone lets every other address through.
    let r = from_trusted(&c, &gw, "/public", Some("203.0.113.77")).await;
    assert_refused(&r, "access from this address is not allowed");
    for xff in [Some("203.0.114.1"), Some("2001:db8::1"), None] {
        let r = from_trusted(&c, &gw, "/public", xff).await;
        assert_eq!(r.status, StatusCode::OK, "{xff:?}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(&up);
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();

    // From the trusted proxy, these headers decide...
    let r = from_trusted(&c, &gw, "/office", Some("10.1.2.3")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = from_trusted(&c, &gw, "/public", Some("203.0.113.5")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = from_trusted(&c, &gw, "/local", Some(UNTRUSTED)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // ...from another peer they do not: the client is the peer itself.
    let curl = |path: &'static str, xff: &'static str| {
        let url = gw.url(path);
        tokio::task::spawn_blocking(move || curl_from_untrusted(&url, xff))
    };
    let hits = up.hits();
    let (status, body) = curl("/office", "10.1.2.3").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("office networks only"), "{body}");
    assert_eq!(up.hits(), hits);

    let (status, body) = curl("/public", "203.0.113.5").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The upstream is told who really connected, after what the peer claimed.
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        format!("203.0.113.5, {UNTRUSTED}")
    );

    let (status, body) = curl("/local", "10.1.2.3").await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_bad_network_is_refused_at_load_naming_the_entry() {
    for (stage, key, message) in [
        (
            r#"{ deny = ["10.0.0.0/8", "::1", "10.0.0.0/33"] }"#,
            "deny[2]",
            "`10.0.0.0/33` is not an IP address or network",
        ),
        (
            r#"{ allow = ["192.168.1.1/24"] }"#,
            "allow[0]",
            "the network is `192.168.1.0/24`",
        ),
        (r#"{ allow = [] }"#, "allow", "must not be an empty list"),
        (r#"{}"#, "no rules", "give `allow`, `deny` or both"),
    ] {
        let config = GatewayConfig::new()
            .plugin("ip-rules", &plugin("ip_rules"))
            .upstream("up", "http://127.0.0.1:1")
            .route("r", "/", "up")
            .stage("ip-rules", stage);
        let (ok, out) = support::check(&config.to_string());
        assert!(!ok, "{stage} was accepted");
        assert!(out.contains(key), "{stage}: {out}");
        assert!(out.contains(message), "{stage}: {out}");
    }
}
