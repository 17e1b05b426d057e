//! The plugin against the SDK's mock host, with tokens signed here by `jsonwebtoken` using the
//! keys in `testdata/` (made with `openssl genpkey`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wasmgate_sdk::testing::{self, MockRequest};
use wasmgate_sdk::{ConfigError, Decision};

use crate::JwtAuth;

const SECRET: &str = "a-test-secret-of-at-least-64-bytes-so-that-hs512-accepts-it-too!!";
const RSA_KEY: &str = include_str!("testdata/rsa.key");
const RSA_PUB: &str = include_str!("testdata/rsa.pub");
const RSA_PKCS1_PUB: &str = include_str!("testdata/rsa.pkcs1.pub");
const RSA2_KEY: &str = include_str!("testdata/rsa2.key");
const RSA2_PUB: &str = include_str!("testdata/rsa2.pub");
const RSA1024_PUB: &str = include_str!("testdata/rsa1024.pub");
const P256_KEY: &str = include_str!("testdata/p256.key");
const P256_PUB: &str = include_str!("testdata/p256.pub");
const P384_KEY: &str = include_str!("testdata/p384.key");
const P384_PUB: &str = include_str!("testdata/p384.pub");
const ED_KEY: &str = include_str!("testdata/ed25519.key");
const ED_PUB: &str = include_str!("testdata/ed25519.pub");

/// The mock clock's "now", in seconds.
const NOW: i64 = 1_700_000_000;

fn at_now() {
    testing::reset();
    testing::set_now_millis(NOW as u64 * 1000);
}

fn key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(SECRET.as_bytes())
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(P256_KEY.as_bytes()).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(P384_KEY.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_KEY.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
    }
}

fn public(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => P256_PUB,
        Algorithm::ES384 => P384_PUB,
        Algorithm::EdDSA => ED_PUB,
        _ => RSA_PUB,
    }
}

fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    sign_with(alg, &key(alg), None, claims)
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, claims)
}

/// A token with any header at all, signed with `key` as `alg`.
fn craft(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn claims() -> Value {
    json!({ "sub": "alice", "exp": NOW + 600, "iat": NOW })
}

fn hs_config(extra: Value) -> Value {
    let mut config = json!({ "algorithms": ["HS256"], "secret": SECRET });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    config
}

fn plugin(config: Value) -> JwtAuth {
    testing::init::<JwtAuth>(config).unwrap_or_else(|e| panic!("config refused: {e}"))
}

fn config_error(config: Value) -> ConfigError {
    match testing::init::<JwtAuth>(config) {
        Ok(_) => panic!("config accepted"),
        Err(e) => e,
    }
}

fn bearer(token: &str) -> MockRequest {
    MockRequest::new("GET", "/").with_header("Authorization", &format!("Bearer {token}"))
}

/// Runs the request phase; `None` is `Continue`, else the reply's status and JSON body.
fn run(p: &mut JwtAuth, req: &mut MockRequest) -> Option<(u16, Value)> {
    match testing::on_request(p, req).expect("the plugin never fails a request") {
        Decision::Continue => None,
        Decision::Respond(reply) => {
            let header = |name: &str| {
                reply
                    .headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(header("content-type").as_deref(), Some("application/json"));
            let body: Value = serde_json::from_slice(&reply.body).unwrap();
            if reply.status == 503 {
                // The gateway's keys are missing, not the client's credentials.
                assert_eq!(body["error"], "keys_unavailable", "{body}");
                assert_eq!(header("www-authenticate"), None);
                assert!(body["message"].is_string(), "{body}");
                return Some((reply.status, body));
            }
            let challenge = header("www-authenticate").expect("a challenge on every refusal");
            match reply.status {
                401 if body["error"] == "missing_token" => assert_eq!(challenge, "Bearer"),
                401 => assert!(
                    challenge.starts_with("Bearer error=\"invalid_token\""),
                    "{challenge}"
                ),
                403 => assert_eq!(challenge, "Bearer error=\"insufficient_scope\""),
                other => panic!("unexpected status {other}"),
            }
            assert!(body["message"].is_string(), "{body}");
            Some((reply.status, body))
        }
    }
}

fn check(p: &mut JwtAuth, token: &str) -> Option<(u16, Value)> {
    run(p, &mut bearer(token))
}

/// The refusal's status and message.
fn refusal(p: &mut JwtAuth, token: &str) -> (u16, String) {
    let (status, body) = check(p, token).expect("the token is refused");
    (status, body["message"].as_str().unwrap().to_string())
}

// ---- algorithms and keys ----

#[test]
fn every_supported_algorithm_verifies_with_its_key() {
    at_now();
    for alg in crate::keys::SUPPORTED {
        let config = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                json!({ "algorithms": [crate::keys::alg_name(alg)], "secret": SECRET })
            }
            _ => json!({ "algorithms": [crate::keys::alg_name(alg)], "public_key": public(alg) }),
        };
        let mut p = plugin(config);
        let token = sign(alg, &claims());
        let mut req = bearer(&token);
        assert_eq!(run(&mut p, &mut req), None, "{alg:?}");
        assert_eq!(req.var("consumer"), Some("alice"), "{alg:?}");

        // One flipped signature byte, and the token is refused.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[0] ^= 1;
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(
            refusal(&mut p, &forged),
            (401, "invalid token signature".into()),
            "{alg:?}"
        );
        // So is a changed payload under the original signature.
        let (_, payload, sig) = split3(&token);
        let other = URL_SAFE_NO_PAD.encode(json!({"sub": "mallory", "exp": NOW + 600}).to_string());
        let header = token.split('.').next().unwrap();
        assert_eq!(refusal(&mut p, &format!("{header}.{other}.{sig}")).0, 401);
        assert_ne!(payload, other);
    }
}

fn split3(token: &str) -> (&str, &str, &str) {
    let mut it = token.split('.');
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

#[test]
fn one_route_can_allow_several_algorithms_and_keys() {
    at_now();
    let mut p = plugin(json!({
        "algorithms": ["HS512", "PS256", "ES384"],
        "secret": SECRET,
        "jwks": { "keys": [jwk(Algorithm::PS256, None), jwk(Algorithm::ES384, None)] },
    }));
    for alg in [Algorithm::HS512, Algorithm::PS256, Algorithm::ES384] {
        assert_eq!(check(&mut p, &sign(alg, &claims())), None, "{alg:?}");
    }
    // A family the allow-list leaves out is refused even though a key could verify it.
    for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
        assert_eq!(
            refusal(&mut p, &sign(alg, &claims())),
            (401, "token algorithm not allowed".into()),
            "{alg:?}"
        );
    }
}

#[test]
fn an_rsa_pkcs1_pem_is_accepted() {
    at_now();
    let mut p = plugin(json!({ "algorithms": ["RS256"], "public_key": RSA_PKCS1_PUB }));
    assert_eq!(check(&mut p, &sign(Algorithm::RS256, &claims())), None);
}

