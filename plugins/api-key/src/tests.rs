use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, MockRequest};

use super::*;

/// 2027-01-01T00:00:00Z.
const T0: u64 = 1_798_761_600_000;

fn start() {
    testing::reset();
    testing::set_now_millis(T0);
}

fn sha(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn plugin(config: Value) -> ApiKey {
    testing::init::<ApiKey>(config).expect("valid config")
}

fn config_error(config: Value) -> ConfigError {
    testing::init::<ApiKey>(config)
        .err()
        .expect("config must be refused")
}

/// Three consumers: `mobile` (reads orders, until 2027-06-30), `batch` (reads and writes
/// orders, two keys), `dev` (a plain key, no scopes).
fn keys() -> Value {
    json!([
        { "consumer": "mobile", "key_sha256": sha("mobile-key"), "expires": "2027-06-30T00:00:00Z", "scopes": ["orders:read"] },
        { "consumer": "batch", "key_sha256": sha("batch-key-1").to_uppercase(), "scopes": ["orders:read", "orders:write"] },
        { "consumer": "batch", "key_sha256": sha("batch-key-2"), "scopes": ["orders:write", "orders:read"] },
        { "consumer": "dev", "key": "dev-key" },
    ])
}

fn with_header(key: &str) -> MockRequest {
    MockRequest::new("GET", "/orders?page=2").with_header("X-API-Key", key)
}

/// The reply, or `None` when the request went on.
fn run(p: &mut ApiKey, req: &mut MockRequest) -> Option<Reply> {
    match testing::on_request(p, req).unwrap() {
        Decision::Continue => None,
        Decision::Respond(reply) => Some(reply),
    }
}

fn body(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap()
}

fn assert_refused(reply: Option<Reply>, status: u16, error: &str) -> Reply {
    let reply = reply.expect("a refusal");
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply
            .headers
            .contains(&("content-type".into(), "application/json".into())),
        "{reply:?}"
    );
    assert_eq!(body(&reply)["error"], error, "{reply:?}");
    reply
}

#[test]
fn a_valid_key_sets_the_vars_and_is_taken_off_the_request() {
    start();
    let mut p = plugin(json!({ "keys": keys() }));
    let mut req = with_header("mobile-key").with_header("x-other", "1");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.var("consumer"), Some("mobile"));
    assert_eq!(req.var("scopes"), Some("orders:read"));
    assert_eq!(req.header("x-api-key"), None);
    assert_eq!(req.header("x-other"), Some("1"));
    assert_eq!(req.query(), Some("page=2"));

    // Either key of a consumer works; the digest's hex case does not matter.
    for (key, scopes) in [
        ("batch-key-1", "orders:read orders:write"),
        ("batch-key-2", "orders:write orders:read"),
    ] {
        let mut req = with_header(key);
        assert_eq!(run(&mut p, &mut req), None, "{key}");
        assert_eq!(req.var("consumer"), Some("batch"));
        assert_eq!(req.var("scopes"), Some(scopes), "in config order");
    }
    let mut req = with_header("dev-key");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.var("scopes"), Some(""));
    // Surrounding spaces are not part of the key.
    assert_eq!(run(&mut p, &mut with_header("  dev-key ")), None);
}

#[test]
fn a_missing_key_gets_401_and_an_unknown_one_403() {
    start();
    let mut p = plugin(json!({ "keys": keys() }));
    for mut req in [
        MockRequest::new("GET", "/"),
        MockRequest::new("GET", "/").with_header("x-api-key", ""),
        MockRequest::new("GET", "/").with_header("x-api-key", "   "),
        MockRequest::new("GET", "/?x-api-key=mobile-key"),
    ] {
        let reply = assert_refused(run(&mut p, &mut req), 401, "missing_api_key");
        assert!(
            reply
                .headers
                .contains(&("www-authenticate".into(), "ApiKey".into()))
        );
        assert_eq!(req.var("consumer"), None);
    }
    for key in [
        "nope",
        "mobile-key-",
        "Mobile-key",
        "mobile-ke",
        "dev-key\t.",
        &sha("dev-key"),
    ] {
        let mut req = MockRequest::new("GET", "/").with_header("x-api-key", key);
        let reply = assert_refused(run(&mut p, &mut req), 403, "invalid_api_key");
        assert!(!reply.headers.iter().any(|(n, _)| n == "www-authenticate"));
        assert_eq!(req.var("consumer"), None, "{key}");
    }
}

