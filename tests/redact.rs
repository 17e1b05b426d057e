//! The `redact` plugin (JavaScript) through the real gateway: fields masked in JSON responses
//! from real upstreams (paths, wildcards, arrays, hostile keys), other responses untouched byte
//! for byte, the policies for JSON that does not parse and for compressed JSON, config errors
//! named at startup and by `wasmgate check`, and both instance modes.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, check, plugin};
use tokio::net::TcpListener;

/// An upstream that answers every request with these headers and these exact bytes, which
/// `Behaviour::Fixed` cannot send (a `content-encoding`, bytes that are not UTF-8).
struct Canned {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Canned {
    async fn start(headers: &'static [(&'static str, &'static str)], body: Vec<u8>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Bytes::from(body);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let mut b = Response::builder();
                        for (n, v) in headers {
                            b = b.header(*n, *v);
                        }
                        let resp = b.body(Full::new(body.clone())).unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Canned { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway config with the plugin (at the smallest memory limit it starts in), the given
/// upstreams (name, url) and routes.
fn config(upstreams: &[(&str, String)], routes: &str) -> String {
    let mut cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[plugins.redact]
path = "{redact}"
# The smallest limit the component starts in (its memory starts at 145 pages, 9.1 MiB).
memory_limit_mib = 10
# Generous against a loaded test machine; the bodies here take a few milliseconds.
call_timeout_ms = 1000
"#,
        redact = plugin("redact").display(),
    );
    for (name, url) in upstreams {
        cfg.push_str(&format!("[upstreams.{name}]\ntargets = [\"{url}\"]\n"));
    }
    cfg.push_str(routes);
    cfg
}

/// A route `name` on `/name` to upstream `up`, with the plugin configured by `plugin_config`
/// (an inline TOML table's contents).
fn route(name: &str, up: &str, plugin_config: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
path_prefix = "/{name}"
upstream = "{up}"
[[routes.pipeline]]
plugin = "redact"
config = {{ {plugin_config} }}
"#
    )
}

fn assert_length_matches(r: &support::Resp) {
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str()),
        "content-length of {:?}",
        r.text()
    );
}

const ACCOUNTS: &str = r#"{"users":[{"id":1,"email":"ann@example.com","card":{"number":"4111111111111111","exp":"12/30"},"profile":{"ssn":"111-11-1111"}},{"id":2,"email":"bob@example.com","card":{"number":"55"},"tags":["a","b"]},"not an object",[{"email":"nested@example.com"}]],"owner":{"ssn":"999-99-9999","email":"root@example.com","age":41},"audit":{"deep":{"deeper":[{"password":"hunter2"}],"password":{"hash":"x"}}},"big":12345678901234567890,"ratio":1.50,
 "__proto__":{"email":"proto@example.com"},"constructor":{"prototype":"c"},"em\u0061il":"escaped@example.com","email":"first@example.com","email":"second@example.com"}"#;

const ACCOUNTS_MASKED: &str = r#"{"users":[{"id":1,"email":"***","card":{"number":"****1111","exp":"12/30"},"profile":{"ssn":"***"}},{"id":2,"email":"***","card":{"number":"****"},"tags":["a","b"]},"not an object",[{"email":"***"}]],"owner":{"ssn":"***","email":"root@example.com","age":"***"},"audit":{"deep":{"deeper":[{"password":"***"}],"password":"***"}},"big":12345678901234567890,"ratio":1.50,
 "__proto__":{"email":"***"},"constructor":{"prototype":"***"},"em\u0061il":"***","email":"***","email":"***"}"#;