#[test]
fn a_public_key_is_never_an_hmac_secret() {
    at_now();
    // The classic confusion: the verifier's public key, used as an HS256 secret.
    let confused = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUB.as_bytes()),
        None,
        &claims(),
    );
    let mut p = plugin(json!({ "algorithms": ["RS256"], "public_key": RSA_PUB }));
    assert_eq!(
        refusal(&mut p, &confused),
        (401, "token algorithm not allowed".into())
    );

    // Even with HS256 allowed, only the configured secret verifies it.
    let mut p = plugin(json!({
        "algorithms": ["RS256", "HS256"],
        "public_key": RSA_PUB,
        "secret": SECRET,
    }));
    assert_eq!(
        refusal(&mut p, &confused),
        (401, "invalid token signature".into())
    );
    assert_eq!(check(&mut p, &hs(&claims())), None);

    // An HS algorithm with nothing but a public key is a config error, not a latent hole.
    let err = config_error(json!({ "algorithms": ["HS256"], "public_key": RSA_PUB }));
    assert_eq!(err.key.as_deref(), Some("public_key"), "{err}");
    let err = config_error(json!({ "algorithms": ["RS256", "HS256"], "public_key": RSA_PUB }));
    assert_eq!(err.key.as_deref(), Some("algorithms[1]"), "{err}");

    // A JWKS RSA key whose `alg` says HS256 is refused at init.
    let mut key = jwk(Algorithm::RS256, None);
    key["alg"] = json!("HS256");
    let err = config_error(json!({ "algorithms": ["HS256"], "jwks": { "keys": [key] } }));
    assert_eq!(err.key.as_deref(), Some("jwks.keys[0]"), "{err}");
}

#[test]
fn unsigned_tokens_are_refused() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "typ": "JWT" }).to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_eq!(check(&mut p, &token).unwrap().0, 401, "{token}");
        }
    }
    let err = config_error(json!({ "algorithms": ["none"], "secret": SECRET }));
    assert_eq!(err.key.as_deref(), Some("algorithms[0]"));
    assert!(err.message.contains("never accepted"), "{err}");
}

#[test]
fn hostile_and_malformed_tokens_are_refused_without_failing() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    let good = hs(&claims());
    let (h, c, s) = split3(&good);
    let key = key(Algorithm::HS256);
    let crit = craft(
        &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
        &claims(),
        Algorithm::HS256,
        &key,
    );
    let array_payload = craft(
        &json!({"alg": "HS256"}),
        &json!([1, 2]),
        Algorithm::HS256,
        &key,
    );
    let text_exp = craft(
        &json!({"alg": "HS256"}),
        &json!({"sub": "a", "exp": "tomorrow"}),
        Algorithm::HS256,
        &key,
    );
    let padded = format!("{h}.{c}=.{s}");
    // Signed, but its header is not UTF-8 (in a field the verifier otherwise ignores).
    let not_utf8 = {
        let message = format!(
            "{}.{c}",
            URL_SAFE_NO_PAD.encode(b"{\"alg\":\"HS256\",\"x\":\"\xde\xde\"}")
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    };
    let cases = [
        "x".to_string(),
        "a.b".into(),
        "...".into(),
        format!("{good}.{s}"),
        format!("{h}.{c}"),
        format!("!!.{c}.{s}"),
        format!("{}.{c}.{s}", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{c}.{s}", URL_SAFE_NO_PAD.encode("{\"typ\":\"JWT\"}")),
        format!(
            "{}.{c}.{s}",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\",\"alg\":\"HS256\"}")
        ),
        format!("{h}.{c}.{}", "A".repeat(5000)),
        format!("{h}.\u{e9}\u{e9}.{s}"),
        padded,
        not_utf8,
        crit,
        array_payload,
        text_exp,
    ];
    for token in &cases {
        assert_eq!(check(&mut p, token).map(|r| r.0), Some(401), "{token}");
    }
    // Every single-character change of a valid token is refused.
    for i in 0..good.len() {
        let mut bytes = good.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let token = String::from_utf8(bytes).unwrap();
        if token != good {
            assert_eq!(check(&mut p, &token).map(|r| r.0), Some(401), "{i}");
        }
    }
    assert_eq!(check(&mut p, &good), None);
}

// ---- time ----

#[test]
fn exp_is_checked_on_the_host_clock() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    assert_eq!(
        refusal(&mut p, &hs(&json!({"sub": "a", "exp": NOW - 1}))),
        (401, "token expired".into())
    );
    // `exp` is the first instant the token is no longer valid.
    assert_eq!(
        refusal(&mut p, &hs(&json!({"sub": "a", "exp": NOW}))).1,
        "token expired"
    );
    assert_eq!(
        check(&mut p, &hs(&json!({"sub": "a", "exp": NOW + 1}))),
        None
    );
    // Fractional NumericDates are allowed.
    assert_eq!(
        check(&mut p, &hs(&json!({"sub": "a", "exp": NOW as f64 + 0.5}))),
        None
    );
    assert_eq!(
        refusal(&mut p, &hs(&json!({"sub": "a", "exp": NOW as f64 - 0.5}))).1,
        "token expired"
    );
    // Absurd values neither overflow nor pass.
    assert_eq!(check(&mut p, &hs(&json!({"exp": u64::MAX}))), None);
    assert_eq!(
        refusal(&mut p, &hs(&json!({"exp": i64::MIN}))).1,
        "token expired"
    );
    assert_eq!(
        refusal(&mut p, &hs(&json!({"exp": -1e300}))).1,
        "token expired"
    );
    // Without `exp` a token does not expire, unless `exp` is required.
    assert_eq!(check(&mut p, &hs(&json!({"sub": "a"}))), None);
    let mut strict = plugin(hs_config(json!({ "required_claims": ["exp"] })));
    assert_eq!(
        refusal(&mut strict, &hs(&json!({"sub": "a"}))).1,
        "token lacks the `exp` claim"
    );
}

#[test]
fn leeway_widens_exp_and_nbf() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    let late = hs(&json!({"sub": "a", "exp": NOW - 20}));
    let early = hs(&json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 20}));
    assert_eq!(refusal(&mut p, &late).1, "token expired");
    assert_eq!(refusal(&mut p, &early), (401, "token not yet valid".into()));
    assert_eq!(check(&mut p, &hs(&json!({"nbf": NOW}))), None);

    let mut lenient = plugin(hs_config(json!({ "leeway_seconds": 30 })));
    assert_eq!(check(&mut lenient, &late), None);
    assert_eq!(check(&mut lenient, &early), None);
    assert_eq!(
        refusal(&mut lenient, &hs(&json!({"exp": NOW - 30}))).1,
        "token expired"
    );
    assert_eq!(
        refusal(&mut lenient, &hs(&json!({"nbf": NOW + 31}))).1,
        "token not yet valid"
    );
    assert_eq!(
        refusal(&mut lenient, &hs(&json!({"nbf": "soon"}))).1,
        "malformed token: `nbf` is not a number"
    );
}

// ---- claims ----

#[test]
fn issuer_audience_and_required_claims() {
    at_now();
    let mut p = plugin(hs_config(json!({
        "issuer": ["https://idp.example", "https://idp2.example"],
        "audience": "api",
        "required_claims": ["tenant", "org.id"],
    })));
    let base = json!({
        "sub": "a", "exp": NOW + 60, "iss": "https://idp2.example", "aud": "api",
        "tenant": "t1", "org": {"id": 7},
    });
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        hs(&c)
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        hs(&c)
    };
    assert_eq!(check(&mut p, &hs(&base)), None);
    assert_eq!(check(&mut p, &with("aud", json!(["other", "api"]))), None);
    assert_eq!(
        refusal(&mut p, &with("iss", json!("https://evil.example"))).1,
        "token issuer not accepted"
    );
    assert_eq!(
        refusal(&mut p, &with("iss", json!(["https://idp.example"]))).1,
        "token issuer not accepted"
    );
    assert_eq!(
        refusal(&mut p, &without("iss")).1,
        "token issuer not accepted"
    );
    assert_eq!(
        refusal(&mut p, &with("aud", json!("web"))).1,
        "token audience not accepted"
    );
    assert_eq!(
        refusal(&mut p, &with("aud", json!(["web", 1]))).1,
        "token audience not accepted"
    );
    assert_eq!(
        refusal(&mut p, &without("aud")).1,
        "token audience not accepted"
    );
    assert_eq!(
        refusal(&mut p, &without("tenant")).1,
        "token lacks the `tenant` claim"
    );
    assert_eq!(
        refusal(&mut p, &with("tenant", Value::Null)).1,
        "token lacks the `tenant` claim"
    );
    assert_eq!(
        refusal(&mut p, &with("org", json!({"name": "x"}))).1,
        "token lacks the `org.id` claim"
    );

    // Unconfigured, `iss` and `aud` are not looked at.
    let mut open = plugin(hs_config(json!({})));
    assert_eq!(check(&mut open, &with("aud", json!("anything"))), None);
}