#[test]
fn a_key_expires_at_its_instant() {
    start();
    let mut p = plugin(json!({ "keys": keys() }));
    // 2027-06-30T00:00:00Z, a millisecond before and at it.
    let expires = 1_814_313_600_000;
    testing::set_now_millis(expires - 1);
    assert_eq!(run(&mut p, &mut with_header("mobile-key")), None);
    testing::set_now_millis(expires);
    assert_refused(
        run(&mut p, &mut with_header("mobile-key")),
        403,
        "invalid_api_key",
    );
    // Keys without `expires` never do.
    testing::set_now_millis(expires * 2);
    assert_eq!(run(&mut p, &mut with_header("batch-key-1")), None);
    assert!(
        testing::logs()
            .iter()
            .any(|(level, line)| *level == Level::Info
                && line.contains("`mobile`")
                && line.contains("expired")),
        "{:?}",
        testing::logs()
    );
    // The key is never logged.
    assert!(
        !testing::logs()
            .iter()
            .any(|(_, line)| line.contains("mobile-key"))
    );
}

#[test]
fn every_required_scope_must_be_held() {
    start();
    let mut p =
        plugin(json!({ "keys": keys(), "required_scopes": ["orders:read", "orders:write"] }));
    assert_eq!(run(&mut p, &mut with_header("batch-key-2")), None);
    for key in ["mobile-key", "dev-key"] {
        assert_refused(run(&mut p, &mut with_header(key)), 403, "invalid_api_key");
    }
    let mut p = plugin(json!({ "keys": keys(), "required_scopes": ["orders:read"] }));
    assert_eq!(run(&mut p, &mut with_header("mobile-key")), None);
    assert_refused(
        run(&mut p, &mut with_header("dev-key")),
        403,
        "invalid_api_key",
    );
    assert!(
        testing::logs()
            .iter()
            .any(|(_, line)| line.contains("`dev`") && line.contains("scope")),
        "{:?}",
        testing::logs()
    );
}

#[test]
fn keys_from_the_query_are_taken_out_of_it() {
    start();
    let mut p = plugin(json!({ "keys": keys(), "key_source": "query:api_key" }));
    let mut req = MockRequest::new("GET", "/orders?a=1&api_key=dev-key&b=%20");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.query(), Some("a=1&b=%20"));
    let mut req = MockRequest::new("GET", "/orders?api%5Fkey=dev%2Dkey");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.query(), None, "an emptied query is removed");
    // The header is not a source here.
    assert_refused(
        run(&mut p, &mut with_header("dev-key")),
        401,
        "missing_api_key",
    );
    // `+` is a space, as in any form-encoded query: a key with `+` is sent as `%2B`.
    let mut p = plugin(json!({
        "keys": [{ "consumer": "b64", "key": "ab+c/d==" }],
        "key_source": "query:k",
    }));
    assert_eq!(
        run(&mut p, &mut MockRequest::new("GET", "/?k=ab%2Bc%2Fd%3D%3D")),
        None
    );
    assert_eq!(
        run(&mut p, &mut MockRequest::new("GET", "/?k=ab%2Bc/d==")),
        None
    );
    assert_refused(
        run(&mut p, &mut MockRequest::new("GET", "/?k=ab+c/d==")),
        403,
        "invalid_api_key",
    );
}

#[test]
fn sources_are_tried_in_order_and_all_are_cleared() {
    start();
    let mut p =
        plugin(json!({ "keys": keys(), "key_source": ["header:X-API-Key", "query:api_key"] }));
    // The header comes first: its key decides, and the query's copy is removed too.
    let mut req = MockRequest::new("GET", "/?api_key=nope&x=1").with_header("x-api-key", "dev-key");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.query(), Some("x=1"));
    let mut req = MockRequest::new("GET", "/?api_key=dev-key").with_header("x-api-key", "nope");
    assert_refused(run(&mut p, &mut req), 403, "invalid_api_key");
    // Without the header, the query.
    let mut req = MockRequest::new("GET", "/?api_key=batch-key-1");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.var("consumer"), Some("batch"));

    let mut p =
        plugin(json!({ "keys": keys(), "key_source": ["query:api_key", "header:X-API-Key"] }));
    let mut req = MockRequest::new("GET", "/?api_key=dev-key").with_header("x-api-key", "nope");
    assert_eq!(run(&mut p, &mut req), None);
    assert_eq!(req.header("x-api-key"), None);
    assert_eq!(req.query(), None);
}

