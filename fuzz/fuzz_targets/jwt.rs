//! jwt-auth's token parsing: `verify::signature` (compact JWS split, base64url, JOSE header,
//! algorithm allow-list, signature, claims) directly, and the whole plugin on the SDK's mock
//! host (token sources, claim checks, claims to headers).
//!
//! The first byte chooses the input's shape:
//! - below 0x80, the rest is what a client sends: bits 0–1 pick `Authorization: Bearer …`, a
//!   raw `Authorization` value, a `Cookie` header or the query string;
//! - from 0x80, the rest is a payload that the target signs with the configured secret, so the
//!   fuzzer reaches what lies behind a valid signature. Bits 0–2 pick the header's `alg`, bit 3
//!   adds a `kid`, bit 4 a `crit`, bit 5 takes the header itself from the input (up to the
//!   first NUL), bit 6 spoils the signature. Which of these tokens must verify is known, and
//!   checked.

#![no_main]

use std::cell::RefCell;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use jwt_auth::JwtAuth;
use jwt_auth::fuzzing::{Key, from_secret, signature};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use wasmgate_sdk::Decision;
use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, MockRequest};

/// At least 48 bytes: RFC 7518 §3.2 wants an HMAC key as long as the hash, and HS384 is allowed.
const SECRET: &str = "a-fuzzing-secret-of-at-least-64-bytes-so-that-every-hs-algorithm-takes-it";
const NOW_MS: i64 = 1_700_000_000_000;
const LEEWAY_MS: i64 = 30_000;
const ALLOWED: [Algorithm; 2] = [Algorithm::HS256, Algorithm::HS384];
const HEADER_ALGS: [&str; 8] = [
    "HS256", "HS384", "HS512", "RS256", "none", "hs256", "ES256", "EdDSA",
];

struct Fixture {
    key: Key,
    encoding: EncodingKey,
    /// Only a signature and the token sources between a token and the upstream.
    open: JwtAuth,
    /// Issuer, audience, required claims, roles and a leeway.
    strict: JwtAuth,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(Fixture::new());
}