const ACCOUNT_FIELDS: &str = r#"fields = ["users.email", "email", { path = "users.card.number", keep_last = 4, mask = "****" }, "users.*.ssn", "*.ssn", "owner.age", "**.password", "__proto__.email", "constructor.prototype"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masks_listed_fields_through_wildcards_and_arrays() {
    let up = Upstream::start("up", Behaviour::Fixed("application/json", ACCOUNTS)).await;
    let problem = Upstream::start(
        "problem",
        Behaviour::Fixed(
            "Application/Problem+JSON; charset=utf-8",
            r#"{"title":"conflict","detail":{"email":"ann@example.com"}}"#,
        ),
    )
    .await;
    let gw = Gateway::start(&config(
        &[("up", up.url()), ("problem", problem.url())],
        &format!(
            "{}{}",
            route("accounts", "up", ACCOUNT_FIELDS),
            route(
                "problem",
                "problem",
                r#"fields = ["*.email"], mask = "[redacted]""#
            )
        ),
    ));
    let c = Client::new();

    let r = c.get(&gw.url("/accounts")).await;
    assert_eq!(r.status, StatusCode::OK);
    // Only the matched values changed: spacing, number spelling, duplicate keys and key order
    // are the upstream's.
    assert_eq!(r.text(), ACCOUNTS_MASKED);
    assert_length_matches(&r);
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = c.get(&gw.url("/problem")).await;
    assert_eq!(
        r.text(),
        r#"{"title":"conflict","detail":{"email":"[redacted]"}}"#
    );
    assert_length_matches(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_are_not_json_pass_byte_for_byte() {
    let text = Upstream::start("text", Behaviour::Fixed("text/plain", ACCOUNTS)).await;
    let json_seq = Upstream::start("seq", Behaviour::Fixed("application/json-seq", ACCOUNTS)).await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let bin = Canned::start(
        &[("content-type", "application/octet-stream")],
        binary.clone(),
    )
    .await;
    let untyped = Canned::start(&[], ACCOUNTS.as_bytes().to_vec()).await;
    let gw = Gateway::start(&config(
        &[
            ("text", text.url()),
            ("seq", json_seq.url()),
            ("bin", bin.url()),
            ("untyped", untyped.url()),
        ],
        &[
            route("text", "text", ACCOUNT_FIELDS),
            route("seq", "seq", ACCOUNT_FIELDS),
            route("bin", "bin", ACCOUNT_FIELDS),
            route("untyped", "untyped", ACCOUNT_FIELDS),
        ]
        .concat(),
    ));
    let c = Client::new();
    for path in ["/text", "/seq", "/untyped"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.text(), ACCOUNTS, "{path}");
        assert_length_matches(&r);
    }
    let r = c.get(&gw.url("/bin")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), binary.as_slice());
    assert_length_matches(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_does_not_parse_fails_closed_unless_passed() {
    const TRUNCATED: &str = r#"{"email":"ann@example.com","card":{"number":"4111"#;
    let truncated = Upstream::start("t", Behaviour::Fixed("application/json", TRUNCATED)).await;
    let trailing = Upstream::start(
        "g",
        Behaviour::Fixed("application/json", r#"{"email":"ann@example.com"} {"x":1}"#),
    )
    .await;
    // Latin-1 bytes where UTF-8 belongs.
    let latin1 = b"{\"email\":\"Ren\xe9e@example.com\"}".to_vec();
    let bad_utf8 = Canned::start(
        &[("content-type", "application/json"), ("x-account", "ann")],
        latin1.clone(),
    )
    .await;
    let empty = Upstream::start("e", Behaviour::Fixed("application/json", "")).await;
    let scalar = Upstream::start(
        "s",
        Behaviour::Fixed("application/json", r#" "ann@example.com" "#),
    )
    .await;
    let fields = r#"fields = ["email", "**.number"]"#;
    let pass = r#"fields = ["email"], on_invalid = "pass""#;
    let gw = Gateway::start(&config(
        &[
            ("t", truncated.url()),
            ("g", trailing.url()),
            ("u", bad_utf8.url()),
            ("e", empty.url()),
            ("s", scalar.url()),
        ],
        &[
            route("truncated", "t", fields),
            route("trailing", "g", fields),
            route("latin1", "u", fields),
            route("truncated-pass", "t", pass),
            route("latin1-pass", "u", pass),
            route("empty", "e", fields),
            route("scalar", "s", fields),
        ]
        .concat(),
    ));
    let c = Client::new();

    for path in ["/truncated", "/trailing", "/latin1"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(r.json()["error"], "redaction_failed", "{path}");
        assert!(!r.text().contains("example.com"), "{path}: {}", r.text());
        // The reply replaces the upstream's response, headers included.
        assert!(r.header("x-account").is_none(), "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_length_matches(&r);
    }
    let logs = gw.logs_containing(&["refused a JSON response that does not parse", "not UTF-8"]);
    assert!(
        logs.contains("refused a JSON response that does not parse") && logs.contains("not UTF-8"),
        "{logs}"
    );
    assert!(!logs.contains("ann@example.com"), "{logs}");

    // Passed on request, as the upstream sent it.
    let r = c.get(&gw.url("/truncated-pass")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), TRUNCATED);
    let r = c.get(&gw.url("/latin1-pass")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), latin1.as_slice());
    assert_eq!(r.header("x-account"), Some("ann"));

    // Nothing to mask: an empty body, a lone string at the top.
    let r = c.get(&gw.url("/empty")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    let r = c.get(&gw.url("/scalar")).await;
    assert_eq!(r.text(), r#" "ann@example.com" "#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_json_is_refused_and_upstreams_are_asked_for_identity() {
    // A real gzip stream of {"email":"ann@example.com"}.
    const GZIP: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0xab, 0x56, 0x4a, 0xcd, 0x4d,
        0xcc, 0xcc, 0x51, 0xb2, 0x52, 0x4a, 0xcc, 0xcb, 0x73, 0x48, 0xad, 0x48, 0xcc, 0x2d, 0xc8,
        0x49, 0xd5, 0x4b, 0xce, 0xcf, 0x55, 0xaa, 0x05, 0x00, 0x7d, 0x37, 0x2f, 0x5d, 0x1c, 0x00,
        0x00, 0x00,
    ];
    let gz = Canned::start(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        GZIP.to_vec(),
    )
    .await;
    let echo = Upstream::start("echo", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &[("gz", gz.url()), ("echo", echo.url())],
        &[
            route("gz", "gz", r#"fields = ["email"]"#),
            route(
                "gz-pass",
                "gz",
                r#"fields = ["email"], on_encoded = "pass""#,
            ),
            route("echo", "echo", r#"fields = ["headers.authorization"]"#),
            route(
                "echo-keep",
                "echo",
                r#"fields = ["headers.authorization"], strip_accept_encoding = false"#,
            ),
        ]
        .concat(),
    ));
    let c = Client::new();

    let r = c.get(&gw.url("/gz")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "redaction_failed");
    let r = c.get(&gw.url("/gz-pass")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body.as_ref(), GZIP);

    let headers = [
        ("accept-encoding", "gzip, br"),
        ("authorization", "Bearer secret-token"),
    ];
    let r = c.get_with(&gw.url("/echo"), &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = &r.json()["headers"];
    assert!(seen.get("accept-encoding").is_none(), "{seen}");
    assert_eq!(seen["authorization"], "***");
    assert!(!r.text().contains("secret-token"));
    assert_length_matches(&r);

    let r = c.get_with(&gw.url("/echo-keep"), &headers).await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["accept-encoding"], "gzip, br");
    assert_eq!(seen["authorization"], "***");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_masked_or_fail_closed() {
    // 2,000 levels of objects in arrays, the secret at the bottom.
    let depth = 2000;
    let deep = format!(
        "{}{{\"password\":\"hunter2\"}}{}",
        "{\"a\":[".repeat(depth),
        "]}".repeat(depth)
    );
    let deep_masked = deep.replace("hunter2", "***");
    // 20,000 users: about 700 KB, past what 10 MiB of memory holds.
    let many: String = format!(
        "[{}]",
        (0..20_000)
            .map(|i| format!(r#"{{"id":{i},"email":"u{i}@example.com"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    // 2,000 users: fits.
    let some: String = format!(
        "[{}]",
        (0..2000)
            .map(|i| format!(r#"{{"id":{i},"email":"u{i}@example.com"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    // A byte order mark before the JSON.
    let bom = [b"\xef\xbb\xbf".as_slice(), br#"{"password":"hunter2"}"#].concat();
    let json = &[("content-type", "application/json")];
    let bom_up = Canned::start(json, bom).await;
    let deep_up = Canned::start(json, deep.clone().into_bytes()).await;
    let many_up = Canned::start(json, many.into_bytes()).await;
    let some_up = Canned::start(json, some.clone().into_bytes()).await;
    let gw = Gateway::start(&config(
        &[
            ("deep", deep_up.url()),
            ("many", many_up.url()),
            ("some", some_up.url()),
            ("bom", bom_up.url()),
        ],
        &[
            route("deep", "deep", r#"fields = ["**.password"]"#),
            route("many", "many", r#"fields = ["email"]"#),
            route("some", "some", r#"fields = ["email"]"#),
            route("bom", "bom", r#"fields = ["**.password"]"#),
        ]
        .concat(),
    ));
    let c = Client::new();

    let r = c.get(&gw.url("/deep")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text() == deep_masked, "deep body not masked as expected");
    assert_length_matches(&r);

    let r = c.get(&gw.url("/bom")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), r#"{"password":"***"}"#);

    let r = c.get(&gw.url("/some")).await;
    assert_eq!(r.status, StatusCode::OK);
    let users = r.json();
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 2000);
    assert!(
        users
            .iter()
            .enumerate()
            .all(|(i, u)| u["email"] == "***" && u["id"] == i)
    );

    // Out of memory is a plugin failure: the client gets the gateway's 500, never the body.
    let r = c.get(&gw.url("/many")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"], "plugin_error");
    assert!(!r.text().contains("example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_and_fresh_instances_mask_alike() {
    let up = Upstream::start("up", Behaviour::Fixed("application/json", ACCOUNTS)).await;
    let routes = [
        route("pooled", "up", ACCOUNT_FIELDS),
        route("fresh", "up", ACCOUNT_FIELDS).replace(
            "plugin = \"redact\"\n",
            "plugin = \"redact\"\ninstances = \"fresh\"\n",
        ),
    ]
    .concat();
    assert!(routes.contains("instances = \"fresh\""));
    let gw = Gateway::start(&config(&[("up", up.url())], &routes));
    let c = Client::new();
    for _ in 0..4 {
        for path in ["/pooled", "/fresh"] {
            let r = c.get(&gw.url(path)).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.text(), ACCOUNTS_MASKED, "{path}");
        }
    }
    assert_eq!(up.hits(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key_at_startup_and_in_check() {
    let bad = [
        (r#"mask = "x""#, "config key `fields`: is required"),
        (r#"fields = []"#, "config key `fields`"),
        (
            r#"fields = ["a", { path = "b", keep_last = -1 }]"#,
            "config key `fields[1].keep_last`",
        ),
        (r#"fields = ["a..b"]"#, "config key `fields[0]`"),
        (r#"fields = ["a.**"]"#, "config key `fields[0]`"),
        (
            r#"fields = ["a"], feilds = ["b"]"#,
            "config key `feilds`: unknown key",
        ),
        (
            r#"fields = ["a"], on_invalid = "allow""#,
            "config key `on_invalid`",
        ),
        (
            r#"fields = ["a"], strip_accept_encoding = "yes""#,
            "config key `strip_accept_encoding`",
        ),
    ];
    for (plugin_config, expected) in bad {
        let cfg = config(
            &[("up", "http://127.0.0.1:1".into())],
            &route("r", "up", plugin_config),
        );
        let (ok, out) = check(&cfg);
        assert!(!ok, "{plugin_config}: check passed");
        assert!(out.contains(expected), "{plugin_config}: {out}");
        assert!(out.contains("route `r`"), "{out}");
    }

    let cfg = config(
        &[("up", "http://127.0.0.1:1".into())],
        &route("r", "up", r#"fields = [{ path = "card", keeplast = 4 }]"#),
    );
    let err = Gateway::try_start(&cfg)
        .err()
        .expect("the gateway refuses the config");
    assert!(err.contains("config key `fields[0].keeplast`"), "{err}");

    let good = config(
        &[("up", "http://127.0.0.1:1".into())],
        &route("r", "up", ACCOUNT_FIELDS),
    );
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
}