#[test]
fn a_key_sent_twice_or_too_long_is_refused() {
    start();
    let mut p = plugin(
        json!({ "keys": keys(), "key_source": ["header:X-API-Key", "query:k"], "max_key_bytes": 16 }),
    );
    let mut req = with_header("dev-key").with_header("X-API-Key", "dev-key");
    assert_refused(run(&mut p, &mut req), 403, "invalid_api_key");
    let mut req = MockRequest::new("GET", "/?k=dev-key&k=dev-key");
    assert_refused(run(&mut p, &mut req), 403, "invalid_api_key");
    let mut req = MockRequest::new("GET", "/?k=%ff");
    assert_refused(run(&mut p, &mut req), 403, "invalid_api_key");
    for long in ["x".repeat(17), "x".repeat(100_000)] {
        assert_refused(run(&mut p, &mut with_header(&long)), 403, "invalid_api_key");
        let mut req = MockRequest::new("GET", &format!("/?k={long}"));
        assert_refused(run(&mut p, &mut req), 403, "invalid_api_key");
    }
    // At the limit, a key is looked up.
    let mut p = plugin(
        json!({ "keys": [{ "consumer": "c", "key": "k".repeat(16) }], "max_key_bytes": 16 }),
    );
    assert_eq!(run(&mut p, &mut with_header(&"k".repeat(16))), None);
}

#[test]
fn plain_keys_and_expired_keys_are_warned_about_at_load() {
    start();
    let _ = plugin(json!({ "keys": keys() }));
    let warnings: Vec<String> = testing::logs()
        .into_iter()
        .filter(|(level, _)| *level == Level::Warn)
        .map(|(_, line)| line)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("keys[3]") && warnings[0].contains("key_sha256"),
        "{warnings:?}"
    );
    assert!(
        !warnings[0].contains("dev-key"),
        "the key itself is not logged"
    );

    testing::reset();
    testing::set_now_millis(1_814_313_600_000);
    let _ = plugin(json!({ "keys": keys() }));
    assert!(
        testing::logs()
            .iter()
            .any(|(level, line)| *level == Level::Warn && line.starts_with("keys[0]: expired")),
        "{:?}",
        testing::logs()
    );
}

#[test]
fn key_files_are_json_or_toml() {
    start();
    let list = keys();
    let json_list = serde_json::to_string_pretty(&list).unwrap();
    let json_object = json!({ "keys": list }).to_string();
    let toml_file = format!(
        r#"
# Keys for the orders API.
[[keys]]
consumer = "mobile"
key_sha256 = "{}"
expires = 2027-06-30T00:00:00Z   # a TOML date-time
scopes = ["orders:read"]

[[keys]]
consumer = "batch"
key_sha256 = "{}"
scopes = ["orders:read", "orders:write"]

[[keys]]
consumer = "dev"
key = "dev-key"
expires = "2027-06-30T02:00:00+02:00"
"#,
        sha("mobile-key"),
        sha("batch-key-1")
    );
    for text in [json_list, json_object, toml_file] {
        let mut p = plugin(json!({ "keys": text, "required_scopes": ["orders:read"] }));
        testing::set_now_millis(T0);
        let mut req = with_header("mobile-key");
        assert_eq!(run(&mut p, &mut req), None, "{text}");
        assert_eq!(req.var("consumer"), Some("mobile"));
        assert_eq!(run(&mut p, &mut with_header("batch-key-1")), None, "{text}");
        assert_refused(
            run(&mut p, &mut with_header("nope")),
            403,
            "invalid_api_key",
        );
        testing::set_now_millis(1_814_313_600_000);
        assert_refused(
            run(&mut p, &mut with_header("mobile-key")),
            403,
            "invalid_api_key",
        );
    }
}

#[test]
fn answers_are_configurable() {
    start();
    let mut p = plugin(json!({
        "keys": keys(),
        "on_missing": { "status": 403, "body": { "code": 4031, "detail": "no key" } },
        "on_refused": { "body": "denied" },
    }));
    let reply = run(&mut p, &mut MockRequest::new("GET", "/")).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(body(&reply), json!({ "code": 4031, "detail": "no key" }));
    assert!(!reply.headers.iter().any(|(n, _)| n == "www-authenticate"));
    let reply = run(&mut p, &mut with_header("nope")).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(body(&reply), json!("denied"));

    let mut p = plugin(json!({ "keys": keys(), "on_refused": { "status": 401 } }));
    let reply = run(&mut p, &mut with_header("nope")).unwrap();
    assert_eq!(
        (reply.status, body(&reply)["error"].clone()),
        (401, json!("invalid_api_key"))
    );
    assert!(
        reply
            .headers
            .contains(&("www-authenticate".into(), "ApiKey".into()))
    );
}

