//! Plugin pipelines through the real gateway: header changes both ways, short-circuit replies,
//! variables shared along the pipeline, body access, failures, and both instance modes. The
//! plugin is `tests/plugins/fixture`, a real component whose behaviour its config selects.

mod support;

use http::{Method, StatusCode};
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, plugin};

/// A config with one echo upstream, the fixture plugin, and the given routes.
fn config(upstream: &Upstream, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1024
[admin]
listen = "127.0.0.1:0"
[plugins.fixture]
path = "{fixture}"
[upstreams.up]
targets = ["{up}"]
{routes}
"#,
        fixture = plugin("fixture").display(),
        up = upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_changes_request_and_response_headers() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "h"
path_prefix = "/h"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { request_set = { "x-a" = "1" }, request_remove = ["x-b"], response_set = { "x-c" = "2" } }
[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "up"
"#,
    ));
    let c = Client::new();
    let r = c
        .get_with(&gw.url("/h/x"), &[("x-b", "drop me"), ("x-keep", "k")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let h = &r.json()["headers"];
    assert_eq!(h["x-a"], "1");
    assert!(h.get("x-b").is_none(), "{h}");
    assert_eq!(h["x-keep"], "k");
    assert_eq!(r.header("x-c"), Some("2"));
    assert_eq!(r.header("x-upstream"), Some("up"));

    // A route without plugins is untouched.
    let r = c.get_with(&gw.url("/plain"), &[("x-b", "stays")]).await;
    assert_eq!(r.json()["headers"]["x-b"], "stays");
    assert!(r.header("x-c").is_none());

    // The admin API shows the pipeline and the plugin's hash.
    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    let h = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "h")
        .unwrap();
    assert_eq!(h["pipeline"][0]["plugin"], "fixture");
    assert!(
        h["pipeline"][0]["hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(h["pipeline"][0]["instances"], "pooled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_circuit_reply_never_reaches_upstream() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "deny"
path_prefix = "/deny"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { response_set = { "x-seen-by-first" = "yes" } }
[[routes.pipeline]]
plugin = "fixture"
config = { respond = { status = 403, body = "nope", headers = { "x-r" = "1" } } }
"#,
    ));
    let c = Client::new();
    let r = c
        .request(Method::POST, &gw.url("/deny"), &[], "payload")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.text(), "nope");
    assert_eq!(r.header("x-r"), Some("1"));
    // Plugins before the one that answered still run their response phase.
    assert_eq!(r.header("x-seen-by-first"), Some("yes"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_queued_in_the_request_phase_apply_where_its_response_phase_would() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        &format!(
            r#"
[upstreams.down]
targets = ["http://127.0.0.1:{closed}"]

[[routes]]
name = "q"
path_prefix = "/q"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {{ response_set = {{ "x-order" = "response phase of the first" }} }}
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_response_set = {{ "x-order" = "queued by the second", "x-order-2" = "queued by the second" }}, queue_response_add = {{ "x-upstream" = "added" }}, queue_response_remove = ["x-late"] }}
[[routes.pipeline]]
plugin = "fixture"
config = {{ response_set = {{ "x-order-2" = "response phase of the third", "x-late" = "1" }} }}

[[routes]]
name = "own-reply"
path_prefix = "/own-reply"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_response_set = {{ "x-q" = "1" }}, respond = {{ status = 403 }} }}

[[routes]]
name = "later-reply"
path_prefix = "/later-reply"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_response_set = {{ "x-q" = "1" }} }}
[[routes.pipeline]]
plugin = "fixture"
config = {{ respond = {{ status = 403 }} }}

[[routes]]
name = "down"
path_prefix = "/down"
upstream = "down"
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_response_set = {{ "x-q" = "1" }} }}

[[routes]]
name = "flood"
path_prefix = "/flood"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_response_flood = 100 }}

[[routes]]
name = "late"
path_prefix = "/late"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_in_response = true }}