#[test]
fn required_roles_any_of_with_wildcards() {
    at_now();
    let mut p = plugin(hs_config(
        json!({ "required_roles": ["admin", "editor", "billing:*"] }),
    ));
    let roles = |r: Value| hs(&json!({"sub": "a", "exp": NOW + 60, "roles": r}));
    for ok in [
        json!(["viewer", "editor"]),
        json!(["admin"]),
        json!(["billing:read"]),
        json!(["billing:*"]),
        json!("viewer admin"),
        json!(["*"]),
        json!(["edit*"]),
    ] {
        assert_eq!(check(&mut p, &roles(ok.clone())), None, "{ok}");
    }
    for denied in [
        json!(["viewer"]),
        json!([]),
        json!(["administrator", "editors", "billing"]),
        json!("billingx"),
        json!([{"admin": true}, 1]),
        json!(true),
        json!(["Admin"]),
    ] {
        let (status, body) = check(&mut p, &roles(denied.clone())).expect("refused");
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{denied}"
        );
    }
    let (status, _) = check(&mut p, &hs(&json!({"sub": "a"}))).unwrap();
    assert_eq!(status, 403);

    // A token holding `admin:*` holds every `admin:` permission.
    let mut p = plugin(hs_config(json!({ "required_roles": ["admin:write"] })));
    assert_eq!(check(&mut p, &roles(json!(["admin:*"]))), None);
    assert_eq!(check(&mut p, &roles(json!(["admin:read"]))).unwrap().0, 403);

    // Another claim, nested, or a space-separated `scope`.
    let mut p = plugin(hs_config(json!({
        "roles_claim": "realm_access.roles", "required_roles": ["ops"],
    })));
    assert_eq!(
        check(&mut p, &hs(&json!({"realm_access": {"roles": ["ops"]}}))),
        None
    );
    assert_eq!(
        check(&mut p, &hs(&json!({"roles": ["ops"]}))).unwrap().0,
        403
    );
    let mut p = plugin(hs_config(
        json!({ "roles_claim": "scope", "required_roles": ["read:*"] }),
    ));
    assert_eq!(
        check(&mut p, &hs(&json!({"scope": "openid read:orders"}))),
        None
    );
}

#[test]
fn required_permissions_are_all_of_with_wildcards_on_the_held_side_only() {
    at_now();
    let mut p = plugin(hs_config(
        json!({ "required_permissions": ["orders:read", "users:read"] }),
    ));
    let perms = |v: Value| hs(&json!({"sub": "a", "exp": NOW + 60, "permissions": v}));
    for ok in [
        json!(["orders:read", "users:read"]),
        json!(["orders:*", "users:read", "extra"]),
        json!("users:read orders:read"),
        json!(["*"]),
    ] {
        assert_eq!(check(&mut p, &perms(ok.clone())), None, "{ok}");
    }
    for denied in [
        json!(["orders:read"]),
        json!(["orders:*"]),
        json!([]),
        json!(["Orders:read", "users:read"]),
    ] {
        let (status, body) = check(&mut p, &perms(denied.clone())).expect("refused");
        assert_eq!(status, 403, "{denied}");
        assert_eq!(body["message"], "the token lacks a required permission");
    }
    // A required wildcard is met only by a held wildcard that covers it.
    let mut p = plugin(hs_config(json!({ "required_permissions": ["admin:*"] })));
    assert_eq!(check(&mut p, &perms(json!(["admin:*"]))), None);
    assert_eq!(check(&mut p, &perms(json!(["*"]))), None);
    assert_eq!(check(&mut p, &perms(json!(["admin:read"]))).unwrap().0, 403);
    // Roles (any of) and permissions (all of) together; another claim.
    let mut p = plugin(hs_config(json!({
        "required_roles": ["staff"], "permissions_claim": "scope",
        "required_permissions": ["orders:write"],
    })));
    let token = |roles: Value, scope: &str| {
        hs(&json!({"sub": "a", "exp": NOW + 60, "roles": roles, "scope": scope}))
    };
    assert_eq!(
        check(&mut p, &token(json!(["staff"]), "orders:write")),
        None
    );
    let (_, body) = check(&mut p, &token(json!(["guest"]), "orders:write")).unwrap();
    assert_eq!(body["message"], "the token lacks a required role");
    let (_, body) = check(&mut p, &token(json!(["staff"]), "orders:read")).unwrap();
    assert_eq!(body["message"], "the token lacks a required permission");
    for (bad, key) in [
        (
            json!({ "required_permissions": [""] }),
            "required_permissions[0]",
        ),
        (json!({ "permissions_claim": "" }), "permissions_claim"),
    ] {
        assert_eq!(config_error(hs_config(bad)).key.as_deref(), Some(key));
    }
}

#[test]
fn claims_become_headers_and_spoofed_ones_are_stripped() {
    at_now();
    let mut p = plugin(hs_config(json!({
        "claims_to_headers": {
            "sub": "X-User-ID", "tenant": "X-Tenant", "admin": "X-Admin", "n": "X-N",
            "groups": "X-Groups", "org.name": "X-Org", "evil": "X-Evil", "name": "X-Name",
            "mixed": "X-Mixed",
        },
        "consumer_claim": "email",
    })));
    let token = hs(&json!({
        "sub": "alice", "exp": NOW + 60, "admin": true, "n": 42.5, "groups": ["a", "b"],
        "org": {"name": "acme"}, "evil": "a\r\nX-Injected: 1", "name": "Jos\u{e9}",
        "email": "alice@example.com", "mixed": ["a", {"b": 1}],
    }));
    let mut req = bearer(&token)
        .with_header("X-User-ID", "root")
        .with_header("x-user-id", "root2")
        .with_header("X-Tenant", "spoofed")
        .with_header("X-Groups", "admins")
        .with_header("X-Evil", "spoofed")
        .with_header("X-Name", "spoofed")
        .with_header("X-Other", "kept");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.header_values("x-user-id"), ["alice"]);
    assert_eq!(req.header("x-admin"), Some("true"));
    assert_eq!(req.header("x-n"), Some("42.5"));
    assert_eq!(req.header("x-org"), Some("acme"));
    // A list of text forms is joined by commas.
    assert_eq!(req.header_values("x-groups"), ["a,b"]);
    // Missing claims, objects, lists holding one, and values no header may carry leave the
    // header absent.
    for gone in ["x-tenant", "x-mixed", "x-evil", "x-name", "x-injected"] {
        assert_eq!(req.header(gone), None, "{gone}");
    }
    assert_eq!(req.header("x-other"), Some("kept"));
    assert_eq!(req.var("consumer"), Some("alice@example.com"));
    assert_eq!(req.var("jwt.sub"), Some("alice"));
    assert_eq!(req.var("jwt.admin"), Some("true"));
    assert_eq!(req.var("jwt.exp"), Some((NOW + 60).to_string().as_str()));
    assert_eq!(req.var("jwt.groups"), None);
    assert_eq!(req.var("jwt.org"), None);

    // The cached outcome strips and sets the same way.
    let mut again = bearer(&token).with_header("X-User-ID", "root");
    assert_eq!(run(&mut p, &mut again), None);
    assert_eq!(again.header_values("x-user-id"), ["alice"]);
    assert_eq!(again.var("jwt.sub"), Some("alice"));
}