#[test]
fn many_keys_are_all_found() {
    start();
    let entries: Vec<Value> = (0..keys::MAX_KEYS)
        .map(|i| json!({ "consumer": format!("c{i}"), "key_sha256": sha(&format!("key-{i}")) }))
        .collect();
    let mut p = plugin(json!({ "keys": entries }));
    for i in (0..keys::MAX_KEYS).step_by(97).chain([keys::MAX_KEYS - 1]) {
        let mut req = with_header(&format!("key-{i}"));
        assert_eq!(run(&mut p, &mut req), None, "key-{i}");
        assert_eq!(req.var("consumer"), Some(format!("c{i}").as_str()));
    }
    assert_refused(
        run(&mut p, &mut with_header("key-10000")),
        403,
        "invalid_api_key",
    );
}

#[test]
fn an_empty_key_list_refuses_everything_and_says_so() {
    start();
    let mut p = plugin(json!({ "keys": [] }));
    assert_refused(
        run(&mut p, &mut with_header("dev-key")),
        403,
        "invalid_api_key",
    );
    assert!(
        testing::logs()
            .iter()
            .any(|(level, line)| *level == Level::Warn && line.contains("no keys"))
    );
}

#[test]
fn only_the_request_phase_is_registered() {
    start();
    assert_eq!(
        plugin(json!({ "keys": keys() })).registration(),
        Registration::request_only()
    );
}

