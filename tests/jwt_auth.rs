mod support;

// The `jwt-auth` plugin through the real gateway, with tokens and keys from an independent
// issuer (PyJWT, `tests/peers/jwt_issuer.py`): claims reach the upstream as headers and later
// plugins as vars, spoofed claim headers are dropped, bad tokens get 401 and missing roles 403.
// Keys from `jwks_url` come from a real JWKS server (`tests/peers/jwks_server.py`) whose set
// the tests rotate, take down, and count the requests of.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::config::GatewayConfig;
use support::peers::PeerServer;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};

const SECRET: &str = "an-e2e-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs the issuer once: `keys` to make and `tokens` to sign (see the script's docstring).
fn issue(request: Value) -> Value {
    support::peers::run("jwt_issuer.py", &[], &request.to_string())
}

fn tokens(issued: &Value) -> Vec<String> {
    issued["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// A JSON value as TOML (inline tables and arrays), for plugin configs.
fn toml(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", Value::String(k.clone()), toml(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A gateway with one echo upstream and the given routes (each with its own pipeline).
fn gateway(up: &Upstream, routes: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[plugins.jwt-auth]
path = "{jwt}"
[plugins.headers]
path = "{headers}"
[upstreams.up]
targets = ["{up}"]
{routes}
"#,
        jwt = plugin("jwt_auth").display(),
        headers = plugin("headers").display(),
        up = up.url(),
    ))
}

/// A route `name` on `/name` whose pipeline is jwt-auth with `config` (a TOML inline table).
fn route(name: &str, config: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
path_prefix = "/{name}"
upstream = "up"
[[routes.pipeline]]
plugin = "jwt-auth"
config = {config}
"#
    )
}

async fn get(c: &Client, gw: &Gateway, path: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    c.get_with(&gw.url(path), &headers).await
}