impl Fixture {
    fn new() -> Self {
        let sources = json!(["header:authorization", "cookie:jwt", "query:access_token"]);
        let open = testing::init::<JwtAuth>(json!({
            "algorithms": ["HS256", "HS384"],
            "secret": SECRET,
            "token_source": sources,
            "claims_to_headers": { "sub": "x-user", "profile.email": "x-email" },
            "cache_size": 0,
        }))
        .expect("the open config");
        let strict = testing::init::<JwtAuth>(json!({
            "algorithms": ["HS256"],
            "secret": SECRET,
            "token_source": sources,
            "issuer": ["https://issuer.example"],
            "audience": "api",
            "required_claims": ["sub", "realm_access.roles"],
            "roles_claim": "realm_access.roles",
            "required_roles": ["admin:*", "reader"],
            "leeway_seconds": LEEWAY_MS / 1000,
            "claims_to_headers": { "sub": "x-user" },
            "cache_size": 0,
        }))
        .expect("the strict config");
        Self {
            key: from_secret(SECRET, &ALLOWED).expect("the secret"),
            encoding: EncodingKey::from_secret(SECRET.as_bytes()),
            open,
            strict,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    FIXTURE.with_borrow_mut(|f| {
        if flags & 0x80 == 0 {
            raw(f, flags, rest);
        } else {
            signed(f, flags, rest);
        }
    });
});

/// Whatever a client sends, where a client sends it.
fn raw(f: &mut Fixture, flags: u8, rest: &[u8]) {
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let req = match flags & 3 {
        0 => {
            // The plugin reads `Bearer <token>` with the token trimmed: a token `signature`
            // refuses, it refuses.
            let req = MockRequest::new("GET", "/")
                .with_header("authorization", &format!("Bearer {text}"));
            if signature(text.trim(), &ALLOWED, std::slice::from_ref(&f.key)).is_err() {
                assert_eq!(status(&mut f.open, &mut req.clone()), Some(401), "{text:?}");
            }
            req
        }
        1 => MockRequest::new("GET", "/").with_header("authorization", text),
        2 => MockRequest::new("GET", "/").with_header("cookie", text),
        _ => {
            if text.contains('#') {
                return;
            }
            MockRequest::new("GET", &format!("/?{text}"))
        }
    };
    for plugin in [&mut f.open, &mut f.strict] {
        let mut req = req.clone().with_header("x-user", "spoofed");
        let outcome = status(plugin, &mut req);
        if outcome.is_none() {
            assert_ne!(req.header("x-user"), Some("spoofed"), "{text:?}");
        }
    }
}

/// A token signed with the configured secret, whose outcome is known.
fn signed(f: &mut Fixture, flags: u8, rest: &[u8]) {
    let alg_name = HEADER_ALGS[usize::from(flags & 7)];
    let raw_header = flags & 0x20 != 0;
    let (header, payload) = if raw_header {
        match rest.iter().position(|&b| b == 0) {
            Some(at) => (rest[..at].to_vec(), &rest[at + 1..]),
            None => return,
        }
    } else {
        let mut header = json!({ "typ": "JWT", "alg": alg_name });
        if flags & 0x08 != 0 {
            header["kid"] = json!("k1");
        }
        if flags & 0x10 != 0 {
            header["crit"] = json!(["b64"]);
        }
        (serde_json::to_vec(&header).unwrap(), rest)
    };
    let signing_alg = match alg_name {
        "HS384" if !raw_header => Algorithm::HS384,
        _ => Algorithm::HS256,
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut sig = jsonwebtoken::crypto::sign(message.as_bytes(), &f.encoding, signing_alg)
        .expect("HMAC signing");
    let spoiled = flags & 0x40 != 0;
    if spoiled {
        // The first character carries six bits of the first byte: any change is a different MAC.
        let first = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(..1, first);
    }
    let token = format!("{message}.{sig}");
    let result = signature(&token, &ALLOWED, std::slice::from_ref(&f.key));
    let claims: Option<Map<String, Value>> = serde_json::from_slice(payload).ok();

    if raw_header {
        if let Ok(verified) = &result {
            let header: Value =
                serde_json::from_slice(&header).expect("an accepted header is JSON");
            assert!(
                matches!(header["alg"].as_str(), Some("HS256")),
                "accepted with {header}"
            );
            assert!(header["crit"].is_null(), "accepted with {header}");
            assert_eq!(Some(&verified.claims), claims.as_ref());
        }
    } else {
        let allowed = matches!(alg_name, "HS256" | "HS384");
        let must_verify = allowed && flags & 0x10 == 0 && !spoiled && claims.is_some();
        match &result {
            Ok(verified) => {
                assert!(must_verify, "accepted: {token}");
                assert_eq!(Some(&verified.claims), claims.as_ref());
            }
            Err(e) => assert!(!must_verify, "refused ({e:?}): {token}"),
        }
    }

    let verified = result.ok().map(|v| v.claims);
    for (strict, plugin) in [(false, &mut f.open), (true, &mut f.strict)] {
        let mut req = MockRequest::new("GET", "/")
            .with_header("authorization", &format!("Bearer {token}"))
            .with_header("x-user", "spoofed");
        let outcome = status(plugin, &mut req);
        match (&verified, outcome) {
            (None, outcome) => assert_eq!(outcome, Some(401), "{token}"),
            (Some(claims), None) => granted(claims, &req, strict),
            (Some(_), Some(401 | 403)) => {}
            (Some(_), other) => panic!("status {other:?} for {token}"),
        }
    }
}

/// What a request that got through must have satisfied.
fn granted(claims: &Map<String, Value>, req: &MockRequest, strict: bool) {
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        let leeway = if strict { LEEWAY_MS } else { 0 };
        assert!(
            exp.saturating_mul(1000).saturating_add(leeway) > NOW_MS,
            "expired at {exp}"
        );
    }
    if strict {
        assert_eq!(
            claims.get("iss").and_then(Value::as_str),
            Some("https://issuer.example")
        );
    }
    match req.header("x-user") {
        None => {}
        Some(value) => {
            let sub = match claims.get("sub") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                other => panic!("x-user set to {value:?} from {other:?}"),
            };
            assert_eq!(value, sub);
        }
    }
}

/// Runs the request phase: `None` is `Continue`, else the reply's status, after checking the
/// reply is the plugin's JSON refusal with a challenge.
fn status(plugin: &mut JwtAuth, req: &mut MockRequest) -> Option<u16> {
    testing::reset();
    testing::set_now_millis(NOW_MS as u64);
    // The plugin's debug lines would go to stderr, thousands a second.
    testing::set_log_level(Level::Error);
    match testing::on_request(plugin, req).expect("the plugin never fails a request") {
        Decision::Continue => None,
        Decision::Respond(reply) => {
            assert!(matches!(reply.status, 401 | 403), "{}", reply.status);
            let challenge = reply
                .headers
                .iter()
                .find(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v.as_str())
                .expect("a challenge on every refusal");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert!(
                challenge.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{challenge:?}"
            );
            let body: Value = serde_json::from_slice(&reply.body).expect("a JSON refusal");
            assert!(body["message"].is_string(), "{body}");
            Some(reply.status)
        }
    }
}