#[test]
fn bad_configs_name_the_key_at_fault() {
    start();
    let good = || keys().as_array().unwrap().clone();
    let with_entry = |i: usize, entry: Value| {
        let mut list = good();
        list[i] = entry;
        json!({ "keys": list })
    };
    let h = sha("x");
    let cases = [
        (json!({}), "keys", "required"),
        (json!({ "keys": 7 }), "keys", "must be a list of keys"),
        (
            with_entry(
                3,
                json!({ "consumer": "c", "key_sha256": h, "expires": "2027-06-31T00:00:00Z" }),
            ),
            "keys[3].expires",
            "not an RFC 3339 date-time",
        ),
        (
            with_entry(
                3,
                json!({ "consumer": "c", "key_sha256": h, "expires": "2027-06-30" }),
            ),
            "keys[3].expires",
            "needs a date, a time and a UTC offset",
        ),
        (
            with_entry(3, json!({ "consumer": "c", "key_sha256": h, "expires": 1 })),
            "keys[3].expires",
            "RFC 3339",
        ),
        (
            with_entry(0, json!({ "consumer": "c", "key_sha256": "abc" })),
            "keys[0].key_sha256",
            "64 hex digits",
        ),
        (
            with_entry(1, json!({ "consumer": "c", "key_sha256": h, "key": "x" })),
            "keys[1]",
            "not both",
        ),
        (
            with_entry(1, json!({ "consumer": "c" })),
            "keys[1]",
            "needs `key_sha256`",
        ),
        (
            with_entry(1, json!({ "key_sha256": h })),
            "keys[1]",
            "missing field `consumer`",
        ),
        (
            with_entry(
                1,
                json!({ "consumer": "c", "key_sha256": h, "scope": ["a"] }),
            ),
            "keys[1].scope",
            "unknown field",
        ),
        (
            with_entry(1, json!({ "consumer": "", "key_sha256": h })),
            "keys[1].consumer",
            "1 to 256 bytes",
        ),
        (
            with_entry(1, json!({ "consumer": "a\nb", "key_sha256": h })),
            "keys[1].consumer",
            "control",
        ),
        (
            with_entry(1, json!({ "consumer": 5, "key_sha256": h })),
            "keys[1].consumer",
            "invalid type",
        ),
        (
            with_entry(
                2,
                json!({ "consumer": "c", "key_sha256": h, "scopes": ["a", "b c"] }),
            ),
            "keys[2].scopes[1]",
            "a scope is",
        ),
        (
            with_entry(
                2,
                json!({ "consumer": "c", "key_sha256": h, "scopes": "a" }),
            ),
            "keys[2].scopes",
            "invalid type",
        ),
        (
            with_entry(3, json!({ "consumer": "c", "key": "has space" })),
            "keys[3].key",
            "visible ASCII",
        ),
        (
            with_entry(3, json!({ "consumer": "c", "key": "" })),
            "keys[3].key",
            "1 to 512 bytes",
        ),
        (
            with_entry(3, json!({ "consumer": "c", "key": "x".repeat(513) })),
            "keys[3].key",
            "1 to 512 bytes",
        ),
        (
            with_entry(
                3,
                json!({ "consumer": "c", "key_sha256": sha("batch-key-2") }),
            ),
            "keys[3]",
            "the same key as keys[2]",
        ),
        (
            with_entry(3, json!({ "consumer": "c", "key": "batch-key-1" })),
            "keys[3]",
            "the same key as keys[1]",
        ),
        (with_entry(3, json!("dev-key")), "keys[3]", "invalid type"),
        (
            json!({ "keys": "[{\"consumer\": \"a\"" }),
            "keys",
            "neither JSON",
        ),
        (
            json!({ "keys": "keys = 3" }),
            "keys",
            "a TOML key file holds a `keys` list",
        ),
        (
            json!({ "keys": "\n" }),
            "keys",
            "a TOML key file holds a `keys` list",
        ),
        (
            json!({ "keys": "[[key]]\nconsumer = \"a\"" }),
            "keys",
            "has a key `key`",
        ),
        (
            json!({ "keys": "{\"keys\": [], \"extra\": 1}" }),
            "keys",
            "has a key `extra`",
        ),
        (
            json!({ "keys": "\"a string\"" }),
            "keys",
            "a JSON key file is a list",
        ),
        (
            json!({ "keys": format!("[[keys]]\nconsumer = \"a\"\nkey_sha256 = \"{h}\"\n\n[[keys]]\nconsumer = \"b\"\nexpires = 2027-06-30\nkey = \"k\"\n") }),
            "keys[1].expires",
            "needs a date, a time",
        ),
        (
            json!({ "keys": good(), "required_scopes": [""] }),
            "required_scopes[0]",
            "a scope is",
        ),
        (
            json!({ "keys": good(), "key_source": "cookie:k" }),
            "key_source",
            "unknown source",
        ),
        (
            json!({ "keys": good(), "key_source": ["header:a", "query:a b"] }),
            "key_source[1]",
            "query parameter name",
        ),
        (
            json!({ "keys": good(), "key_source": ["header:A", "header:a"] }),
            "key_source[1]",
            "listed twice",
        ),
        (
            json!({ "keys": good(), "key_source": [] }),
            "key_source",
            "empty",
        ),
        (
            json!({ "keys": good(), "max_key_bytes": 0 }),
            "max_key_bytes",
            "from 1 to 8192",
        ),
        (
            json!({ "keys": good(), "max_key_bytes": 4, }),
            "keys[3].key",
            "1 to 4 bytes",
        ),
        (
            json!({ "keys": good(), "on_missing": { "status": 200 } }),
            "on_missing.status",
            "from 400 to 599",
        ),
        (
            json!({ "keys": good(), "on_refused": { "status": 403, "headers": {} } }),
            "on_refused.headers",
            "unknown field",
        ),
        (
            json!({ "keys": good(), "header": "x" }),
            "header",
            "unknown field",
        ),
    ];
    for (config, key, message) in cases {
        let err = config_error(config.clone());
        assert_eq!(err.key.as_deref(), Some(key), "{config}: {err}");
        assert!(err.message.contains(message), "{config}: {err}");
    }
    let many: Vec<Value> = (0..=keys::MAX_KEYS)
        .map(|i| json!({ "consumer": "c", "key_sha256": format!("{i:064x}") }))
        .collect();
    let err = config_error(json!({ "keys": many }));
    assert_eq!(err.key.as_deref(), Some("keys"));
    assert!(err.message.contains("more than the 10000 allowed"), "{err}");
}

#[test]
fn a_toml_error_names_its_line() {
    start();
    let err = config_error(json!({ "keys": "[[keys]]\nconsumer = \"a\"\nkey = \n" }));
    assert_eq!(err.key.as_deref(), Some("keys"));
    assert!(err.message.contains("line 3 column"), "{err}");
}