#[test]
fn claim_vars_are_bounded() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    let mut claims = serde_json::Map::new();
    for i in 0..500 {
        claims.insert(format!("c{i:03}"), json!(i));
    }
    let mut req = bearer(&hs(&Value::Object(claims)));
    assert_eq!(run(&mut p, &mut req), None);
    let vars = req.vars().keys().filter(|k| k.starts_with("jwt.")).count();
    assert_eq!(vars, crate::MAX_CLAIM_VARS);
    assert_eq!(req.var("consumer"), None);
}

// ---- JWKS ----

/// The public JWK of the test key for `alg`, with an optional `kid`.
fn jwk(alg: Algorithm, kid: Option<&str>) -> Value {
    jwk_of(&key(alg), alg, kid)
}

fn jwk_of(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> Value {
    let mut v = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    if let Some(kid) = kid {
        v["kid"] = json!(kid);
    }
    v
}

#[test]
fn jwks_selects_the_key_by_kid() {
    at_now();
    let rsa2 = EncodingKey::from_rsa_pem(RSA2_KEY.as_bytes()).unwrap();
    let jwks = json!({ "keys": [
        jwk(Algorithm::RS256, Some("a")),
        jwk_of(&rsa2, Algorithm::RS256, Some("b")),
    ]});
    for jwks in [jwks.clone(), Value::String(jwks.to_string())] {
        let mut p = plugin(json!({ "algorithms": ["RS256"], "jwks": jwks }));
        let by_b = |kid| sign_with(Algorithm::RS256, &rsa2, kid, &claims());
        assert_eq!(check(&mut p, &by_b(Some("b"))), None);
        // The right signature under another key's id is refused: only `a` is tried.
        assert_eq!(
            refusal(&mut p, &by_b(Some("a"))).1,
            "invalid token signature"
        );
        assert_eq!(refusal(&mut p, &by_b(Some("c"))).1, "no key for this token");
        // Without a kid every key of the algorithm is tried.
        assert_eq!(check(&mut p, &by_b(None)), None);
        assert_eq!(check(&mut p, &sign(Algorithm::RS256, &claims())), None);
    }
    // RSA2_PUB is the key `b` stands for.
    let mut p = plugin(json!({ "algorithms": ["RS256"], "public_key": RSA2_PUB }));
    assert_eq!(
        check(&mut p, &sign_with(Algorithm::RS256, &rsa2, None, &claims())),
        None
    );
}

#[test]
fn jwks_mixes_key_types_and_skips_foreign_keys() {
    at_now();
    let mut enc = jwk(Algorithm::RS256, Some("enc"));
    enc["use"] = json!("enc");
    let mut wrap = jwk(Algorithm::RS256, Some("wrap"));
    wrap["key_ops"] = json!(["wrapKey"]);
    let mut oaep = jwk(Algorithm::RS256, Some("oaep"));
    oaep["alg"] = json!("RSA-OAEP");
    let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"});
    let x448 = json!({"kty": "OKP", "crv": "X448", "kid": "x448", "x": "AA"});
    let other = json!({"kty": "foo", "kid": "foo"});
    let jwks = json!({ "keys": [
        enc, wrap, oaep, p521, x448, other,
        jwk(Algorithm::ES256, Some("ec")),
        jwk(Algorithm::EdDSA, Some("ed")),
        jwk(Algorithm::HS384, Some("oct")),
        jwk(Algorithm::PS512, Some("rsa")),
    ]});
    let mut p = plugin(json!({ "algorithms": ["ES256", "EdDSA", "HS384", "PS512"], "jwks": jwks }));
    for (alg, kid) in [
        (Algorithm::ES256, "ec"),
        (Algorithm::EdDSA, "ed"),
        (Algorithm::HS384, "oct"),
        (Algorithm::PS512, "rsa"),
    ] {
        let token = sign_with(alg, &key(alg), Some(kid), &claims());
        assert_eq!(check(&mut p, &token), None, "{alg:?}");
    }
    // The skipped keys verify nothing, even when a token names them.
    for kid in ["enc", "wrap", "oaep"] {
        let token = sign_with(
            Algorithm::PS512,
            &key(Algorithm::PS512),
            Some(kid),
            &claims(),
        );
        assert_eq!(refusal(&mut p, &token).1, "no key for this token", "{kid}");
    }
}

#[test]
fn jwks_from_a_file_is_json_text() {
    at_now();
    // `config_files = { jwks = "..." }` hands the plugin the file's text.
    let text = format!(
        "{{\n  \"keys\": [{}]\n}}\n",
        jwk(Algorithm::ES384, Some("k1"))
    );
    let mut p = plugin(json!({ "algorithms": ["ES384"], "jwks": text }));
    let token = sign_with(
        Algorithm::ES384,
        &key(Algorithm::ES384),
        Some("k1"),
        &claims(),
    );
    assert_eq!(check(&mut p, &token), None);
}

// ---- cache ----

#[test]
fn repeated_tokens_come_from_the_cache_until_exp() {
    at_now();
    let mut p = plugin(hs_config(
        json!({ "claims_to_headers": { "sub": "x-user-id" } }),
    ));
    let token = hs(&json!({"sub": "alice", "exp": NOW + 10}));
    assert_eq!(check(&mut p, &token), None);
    assert_eq!(p.cache.len(), 1);
    for _ in 0..5 {
        let mut req = bearer(&token);
        assert_eq!(run(&mut p, &mut req), None);
        assert_eq!(req.header("x-user-id"), Some("alice"));
    }
    assert_eq!(p.cache.len(), 1);

    // The cached outcome is the token's: another token is verified on its own.
    let other = hs(&json!({"sub": "bob", "exp": NOW + 10}));
    let mut req = bearer(&other);
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.header("x-user-id"), Some("bob"));
    assert_eq!(p.cache.len(), 2);

    // A cached token stops working at its `exp`, exactly.
    testing::advance_millis(9_999);
    assert_eq!(check(&mut p, &token), None);
    testing::advance_millis(1);
    assert_eq!(refusal(&mut p, &token).1, "token expired");
    assert_eq!(refusal(&mut p, &other).1, "token expired");
    assert_eq!(p.cache.len(), 0);
}

#[test]
fn the_cache_honours_the_leeway_and_keeps_refusals_by_role() {
    at_now();
    let mut p = plugin(hs_config(
        json!({ "leeway_seconds": 5, "required_roles": ["admin"] }),
    ));
    let admin = hs(&json!({"exp": NOW + 10, "roles": ["admin"]}));
    let user = hs(&json!({"exp": NOW + 10, "roles": ["user"]}));
    assert_eq!(check(&mut p, &admin), None);
    assert_eq!(check(&mut p, &user).unwrap().0, 403);
    assert_eq!(check(&mut p, &user).unwrap().0, 403);
    assert_eq!(p.cache.len(), 2);
    testing::advance_millis(14_999);
    assert_eq!(check(&mut p, &admin), None);
    assert_eq!(check(&mut p, &user).unwrap().0, 403);
    testing::advance_millis(1);
    assert_eq!(refusal(&mut p, &admin), (401, "token expired".into()));
    assert_eq!(refusal(&mut p, &user), (401, "token expired".into()));
}

