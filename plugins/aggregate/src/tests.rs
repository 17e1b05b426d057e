//! The plugin on the SDK's mock host: scripted parts, their answers merged.

use std::time::Duration;

use serde_json::{Value, json};
use wasmgate_sdk::outbound::Error as CallError;
use wasmgate_sdk::testing::{self, MockRequest, outbound as mock};
use wasmgate_sdk::{Decision, Reply, clock};

use super::*;

fn plugin(config: Value) -> Aggregate {
    testing::init::<Aggregate>(config).expect("config accepted")
}

/// The route of the README: a required user, orders with a timeout of their own, and
/// notifications.
fn pipeline() -> Aggregate {
    plugin(json!({ "parts": {
        "user": { "url": "http://users/users/${var.consumer}", "required": true },
        "orders": { "url": "http://orders/orders?user=${var.consumer}", "timeout_ms": 500 },
        "notifications": { "url": "http://notify/unread/${var.consumer}" },
    }}))
}

fn alice() -> MockRequest {
    MockRequest::new("GET", "/pipeline").with_var("consumer", "alice")
}

/// The reply to `req`, with its JSON body.
fn answer(plugin: &mut Aggregate, mut req: MockRequest) -> (Reply, Value) {
    let decision = testing::on_request(plugin, &mut req).expect("no failure");
    let Decision::Respond(reply) = decision else {
        panic!("the plugin answers itself: {decision:?}");
    };
    assert_eq!(
        reply.headers,
        [("content-type".to_string(), "application/json".to_string())]
    );
    let body = serde_json::from_slice(&reply.body).expect("a JSON body");
    (reply, body)
}

fn script_all_ok() {
    mock::on("http://users/users/alice").respond_json(200, &json!({ "id": 7, "name": "Alice" }));
    mock::on("http://orders/orders?user=alice").respond_json(200, &json!([{ "id": 1 }]));
    mock::on("http://notify/unread/alice").respond(200, "3");
}

#[test]
fn the_parts_answers_are_merged_under_their_names() {
    script_all_ok();
    let (reply, body) = answer(&mut pipeline(), alice());
    assert_eq!(reply.status, 200);
    assert_eq!(
        body,
        json!({
            "user": { "id": 7, "name": "Alice" },
            "orders": [{ "id": 1 }],
            "notifications": 3,
            "errors": [],
        })
    );
    let sent = mock::requests();
    let accept = [("accept".to_string(), "application/json".to_string())];
    assert!(
        sent.iter()
            .all(|r| r.method == "GET" && r.headers == accept)
    );
}

#[test]
fn every_part_is_sent_in_one_batch_and_they_wait_together() {
    testing::set_now_millis(0);
    let delay = Duration::from_millis(200);
    mock::on("http://users/users/alice")
        .respond(200, "{}")
        .delay(delay);
    mock::on("http://orders/orders?user=alice")
        .respond(200, "[]")
        .delay(delay);
    mock::on("http://notify/unread/alice")
        .respond(200, "0")
        .delay(delay);
    let (reply, _) = answer(&mut pipeline(), alice());
    assert_eq!(reply.status, 200);
    let batches = mock::batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].len(), 3);
    assert_eq!(clock::now_millis(), 200, "three 200 ms calls take 200 ms");
}

#[test]
fn a_part_with_a_timeout_passes_it_to_its_request() {
    script_all_ok();
    answer(&mut pipeline(), alice());
    let timeouts: Vec<(String, Option<Duration>)> = mock::requests()
        .into_iter()
        .map(|r| (r.url, r.timeout))
        .collect();
    // Sent in name order.
    assert_eq!(
        timeouts,
        [
            ("http://notify/unread/alice".into(), None),
            (
                "http://orders/orders?user=alice".into(),
                Some(Duration::from_millis(500))
            ),
            ("http://users/users/alice".into(), None),
        ]
    );
}

#[test]
fn a_failing_optional_part_is_null_and_listed() {
    script_all_ok();
    // Slower than its 500 ms.
    mock::on("http://orders/orders?user=alice")
        .respond(200, "[]")
        .delay(Duration::from_millis(800));
    mock::on("http://notify/unread/alice").respond(503, "down");
    let (reply, body) = answer(&mut pipeline(), alice());
    assert_eq!(reply.status, 200);
    assert_eq!(body["user"]["id"], 7);
    assert_eq!(body["orders"], Value::Null);
    assert_eq!(body["notifications"], Value::Null);
    assert_eq!(
        body["errors"],
        json!([
            { "part": "notifications", "error": "status 503" },
            { "part": "orders", "error": "timeout" },
        ])
    );
    let logged = testing::logs();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(logged[1].1.contains("part orders"), "{logged:?}");
}

