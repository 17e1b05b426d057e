//! The `validate` plugin (Python) through the real gateway: valid requests reach the upstream
//! untouched, invalid ones get a 422 listing every violation and never reach it, hostile
//! inputs are refused without a plugin failure, bad configs are refused naming the key, and
//! pooled and fresh instances behave the same.

mod support;

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, check, plugin};

/// The smallest linear-memory limit that serves every test here (bodies up to 1 MiB),
/// documented in the plugin's README.
const MEMORY_LIMIT_MIB: u32 = 16;

/// Parsing a 1 MiB body takes the plugin well over the default 50 ms (see the README).
const CALL_TIMEOUT_MS: u32 = 2000;

/// The rules every route here applies.
const RULES: &str = r#"
[routes.pipeline.config.query]
page = { type = "integer", minimum = 1, maximum = 1000 }
sort = { enum = ["asc", "desc"] }
q = { required = true, min_length = 1, max_length = 100 }
[routes.pipeline.config.headers]
"x-api-version" = { required = true, pattern = "^v[0-9]+$" }
[routes.pipeline.config.body]
"name" = { type = "string", required = true, max_length = 64 }
"age" = { type = "integer", minimum = 0, maximum = 150 }
"address.zip" = { type = "string", pattern = "^[0-9]{5}$" }
"role" = { enum = ["admin", "user"] }
"#;

fn config(upstream: &Upstream) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[plugins.validate]
path = "{plugin}"
memory_limit_mib = {MEMORY_LIMIT_MIB}
call_timeout_ms = {CALL_TIMEOUT_MS}
# The same component under the default limits, for small requests.
[plugins.validate_defaults]
path = "{plugin}"
[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "pooled"
path_prefix = "/pooled"
upstream = "up"
max_body_bytes = 1048576
[[routes.pipeline]]
plugin = "validate"
{RULES}

[[routes]]
name = "fresh"
path_prefix = "/fresh"
upstream = "up"
max_body_bytes = 1048576
[[routes.pipeline]]
plugin = "validate"
instances = "fresh"
{RULES}

[[routes]]
name = "echo"
path_prefix = "/echo"
upstream = "up"
[[routes.pipeline]]
plugin = "validate_defaults"
[routes.pipeline.config]
echo_values = true
[routes.pipeline.config.query]
page = {{ type = "integer", maximum = 10 }}
[routes.pipeline.config.headers]
"x-token" = {{ pattern = "^[a-f0-9]{{8}}$" }}
[routes.pipeline.config.body]
"name" = {{ type = "string", max_length = 4 }}
"#,
        plugin = plugin("validate").display(),
        up = upstream.url()
    )
}

const GOOD_BODY: &str = r#"{"name":"Ada","age":36,"address":{"zip":"12345"},"role":"admin"}"#;