#[test]
fn the_cache_is_bounded_and_can_be_off() {
    at_now();
    let mut p = plugin(hs_config(json!({ "cache_size": 4 })));
    for i in 0..50 {
        assert_eq!(check(&mut p, &hs(&json!({"sub": format!("u{i}")}))), None);
        assert!(p.cache.len() <= 4);
    }
    let mut p = plugin(hs_config(json!({ "cache_size": 0 })));
    let token = hs(&json!({"sub": "a", "exp": NOW + 1}));
    for _ in 0..3 {
        assert_eq!(check(&mut p, &token), None);
    }
    assert_eq!(p.cache.len(), 0);
    testing::advance_millis(1_000);
    assert_eq!(refusal(&mut p, &token).1, "token expired");
}

#[test]
fn refused_tokens_are_not_cached() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    let early = hs(&json!({"sub": "a", "nbf": NOW + 5}));
    assert_eq!(refusal(&mut p, &early).1, "token not yet valid");
    assert_eq!(p.cache.len(), 0);
    testing::advance_millis(5_000);
    assert_eq!(check(&mut p, &early), None);
}

// ---- token sources ----

#[test]
fn bearer_header_is_the_default_source() {
    at_now();
    let mut p = plugin(hs_config(json!({})));
    let token = hs(&claims());
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER   {token}  "),
    ] {
        let mut req = MockRequest::new("GET", "/").with_header("authorization", &value);
        assert_eq!(run(&mut p, &mut req), None, "{value}");
    }
    for value in [
        token.clone(),
        format!("Basic {token}"),
        "Bearer".into(),
        "Bearer   ".into(),
    ] {
        let mut req = MockRequest::new("GET", "/").with_header("authorization", &value);
        let (status, body) = run(&mut p, &mut req).unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("missing_token")),
            "{value}"
        );
    }
    let (status, body) = run(&mut p, &mut MockRequest::new("GET", "/")).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    // The token is not read from anywhere else by default.
    let mut req = MockRequest::new("GET", &format!("/?access_token={token}"));
    assert_eq!(run(&mut p, &mut req).unwrap().0, 401);
}

#[test]
fn header_cookie_and_query_sources() {
    at_now();
    let token = hs(&claims());
    let mut p = plugin(hs_config(json!({ "token_source": "header:X-Token" })));
    let mut req = MockRequest::new("GET", "/").with_header("x-token", &token);
    assert_eq!(run(&mut p, &mut req), None);
    let mut req =
        MockRequest::new("GET", "/").with_header("authorization", &format!("Bearer {token}"));
    assert_eq!(run(&mut p, &mut req).unwrap().0, 401);

    let mut p = plugin(hs_config(json!({ "token_source": "cookie:session" })));
    let mut req = MockRequest::new("GET", "/")
        .with_header("cookie", "theme=dark")
        .with_header("cookie", &format!("a=1; session={token}; b=2"));
    assert_eq!(run(&mut p, &mut req), None);
    let mut req = MockRequest::new("GET", "/").with_header("cookie", &format!("xsession={token}"));
    assert_eq!(run(&mut p, &mut req).unwrap().0, 401);

    let mut p = plugin(hs_config(json!({ "token_source": "query:access_token" })));
    let mut req = MockRequest::new("GET", &format!("/x?a=1&access_token={token}"));
    assert_eq!(run(&mut p, &mut req), None);

    // A list is tried in order; the first source with a token wins.
    let mut p = plugin(hs_config(json!({
        "token_source": ["header:Authorization", "cookie:session"],
    })));
    let mut req = MockRequest::new("GET", "/").with_header("cookie", &format!("session={token}"));
    assert_eq!(run(&mut p, &mut req), None);
    let mut req = MockRequest::new("GET", "/")
        .with_header("authorization", "Bearer not-a-token")
        .with_header("cookie", &format!("session={token}"));
    assert_eq!(run(&mut p, &mut req).unwrap().0, 401);
}

#[test]
fn oversized_tokens_are_refused_before_any_work() {
    at_now();
    let mut p = plugin(hs_config(json!({ "max_token_bytes": 64 })));
    let token = hs(&claims());
    assert!(token.len() > 64);
    assert_eq!(refusal(&mut p, &token), (401, "token too large".into()));
    assert_eq!(p.cache.len(), 0);
}

// ---- config ----