#[test]
fn each_kind_of_failure_is_named() {
    let cases = [
        (Err(CallError::Timeout), "timeout"),
        (Err(CallError::Denied), "denied"),
        (Err(CallError::Limited), "limited"),
        (Err(CallError::BodyTooLarge), "body too large"),
        (Err(CallError::Other("connection-refused".into())), "failed"),
        (Ok((404, "{}")), "status 404"),
        (Ok((200, "<html>")), "not JSON"),
        (Ok((204, "")), "not JSON"),
    ];
    for (answer_with, reason) in cases {
        testing::reset();
        script_all_ok();
        let script = mock::on("http://notify/unread/alice");
        match answer_with {
            Ok((status, body)) => script.respond(status, body),
            Err(e) => script.fail(e),
        };
        let (_, body) = answer(&mut pipeline(), alice());
        assert_eq!(
            body["errors"],
            json!([{ "part": "notifications", "error": reason }])
        );
    }
}

#[test]
fn a_failing_required_part_is_a_502_naming_it() {
    script_all_ok();
    mock::on("http://users/users/alice").fail(CallError::Timeout);
    let (reply, body) = answer(&mut pipeline(), alice());
    assert_eq!(reply.status, 502);
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(body["part"], "user");
    assert_eq!(body["message"], "required part user failed: timeout");
    assert_eq!(
        body["errors"],
        json!([{ "part": "user", "error": "timeout" }])
    );
}

#[test]
fn values_are_percent_encoded() {
    let mut p = plugin(json!({ "parts": {
        "a": { "url": "http://users/users/${var.consumer}?from=${client_ip}&h=${header.x-tag}&r=${route}" },
    }}));
    mock::on_matching(|_| true).respond(200, "{}");
    let req = MockRequest::new("GET", "/x")
        .with_var("consumer", "a b/c?d&e=%f\u{e9}")
        .with_client_addr("2001:db8::1")
        .with_header("X-Tag", "one#two")
        .with_route("agg.v1");
    let (reply, _) = answer(&mut p, req);
    assert_eq!(reply.status, 200);
    assert_eq!(
        mock::requests()[0].url,
        "http://users/users/a%20b%2Fc%3Fd%26e%3D%25f%C3%A9?from=2001%3Adb8%3A%3A1&h=one%23two&r=agg.v1"
    );
}

#[test]
fn a_missing_var_fails_its_part_without_a_call() {
    mock::on_matching(|_| true).respond(200, "{}");
    let mut p = plugin(json!({ "parts": {
        "orders": { "url": "http://orders/orders?user=${var.consumer}" },
        "static": { "url": "http://orders/status" },
    }}));
    let (reply, body) = answer(&mut p, MockRequest::new("GET", "/"));
    assert_eq!(reply.status, 200);
    assert_eq!(body["orders"], Value::Null);
    assert_eq!(
        body["errors"],
        json!([{ "part": "orders", "error": "var consumer is not set" }])
    );
    assert_eq!(mock::requests().len(), 1);

    // An empty one is as good as missing; and for a required part, the answer is a 502.
    let (reply, body) = answer(
        &mut pipeline(),
        MockRequest::new("GET", "/").with_var("consumer", ""),
    );
    assert_eq!(reply.status, 502);
    assert_eq!(
        body["message"],
        "required part user failed: var consumer is not set"
    );
}

#[test]
fn bad_configs_name_the_key() {
    let refused = |config: Value| {
        let err = testing::init::<Aggregate>(config).expect_err("refused");
        (err.key.unwrap_or_default(), err.message)
    };
    let url = |url: &str| json!({ "parts": { "a": { "url": url } } });

    assert_eq!(refused(json!({ "parts": {} })).0, "parts");
    assert!(refused(json!({})).1.contains("parts"));
    assert_eq!(refused(json!({ "parts": {}, "typo": 1 })).0, "typo");
    assert_eq!(
        refused(json!({ "parts": { "a": { "url": "http://u/", "retries": 1 } } })).0,
        "parts.a.retries"
    );
    assert_eq!(
        refused(json!({ "parts": { "errors": { "url": "http://u/" } } })).0,
        "parts.errors"
    );
    for (template, message) in [
        ("http://u/${nope}", "unknown variable"),
        ("http://u/${var.a", "unclosed"),
        ("users/${var.a}", "http://"),
        ("ftp://u/", "http://"),
        ("http://${var.host}/x", "host must be written out"),
        ("http://u${var.port}/x", "host must be written out"),
        ("http://u?x=${var.a}", "path before the query"),
        ("http:///x", "no host"),
        ("http://me@u/", "user name"),
        ("http://u/a b", "visible ASCII"),
        ("http://u/#${var.a}", "fragment"),
    ] {
        let (key, why) = refused(url(template));
        assert_eq!(key, "parts.a.url", "{template}");
        assert!(why.contains(message), "{template}: {why}");
    }
    for bad in [json!(0), json!(300_001), json!(-1), json!("500")] {
        let config = json!({ "parts": { "a": { "url": "http://u/", "timeout_ms": bad } } });
        assert_eq!(refused(config).0, "parts.a.timeout_ms", "{bad}");
    }
    // A URL with no variable at all is fine, and so is one written in capitals.
    plugin(url("HTTPS://idp.example.com"));
    plugin(url("http://u/a/${path}?m=${method}&id=${request_id}"));
}