/// A refusal as the plugin makes it: status, a bearer challenge and a JSON error body.
fn assert_refused(r: &Resp, status: StatusCode, error: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let challenge = r
        .header("www-authenticate")
        .expect("a WWW-Authenticate challenge");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    if error == "invalid_token" {
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_reaches_the_upstream_with_claim_headers_and_spoofs_dropped() {
    let t = now();
    let issued = issue(json!({
        "keys": { "h": { "type": "oct", "secret": SECRET } },
        "tokens": [
            { "key": "h", "alg": "HS256",
              "claims": { "sub": "alice", "tenant": "acme", "exp": t + 600,
                          "name": "Jos\u{e9}", "note": "a\r\nX-Injected: 1", "groups": ["a", "b"],
                          "nested": [{ "a": 1 }] } },
            { "key": "h", "alg": "HS256", "claims": { "tenant": "no-subject", "exp": t + 600 } },
        ],
    }));
    let [alice, nosub] = &tokens(&issued)[..] else {
        panic!()
    };
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(
        &up,
        &route(
            "api",
            &format!(
                r#"{{ algorithms = ["HS256"], secret = "{SECRET}", claims_to_headers = {{ sub = "X-User-ID", tenant = "X-Tenant", name = "X-Name", note = "X-Note", groups = "X-Groups", nested = "X-Nested" }} }}"#
            ),
        ),
    );
    let c = Client::new();
    // Twice: the second is answered from the plugin's cache, and must behave the same.
    for _ in 0..2 {
        let auth = format!("Bearer {alice}");
        let r = c
            .get_with(
                &gw.url("/api/orders"),
                &[
                    ("authorization", &auth),
                    ("x-user-id", "admin"),
                    ("X-Tenant", "other"),
                    ("x-name", "spoofed"),
                    ("x-kept", "1"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let h = &r.json()["headers"];
        assert_eq!(h["x-user-id"], "alice", "{h}");
        assert_eq!(h["x-tenant"], "acme");
        assert_eq!(h["x-kept"], "1");
        // A list claim is joined by commas.
        assert_eq!(h["x-groups"], "a,b");
        // Claims no header can carry (non-ASCII, CR/LF, a list of objects) leave their header
        // unset.
        for absent in ["x-name", "x-note", "x-nested", "x-injected"] {
            assert!(h.get(absent).is_none(), "{absent}: {h}");
        }
    }
    // A spoofed header for a claim the token lacks is dropped, not passed through.
    let auth = format!("Bearer {nosub}");
    let r = c
        .get_with(
            &gw.url("/api"),
            &[("authorization", &auth), ("x-user-id", "admin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let h = &r.json()["headers"];
    assert!(h.get("x-user-id").is_none(), "{h}");
    assert_eq!(h["x-tenant"], "no-subject");
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_and_expired_tokens_get_401() {
    let t = now();
    let issued = issue(json!({
        "keys": {
            "h": { "type": "oct", "secret": SECRET },
            "other": { "type": "oct", "secret": "a-different-secret-of-decent-length!" },
        },
        "tokens": [
            { "key": "h", "alg": "HS256", "claims": { "sub": "a", "exp": t - 120 } },
            { "key": "h", "alg": "HS256", "claims": { "sub": "a", "nbf": t + 3600 } },
            { "key": "other", "alg": "HS256", "claims": { "sub": "a", "exp": t + 600 } },
            { "key": "h", "alg": "HS384", "claims": { "sub": "a", "exp": t + 600 } },
            { "key": "h", "alg": "HS256", "claims": { "sub": "a", "exp": t + 600 } },
        ],
    }));
    let [expired, early, wrong_key, wrong_alg, good] = &tokens(&issued)[..] else {
        panic!()
    };
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(
        &up,
        &route(
            "api",
            &format!(r#"{{ algorithms = ["HS256"], secret = "{SECRET}" }}"#),
        ),
    );
    let c = Client::new();

    let r = get(&c, &gw, "/api", None).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "missing_token");
    let r = c
        .get_with(&gw.url("/api"), &[("authorization", "Basic YWxpY2U6cHc=")])
        .await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "missing_token");

    // An unsigned copy of a good token: `alg: none` and no signature.
    let (_, rest) = good.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let cases = [
        ("expired", expired.as_str(), "token expired"),
        ("not yet valid", early.as_str(), "token not yet valid"),
        (
            "signed by another key",
            wrong_key.as_str(),
            "invalid token signature",
        ),
        (
            "algorithm not allowed",
            wrong_alg.as_str(),
            "token algorithm not allowed",
        ),
        ("alg none", unsigned.as_str(), "token algorithm not allowed"),
        (
            "garbage",
            "not.a.jwt",
            "malformed token: header is not base64url",
        ),
    ];
    for (what, token, message) in cases {
        let r = get(&c, &gw, "/api", Some(token)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(r.json()["message"], message, "{what}");
    }
    let r = get(&c, &gw, "/api", Some(&tampered)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(up.hits(), 0, "no refused request reaches the upstream");

    let r = get(&c, &gw, "/api", Some(good)).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_required_role_gets_403() {
    let t = now();
    let issued = issue(json!({
        "keys": { "h": { "type": "oct", "secret": SECRET } },
        "tokens": [
            { "key": "h", "alg": "HS256", "claims": { "sub": "u", "exp": t + 600, "roles": ["viewer"] } },
            { "key": "h", "alg": "HS256", "claims": { "sub": "u", "exp": t + 600 } },
            { "key": "h", "alg": "HS256", "claims": { "sub": "a", "exp": t + 600, "roles": ["viewer", "orders:write"] } },
            { "key": "h", "alg": "HS256", "claims": { "sub": "s", "exp": t + 600, "roles": ["orders:*"] } },
        ],
    }));
    let [viewer, no_roles, writer, wildcard] = &tokens(&issued)[..] else {
        panic!()
    };
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(
        &up,
        &route(
            "orders",
            &format!(
                r#"{{ algorithms = ["HS256"], secret = "{SECRET}", required_roles = ["admin", "orders:write"] }}"#
            ),
        ),
    );
    let c = Client::new();
    for token in [viewer, no_roles] {
        // Twice, so the cached refusal is checked too.
        for _ in 0..2 {
            let r = get(&c, &gw, "/orders", Some(token)).await;
            assert_refused(&r, StatusCode::FORBIDDEN, "forbidden");
            assert_eq!(
                r.header("www-authenticate"),
                Some(r#"Bearer error="insufficient_scope""#)
            );
        }
    }
    assert_eq!(up.hits(), 0);
    for token in [writer, wildcard] {
        let r = get(&c, &gw, "/orders", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_an_independent_issuer_verify_with_pem_keys() {
    let t = now();
    let claims = json!({ "sub": "svc", "iss": "https://idp.test", "aud": "api", "exp": t + 600 });
    let issued = issue(json!({
        "keys": {
            "rsa": { "type": "RSA" },
            "ec": { "type": "EC-P256" },
            "ec384": { "type": "EC-P384" },
            "ed": { "type": "Ed25519" },
        },
        "tokens": [
            { "key": "rsa", "alg": "RS256", "claims": claims },
            { "key": "rsa", "alg": "PS256", "claims": claims },
            { "key": "ec", "alg": "ES256", "claims": claims },
            { "key": "ec384", "alg": "ES384", "claims": claims },
            { "key": "ed", "alg": "EdDSA", "claims": claims },
        ],
    }));
    let toks = tokens(&issued);
    let pem = |k: &str| Value::String(issued["keys"][k]["pem"].as_str().unwrap().to_string());
    let routes = [
        ("rs", r#"["RS256", "PS256"]"#, pem("rsa")),
        ("es", r#"["ES256"]"#, pem("ec")),
        ("es384", r#"["ES384"]"#, pem("ec384")),
        ("ed", r#"["EdDSA"]"#, pem("ed")),
    ];
    let config: String = routes
        .iter()
        .map(|(name, algs, pem)| {
            route(
                name,
                &format!(
                    r#"{{ algorithms = {algs}, public_key = {pem}, issuer = "https://idp.test", audience = ["api"], claims_to_headers = {{ sub = "X-User-ID" }} }}"#
                ),
            )
        })
        .collect();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(&up, &config);
    let c = Client::new();
    let expect = [
        ("/rs", &toks[0]),
        ("/rs", &toks[1]),
        ("/es", &toks[2]),
        ("/es384", &toks[3]),
        ("/ed", &toks[4]),
    ];
    for (path, token) in expect {
        let r = get(&c, &gw, path, Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.json()["headers"]["x-user-id"], "svc");
    }
    // Each route trusts its own key only.
    for (path, token) in [("/rs", &toks[2]), ("/es", &toks[4]), ("/ed", &toks[0])] {
        let r = get(&c, &gw, path, Some(token)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_selects_the_key_by_kid_inline_and_from_a_file() {
    let t = now();
    let claims = json!({ "sub": "k", "exp": t + 600 });
    let issued = issue(json!({
        "keys": {
            "a": { "type": "RSA", "kid": "key-a" },
            "b": { "type": "RSA", "kid": "key-b" },
            "c": { "type": "EC-P256", "kid": "key-c" },
        },
        "tokens": [
            { "key": "b", "alg": "RS256", "claims": claims, "headers": { "kid": "key-b" } },
            { "key": "b", "alg": "RS256", "claims": claims, "headers": { "kid": "key-a" } },
            { "key": "b", "alg": "RS256", "claims": claims, "headers": { "kid": "key-z" } },
            { "key": "c", "alg": "ES256", "claims": claims, "headers": { "kid": "key-c" } },
            { "key": "a", "alg": "RS256", "claims": claims },
        ],
    }));
    let [by_b, b_as_a, unknown_kid, by_c, a_no_kid] = &tokens(&issued)[..] else {
        panic!()
    };
    let keys: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|k| issued["keys"][k]["jwk"].clone())
        .collect();
    let jwks = json!({ "keys": keys });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, serde_json::to_string_pretty(&jwks).unwrap()).unwrap();

    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = format!(
        "{}{}",
        route(
            "inline",
            &format!(
                r#"{{ algorithms = ["RS256", "ES256"], jwks = {} }}"#,
                toml(&jwks)
            ),
        ),
        format_args!(
            r#"
[[routes]]
name = "file"
path_prefix = "/file"
upstream = "up"
[[routes.pipeline]]
plugin = "jwt-auth"
config = {{ algorithms = ["RS256", "ES256"] }}
config_files = {{ jwks = {} }}
"#,
            Value::String(file.display().to_string())
        ),
    );
    let gw = gateway(&up, &config);
    let c = Client::new();
    for route in ["/inline", "/file"] {
        for token in [by_b, by_c, a_no_kid] {
            let r = get(&c, &gw, route, Some(token)).await;
            assert_eq!(r.status, StatusCode::OK, "{route}: {}", r.text());
        }
        let r = get(&c, &gw, route, Some(b_as_a)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(r.json()["message"], "invalid token signature");
        let r = get(&c, &gw, route, Some(unknown_kid)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(r.json()["message"], "no key for this token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vars_flow_to_the_headers_plugin() {
    let t = now();
    let issued = issue(json!({
        "keys": { "h": { "type": "oct", "secret": SECRET } },
        "tokens": [
            { "key": "h", "alg": "HS256",
              "claims": { "sub": "alice", "email": "alice@example.com", "tenant": "acme", "exp": t + 600 } },
        ],
    }));
    let token = &tokens(&issued)[0];
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(
        &up,
        &format!(
            r#"
[[routes]]
name = "vars"
path_prefix = "/vars"
upstream = "up"
[[routes.pipeline]]
plugin = "jwt-auth"
config = {{ algorithms = ["HS256"], secret = "{SECRET}", consumer_claim = "email" }}
[[routes.pipeline]]
plugin = "headers"
config = {{ request = {{ set = {{ "x-consumer" = "${{var.consumer}}", "x-tenant" = "${{var.jwt.tenant}}" }} }}, response = {{ set = {{ "x-served-to" = "${{var.consumer}}" }} }} }}
"#
        ),
    );
    let c = Client::new();
    let r = get(&c, &gw, "/vars", Some(token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer"], "alice@example.com", "{h}");
    assert_eq!(h["x-tenant"], "acme");
    assert_eq!(r.header("x-served-to"), Some("alice@example.com"));

    // Refused before the headers plugin runs: no consumer, and nothing upstream.
    let r = get(&c, &gw, "/vars", None).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "missing_token");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_cookie_or_the_query() {
    let t = now();
    let issued = issue(json!({
        "keys": { "h": { "type": "oct", "secret": SECRET } },
        "tokens": [{ "key": "h", "alg": "HS256", "claims": { "sub": "c", "exp": t + 600 } }],
    }));
    let token = &tokens(&issued)[0];
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(
        &up,
        &route(
            "web",
            &format!(
                r#"{{ algorithms = ["HS256"], secret = "{SECRET}", token_source = ["cookie:session", "query:access_token"], claims_to_headers = {{ sub = "X-User-ID" }} }}"#
            ),
        ),
    );
    let c = Client::new();
    let cookie = format!("theme=dark; session={token}");
    let r = c.get_with(&gw.url("/web"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user-id"], "c");
    let r = c
        .get(&gw.url(&format!("/web?x=1&access_token={token}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The bearer header is not a source on this route.
    let r = get(&c, &gw, "/web", Some(token)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "missing_token");
}

#[test]
fn bad_configs_are_refused_at_load_naming_the_key() {
    for (config, key) in [
        (
            r#"{ algorithms = ["none"], secret = "s" }"#,
            "algorithms[0]",
        ),
        (r#"{ secret = "s" }"#, "algorithms"),
        (
            r#"{ algorithms = ["HS256"], public_key = "junk" }"#,
            "public_key",
        ),
        (r#"{ algorithms = ["RS256"], jwks = "{" }"#, "jwks"),
        (
            r#"{ algorithms = ["HS256"], secret = "a-secret-long-enough-for-hs256-0123", token_source = "body:x" }"#,
            "token_source",
        ),
        (
            r#"{ algorithms = ["HS256"], secret = "shorter-than-32-bytes" }"#,
            "secret",
        ),
        (
            r#"{ algorithms = ["RS256"], jwks_url = "ftp://idp/jwks.json" }"#,
            "jwks_url",
        ),
        (
            r#"{ algorithms = ["RS256"], jwks_url = "http://idp/jwks.json", jwks_refresh_ms = 1000, min_refresh_ms = 2000 }"#,
            "min_refresh_ms",
        ),
    ] {
        let (ok, out) = support::check(&format!(
            r#"
[server]
listen = "127.0.0.1:0"
[plugins.jwt-auth]
path = "{}"
[upstreams.up]
targets = ["http://127.0.0.1:1"]
{}
"#,
            plugin("jwt_auth").display(),
            route("r", config)
        ));
        assert!(!ok, "{config} was accepted");
        assert!(out.contains(key), "{config}: {out}");
    }
}

// ---- jwks_url ----

/// The capabilities jwt-auth imports; a `capabilities` list must name them all.
const CAPABILITIES: &str = r#"capabilities = ["log", "clock", "kv", "outbound"]"#;

/// Sets the JWK set the JWKS server answers with, and how long it waits before answering.
async fn publish(c: &Client, idp: &PeerServer, keys: &[&Value], delay_ms: u64) {
    let body = json!({ "jwks": { "keys": keys }, "delay_ms": delay_ms });
    let r = c
        .request(
            Method::PUT,
            &format!("{}/control", idp.url()),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// How many times the JWKS server was asked for its set.
async fn jwks_requests(c: &Client, idp: &PeerServer) -> u64 {
    let r = c.get(&format!("{}/control", idp.url())).await;
    r.json()["jwks_requests"].as_u64().unwrap()
}

/// A gateway whose route `/api` runs jwt-auth with `config`, granted the upstream `idp` (at
/// `idp_url`) to fetch keys from, with the capabilities list the README gives.
fn jwks_gateway(up: &Upstream, idp_url: &str, server: &[&str], config: &str) -> Gateway {
    let cfg = server
        .iter()
        .fold(GatewayConfig::new(), |cfg, line| cfg.server(line))
        .plugin_with(
            "jwt-auth",
            &plugin("jwt_auth"),
            &[CAPABILITIES, r#"outbound = ["upstream:idp"]"#],
        )
        .upstream("idp", idp_url)
        .upstream("up", &up.url())
        .route("api", "/api", "up")
        .stage("jwt-auth", config);
    Gateway::start(&cfg.to_string())
}

/// RSA keys `a` and `b` (kids `key-a`, `key-b`), and tokens signed by them: `a1`, `a2`, `b1`
/// name their key's kid, each `unknown-N` is signed by `a` but names a kid nobody has.
fn rotation_keys(unknown: usize) -> Value {
    let t = now();
    let claims = |sub: &str| json!({ "sub": sub, "exp": t + 600 });
    let mut tokens = vec![
        json!({ "key": "a", "alg": "RS256", "claims": claims("a1"), "headers": { "kid": "key-a" } }),
        json!({ "key": "a", "alg": "RS256", "claims": claims("a2"), "headers": { "kid": "key-a" } }),
        json!({ "key": "b", "alg": "RS256", "claims": claims("b1"), "headers": { "kid": "key-b" } }),
    ];
    for n in 0..unknown {
        tokens.push(json!({ "key": "a", "alg": "RS256", "claims": claims("x"), "headers": { "kid": format!("unknown-{n}") } }));
    }
    issue(json!({
        "keys": { "a": { "type": "RSA", "kid": "key-a" }, "b": { "type": "RSA", "kid": "key-b" } },
        "tokens": tokens,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_jwks_url_follow_a_rotation() {
    let issued = rotation_keys(0);
    let toks = tokens(&issued);
    let (a1, a2, b1) = (&toks[0], &toks[1], &toks[2]);
    let (key_a, key_b) = (&issued["keys"]["a"]["jwk"], &issued["keys"]["b"]["jwk"]);
    let c = Client::new();
    let idp = PeerServer::start("jwks_server.py");
    publish(&c, &idp, &[key_a], 0).await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let (refresh, min_refresh) = (Duration::from_millis(2_500), Duration::from_millis(1_000));
    let gw = jwks_gateway(
        &up,
        &idp.url(),
        &[],
        &format!(
            r#"{{ algorithms = ["RS256"], jwks_url = "http://idp/jwks.json", jwks_refresh_ms = {}, min_refresh_ms = {}, claims_to_headers = {{ sub = "X-User-ID" }} }}"#,
            refresh.as_millis(),
            min_refresh.as_millis()
        ),
    );
    assert_eq!(
        jwks_requests(&c, &idp).await,
        0,
        "nothing is fetched at load"
    );

    // The first request fetches the set; the next use it.
    let r = get(&c, &gw, "/api", Some(a1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user-id"], "a1");
    let r = get(&c, &gw, "/api", Some(a2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(jwks_requests(&c, &idp).await, 1);

    // `b` is published: its first token is accepted, without waiting for the refresh.
    publish(&c, &idp, &[key_a, key_b], 0).await;
    tokio::time::sleep(min_refresh).await;
    let r = get(&c, &gw, "/api", Some(b1)).await;
    let fetched = Instant::now();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user-id"], "b1");
    assert_eq!(jwks_requests(&c, &idp).await, 2);

    // `a` is withdrawn: once the keys are refreshed its tokens are refused, the one verified
    // (and cached) before as well as a new one.
    publish(&c, &idp, &[key_b], 0).await;
    tokio::time::sleep_until((fetched + refresh).into()).await;
    let r = get(&c, &gw, "/api", Some(b1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(jwks_requests(&c, &idp).await, 3);
    for token in [a1, a2] {
        let r = get(&c, &gw, "/api", Some(token)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(r.json()["message"], "no key for this token");
    }
    // Refused within min_refresh_ms of the refresh: no fetch for them.
    assert_eq!(jwks_requests(&c, &idp).await, 3);
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_keys_stay_in_use_while_the_jwks_server_is_down() {
    let issued = rotation_keys(1);
    let toks = tokens(&issued);
    let (a1, a2, unknown) = (&toks[0], &toks[1], &toks[3]);
    let c = Client::new();
    let idp = PeerServer::start("jwks_server.py");
    publish(&c, &idp, &[&issued["keys"]["a"]["jwk"]], 0).await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let refresh = Duration::from_millis(300);
    let config = |url: &str| {
        format!(
            r#"{{ algorithms = ["RS256"], jwks_url = "{url}", jwks_refresh_ms = {}, min_refresh_ms = 200 }}"#,
            refresh.as_millis()
        )
    };
    let cfg = GatewayConfig::new()
        .plugin_with(
            "jwt-auth",
            &plugin("jwt_auth"),
            &[
                CAPABILITIES,
                r#"outbound = ["upstream:idp", "upstream:gone"]"#,
            ],
        )
        .upstream("idp", &idp.url())
        .upstream(
            "gone",
            &format!("http://127.0.0.1:{}", support::closed_port()),
        )
        .upstream("up", &up.url())
        .route("api", "/api", "up")
        .stage("jwt-auth", &config("http://idp/jwks.json"))
        .route("never", "/never", "up")
        .stage("jwt-auth", &config("http://gone/jwks.json"));
    let gw = Gateway::start(&cfg.to_string());

    let r = get(&c, &gw, "/api", Some(a1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    drop(idp);
    tokio::time::sleep(refresh).await;
    // The refresh fails: the keys fetched before verify a cached token and a new one.
    for token in [a1, a2] {
        let r = get(&c, &gw, "/api", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // A kid the last good set lacks is refused as ever, not answered 503.
    let r = get(&c, &gw, "/api", Some(unknown)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    let needle = "JWKS http://idp/jwks.json: fetch failed";
    let logs = gw.logs_containing(&[needle, "last good keys"]);
    assert!(logs.contains(needle), "{logs}");

    // Keys never fetched: 503, and a warning naming the URL.
    let r = get(&c, &gw, "/never", Some(a1)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "keys_unavailable");
    let needle = "JWKS http://gone/jwks.json: fetch failed";
    let logs = gw.logs_containing(&[needle]);
    assert!(logs.contains(needle), "{logs}");
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unknown_kids_fetches_at_most_once_per_min_refresh_ms() {
    let burst = 40;
    let issued = rotation_keys(burst);
    let toks = tokens(&issued);
    let c = Client::new();
    let idp = PeerServer::start("jwks_server.py");
    publish(&c, &idp, &[&issued["keys"]["a"]["jwk"]], 0).await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let min_refresh = Duration::from_millis(1_000);
    // One worker: its instances take turns, so the burst is spread over several of them, which
    // share the attempt through kv. (kv has no compare-and-set: instances on two workers
    // looking at the very same moment could both fetch.)
    let gw = jwks_gateway(
        &up,
        &idp.url(),
        &["workers = 1"],
        &format!(
            r#"{{ algorithms = ["RS256"], jwks_url = "http://idp/jwks.json", jwks_refresh_ms = 60000, min_refresh_ms = {} }}"#,
            min_refresh.as_millis()
        ),
    );
    let r = get(&c, &gw, "/api", Some(&toks[0])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(jwks_requests(&c, &idp).await, 1);

    // A slow answer, so that much of the burst arrives while the fetch is under way.
    publish(&c, &idp, &[&issued["keys"]["a"]["jwk"]], 200).await;
    tokio::time::sleep(min_refresh).await;
    let started = Instant::now();
    let calls = toks[3..].iter().map(|token| {
        let (c, gw) = (c.clone(), &gw);
        async move { get(&c, gw, "/api", Some(token)).await }
    });
    for r in join_all(calls).await {
        assert_refused(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(r.json()["message"], "no key for this token");
    }
    let took = started.elapsed();
    let fetched = jwks_requests(&c, &idp).await - 1;
    let allowed = 1 + took.as_millis() / min_refresh.as_millis();
    assert!(
        (1..=allowed as u64).contains(&fetched),
        "{burst} unknown kids in {took:?} made {fetched} fetches"
    );
    // The known key works throughout.
    let r = get(&c, &gw, "/api", Some(&toks[1])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[test]
fn a_capabilities_list_must_grant_kv_and_outbound() {
    let config = |capabilities: &str| {
        GatewayConfig::new()
            .plugin_with("jwt-auth", &plugin("jwt_auth"), &[capabilities])
            .upstream("up", "http://127.0.0.1:9")
            .route("api", "/api", "up")
            .stage(
                "jwt-auth",
                &format!(r#"{{ algorithms = ["HS256"], secret = "{SECRET}" }}"#),
            )
            .to_string()
    };
    // The component imports them whether or not a route uses `jwks_url`.
    for (capabilities, missing) in [
        (
            r#"capabilities = ["log", "clock", "kv"]"#,
            "wasi:http/outgoing-handler@",
        ),
        (
            r#"capabilities = ["log", "clock", "outbound"]"#,
            "wasmgate:plugin/kv",
        ),
    ] {
        let (ok, out) = support::check(&config(capabilities));
        assert!(!ok, "{capabilities} was accepted");
        assert!(
            out.contains(missing) && out.contains("which it was not granted"),
            "{capabilities}: {out}"
        );
    }
    let (ok, out) = support::check(&config(CAPABILITIES));
    assert!(ok, "{out}");
}