#[test]
fn bad_configs_name_the_key() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "secret": SECRET }), "algorithms"),
        (json!({ "algorithms": [], "secret": SECRET }), "algorithms"),
        (
            json!({ "algorithms": "HS256", "secret": SECRET }),
            "algorithms",
        ),
        (
            json!({ "algorithms": ["HS256", "HS999"], "secret": SECRET }),
            "algorithms[1]",
        ),
        (
            json!({ "algorithms": ["hs256"], "secret": SECRET }),
            "algorithms[0]",
        ),
        (json!({ "algorithms": ["HS256"], "secret": "" }), "secret"),
        // RFC 7518 §3.2: no shorter than the hash.
        (
            json!({ "algorithms": ["HS256"], "secret": "x".repeat(31) }),
            "secret",
        ),
        (
            json!({ "algorithms": ["HS384"], "secret": "x".repeat(47) }),
            "secret",
        ),
        (
            json!({ "algorithms": ["HS256", "HS512"], "secret": "x".repeat(40) }),
            "secret",
        ),
        (
            json!({ "algorithms": ["HS256"], "jwks": { "keys": [{ "kty": "oct", "k": "c2hvcnQ" }] } }),
            "jwks.keys[0]",
        ),
        (
            json!({ "algorithms": ["RS256"], "secret": SECRET, "public_key": RSA_PUB }),
            "secret",
        ),
        (
            json!({ "algorithms": ["RS256"], "public_key": "not a pem" }),
            "public_key",
        ),
        (
            json!({ "algorithms": ["RS256"], "public_key": RSA_KEY }),
            "public_key",
        ),
        (
            json!({ "algorithms": ["RS256"], "public_key": RSA1024_PUB }),
            "public_key",
        ),
        (
            json!({ "algorithms": ["ES384"], "public_key": P256_PUB }),
            "public_key",
        ),
        (json!({ "algorithms": ["ES256"], "jwks": [] }), "jwks"),
        (
            json!({ "algorithms": ["ES256"], "jwks": "{not json" }),
            "jwks",
        ),
        (
            json!({ "algorithms": ["ES256"], "jwks": { "keys": [] } }),
            "jwks",
        ),
        (
            json!({ "algorithms": ["ES256"], "jwks": { "keys": [jwk(Algorithm::RS256, None)] } }),
            "jwks",
        ),
        (
            json!({ "algorithms": ["ES256"], "jwks": { "keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}] } }),
            "jwks.keys[0]",
        ),
        (
            json!({ "algorithms": ["ES256"], "jwks": { "keys": [jwk(Algorithm::ES256, None), {"kty": "EC", "crv": "P-256"}] } }),
            "jwks.keys[1]",
        ),
        (
            json!({ "algorithms": ["RS256"], "jwks": { "keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}] } }),
            "jwks.keys[0]",
        ),
        (
            json!({ "algorithms": ["EdDSA"], "jwks": { "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}] } }),
            "jwks.keys[0]",
        ),
        (
            json!({ "algorithms": ["HS256"], "jwks": { "keys": [{"kty": "oct", "k": ""}] } }),
            "jwks.keys[0]",
        ),
        (
            json!({ "algorithms": ["HS256"], "jwks": { "keys": [7] } }),
            "jwks.keys[0]",
        ),
        (
            hs_config(json!({ "token_source": "body:token" })),
            "token_source",
        ),
        (
            hs_config(json!({ "token_source": ["cookie:a", "header:"] })),
            "token_source[1]",
        ),
        (hs_config(json!({ "token_source": [] })), "token_source"),
        (hs_config(json!({ "leeway_seconds": -1 })), "leeway_seconds"),
        (
            hs_config(json!({ "leeway_seconds": 86_401 })),
            "leeway_seconds",
        ),
        (hs_config(json!({ "issuer": [] })), "issuer"),
        (hs_config(json!({ "issuer": 3 })), "issuer"),
        (hs_config(json!({ "audience": ["api", ""] })), "audience[1]"),
        (
            hs_config(json!({ "required_claims": [""] })),
            "required_claims[0]",
        ),
        (
            hs_config(json!({ "required_roles": ["a", ""] })),
            "required_roles[1]",
        ),
        (hs_config(json!({ "roles_claim": "" })), "roles_claim"),
        (hs_config(json!({ "consumer_claim": "" })), "consumer_claim"),
        (
            hs_config(json!({ "claims_to_headers": { "sub": "X User" } })),
            "claims_to_headers.sub",
        ),
        (
            hs_config(json!({ "claims_to_headers": { "sub": "Content-Length" } })),
            "claims_to_headers.sub",
        ),
        (
            hs_config(json!({ "claims_to_headers": { "sub": "Proxy-Authorization" } })),
            "claims_to_headers.sub",
        ),
        (
            hs_config(json!({ "claims_to_headers": { "sub": "x-a", "uid": "X-A" } })),
            "claims_to_headers.uid",
        ),
        (
            hs_config(json!({ "claims_to_headers": { "sub": 1 } })),
            "claims_to_headers.sub",
        ),
        (
            hs_config(json!({ "max_token_bytes": 0 })),
            "max_token_bytes",
        ),
        (hs_config(json!({ "cache_size": -1 })), "cache_size"),
        (hs_config(json!({ "algorithm": ["HS256"] })), "algorithm"),
    ];
    for (config, key) in cases {
        let err = config_error(config.clone());
        assert_eq!(err.key.as_deref(), Some(key), "{config}: {err}");
        assert!(!err.message.is_empty());
    }
    let err = config_error(json!({ "algorithms": ["HS256"] }));
    assert_eq!(err.key, None);
    assert!(
        err.message
            .contains("`secret`, `public_key`, `jwks` or `jwks_url`"),
        "{err}"
    );
}

// ---- jwks_url ----

const JWKS_URL: &str = "http://idp/.well-known/jwks.json";
const REFRESH_MS: u64 = 60_000;
const MIN_REFRESH_MS: u64 = 1_000;

/// RS256 from `jwks_url`, refreshed every minute, at most once a second.
fn remote_config(extra: Value) -> Value {
    let mut config = json!({
        "algorithms": ["RS256"],
        "jwks_url": JWKS_URL,
        "jwks_refresh_ms": REFRESH_MS,
        "min_refresh_ms": MIN_REFRESH_MS,
    });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    config
}

/// The signing key behind kid `a` (RSA_KEY) or `b` (RSA2_KEY).
fn rsa_key(kid: &str) -> EncodingKey {
    match kid {
        "a" => key(Algorithm::RS256),
        _ => EncodingKey::from_rsa_pem(RSA2_KEY.as_bytes()).unwrap(),
    }
}

/// A JWK set of the RSA keys with these kids.
fn rsa_set(kids: &[&str]) -> Value {
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| jwk_of(&rsa_key(kid), Algorithm::RS256, Some(kid)))
        .collect();
    json!({ "keys": keys })
}

/// A token signed by the key behind `kid`, naming `kid`; `n` makes tokens differ.
fn by(kid: &str, n: u32) -> String {
    signed_as(kid, kid, n)
}

/// A token signed by the key behind `key`, whose header names `kid`.
fn signed_as(key: &str, kid: &str, n: u32) -> String {
    let claims = json!({ "sub": format!("user-{n}"), "exp": NOW + 86_400 });
    sign_with(Algorithm::RS256, &rsa_key(key), Some(kid), &claims)
}

/// The JWKS endpoint answers with `set` from now on.
fn serve(set: &Value) {
    testing::outbound::on(JWKS_URL).respond_json(200, set);
}

/// How many times the JWKS endpoint was called.
fn fetches() -> usize {
    testing::outbound::requests()
        .iter()
        .filter(|r| r.url == JWKS_URL)
        .count()
}

/// The warnings logged so far that name the JWKS URL.
fn jwks_warnings() -> Vec<String> {
    testing::logs()
        .into_iter()
        .filter(|(level, line)| *level == wasmgate_sdk::log::Level::Warn && line.contains(JWKS_URL))
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn jwks_url_keys_are_fetched_by_the_first_request_that_needs_them_only() {
    at_now();
    serve(&rsa_set(&["a"]));
    let mut p = plugin(remote_config(json!({})));
    assert_eq!(fetches(), 0, "nothing is fetched at init");
    // A request without a token needs no key.
    let (status, body) = run(&mut p, &mut MockRequest::new("GET", "/")).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    assert_eq!(fetches(), 0);

    assert_eq!(check(&mut p, &by("a", 1)), None);
    assert_eq!(fetches(), 1);
    let sent = &testing::outbound::requests()[0];
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.timeout, Some(std::time::Duration::from_millis(2_000)));
    assert!(
        sent.headers
            .iter()
            .any(|(n, v)| n == "accept" && v == "application/json"),
        "{sent:?}"
    );
    // Other tokens, with the kid or without one, use the keys in hand.
    for n in 2..10 {
        assert_eq!(check(&mut p, &by("a", n)), None);
    }
    let no_kid = sign_with(Algorithm::RS256, &rsa_key("a"), None, &claims());
    assert_eq!(check(&mut p, &no_kid), None);
    assert_eq!(fetches(), 1);
    // A known key's bad signature is refused as ever, without a fetch.
    assert_eq!(
        refusal(&mut p, &signed_as("b", "a", 1)),
        (401, "invalid token signature".into())
    );
    assert_eq!(fetches(), 1);
    assert!(jwks_warnings().is_empty(), "{:?}", testing::logs());
}

#[test]
fn keys_are_refreshed_once_they_are_jwks_refresh_ms_old() {
    at_now();
    serve(&rsa_set(&["a"]));
    let mut p = plugin(remote_config(json!({})));
    let token = by("a", 1);
    assert_eq!(check(&mut p, &token), None);
    testing::advance_millis(REFRESH_MS - 1);
    assert_eq!(check(&mut p, &token), None);
    assert_eq!(fetches(), 1);
    // Due: the next request refreshes, even one answered from the cache.
    testing::advance_millis(1);
    assert_eq!(check(&mut p, &token), None);
    assert_eq!(fetches(), 2);
    assert_eq!(check(&mut p, &token), None);
    testing::advance_millis(REFRESH_MS - 1);
    assert_eq!(check(&mut p, &token), None);
    assert_eq!(fetches(), 2);
    testing::advance_millis(1);
    assert_eq!(check(&mut p, &by("a", 2)), None);
    assert_eq!(fetches(), 3);
}

#[test]
fn an_unknown_kid_refetches_at_most_once_per_min_refresh_ms() {
    at_now();
    serve(&rsa_set(&["a"]));
    let mut p = plugin(remote_config(json!({})));
    assert_eq!(check(&mut p, &by("a", 1)), None);
    // The issuer adds `b`; its first token comes within min_refresh_ms of the last fetch.
    serve(&rsa_set(&["a", "b"]));
    assert_eq!(
        refusal(&mut p, &by("b", 1)),
        (401, "no key for this token".into())
    );
    assert_eq!(fetches(), 1);
    testing::advance_millis(MIN_REFRESH_MS);
    // Now it is fetched at once, not at the next refresh.
    assert_eq!(check(&mut p, &by("b", 2)), None);
    assert_eq!(fetches(), 2);
    assert_eq!(check(&mut p, &by("a", 2)), None);

    // A flood of kids nobody has: one fetch per min_refresh_ms, whatever the count.
    for round in 0..3 {
        for n in 0..50 {
            let token = signed_as("a", &format!("nobody-{round}-{n}"), n);
            assert_eq!(refusal(&mut p, &token).1, "no key for this token");
            testing::advance_millis(MIN_REFRESH_MS / 100);
        }
        assert_eq!(fetches(), 2 + round, "round {round}");
        testing::advance_millis(MIN_REFRESH_MS / 2);
    }
    // Known keys work throughout.
    assert_eq!(check(&mut p, &by("b", 3)), None);
}

#[test]
fn a_failing_endpoint_leaves_the_last_good_keys_in_use() {
    at_now();
    serve(&rsa_set(&["a"]));
    let mut p = plugin(remote_config(json!({ "jwks_timeout_ms": 500 })));
    assert_eq!(check(&mut p, &by("a", 0)), None);
    let es_only = json!({ "keys": [jwk(Algorithm::ES256, Some("e"))] });
    /// A word of the warning, and how the endpoint is made to fail.
    type Failure = (&'static str, Box<dyn Fn()>);
    let failures: Vec<Failure> = vec![
        (
            "connection-refused",
            Box::new(|| {
                testing::outbound::on(JWKS_URL).fail(wasmgate_sdk::outbound::Error::Other(
                    "connection-refused".into(),
                ));
            }),
        ),
        (
            "timed out",
            Box::new(|| {
                testing::outbound::on(JWKS_URL)
                    .respond_json(200, &rsa_set(&["b"]))
                    .delay(std::time::Duration::from_millis(600));
            }),
        ),
        (
            "status 503",
            Box::new(|| {
                testing::outbound::on(JWKS_URL).respond(503, "down");
            }),
        ),
        (
            "not JSON",
            Box::new(|| {
                testing::outbound::on(JWKS_URL).respond(200, "<html>");
            }),
        ),
        (
            "no signing key usable",
            Box::new(|| serve(&json!({ "keys": [] }))),
        ),
        ("no signing key usable", Box::new(move || serve(&es_only))),
        (
            "keys[1]",
            Box::new(|| {
                let mut set = rsa_set(&["b"]);
                set["keys"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}));
                serve(&set);
            }),
        ),
    ];
    for (n, (why, script)) in (1..).zip(&failures) {
        let (fetched, warned) = (fetches(), jwks_warnings().len());
        script();
        testing::advance_millis(REFRESH_MS);
        let attempt = wasmgate_sdk::clock::now_millis();
        // Refreshed and failed: `a` still verifies, a new token as well as a cached one.
        assert_eq!(check(&mut p, &by("a", n)), None, "{why}");
        assert_eq!(check(&mut p, &by("a", 0)), None, "{why}");
        assert_eq!(fetches(), fetched + 1, "{why}");
        let warnings = jwks_warnings();
        assert_eq!(
            warnings.len(),
            warned + 1,
            "one warning per attempt: {warnings:?}"
        );
        let last = warnings.last().unwrap();
        assert!(
            last.contains(why) && last.contains("last good keys"),
            "{why}: {last}"
        );
        // The attempt counts: neither the stale keys nor an unknown kid fetch again within
        // min_refresh_ms.
        assert_eq!(refusal(&mut p, &by("b", n)).1, "no key for this token");
        // (A call that times out moves the clock on; min_refresh_ms counts from its start.)
        testing::set_now_millis(attempt + MIN_REFRESH_MS - 1);
        assert_eq!(check(&mut p, &by("a", 100 + n)), None);
        assert_eq!(fetches(), fetched + 1, "{why}");
        // Then the next attempt is made, and fails the same way.
        testing::set_now_millis(attempt + MIN_REFRESH_MS);
        assert_eq!(check(&mut p, &by("a", 200 + n)), None);
        assert_eq!(fetches(), fetched + 2, "{why}");
        assert_eq!(jwks_warnings().len(), warned + 2, "{why}");
    }
}

#[test]
fn without_keys_a_token_gets_503_until_a_fetch_succeeds() {
    at_now();
    testing::outbound::on(JWKS_URL).respond(502, "");
    let mut p = plugin(remote_config(json!({})));
    let token = by("a", 1);
    let (status, body) = check(&mut p, &token).unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"], "keys_unavailable");
    assert_eq!(fetches(), 1);
    let warnings = jwks_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("status 502") && warnings[0].contains("503"),
        "{}",
        warnings[0]
    );
    // Within min_refresh_ms: 503 again, without a fetch.
    assert_eq!(check(&mut p, &token).unwrap().0, 503);
    assert_eq!(fetches(), 1);
    // What needs no key is answered as ever.
    let (status, body) = run(&mut p, &mut MockRequest::new("GET", "/")).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    assert_eq!(refusal(&mut p, "not.a.jwt").0, 401);
    let hs = sign(Algorithm::HS256, &claims());
    assert_eq!(refusal(&mut p, &hs).1, "token algorithm not allowed");

    testing::advance_millis(MIN_REFRESH_MS);
    serve(&rsa_set(&["a"]));
    assert_eq!(check(&mut p, &token), None);
    assert_eq!(fetches(), 2);

    // With a configured key beside the URL, what it verifies works while the URL is down.
    at_now();
    testing::outbound::on(JWKS_URL).fail(wasmgate_sdk::outbound::Error::Timeout);
    let mut p = plugin(remote_config(
        json!({ "algorithms": ["RS256", "HS256"], "secret": SECRET }),
    ));
    assert_eq!(check(&mut p, &hs), None);
    assert_eq!(check(&mut p, &token).unwrap().0, 503);
}

#[test]
fn instances_share_one_fetch_and_its_attempts_through_kv() {
    at_now();
    serve(&rsa_set(&["a"]));
    let mut p1 = plugin(remote_config(json!({})));
    let mut p2 = plugin(remote_config(json!({})));
    assert_eq!(check(&mut p1, &by("a", 1)), None);
    assert_eq!(check(&mut p2, &by("a", 2)), None);
    assert_eq!(
        fetches(),
        1,
        "the second instance takes the first one's set"
    );

    // A new kid fetched by one instance is found by the other without a fetch of its own,
    // although min_refresh_ms has not passed.
    serve(&rsa_set(&["a", "b"]));
    testing::advance_millis(MIN_REFRESH_MS);
    assert_eq!(check(&mut p1, &by("b", 1)), None);
    assert_eq!(fetches(), 2);
    assert_eq!(check(&mut p2, &by("b", 2)), None);
    assert_eq!(fetches(), 2);

    // A refresh made by one instance serves the other.
    testing::advance_millis(REFRESH_MS);
    assert_eq!(check(&mut p2, &by("a", 3)), None);
    assert_eq!(fetches(), 3);
    assert_eq!(check(&mut p1, &by("a", 4)), None);
    assert_eq!(fetches(), 3);

    // So does a failed attempt: the other instance does not try again within min_refresh_ms.
    testing::outbound::on(JWKS_URL).respond(500, "");
    testing::advance_millis(REFRESH_MS);
    assert_eq!(check(&mut p1, &by("a", 5)), None);
    assert_eq!(fetches(), 4);
    assert_eq!(check(&mut p2, &by("a", 6)), None);
    assert_eq!(refusal(&mut p2, &by("c", 6)).1, "no key for this token");
    assert_eq!(fetches(), 4);
    assert_eq!(jwks_warnings().len(), 1);
    testing::advance_millis(MIN_REFRESH_MS);
    assert_eq!(check(&mut p2, &by("a", 7)), None);
    assert_eq!(fetches(), 5);
    assert_eq!(check(&mut p1, &by("a", 8)), None);
    assert_eq!(fetches(), 5);
}

#[test]
fn a_removed_key_stops_verifying_at_once_even_cached_tokens() {
    at_now();
    serve(&rsa_set(&["a", "b"]));
    let mut p = plugin(remote_config(json!({})));
    let (a, b) = (by("a", 1), by("b", 1));
    assert_eq!(check(&mut p, &a), None);
    assert_eq!(check(&mut p, &b), None);
    assert_eq!(p.cache.len(), 2);

    // A key added: the cache stays.
    serve(&rsa_set(&["b", "a", "c"]));
    testing::advance_millis(REFRESH_MS);
    assert_eq!(check(&mut p, &b), None);
    assert_eq!(fetches(), 2);
    assert_eq!(p.cache.len(), 2);

    // `a` removed: its tokens are refused from the refresh on, cached or not.
    serve(&rsa_set(&["b"]));
    testing::advance_millis(REFRESH_MS);
    assert_eq!(check(&mut p, &b), None);
    assert_eq!(fetches(), 3);
    assert_eq!(
        p.cache.len(),
        1,
        "the cache was cleared, then `b` verified again"
    );
    assert_eq!(refusal(&mut p, &a).1, "no key for this token");
    assert_eq!(refusal(&mut p, &by("a", 2)).1, "no key for this token");

    // A key whose material changes under the same kid is a removal too.
    let replaced = json!({ "keys": [jwk_of(&rsa_key("a"), Algorithm::RS256, Some("b"))] });
    serve(&replaced);
    testing::advance_millis(REFRESH_MS);
    assert_eq!(refusal(&mut p, &b), (401, "invalid token signature".into()));
    assert_eq!(check(&mut p, &signed_as("a", "b", 3)), None);
}

#[test]
fn jwks_url_combines_with_configured_keys() {
    at_now();
    serve(&rsa_set(&["b"]));
    let mut p = plugin(remote_config(json!({
        "algorithms": ["RS256", "HS256"],
        "secret": SECRET,
        "jwks": rsa_set(&["a"]),
    })));
    assert_eq!(check(&mut p, &sign(Algorithm::HS256, &claims())), None);
    assert_eq!(
        fetches(),
        1,
        "the first request fetches, whatever key it needs"
    );
    assert_eq!(check(&mut p, &by("a", 1)), None);
    assert_eq!(check(&mut p, &by("b", 1)), None);
    assert_eq!(fetches(), 1);
    // A fetched set never drops a configured key.
    serve(&json!({ "keys": [jwk(Algorithm::RS256, Some("c"))] }));
    testing::advance_millis(REFRESH_MS);
    assert_eq!(check(&mut p, &by("a", 2)), None);
    assert_eq!(fetches(), 2);
    assert_eq!(refusal(&mut p, &by("b", 2)).1, "no key for this token");
}

#[test]
fn jwks_url_configs_are_checked() {
    // The URL's keys are known only once fetched, so no algorithm needs a configured key.
    for config in [
        json!({ "algorithms": ["RS256", "ES256", "EdDSA"], "jwks_url": JWKS_URL }),
        json!({ "algorithms": ["HS256", "RS256"], "secret": SECRET, "jwks_url": "https://idp.example.com/keys?v=2" }),
        // A short refresh brings the default min_refresh_ms down with it.
        json!({ "algorithms": ["RS256"], "jwks_url": JWKS_URL, "jwks_refresh_ms": 500 }),
        json!({ "algorithms": ["RS256"], "jwks_url": JWKS_URL, "jwks_refresh_ms": 100, "min_refresh_ms": 100 }),
    ] {
        plugin(config);
    }
    let url = |u: &str| json!({ "algorithms": ["RS256"], "jwks_url": u });
    let long = format!("http://idp/{}", "x".repeat(1_100));
    let cases: Vec<(Value, &str)> = vec![
        (url(""), "jwks_url"),
        (url("idp/jwks"), "jwks_url"),
        (url("ftp://idp/jwks"), "jwks_url"),
        (url("http:///jwks"), "jwks_url"),
        (url("http://user:pw@idp/jwks"), "jwks_url"),
        (url("http://idp?v=1"), "jwks_url"),
        (url("http://idp/jwks#keys"), "jwks_url"),
        (url("http://idp/j wks"), "jwks_url"),
        (url(&long), "jwks_url"),
        (
            json!({ "algorithms": ["RS256"], "jwks_url": 7 }),
            "jwks_url",
        ),
        (
            remote_config(json!({ "jwks_refresh_ms": 99, "min_refresh_ms": 99 })),
            "jwks_refresh_ms",
        ),
        (
            remote_config(json!({ "jwks_refresh_ms": 86_400_001 })),
            "jwks_refresh_ms",
        ),
        (
            remote_config(json!({ "jwks_refresh_ms": -1 })),
            "jwks_refresh_ms",
        ),
        (
            remote_config(json!({ "min_refresh_ms": 99 })),
            "min_refresh_ms",
        ),
        (
            remote_config(json!({ "jwks_refresh_ms": 1_000, "min_refresh_ms": 1_001 })),
            "min_refresh_ms",
        ),
        (
            remote_config(json!({ "jwks_timeout_ms": 0 })),
            "jwks_timeout_ms",
        ),
        (
            remote_config(json!({ "jwks_timeout_ms": 60_001 })),
            "jwks_timeout_ms",
        ),
        (
            hs_config(json!({ "jwks_refresh_ms": 1_000 })),
            "jwks_refresh_ms",
        ),
        (
            hs_config(json!({ "min_refresh_ms": 1_000 })),
            "min_refresh_ms",
        ),
        (
            hs_config(json!({ "jwks_timeout_ms": 1_000 })),
            "jwks_timeout_ms",
        ),
        // A configured key beside the URL is still checked.
        (remote_config(json!({ "secret": SECRET })), "secret"),
    ];
    for (config, key) in cases {
        let err = config_error(config.clone());
        assert_eq!(err.key.as_deref(), Some(key), "{config}: {err}");
        assert!(!err.message.is_empty());
    }
}

#[test]
fn a_set_too_large_for_kv_is_used_but_not_shared() {
    at_now();
    let mut set = rsa_set(&["a"]);
    // Keys of a type the plugin skips, padding the set past kv's largest value.
    let padding = "x".repeat(wasmgate_sdk::rules::kv::MAX_VALUE_BYTES / 4);
    for n in 0..5 {
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "kty": "foo", "kid": format!("pad-{n}"), "x": padding }));
    }
    serve(&set);
    let mut p1 = plugin(remote_config(json!({})));
    let mut p2 = plugin(remote_config(json!({})));
    assert_eq!(check(&mut p1, &by("a", 1)), None);
    let warnings = jwks_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("not shared"), "{}", warnings[0]);
    // The other instance fetches its own, at once.
    assert_eq!(check(&mut p2, &by("a", 2)), None);
    assert_eq!(fetches(), 2);
    // Each still fetches at most once per min_refresh_ms.
    assert_eq!(refusal(&mut p1, &by("c", 1)).1, "no key for this token");
    assert_eq!(refusal(&mut p2, &by("c", 2)).1, "no key for this token");
    assert_eq!(fetches(), 2);
}