[[routes]]
name = "framing"
path_prefix = "/framing"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {{ queue_response_set = {{ "content-length" = "1" }} }}
"#,
            closed = support::closed_port()
        ),
    ));
    let c = Client::new();

    let r = c.get(&gw.url("/q")).await;
    assert_eq!(r.status, StatusCode::OK);
    // After the third plugin's response phase, before the first's.
    assert_eq!(r.header("x-order"), Some("response phase of the first"));
    assert_eq!(r.header("x-order-2"), Some("queued by the second"));
    assert!(r.headers.get("x-late").is_none(), "{:?}", r.headers);
    let upstream: Vec<_> = r.headers.get_all("x-upstream").iter().collect();
    assert_eq!(upstream, ["up", "added"]);

    // Not onto the plugin's own reply; onto a later plugin's reply and a gateway error.
    let r = c.get(&gw.url("/own-reply")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-q"), None);
    let r = c.get(&gw.url("/later-reply")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-q"), Some("1"));
    let r = c.get(&gw.url("/down")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("x-q"), Some("1"));

    // At most 64 per plugin and request; the rest are refused, the request goes on.
    let r = c.get(&gw.url("/flood")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["headers"]["x-queue-refused"], "36");
    assert_eq!(r.headers.get_all("x-flood").iter().count(), 64);

    // Only in the request phase.
    let r = c.get(&gw.url("/late")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-queue-error"), Some("not allowed here"));
    assert_eq!(r.header("x-late"), None);

    // Framing headers stay the host's: the plugin's call is refused, and its error fails
    // the request (the fixture passes it on).
    let r = c.get(&gw.url("/framing")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let logs = gw.logs_containing(&["not allowed"]);
    assert!(logs.contains("not allowed"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_header_queued_from_a_var_takes_its_value_when_applied() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "v"
path_prefix = "/v"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { set_var = { tier = "gold" }, queue_response_from_var = { "x-tier" = "tier", "x-upstream" = "unset", "x-kept" = "bad" } }
[[routes.pipeline]]
plugin = "fixture"
config = { set_var = { tier = "platinum", bad = "a\nb" }, response_set = { "x-kept" = "kept" } }

[[routes]]
name = "refused"
path_prefix = "/refused"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { queue_response_from_var = { "bad name" = "tier" } }
"#,
    ));
    let c = Client::new();

    let r = c.get(&gw.url("/v")).await;
    assert_eq!(r.status, StatusCode::OK);
    // The value the second plugin set after the first queued the header.
    assert_eq!(r.header("x-tier"), Some("platinum"));
    // An unset variable, or one that is no header value, leaves the header as it was.
    assert_eq!(r.header("x-upstream"), Some("up"));
    assert_eq!(r.header("x-kept"), Some("kept"));

    // The name is checked when the change is queued: the fixture passes the error on.
    let r = c.get(&gw.url("/refused")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_flow_along_the_pipeline_and_into_the_response_phase() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "vars"
path_prefix = "/v"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { var_to_response_header = { consumer = "x-consumer" } }
[[routes.pipeline]]
plugin = "fixture"
config = { set_var = { consumer = "alice" } }
[[routes.pipeline]]
plugin = "fixture"
config = { var_to_request_header = { consumer = "x-consumer" }, rewrite_path = "/rewritten", rewrite_method = "PUT" }
"#,
    ));
    let c = Client::new();
    let r = c.get(&gw.url("/v/original?q=1")).await;
    let j = r.json();
    assert_eq!(j["headers"]["x-consumer"], "alice");
    assert_eq!(j["path"], "/rewritten");
    assert_eq!(j["query"], "q=1");
    assert_eq!(j["method"], "PUT");
    // The first plugin's response phase runs last and reads the var set by the second.
    assert_eq!(r.header("x-consumer"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_read_and_replace_bodies_they_declared() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "body"
path_prefix = "/b"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { request_body = "append:XYZ", response_body = "upper" }
"#,
    ));
    let c = Client::new();
    let r = c.request(Method::POST, &gw.url("/b"), &[], "abc").await;
    assert_eq!(r.status, StatusCode::OK);
    // The upstream saw the new body (its echo, upper-cased by the response phase).
    let j: serde_json::Value = serde_json::from_slice(&r.body.to_ascii_lowercase()).unwrap();
    assert_eq!(j["body"], "abcxyz");
    assert_eq!(j["headers"]["content-length"], "6");
    assert!(r.text().contains("\"UPSTREAM\":\"UP\""), "{}", r.text());
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );

    // Over the route's body limit: 413, and the upstream never sees it.
    let hits = up.hits();
    let r = c
        .request(Method::POST, &gw.url("/b"), &[], vec![b'a'; 4096])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "payload_too_large");
    assert_eq!(up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_failure_is_a_500_and_the_log_names_route_and_plugin() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "fails-on-request"
path_prefix = "/f1"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { fail = "request" }
[[routes]]
name = "fails-on-response"
path_prefix = "/f2"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { fail = "response" }
[[routes]]
name = "fine"
path_prefix = "/ok"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = {}
"#,
    ));
    let c = Client::new();
    let r = c.get(&gw.url("/f1")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"], "plugin_error");
    assert_eq!(
        up.hits(),
        0,
        "a failed request phase never reaches the upstream"
    );
    let r = c.get(&gw.url("/f2")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !r.text().contains("fixture"),
        "no internal detail: {}",
        r.text()
    );
    // The gateway keeps serving.
    assert_eq!(c.get(&gw.url("/ok")).await.status, StatusCode::OK);

    let logs = gw.logs();
    assert!(
        logs.lines().any(|l| l.contains("plugin failed")
            && l.contains("\"route\":\"fails-on-request\"")
            && l.contains("\"plugin\":\"fixture\"")),
        "{logs}"
    );
    let metrics = c.get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"wasmgate_plugin_errors_total{route="fails-on-request",plugin="fixture",kind="error"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_and_pooled_instances_both_serve() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "fresh"
path_prefix = "/fresh"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
instances = "fresh"
config = { echo_info = true }
[[routes]]
name = "pooled"
path_prefix = "/pooled"
upstream = "up"
[[routes.pipeline]]
plugin = "fixture"
config = { echo_info = true }
"#,
    ));
    let c = Client::new();
    for route in ["fresh", "pooled"] {
        for i in 0..20 {
            let r = c
                .get_with(&gw.url(&format!("/{route}/{i}?a=b")), &[("x-t", "v")])
                .await;
            assert_eq!(r.status, StatusCode::OK);
            let j = r.json();
            assert_eq!(j["route"], route);
            assert_eq!(j["path"], format!("/{route}/{i}"));
            assert_eq!(j["query"], "a=b");
            assert_eq!(j["client_addr"], "127.0.0.1");
            assert!(!j["id"].as_str().unwrap().is_empty());
        }
    }
    assert_eq!(up.hits(), 0, "echo_info answers from the plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_past_a_plugins_bound_streams_through_unread() {
    let small = Upstream::start("small", Behaviour::Echo).await;
    let sized = Upstream::start("sized", Behaviour::Download(5 << 20)).await;
    let chunked = Upstream::start("chunked", Behaviour::Stream(5 << 20)).await;
    let route = |name: &str, upstream: &str, config: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{upstream}\"\n[[routes.pipeline]]\nplugin = \"fixture\"\nconfig = {config}\n"
        )
    };
    let bounded = r#"{ response_body = "upper", response_body_bound = 1000 }"#;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 1024\n[plugins.fixture]\npath = \"{}\"\n\
         [upstreams.small]\ntargets = [\"{}\"]\n[upstreams.sized]\ntargets = [\"{}\"]\n[upstreams.chunked]\ntargets = [\"{}\"]\n{}{}{}{}{}",
        plugin("fixture").display(),
        small.url(),
        sized.url(),
        chunked.url(),
        route("small", "small", bounded),
        route("sized", "sized", bounded),
        route("chunked", "chunked", bounded),
        route(
            "declined",
            "small",
            r#"{ response_body = "upper", response_body_bound = 0 }"#
        ),
        route("unbounded", "sized", r#"{ response_body = "upper" }"#),
    );
    let gw = Gateway::start(&cfg);
    let c = Client::new();

    // Within the bound: read, and rewritten.
    let r = c.get(&gw.url("/small")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("\"UPSTREAM\":\"SMALL\""), "{}", r.text());
    assert_eq!(r.header("x-body"), None);

    // Past it, known by content-length or found while reading: streamed on whole, unread.
    for path in ["/sized", "/chunked"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body.len(), 5 << 20, "{path}");
        assert!(r.body.iter().all(|&b| b == b'x'), "{path}: not rewritten");
        assert_eq!(
            r.header("x-body"),
            Some("body larger than the route allows"),
            "{path}"
        );
    }
    assert_eq!(
        c.get(&gw.url("/sized")).await.header("content-length"),
        Some((5u64 << 20).to_string().as_str())
    );

    // A bound of 0 declines the body.
    let r = c.get(&gw.url("/declined")).await;
    assert!(r.text().contains("\"upstream\":\"small\""), "{}", r.text());
    assert_eq!(
        r.header("x-body"),
        Some("body not declared in the plugin's registration")
    );

    // Without a bound, a body the plugin needs whole and the route cannot hold fails, as before.
    let r = c.get(&gw.url("/unbounded")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}
