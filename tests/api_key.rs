mod support;

// The api-key plugin through the real gateway: keys from the config and from a key file the
// gateway re-reads when it changes, keys taken off the request before the upstream, the vars
// later plugins see (headers, and rate-limit for a per-consumer quota), expiry on the real
// clock, and the answers a client gets. Refused requests never reach the upstream.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};

/// How long a rewritten key file may take to be live (the watcher's debounce, a reload).
const RELOAD_WITHIN: Duration = Duration::from_secs(10);

fn sha(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `printf %s KEY | sha256sum`, as the README tells an operator to hash a key.
fn sha256sum(key: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", key])
        .output()
        .expect("sh runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

/// An RFC 3339 instant `secs` from now, written by `date`.
fn rfc3339_in(secs: u64) -> String {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{at}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
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

fn base(up: &Upstream) -> GatewayConfig {
    GatewayConfig::new()
        .plugin("api-key", &plugin("api_key"))
        .plugin("headers", &plugin("headers"))
        .plugin("rate-limit", &plugin("rate_limit"))
        .upstream("up", &up.url())
}

/// The vars, as the upstream sees them through the headers plugin.
const SHOW_VARS: &str =
    r#"{ request = { set = { "x-consumer" = "${var.consumer}", "x-scopes" = "${var.scopes}" } } }"#;

async fn get(c: &Client, gw: &Gateway, path: &str, key: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = key.iter().map(|k| ("x-api-key", *k)).collect();
    c.get_with(&gw.url(path), &headers).await
}

fn assert_answer(r: &Resp, status: StatusCode, body: Value) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), body);
}

fn missing() -> Value {
    json!({ "error": "missing_api_key", "message": "an API key is required" })
}

fn invalid() -> Value {
    json!({ "error": "invalid_api_key", "message": "the API key is not valid for this request" })
}

/// A curl GET, as an operator would try the route: (status, headers and body).
fn curl(url: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-i"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (response, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), response.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_config_authenticate_and_stay_off_the_upstream() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let keys = format!(
        r#"[
  {{ consumer = "mobile-app", key_sha256 = "{}", expires = 2999-01-01T00:00:00Z, scopes = ["orders:read"] }},
  {{ consumer = "old-app", key_sha256 = "{}", expires = "2020-01-01T00:00:00Z", scopes = ["orders:read"] }},
  {{ consumer = "reports", key_sha256 = "{}", scopes = ["reports:read"] }},
  {{ consumer = "dev", key = "dev-key-0123", scopes = ["orders:read", "orders:write"] }},
]"#,
        sha("mobile-secret"),
        sha("old-secret"),
        sha("reports-secret"),
    );
    let config = base(&up)
        .route("orders", "/orders", "up")
        .stage(
            "api-key",
            &format!(
                r#"{{ keys = {keys}, key_source = ["header:X-API-Key", "query:api_key"], required_scopes = ["orders:read"] }}"#
            ),
        )
        .stage("headers", SHOW_VARS);
    let gw = Gateway::start(&config.to_string());
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();

    // In the header: the upstream gets the vars, not the key.
    let r = get(&c, &gw, "/orders/7?page=2", Some("mobile-secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["path"], "/orders/7");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["headers"]["x-consumer"], "mobile-app");
    assert_eq!(seen["headers"]["x-scopes"], "orders:read");
    assert!(seen["headers"].get("x-api-key").is_none(), "{seen}");

    // In the query: taken out of it, the rest kept as sent.
    let r = c
        .get(&gw.url("/orders?page=2&api_key=dev-key-0123&sort=-id"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["query"], "page=2&sort=-id");
    assert_eq!(seen["headers"]["x-consumer"], "dev");
    assert_eq!(seen["headers"]["x-scopes"], "orders:read orders:write");
    let r = c.get(&gw.url("/orders?api_key=dev-key-0123")).await;
    assert_eq!(r.json()["query"], Value::Null);
    let hits = up.hits();

    // Missing: 401. Unknown, expired, or without the route's scope: 403.
    let r = get(&c, &gw, "/orders", None).await;
    assert_answer(&r, StatusCode::UNAUTHORIZED, missing());
    assert_eq!(r.header("www-authenticate"), Some("ApiKey"));
    for key in [
        "nope",
        "old-secret",
        "reports-secret",
        &sha("mobile-secret"),
    ] {
        let r = get(&c, &gw, "/orders", Some(key)).await;
        assert_answer(&r, StatusCode::FORBIDDEN, invalid());
    }
    let r = get(&c, &gw, "/orders", Some(&"k".repeat(513))).await;
    assert_answer(&r, StatusCode::FORBIDDEN, invalid());
    assert_eq!(up.hits(), hits, "refused requests reached the upstream");

    // The same, with curl.
    let url = gw.url("/orders/1");
    let (status, response) = tokio::task::spawn_blocking(move || {
        let refused = curl(&url, &[]);
        let passed = curl(&url, &["X-API-Key: mobile-secret"]);
        (refused, passed)
    })
    .await
    .map(|(refused, passed)| {
        assert_eq!(refused.0, 401, "{}", refused.1);
        assert!(
            refused.1.contains(r#""error":"missing_api_key""#),
            "{}",
            refused.1
        );
        passed
    })
    .unwrap();
    assert_eq!(status, 200, "{response}");
    assert!(
        response.contains(r#""x-consumer":"mobile-app""#),
        "{response}"
    );
    assert!(!response.contains("mobile-secret"), "{response}");

    let logs = gw.logs_containing(&["consumer `old-app` has expired"]);
    assert!(
        logs.contains("a plain `key` is for development only"),
        "{logs}"
    );
    for secret in [
        "mobile-secret",
        "old-secret",
        "reports-secret",
        "dev-key-0123",
    ] {
        assert!(!logs.contains(secret), "{secret} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_expires_on_the_clock_without_a_reload() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    // Long enough for the gateway to start and answer once before it.
    let expires = rfc3339_in(5);
    let config = base(&up).route("r", "/r", "up").stage(
        "api-key",
        &format!(
            r#"{{ keys = [{{ consumer = "soon", key_sha256 = "{}", expires = "{expires}" }}] }}"#,
            sha("soon-secret")
        ),
    );
    let gw = Gateway::start(&config.to_string());
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let r = get(&c, &gw, "/r", Some("soon-secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let started = Instant::now();
    loop {
        let r = get(&c, &gw, "/r", Some("soon-secret")).await;
        if r.status == StatusCode::FORBIDDEN {
            assert_answer(&r, StatusCode::FORBIDDEN, invalid());
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{expires} never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!gw.logs().contains("config reloaded"));
}

/// Polls until `key` gets `status` on `path`.
async fn wait_for(c: &Client, gw: &Gateway, path: &str, key: &str, status: StatusCode) {
    let started = Instant::now();
    loop {
        let r = get(c, gw, path, Some(key)).await;
        if r.status == status {
            return;
        }
        assert!(
            started.elapsed() < RELOAD_WITHIN,
            "{key} still gets {} after {RELOAD_WITHIN:?}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write(path: &Path, text: &str) {
    // Written next to it and renamed over it, as deploy tools do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_file_takes_effect_without_a_restart() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let first = json!([
        { "consumer": "alice", "key_sha256": sha256sum("alice-secret-1"), "scopes": ["orders:read"] },
        { "consumer": "bob", "key_sha256": sha256sum("bob-secret") },
    ]);
    write(&file, &serde_json::to_string_pretty(&first).unwrap());
    let config = base(&up)
        .route("orders", "/orders", "up")
        .stage_with(
            "api-key",
            &[&format!(
                "config_files = {{ keys = {:?} }}",
                file.display().to_string()
            )],
        )
        .stage("headers", SHOW_VARS);
    let gw = Gateway::start(&config.to_string());
    let _logs = LogsOnPanic(&gw);
    let pid = gw.pid();
    let c = Client::new();

    let r = get(&c, &gw, "/orders", Some("alice-secret-1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-consumer"], "alice");
    let r = get(&c, &gw, "/orders", Some("alice-secret-2")).await;
    assert_answer(&r, StatusCode::FORBIDDEN, invalid());

    // Alice's key is rotated and Bob's revoked, in a TOML file this time.
    write(
        &file,
        &format!(
            "# rotated\n[[keys]]\nconsumer = \"alice\"\nkey_sha256 = \"{}\"\nscopes = [\"orders:read\", \"orders:write\"]\n",
            sha256sum("alice-secret-2")
        ),
    );
    wait_for(&c, &gw, "/orders", "alice-secret-2", StatusCode::OK).await;
    let r = get(&c, &gw, "/orders", Some("alice-secret-2")).await;
    assert_eq!(r.json()["headers"]["x-scopes"], "orders:read orders:write");
    for old in ["alice-secret-1", "bob-secret"] {
        let r = get(&c, &gw, "/orders", Some(old)).await;
        assert_answer(&r, StatusCode::FORBIDDEN, invalid());
    }
    assert_eq!(gw.pid(), pid);
    assert!(
        gw.logs_containing(&["config reloaded"])
            .contains("config reloaded")
    );

    // A broken file is refused, naming the entry, and the keys in use stay.
    write(
        &file,
        &json!([{ "consumer": "alice", "key_sha256": sha("x"), "expires": "soon" }]).to_string(),
    );
    let logs = gw.logs_containing(&["reload failed"]);
    assert!(logs.contains("keys[0].expires"), "{logs}");
    let r = get(&c, &gw, "/orders", Some("alice-secret-2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_consumer_quota_is_rate_limit_on_var_consumer() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    // The README's example: two keys for one consumer share its quota.
    let config = base(&up)
        .route("orders", "/orders", "up")
        .stage(
            "api-key",
            &format!(
                r#"{{ keys = [{{ consumer = "mobile-app", key_sha256 = "{}" }}, {{ consumer = "mobile-app", key_sha256 = "{}" }}, {{ consumer = "partner", key_sha256 = "{}" }}] }}"#,
                sha("mobile-old"),
                sha("mobile-new"),
                sha("partner-secret")
            ),
        )
        .stage(
            "rate-limit",
            r#"{ key = "var:consumer", rate = 1, per = "hour", burst = 2 }"#,
        );
    let gw = Gateway::start(&config.to_string());
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    for key in ["mobile-old", "mobile-new"] {
        let r = get(&c, &gw, "/orders", Some(key)).await;
        assert_eq!(r.status, StatusCode::OK, "{key}: {}", r.text());
    }
    let r = get(&c, &gw, "/orders", Some("mobile-old")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited");
    // Another consumer has a quota of its own.
    let r = get(&c, &gw, "/orders", Some("partner-secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("ratelimit-remaining"), Some("1"));
    // A refused key is answered before the limiter, and costs no one's quota.
    for _ in 0..3 {
        let r = get(&c, &gw, "/orders", Some("nope")).await;
        assert_answer(&r, StatusCode::FORBIDDEN, invalid());
    }
    let r = get(&c, &gw, "/orders", Some("partner-secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_are_configurable() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = base(&up).route("legacy", "/legacy", "up").stage(
        "api-key",
        &format!(
            r#"{{ keys = [{{ consumer = "c", key_sha256 = "{}" }}], key_source = "header:Api-Token", on_missing = {{ status = 403, body = {{ code = "E_AUTH", detail = "no token" }} }}, on_refused = {{ body = {{ code = "E_AUTH", detail = "bad token" }} }} }}"#,
            sha("token-1")
        ),
    );
    let gw = Gateway::start(&config.to_string());
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let r = c.get(&gw.url("/legacy")).await;
    assert_answer(
        &r,
        StatusCode::FORBIDDEN,
        json!({ "code": "E_AUTH", "detail": "no token" }),
    );
    assert_eq!(r.header("www-authenticate"), None);
    let r = c
        .get_with(&gw.url("/legacy"), &[("api-token", "token-2")])
        .await;
    assert_answer(
        &r,
        StatusCode::FORBIDDEN,
        json!({ "code": "E_AUTH", "detail": "bad token" }),
    );
    let r = c
        .get_with(&gw.url("/legacy"), &[("api-token", "token-1")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["headers"].get("api-token").is_none());
}

#[test]
fn bad_keys_are_refused_at_load_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(
        &file,
        format!(
            "[[keys]]\nconsumer = \"a\"\nkey_sha256 = \"{}\"\n\n[[keys]]\nconsumer = \"b\"\nkey_sha256 = \"not-hex\"\n",
            sha("a")
        ),
    )
    .unwrap();
    let good = |name: &str| format!(r#"{{ consumer = "{name}", key_sha256 = "{}" }}"#, sha(name));
    let (a, b, c) = (good("a"), good("b"), good("c"));
    for (lines, key, message) in [
        (
            format!(
                r#"config = {{ keys = [{a}, {b}, {c}, {{ consumer = "d", key = "d", expires = "2027-13-01T00:00:00Z" }}] }}"#
            ),
            "`keys[3].expires`",
            "is not an RFC 3339 date-time",
        ),
        (
            format!(r#"config = {{ keys = [{a}, {b}, {a}] }}"#),
            "`keys[2]`",
            "the same key as keys[0]",
        ),
        (
            format!(
                "config_files = {{ keys = {:?} }}",
                file.display().to_string()
            ),
            "`keys[1].key_sha256`",
            "must be 64 hex digits",
        ),
        (
            format!(r#"config = {{ keys = [{a}], required_scopes = ["a b"] }}"#),
            "`required_scopes[0]`",
            "a scope is",
        ),
        (
            r#"config = { key_source = "header:X-API-Key" }"#.to_string(),
            "`keys`",
            "required",
        ),
    ] {
        let config = GatewayConfig::new()
            .plugin("api-key", &plugin("api_key"))
            .upstream("up", "http://127.0.0.1:1")
            .route("r", "/", "up")
            .stage_with("api-key", &[&lines]);
        let (ok, out) = support::check(&config.to_string());
        assert!(!ok, "{lines} was accepted");
        assert!(
            out.contains(&format!("config key {key}: ")),
            "{lines}: {out}"
        );
        assert!(out.contains(message), "{lines}: {out}");
    }
}