async fn post(
    c: &Client,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> Resp {
    c.request(Method::POST, url, headers, body).await
}

/// The (in, field, rule) of every violation in a 422, after checking the reply's shape.
fn violations(r: &Resp) -> BTreeSet<(String, String, String)> {
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], "validation_failed");
    let list = j["violations"].as_array().unwrap();
    let spots: BTreeSet<_> = list
        .iter()
        .map(|v| {
            assert!(!v["message"].as_str().unwrap().is_empty(), "{v}");
            let field = match &v["field"] {
                Value::Null => String::new(),
                f => f.as_str().unwrap().to_owned(),
            };
            (
                v["in"].as_str().unwrap().to_owned(),
                field,
                v["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(spots.len(), list.len(), "each violation once: {j}");
    spots
}

/// Where a violation is, what it is: (in, field, rule).
type Spot<'a> = (&'a str, &'a str, &'a str);

fn set(items: &[Spot<'_>]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_requests_reach_the_upstream_unchanged() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up));
    let c = Client::new();
    for route in ["pooled", "fresh"] {
        let query = "page=7&sort=desc&q=hello+w%C3%B6rld&extra=%FF";
        let r = c
            .get_with(
                &gw.url(&format!("/{route}/items?{query}")),
                &[("x-api-version", "v2"), ("x-other", "kept")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let j = r.json();
        assert_eq!(j["path"], format!("/{route}/items"));
        assert_eq!(j["query"], query);
        assert_eq!(j["headers"]["x-api-version"], "v2");
        assert_eq!(j["headers"]["x-other"], "kept");

        let r = post(
            &c,
            &gw.url(&format!("/{route}/users?q=x")),
            &[
                ("x-api-version", "v1"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            GOOD_BODY,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let j = r.json();
        assert_eq!(j["method"], "POST");
        assert_eq!(j["body"], GOOD_BODY);
        assert_eq!(
            j["headers"]["content-type"],
            "application/json; charset=utf-8"
        );

        // Body rules apply to POST, PUT and PATCH: a GET's body is not looked at.
        let r = c
            .request(
                Method::GET,
                &gw.url(&format!("/{route}/users?q=x")),
                &[("x-api-version", "v1")],
                "not json",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(up.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_422_with_every_violation() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up));
    let c = Client::new();
    for route in ["pooled", "fresh"] {
        let url = gw.url(&format!("/{route}/users?page=1001&sort=up"));
        let body = format!(
            r#"{{"name":"{}","age":151,"address":{{"zip":"1234"}},"role":"root"}}"#,
            "x".repeat(65)
        );
        let r = c
            .request(
                Method::PUT,
                &url,
                &[
                    ("x-api-version", "secret-v"),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert_eq!(
            violations(&r),
            set(&[
                ("query", "page", "maximum"),
                ("query", "sort", "enum"),
                ("query", "q", "required"),
                ("header", "x-api-version", "pattern"),
                ("body", "name", "max_length"),
                ("body", "age", "maximum"),
                ("body", "address.zip", "pattern"),
                ("body", "role", "enum"),
            ])
        );
        let j = r.json();
        let page = &j["violations"][0];
        assert_eq!(page["field"], "page");
        assert_eq!(page["message"], "must be at most 1000");
        // Values are not echoed unless the route asks, and header values never are.
        assert!(!r.text().contains("secret-v"), "{}", r.text());
        assert!(
            j["violations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v.get("value").is_none())
        );

        // Missing required fields, each reported.
        let r = post(
            &c,
            &gw.url(&format!("/{route}/x")),
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
        assert_eq!(
            violations(&r),
            set(&[
                ("query", "q", "required"),
                ("header", "x-api-version", "required"),
                ("body", "name", "required"),
            ])
        );
    }
    assert_eq!(
        up.hits(),
        0,
        "an invalid request never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_and_headers_are_refused() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up));
    let c = Client::new();
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Headers<'_>, &[Spot<'_>])] = &[
        // A second value the upstream might read instead of the checked one.
        (
            "page=1&page=5000&q=a",
            &[],
            &[("query", "page", "multiple")],
        ),
        // The name is percent-decoded too.
        ("pa%67e=5000&q=a", &[], &[("query", "page", "maximum")]),
        (
            "page=99999999999999999999999999999999999999&q=a",
            &[],
            &[("query", "page", "maximum")],
        ),
        ("page=1e3&q=a", &[], &[("query", "page", "type")]),
        ("page=NaN&q=a", &[], &[("query", "page", "type")]),
        ("page=%EF%BC%91&q=a", &[], &[("query", "page", "type")]),
        ("page=+5&q=a", &[], &[("query", "page", "type")]),
        ("q=%FF%FE", &[], &[("query", "q", "encoding")]),
        ("q=", &[], &[("query", "q", "min_length")]),
        (
            "q=a",
            &[("x-api-version", "v1\tx")],
            &[("header", "x-api-version", "pattern")],
        ),
        (
            "q=a",
            &[("x-api-version", "v1"), ("x-api-version", "evil")],
            &[("header", "x-api-version", "multiple")],
        ),
    ];
    for route in ["pooled", "fresh"] {
        for (query, headers, want) in cases {
            let mut hs: Vec<(&str, &str)> = headers.to_vec();
            if !hs.iter().any(|(n, _)| *n == "x-api-version") {
                hs.push(("x-api-version", "v1"));
            }
            let r = c
                .get_with(&gw.url(&format!("/{route}/?{query}")), &hs)
                .await;
            assert_eq!(violations(&r), set(want), "{route} {query} {headers:?}");
        }
    }
    let long = format!("/pooled/?q=a&page={}", "9".repeat(5000));
    let r = c.get_with(&gw.url(&long), &[("x-api-version", "v1")]).await;
    assert_eq!(violations(&r), set(&[("query", "page", "type")]));
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up));
    let c = Client::new();
    let deep_array = format!("{}{}", "[".repeat(500_000), "]".repeat(500_000));
    let deep_unclosed = "{\"a\":".repeat(200_000);
    let deep_field = format!(
        r#"{{"name":"a","x":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let huge_number = format!(r#"{{"name":"a","age":{}}}"#, "9".repeat(5000));
    let json = "application/json";
    let cases: Vec<(Vec<u8>, &str, Spot<'_>)> = vec![
        (
            br#"{"name":"a","age":true}"#.to_vec(),
            json,
            ("body", "age", "type"),
        ),
        (
            br#"{"name":"a","age":36.0}"#.to_vec(),
            json,
            ("body", "age", "type"),
        ),
        (
            br#"{"name":"a","age":1e400}"#.to_vec(),
            json,
            ("body", "age", "type"),
        ),
        (
            br#"{"name":"a","age":NaN}"#.to_vec(),
            json,
            ("body", "", "json"),
        ),
        (
            br#"{"name":"a","age":-Infinity}"#.to_vec(),
            json,
            ("body", "", "json"),
        ),
        (
            br#"{"name":"a","age":5,"age":500}"#.to_vec(),
            json,
            ("body", "", "json"),
        ),
        (
            b"{\"name\":\"\xff\xfe\"}".to_vec(),
            json,
            ("body", "", "json"),
        ),
        (
            b"\xef\xbb\xbf{\"name\":\"a\"}".to_vec(),
            json,
            ("body", "", "json"),
        ),
        (br#"["name"]"#.to_vec(), json, ("body", "", "json")),
        (b"".to_vec(), json, ("body", "", "json")),
        (
            b"name=a".to_vec(),
            "application/x-www-form-urlencoded",
            ("body", "", "content_type"),
        ),
        (
            GOOD_BODY.as_bytes().to_vec(),
            "text/plain",
            ("body", "", "content_type"),
        ),
        (
            GOOD_BODY.as_bytes().to_vec(),
            "application/json; charset=utf-16",
            ("body", "", "content_type"),
        ),
        (deep_array.into_bytes(), json, ("body", "", "json")),
        (deep_unclosed.into_bytes(), json, ("body", "", "json")),
        (deep_field.into_bytes(), json, ("body", "", "json")),
        (huge_number.into_bytes(), json, ("body", "", "json")),
    ];
    for route in ["pooled", "fresh"] {
        for (body, ct, want) in &cases {
            let r = c
                .request(
                    Method::PATCH,
                    &gw.url(&format!("/{route}/?q=a")),
                    &[("x-api-version", "v1"), ("content-type", ct)],
                    body.clone(),
                )
                .await;
            let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{route} {ct} {shown}: {}\n{}",
                r.text(),
                gw.logs()
            );
            assert_eq!(violations(&r), set(&[*want]), "{route} {ct} {shown}");
        }
    }
    assert_eq!(up.hits(), 0);

    // A large valid body (about 1 MiB, thousands of objects) still passes.
    let items: Vec<Value> = (0..12_000)
        .map(|i| json!({"id": i, "tags": ["a", "b"], "note": "x".repeat(40)}))
        .collect();
    let big = json!({"name": "Ada", "items": items}).to_string();
    assert!(big.len() > 900_000);
    let r = post(
        &c,
        &gw.url("/pooled/?q=a"),
        &[("x-api-version", "v1"), ("content-type", json)],
        big.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body"].as_str().unwrap().len(), big.len());
    assert_eq!(up.hits(), 1);
    assert!(!gw.logs().contains("plugin_error"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_values_shows_query_and_body_values_but_never_headers() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up));
    let c = Client::new();
    let r = post(
        &c,
        &gw.url("/echo/?page=11"),
        &[
            ("x-token", "hunter2-secret"),
            ("content-type", "application/json"),
        ],
        r#"{"name":"Grace"}"#,
    )
    .await;
    assert_eq!(
        violations(&r),
        set(&[
            ("query", "page", "maximum"),
            ("header", "x-token", "pattern"),
            ("body", "name", "max_length"),
        ])
    );
    let j = r.json();
    let by_field = |f: &str| {
        j["violations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["field"] == f)
            .unwrap()
            .clone()
    };
    assert_eq!(by_field("page")["value"], 11);
    assert_eq!(by_field("name")["value"], "Grace");
    assert!(by_field("x-token").get("value").is_none());
    assert!(!r.text().contains("hunter2"), "{}", r.text());
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_and_fresh_instances_keep_no_state_between_requests() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up));
    let c = Client::new();
    for i in 0..10 {
        for route in ["pooled", "fresh"] {
            let (query, ok) = if i % 2 == 0 {
                (format!("q=a&page={}", i + 1), true)
            } else {
                (format!("q=a&page={}", 2000 + i), false)
            };
            let r = c
                .get_with(
                    &gw.url(&format!("/{route}/?{query}")),
                    &[("x-api-version", "v1")],
                )
                .await;
            if ok {
                assert_eq!(r.status, StatusCode::OK, "{route} {query}: {}", r.text());
                assert_eq!(r.json()["query"], query);
            } else {
                assert_eq!(
                    violations(&r),
                    set(&[("query", "page", "maximum")]),
                    "{route}"
                );
            }
        }
    }
    assert_eq!(up.hits(), 10);
}

fn config_with(plugin_config: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[plugins.validate]
path = "{}"
memory_limit_mib = {MEMORY_LIMIT_MIB}
[upstreams.up]
targets = ["http://127.0.0.1:1"]
[[routes]]
name = "v"
path_prefix = "/"
upstream = "up"
[[routes.pipeline]]
plugin = "validate"
config = {plugin_config}
"#,
        plugin("validate").display()
    )
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let cases = [
        (
            r#"{ query = { page = { type = "integer", minimum = "1" } } }"#,
            "config key `query.page.minimum`",
        ),
        (
            r#"{ query = { page = { type = "integer", minimum = 9, maximum = 1 } } }"#,
            "config key `query.page.minimum`",
        ),
        (
            r#"{ query = { page = { type = "int" } } }"#,
            "config key `query.page.type`",
        ),
        (
            r#"{ query = { page = { max = 3 } } }"#,
            "config key `query.page.max`",
        ),
        (
            r#"{ headers = { "x-v" = { pattern = "^(v" } } }"#,
            "config key `headers.x-v.pattern`",
        ),
        (
            r#"{ headers = { "X-V" = { } } }"#,
            "config key `headers.X-V`",
        ),
        (
            r#"{ body = { "a.b" = { max_length = 3 } } }"#,
            "config key `body.a.b.max_length`",
        ),
        (
            r#"{ body = { "role" = { type = "string", enum = ["a", 1] } } }"#,
            "config key `body.role.enum[1]`",
        ),
        (
            r#"{ body = { a = { } }, max_depth = 0 }"#,
            "config key `max_depth`",
        ),
        (
            r#"{ query = { a = { } }, strict = true }"#,
            "config key `strict`",
        ),
    ];
    for (cfg, want) in cases {
        let (ok, out) = check(&config_with(cfg));
        assert!(!ok, "{cfg} accepted");
        assert!(
            out.contains(&format!(
                "route `v`, pipeline[0], plugin `validate`: {want}"
            )),
            "{cfg}: {out}"
        );
    }
    let (ok, out) = check(&config_with("{}"));
    assert!(!ok);
    assert!(out.contains("config has no rules"), "{out}");

    // A run refuses to start on it too.
    let err = Gateway::try_start(&config_with(r#"{ query = { q = { min_length = -1 } } }"#))
        .err()
        .expect("the gateway refuses the config");
    assert!(err.contains("query.q.min_length"), "{err}");

    let (ok, out) = check(&config_with(r#"{ query = { q = { required = true } } }"#));
    assert!(ok, "{out}");
}
