//! The plugin on the SDK's mock host: an introspection endpoint scripted per token.

use std::time::Duration;

use serde_json::{Value, json};
use wasmgate_sdk::log::Level;
use wasmgate_sdk::outbound::{Error as CallError, Request as Call};
use wasmgate_sdk::testing::{self, MockRequest, outbound as mock};
use wasmgate_sdk::{Decision, Reply};

use super::*;

const URL: &str = "http://idp/oauth/introspect";
/// 2026-01-01T00:00:00Z, in ms.
const NOW: u64 = 1_767_225_600_000;

fn config(extra: Value) -> Value {
    let mut c = json!({
        "introspection_url": URL,
        "client_id": "gateway",
        "client_secret": "s3cret:&=\n",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn plugin(extra: Value) -> Introspect {
    testing::init::<Introspect>(config(extra)).expect("config accepted")
}

/// The form the plugin sent, decoded.
fn form(call: &Call) -> Vec<(String, String)> {
    form_urlencoded::parse(&call.body).into_owned().collect()
}

fn token_of(call: &Call) -> String {
    form(call)
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .expect("a token in the form")
}

/// Scripts the endpoint's answer for `token`.
fn answer(token: &'static str, status: u16, body: Value) {
    mock::on_matching(move |call| token_of(call) == token).respond_json(status, &body);
}

fn active(scope: &str, exp_s: u64) -> Value {
    json!({
        "active": true, "scope": scope, "client_id": "mobile-app", "sub": "alice",
        "username": "alice@example.com", "exp": exp_s, "iss": "https://idp.example.com",
        "aud": ["orders-api", "users-api"],
    })
}

fn get(token: Option<&str>) -> MockRequest {
    let req = MockRequest::new("GET", "/orders");
    match token {
        Some(t) => req.with_header("Authorization", &format!("Bearer {t}")),
        None => req,
    }
}

fn run(plugin: &mut Introspect, req: &mut MockRequest) -> Decision {
    testing::on_request(plugin, req).expect("no failure")
}

/// The reply, its JSON body and its challenge.
fn refused(decision: Decision) -> (Reply, Value, String) {
    let Decision::Respond(reply) = decision else {
        panic!("refused: {decision:?}");
    };
    let body = serde_json::from_slice(&reply.body).expect("a JSON body");
    let challenge = reply
        .headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (reply, body, challenge)
}

fn in_an_hour() -> u64 {
    NOW / 1000 + 3600
}

#[test]
fn an_active_token_with_the_scopes_goes_on_with_its_vars() {
    testing::set_now_millis(NOW);
    answer("tok-1", 200, active("orders:read profile", in_an_hour()));
    let mut p = plugin(json!({ "required_scopes": ["orders:read"] }));
    let mut req = get(Some("tok-1"));
    assert_eq!(run(&mut p, &mut req), Decision::Continue);
    assert_eq!(req.var("consumer"), Some("alice"));
    assert_eq!(req.var("scope"), Some("orders:read profile"));
    assert_eq!(req.var("client_id"), Some("mobile-app"));

    let sent = mock::requests();
    assert_eq!(sent.len(), 1);
    let call = &sent[0];
    assert_eq!((call.method.as_str(), call.url.as_str()), ("POST", URL));
    let header = |name: &str| {
        call.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // RFC 6749 §2.3.1: id and secret form-encoded, then joined by `:`, then base64.
    let basic = BASE64.encode("gateway:s3cret%3A%26%3D");
    assert_eq!(
        header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        form(call),
        [
            ("token_type_hint".to_string(), "access_token".to_string()),
            ("token".to_string(), "tok-1".to_string())
        ]
    );
    assert_eq!(call.timeout, Some(Duration::from_millis(2000)));
}

#[test]
fn post_auth_sends_the_credentials_in_the_form() {
    testing::set_now_millis(NOW);
    answer("tok-1", 200, active("", in_an_hour()));
    let mut p = plugin(json!({ "client_auth": "post" }));
    assert_eq!(run(&mut p, &mut get(Some("tok-1"))), Decision::Continue);
    let call = &mock::requests()[0];
    assert!(call.headers.iter().all(|(n, _)| n != "authorization"));
    let form = form(call);
    assert!(form.contains(&("client_id".into(), "gateway".into())));
    assert!(form.contains(&("client_secret".into(), "s3cret:&=".into())));
}

#[test]
fn an_active_answer_is_cached_until_exp_and_shared_by_routes() {
    testing::set_now_millis(NOW);
    let exp = NOW / 1000 + 60;
    answer("tok-1", 200, active("orders:read", exp));
    let mut reader = plugin(json!({ "required_scopes": ["orders:read"] }));
    let mut writer = plugin(json!({ "required_scopes": ["orders:write"] }));
    assert_eq!(
        run(&mut reader, &mut get(Some("tok-1"))),
        Decision::Continue
    );
    assert_eq!(
        run(&mut reader, &mut get(Some("tok-1"))),
        Decision::Continue
    );
    // Another route's instance reads the same cached answer, and checks its own scopes.
    let (reply, _, _) = refused(run(&mut writer, &mut get(Some("tok-1"))));
    assert_eq!(reply.status, 403);
    assert_eq!(
        mock::requests().len(),
        1,
        "one introspection for three requests"
    );

    // Past exp the entry is gone; the server now says inactive.
    testing::set_now_millis(exp * 1000);
    answer("tok-1", 200, json!({ "active": false }));
    let (reply, body, _) = refused(run(&mut reader, &mut get(Some("tok-1"))));
    assert_eq!(
        (reply.status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(mock::requests().len(), 2);
}

#[test]
fn cache_max_ms_bounds_the_cache_and_zero_turns_it_off() {
    testing::set_now_millis(NOW);
    answer("tok-1", 200, active("", in_an_hour()));
    let mut p = plugin(json!({ "cache_max_ms": 1000 }));
    run(&mut p, &mut get(Some("tok-1")));
    testing::advance_millis(999);
    run(&mut p, &mut get(Some("tok-1")));
    assert_eq!(mock::requests().len(), 1);
    testing::advance_millis(1);
    run(&mut p, &mut get(Some("tok-1")));
    assert_eq!(mock::requests().len(), 2);

    testing::reset();
    testing::set_now_millis(NOW);
    answer("tok-1", 200, active("", in_an_hour()));
    let mut p = plugin(json!({ "cache_max_ms": 0 }));
    run(&mut p, &mut get(Some("tok-1")));
    run(&mut p, &mut get(Some("tok-1")));
    assert_eq!(mock::requests().len(), 2);
}

#[test]
fn two_endpoints_never_share_answers() {
    testing::set_now_millis(NOW);
    answer("tok-1", 200, active("", in_an_hour()));
    let mut a = plugin(json!({}));
    let mut b = plugin(json!({ "introspection_url": "http://other-idp/introspect" }));
    mock::on("http://other-idp/introspect").respond_json(200, &json!({ "active": false }));
    assert_eq!(run(&mut a, &mut get(Some("tok-1"))), Decision::Continue);
    let (reply, _, _) = refused(run(&mut b, &mut get(Some("tok-1"))));
    assert_eq!(reply.status, 401);
}

#[test]
fn no_token_gets_a_bare_challenge_and_no_call() {
    let mut p = plugin(json!({ "realm": "orders" }));
    for req in [
        get(None),
        MockRequest::new("GET", "/").with_header("Authorization", "Basic Zm9vOmJhcg=="),
        MockRequest::new("GET", "/").with_header("Authorization", "Bearer   "),
    ] {
        let (reply, body, challenge) = refused(run(&mut p, &mut req.clone()));
        assert_eq!(reply.status, 401);
        assert_eq!(body["error"], "missing_token");
        assert_eq!(challenge, "Bearer realm=\"orders\"");
    }
    assert!(mock::requests().is_empty());
}

#[test]
fn a_malformed_or_huge_token_is_refused_without_a_call() {
    let mut p = plugin(json!({ "max_token_bytes": 16 }));
    for token in ["a\"b", "tok,en", "=abc", "a".repeat(17).as_str()] {
        let (reply, body, challenge) = refused(run(&mut p, &mut get(Some(token))));
        assert_eq!(
            (reply.status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
        assert!(
            challenge.starts_with("Bearer, error=\"invalid_token\""),
            "{challenge}"
        );
    }
    assert!(mock::requests().is_empty());
}

#[test]
fn inactive_expired_early_foreign_tokens_get_401() {
    testing::set_now_millis(NOW);
    let s = NOW / 1000;
    answer("inactive", 200, json!({ "active": false }));
    answer("expired", 200, json!({ "active": true, "exp": s - 1 }));
    answer(
        "early",
        200,
        json!({ "active": true, "nbf": s + 60, "exp": s + 120 }),
    );
    answer(
        "foreign",
        200,
        json!({ "active": true, "iss": "https://evil.example", "aud": "orders-api" }),
    );
    answer(
        "other-aud",
        200,
        json!({ "active": true, "iss": "https://idp.example.com", "aud": "billing" }),
    );
    let mut p = plugin(json!({ "issuer": "https://idp.example.com", "audience": "orders-api" }));
    for (token, why) in [
        ("inactive", "the token is not active"),
        ("expired", "the token has expired"),
        ("early", "the token is not valid yet"),
        ("foreign", "the token is from another issuer"),
        ("other-aud", "the token is not meant for this audience"),
    ] {
        let (reply, body, challenge) = refused(run(&mut p, &mut get(Some(token))));
        assert_eq!(reply.status, 401, "{token}");
        assert_eq!(body, json!({ "error": "invalid_token", "message": why }));
        assert_eq!(
            challenge,
            format!("Bearer, error=\"invalid_token\", error_description=\"{why}\"")
        );
    }
}

#[test]
fn a_missing_scope_gets_403_naming_the_required_ones() {
    testing::set_now_millis(NOW);
    answer("tok-1", 200, active("orders:read", in_an_hour()));
    let mut p = plugin(json!({ "required_scopes": ["orders:read", "orders:write"] }));
    let (reply, body, challenge) = refused(run(&mut p, &mut get(Some("tok-1"))));
    assert_eq!(reply.status, 403);
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(
        body["required_scopes"],
        json!(["orders:read", "orders:write"])
    );
    assert_eq!(
        challenge,
        "Bearer, error=\"insufficient_scope\", scope=\"orders:read orders:write\""
    );
    // A scope is a whole word: `orders:read` does not hold `orders:rea`.
    let mut p = plugin(json!({ "required_scopes": ["orders:rea"] }));
    assert_eq!(refused(run(&mut p, &mut get(Some("tok-1")))).0.status, 403);
}

#[test]
fn an_endpoint_that_fails_gives_503_and_a_warning() {
    testing::set_now_millis(NOW);
    mock::on_matching(|c| token_of(c) == "down")
        .fail(CallError::Other("connection-refused".into()));
    mock::on_matching(|c| token_of(c) == "slow")
        .respond_json(200, &active("", in_an_hour()))
        .delay(Duration::from_secs(5));
    answer("creds", 401, json!({ "error": "invalid_client" }));
    answer("broken", 500, json!({}));
    mock::on_matching(|c| token_of(c) == "html").respond(200, "<html>");
    answer("no-active", 200, json!({ "scope": "x" }));
    answer("bad-exp", 200, json!({ "active": true, "exp": "soon" }));
    let mut p = plugin(json!({ "timeout_ms": 300 }));
    for (token, logged) in [
        ("down", "failed: connection-refused"),
        ("slow", "timed out"),
        (
            "creds",
            "answered 401: the server refused the gateway's client credentials",
        ),
        ("broken", "answered 500"),
        ("html", "not a JSON object"),
        ("no-active", "without a boolean `active`"),
        ("bad-exp", "`exp` = \"soon\", not a date"),
    ] {
        let (reply, body, _) = refused(run(&mut p, &mut get(Some(token))));
        assert_eq!(reply.status, 503, "{token}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(reply.headers.contains(&("retry-after".into(), "1".into())));
        let logs = testing::logs();
        let (level, line) = logs.last().unwrap();
        assert_eq!(*level, Level::Warn);
        assert!(
            line.contains(URL) && line.contains(logged),
            "{token}: {line}"
        );
    }
    // Nothing was cached: the next request asks again.
    let before = mock::requests().len();
    refused(run(&mut p, &mut get(Some("down"))));
    assert_eq!(mock::requests().len(), before + 1);
}

#[test]
fn the_consumer_comes_from_sub_then_username_or_the_configured_field() {
    testing::set_now_millis(NOW);
    answer("named", 200, json!({ "active": true, "username": "bob" }));
    answer(
        "both",
        200,
        json!({ "active": true, "sub": "u-7", "username": "bob", "email": "b@x" }),
    );
    let mut p = plugin(json!({}));
    let mut req = get(Some("named"));
    run(&mut p, &mut req);
    assert_eq!(req.var("consumer"), Some("bob"));
    let mut req = get(Some("both"));
    run(&mut p, &mut req);
    assert_eq!(req.var("consumer"), Some("u-7"));
    let mut p = plugin(json!({ "consumer_field": "email" }));
    let mut req = get(Some("both"));
    run(&mut p, &mut req);
    assert_eq!(req.var("consumer"), Some("b@x"));
}

#[test]
fn bad_configs_name_their_key() {
    for (bad, key) in [
        (json!({ "introspection_url": null }), "introspection_url"),
        (
            json!({ "introspection_url": "idp/introspect" }),
            "introspection_url",
        ),
        (
            json!({ "introspection_url": "http://u:p@idp/x" }),
            "introspection_url",
        ),
        (
            json!({ "introspection_url": "http:///x" }),
            "introspection_url",
        ),
        (json!({ "client_id": "" }), "client_id"),
        (json!({ "client_secret": " \n" }), "client_secret"),
        (json!({ "client_auth": "jwt" }), "client_auth"),
        (json!({ "required_scopes": ["a b"] }), "required_scopes[0]"),
        (json!({ "issuer": "" }), "issuer"),
        (json!({ "timeout_ms": 0 }), "timeout_ms"),
        (json!({ "cache_max_ms": 86_400_001u64 }), "cache_max_ms"),
        (json!({ "max_token_bytes": 0 }), "max_token_bytes"),
        (json!({ "realm": "a\"b" }), "realm"),
        (json!({ "scopes": ["x"] }), ""),
    ] {
        let err = testing::init::<Introspect>(config(bad.clone()))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        if key.is_empty() {
            assert!(err.message.contains("unknown field"), "{bad}: {err:?}");
        } else {
            assert_eq!(err.key.as_deref(), Some(key), "{bad}: {err:?}");
        }
    }
}
