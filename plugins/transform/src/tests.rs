//! The plugin through the SDK's mock host.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde_json::{Value, json};
use wasmgate_sdk::testing::{self, MockRequest, MockResponse};

use super::*;
use crate::soap::{SOAP11_ENV, SOAP12_ENV};

const NS: &str = "http://example.com/orders";

fn plugin(config: Value) -> Transform {
    testing::init::<Transform>(config).expect("valid config")
}

fn config_error(config: Value) -> ConfigError {
    match testing::init::<Transform>(config) {
        Ok(_) => panic!("config accepted"),
        Err(e) => e,
    }
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn reply(decision: Decision) -> Reply {
    match decision {
        Decision::Respond(reply) => reply,
        Decision::Continue => panic!("expected a reply"),
    }
}

fn soap_plugin(version: &str, action: Option<&str>) -> Transform {
    let mut soap = json!({"version": version, "operation": "CreateOrder", "namespace": NS});
    if let Some(action) = action {
        soap["soap_action"] = json!(action);
    }
    plugin(json!({"request": {"json_to_soap": soap}, "response": {"soap_to_json": {}}}))
}

fn post(body: &str) -> MockRequest {
    MockRequest::new("POST", "/orders")
        .with_header("content-type", "application/json")
        .with_body(body)
}

/// Every element of a document: (namespace, local name, text directly inside it).
fn elements(xml: &[u8]) -> Vec<(String, String, String)> {
    let text = std::str::from_utf8(xml).unwrap();
    let mut reader = NsReader::from_str(text);
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    loop {
        let (ns, event) = reader.read_resolved_event().unwrap();
        let ns = match ns {
            ResolveResult::Bound(ns) => ns.0.to_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => panic!("unknown prefix {p}"),
        };
        match event {
            Event::Start(e) => {
                open.push(out.len());
                out.push((ns, e.local_name().as_ref().to_owned(), String::new()));
            }
            Event::Empty(e) => out.push((ns, e.local_name().as_ref().to_owned(), String::new())),
            Event::End(_) => {
                open.pop();
            }
            Event::Text(t) => {
                if let Some(&i) = open.last() {
                    out[i].2.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_xml_entity(&r)
                        .unwrap()
                        .to_owned(),
                };
                if let Some(&i) = open.last() {
                    out[i].2.push_str(&c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(open.is_empty(), "unbalanced document");
    out
}

// ---- config ----

#[test]
fn bad_configs_name_the_key() {
    let cases = [
        (
            json!({"request": {"json_to_soap": {"version": "2.0", "operation": "Op", "namespace": NS}}}),
            "request.json_to_soap.version",
        ),
        (
            json!({"request": {"json_to_soap": {"operation": "a b", "namespace": NS}}}),
            "request.json_to_soap.operation",
        ),
        (
            json!({"request": {"json_to_soap": {"operation": "p:Op", "namespace": NS}}}),
            "request.json_to_soap.operation",
        ),
        (
            json!({"request": {"json_to_soap": {"operation": "Op", "namespace": " "}}}),
            "request.json_to_soap.namespace",
        ),
        (
            json!({"request": {"json_to_soap": {"operation": "Op", "namespace": NS, "soap_action": "a\"b"}}}),
            "request.json_to_soap.soap_action",
        ),
        (
            json!({"request": {"json_to_soap": {"operation": "Op", "namespace": NS, "bogus": 1}}}),
            "request.json_to_soap.bogus",
        ),
        (
            json!({"request": {"json_to_soap": {"namespace": NS}}}),
            "request.json_to_soap",
        ),
        (
            json!({"request": {"json_to_soap": {"operation": "Op", "namespace": NS}, "method": "PUT"}}),
            "request.method",
        ),
        (json!({"request": {"method": "GE T"}}), "request.method"),
        (
            json!({"request": {"headers": {"add": {"bad name": "v"}}}}),
            "request.headers.add.bad name",
        ),
        (
            json!({"request": {"headers": {"add": {"x-a": "a\nb"}}}}),
            "request.headers.add.x-a",
        ),
        (
            json!({"response": {"headers": {"remove": ["x-ok", "Content-Length"]}}}),
            "response.headers.remove[1]",
        ),
        (
            json!({"request": {"headers": {"add": {"Proxy-Authorization": "Basic a"}}}}),
            "request.headers.add.Proxy-Authorization",
        ),
        (
            json!({"response": {"headers": {"rename": {"X-A": "x-a"}}}}),
            "response.headers.rename.X-A",
        ),
        (
            json!({"request": {"headers": {"rename": {"x-a": "x-c", "x-b": "X-C"}}}}),
            "request.headers.rename.x-b",
        ),
        (
            json!({"request": {"json": {"rename": {"a..b": "c"}}}}),
            "request.json.rename.a..b",
        ),
        (
            json!({"request": {"json": {"rename": {"a": "x", "a.b": "y"}}}}),
            "request.json.rename.a.b",
        ),
        (
            json!({"request": {"json": {"rename": {"a": "x.y", "b": "x"}}}}),
            "request.json.rename.b",
        ),
        (
            json!({"request": {"json": {"rename": {"a": "b", "b": "a"}}}}),
            "request.json.rename.b",
        ),
        (
            json!({"request": {"json": {"rename": {"a": "x", "x.y": "z"}}}}),
            "request.json.rename.x.y",
        ),
        (
            json!({"request": {"json": {"rename": {"a.b": "a.b"}}}}),
            "request.json.rename.a.b",
        ),
        (
            json!({"response": {"json": {"add": {"a": 1, "a.b": 2}}}}),
            "response.json.add.a.b",
        ),
        (
            json!({"response": {"json": {"remove": ["ok", ""]}}}),
            "response.json.remove[1]",
        ),
        (
            json!({"request": {"query": {"remove": [""]}}}),
            "request.query.remove[0]",
        ),
        (
            json!({"response": {"soap_to_json": {"numbrs": true}}}),
            "response.soap_to_json.numbrs",
        ),
        (json!({"request": {"jsn": {}}}), "request.jsn"),
    ];
    for (config, key) in cases {
        let err = config_error(config.clone());
        assert_eq!(err.key.as_deref(), Some(key), "{config}: {err}");
    }
}

#[test]
fn registration_follows_config() {
    let r = plugin(json!({})).registration();
    assert!(!r.on_request && !r.on_response && !r.request_body && !r.response_body);
    let r = plugin(json!({"request": {"headers": {"add": {"x-a": "1"}}}})).registration();
    assert!(r.on_request && !r.on_response && !r.request_body && !r.response_body);
    let r = plugin(json!({"request": {"json": {"remove": ["a"]}}})).registration();
    assert!(r.on_request && !r.on_response && r.request_body && !r.response_body);
    let r = plugin(json!({"response": {"headers": {"remove": ["server"]}}})).registration();
    assert!(!r.on_request && r.on_response && !r.request_body && !r.response_body);
    let r = soap_plugin("1.1", None).registration();
    assert!(r.on_request && r.on_response && r.request_body && r.response_body);
    let r = plugin(json!({"response": {"json": {"remove": ["a"]}}})).registration();
    assert!(r.on_request && r.on_response && !r.request_body && r.response_body);
}

// ---- headers, query, method ----

#[test]
fn request_and_response_headers() {
    let mut p = plugin(json!({
        "request": {"headers": {
            "rename": {"X-Old": "X-New", "X-Left": "X-Right", "X-Right": "X-Left"},
            "add": {"X-Added": "1", "X-Replaced": "gateway"},
            "remove": ["X-Secret"]
        }},
        "response": {"headers": {
            "rename": {"X-Powered-By": "X-Backend"},
            "add": {"X-Frame-Options": "DENY"},
            "remove": ["Server"]
        }}
    }));
    let mut req = MockRequest::new("GET", "/")
        .with_header("x-old", "a")
        .with_header("x-old", "b")
        .with_header("x-new", "spoofed")
        .with_header("x-left", "L")
        .with_header("x-right", "R")
        .with_header("x-replaced", "client")
        .with_header("x-secret", "s")
        .with_header("x-keep", "k");
    assert_eq!(
        testing::on_request(&mut p, &mut req).unwrap(),
        Decision::Continue
    );
    assert_eq!(req.header_values("x-new"), ["a", "b"]);
    assert_eq!(req.header("x-old"), None);
    assert_eq!(req.header("x-left"), Some("R"));
    assert_eq!(req.header("x-right"), Some("L"));
    assert_eq!(req.header("x-added"), Some("1"));
    assert_eq!(req.header_values("x-replaced"), ["gateway"]);
    assert_eq!(req.header("x-secret"), None);
    assert_eq!(req.header("x-keep"), Some("k"));

    let mut resp = MockResponse::new(200)
        .with_header("x-powered-by", "php")
        .with_header("server", "apache");
    testing::on_response(&mut p, &mut req, &mut resp).unwrap();
    assert_eq!(resp.header("x-backend"), Some("php"));
    assert_eq!(resp.header("x-powered-by"), None);
    assert_eq!(resp.header("server"), None);
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));

    // A rename whose source is absent leaves the target alone.
    let mut req = MockRequest::new("GET", "/").with_header("x-new", "direct");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.header("x-new"), Some("direct"));
}

#[test]
fn query_add_remove_and_method() {
    let mut p = plugin(json!({
        "request": {"query": {"add": {"v": "2", "q x": "a&b=c"}, "remove": ["token", "debug"]}, "method": "PATCH"}
    }));
    let mut req = MockRequest::new("GET", "/p?token=s&a=1&v=1&debug&t%6Fken=s2&b=x+y&tok=keep");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.query(), Some("a=1&b=x+y&tok=keep&q%20x=a%26b%3Dc&v=2"));
    assert_eq!(req.method(), "PATCH");

    let mut p = plugin(json!({"request": {"query": {"remove": ["token"]}}}));
    let mut req = MockRequest::new("GET", "/p?token=1");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.query(), None);
    let mut req = MockRequest::new("GET", "/p?a=1&&b=%ZZ");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(
        req.query(),
        Some("a=1&&b=%ZZ"),
        "untouched when nothing matches"
    );
    let mut req = MockRequest::new("GET", "/p");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.query(), None);
}

// ---- JSON bodies ----

#[test]
fn request_json_rename_add_remove_with_nested_paths() {
    let mut p = plugin(json!({"request": {"json": {
        "rename": {"clientId": "client_id", "user.name": "user.full_name", "meta.tag": "tag", "a": "b"},
        "add": {"source": "gateway", "user.flags.checked": true, "meta": {"v": [1, 2]}},
        "remove": ["debug", "user.password", "missing.deep"]
    }}}));
    let mut req = post(
        r#"{"clientId":7,"user":{"name":"Ann","password":"x","age":3},"debug":true,"meta":{"tag":"t"},"a":1,"source":"client"}"#,
    );
    assert_eq!(
        testing::on_request(&mut p, &mut req).unwrap(),
        Decision::Continue
    );
    // A rename within an object keeps the field's place; a move and an addition go last.
    assert_eq!(
        String::from_utf8(req.body().to_vec()).unwrap(),
        r#"{"client_id":7,"user":{"full_name":"Ann","age":3,"flags":{"checked":true}},"meta":{"v":[1,2]},"b":1,"source":"gateway","tag":"t"}"#
    );
}

#[test]
fn request_json_edge_cases() {
    let mut p = plugin(json!({"request": {"json": {
        "rename": {"x": "s.deeper"}, "remove": ["gone"]
    }}}));
    // The target cannot be made (`s` is a string): the field stays.
    let mut req = post(r#"{"x":1,"s":"str"}"#);
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(body_json(req.body()), json!({"x": 1, "s": "str"}));
    // Nothing to change: the body is left byte for byte.
    let original = "{ \"keep\" : 1 }";
    let mut req = post(original);
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.body(), original.as_bytes());
    // Not an object, or empty: unchanged.
    for body in ["[1,2]", "\"s\"", "", "  "] {
        let mut req = post(body);
        assert!(testing::on_request(&mut p, &mut req).unwrap().is_continue());
        assert_eq!(req.body(), body.as_bytes());
    }
    // Malformed JSON, or duplicate keys: 400, and the request goes nowhere.
    for body in ["{\"a\":", "{\"a\":1,\"a\":2}", "<xml/>"] {
        let mut req = post(body);
        let r = reply(testing::on_request(&mut p, &mut req).unwrap());
        assert_eq!(r.status, 400);
        assert_eq!(body_json(&r.body)["error"], "invalid_json", "{body}");
    }
}

#[test]
fn response_json_ops() {
    let mut p = plugin(json!({"response": {"json": {
        "rename": {"user.full_name": "user.name"}, "remove": ["user.password"], "add": {"api": {"version": 2}}
    }}}));
    let mut req = MockRequest::new("GET", "/");
    let mut resp = MockResponse::new(201)
        .with_header("content-type", "application/vnd.api+json; charset=utf-8")
        .with_header("etag", "\"abc\"")
        .with_body(r#"{"user":{"full_name":"Ann","password":"p"}}"#);
    testing::on_response(&mut p, &mut req, &mut resp).unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        body_json(resp.body()),
        json!({"user": {"name": "Ann"}, "api": {"version": 2}})
    );
    assert_eq!(resp.header("etag"), None);

    // Not JSON: untouched.
    let mut resp = MockResponse::new(200)
        .with_header("content-type", "text/html")
        .with_body("<p>{}</p>");
    testing::on_response(&mut p, &mut req, &mut resp).unwrap();
    assert_eq!(resp.body(), b"<p>{}</p>");

    // Says JSON but is not: 502 rather than letting a field through unremoved.
    let mut resp = MockResponse::new(200)
        .with_header("content-type", "application/json")
        .with_body(r#"{"user":{"password":"p""#);
    testing::on_response(&mut p, &mut req, &mut resp).unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(body_json(resp.body())["error"], "bad_gateway");
    assert!(!String::from_utf8_lossy(resp.body()).contains("password"));

    // The upstream's body is read, so it must not come compressed.
    let mut req = MockRequest::new("GET", "/").with_header("accept-encoding", "gzip");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.header("accept-encoding"), None);
}

// ---- JSON to SOAP ----

#[test]
fn soap11_envelope_and_headers() {
    let mut p = soap_plugin("1.1", Some("http://example.com/orders/CreateOrder"));
    let mut req = MockRequest::new("PUT", "/orders")
        .with_header("content-type", "application/json")
        .with_header("soapaction", "\"spoofed\"")
        .with_body(r#"{"customer":{"name":"Ann","address":{"city":"Oslo"}},"items":[{"sku":"a","quantity":2},{"sku":"b","quantity":1}],"tags":["x","y"],"note":null,"express":false,"total":12.5}"#);
    assert_eq!(
        testing::on_request(&mut p, &mut req).unwrap(),
        Decision::Continue
    );
    assert_eq!(req.method(), "POST");
    assert_eq!(req.header("content-type"), Some("text/xml; charset=utf-8"));
    assert_eq!(
        req.header_values("soapaction"),
        ["\"http://example.com/orders/CreateOrder\""]
    );
    let els = elements(req.body());
    let names: Vec<(&str, &str, &str)> = els
        .iter()
        .map(|(ns, local, text)| (ns.as_str(), local.as_str(), text.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (SOAP11_ENV, "Envelope", ""),
            (SOAP11_ENV, "Body", ""),
            (NS, "CreateOrder", ""),
            (NS, "customer", ""),
            (NS, "name", "Ann"),
            (NS, "address", ""),
            (NS, "city", "Oslo"),
            (NS, "items", ""),
            (NS, "sku", "a"),
            (NS, "quantity", "2"),
            (NS, "items", ""),
            (NS, "sku", "b"),
            (NS, "quantity", "1"),
            (NS, "tags", "x"),
            (NS, "tags", "y"),
            (NS, "express", "false"),
            (NS, "total", "12.5"),
        ]
    );
}

#[test]
fn soap12_envelope_and_headers() {
    let mut p = soap_plugin("1.2", Some("urn:create"));
    let mut req = post(r#"{"id":1}"#).with_header("soapaction", "\"client\"");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(
        req.header("content-type"),
        Some("application/soap+xml; charset=utf-8; action=\"urn:create\"")
    );
    assert_eq!(req.header("soapaction"), None);
    let els = elements(req.body());
    assert_eq!(
        els[0],
        (SOAP12_ENV.into(), "Envelope".into(), String::new())
    );
    assert_eq!(els[1].1, "Body");
    assert_eq!(els[3], (NS.into(), "id".into(), "1".into()));

    // Without an action: SOAP 1.2 names none, SOAP 1.1 sends an empty one.
    let mut p = soap_plugin("1.2", None);
    let mut req = post("{}");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(
        req.header("content-type"),
        Some("application/soap+xml; charset=utf-8")
    );
    let mut p = soap_plugin("1.1", None);
    let mut req = post("{}");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.header("soapaction"), Some("\"\""));
}

#[test]
fn soap_runs_after_the_json_ops_and_wins_over_header_ops() {
    let mut p = plugin(json!({"request": {
        "json": {"rename": {"clientId": "client_id"}, "add": {"channel": "api"}},
        "headers": {"add": {"Content-Type": "application/json"}},
        "json_to_soap": {"operation": "GetUser", "namespace": NS}
    }}));
    let mut req = post(r#"{"clientId":"c1"}"#);
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.header("content-type"), Some("text/xml; charset=utf-8"));
    let els = elements(req.body());
    assert_eq!(els[3].1, "client_id");
    assert_eq!(els[4], (NS.into(), "channel".into(), "api".into()));
}

#[test]
fn hostile_strings_survive_exactly() {
    let mut p = soap_plugin("1.1", None);
    let hostile = [
        "<b>&amp;\"'</b>",
        "]]><inject/>",
        "</text><x>",
        "&lt; &#x41; &unknown;",
        "line\r\nbreak\rcr\ttab",
        "<?xml version=\"1.0\"?><!DOCTYPE x>",
        "😀 é 名前",
    ];
    for s in hostile {
        let mut req = post(&json!({"text": s}).to_string());
        testing::on_request(&mut p, &mut req).unwrap();
        let els = elements(req.body());
        assert_eq!(els.len(), 4, "{s:?} made markup: {els:?}");
        assert_eq!(els[3].2, s);
        // And the reading side gives back the same string.
        let outcome = from_soap::read(req.body(), TextOptions::default()).unwrap();
        assert_eq!(
            outcome,
            Outcome::Body(Json::Object(vec![("text".into(), Json::String(s.into()))]))
        );
    }
}

#[test]
fn refuses_json_that_has_no_xml_form() {
    let mut p = soap_plugin("1.1", None);
    let cases = [
        (r#"{"a b":1}"#, "invalid_field", "`a b`"),
        (r#"{"<x>":1}"#, "invalid_field", "`<x>`"),
        (r#"{"1st":1}"#, "invalid_field", "`1st`"),
        (r#"{"ns:x":1}"#, "invalid_field", "`ns:x`"),
        (
            r#"{"user":{"ok":{"bad/":1}}}"#,
            "invalid_field",
            "`user.ok.bad/`",
        ),
        (r#"{"s":"bell\u0007"}"#, "invalid_field", "U+0007"),
        (r#"{"s":"nul\u0000"}"#, "invalid_field", "U+0000"),
        (r#"{"m":[[1,2]]}"#, "invalid_field", "`m[0]`"),
        ("[1,2]", "invalid_json", "object"),
        ("\"text\"", "invalid_json", "object"),
        ("{\"a\":1", "invalid_json", "not JSON"),
        ("not json", "invalid_json", "not JSON"),
        ("{\"a\":1,\"a\":2}", "invalid_json", "duplicate"),
    ];
    for (body, code, needle) in cases {
        let mut req = post(body);
        let r = reply(testing::on_request(&mut p, &mut req).unwrap());
        assert_eq!(r.status, 400, "{body}");
        let v = body_json(&r.body);
        assert_eq!(v["error"], code, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
        assert_eq!(req.body(), body.as_bytes(), "the request is left alone");
    }
    let deep = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
    let r = reply(testing::on_request(&mut p, &mut post(&deep)).unwrap());
    assert_eq!(
        (r.status, body_json(&r.body)["error"].clone()),
        (400, json!("invalid_field"))
    );
}

#[test]
fn empty_body_is_an_operation_without_parameters() {
    let mut p = soap_plugin("1.1", None);
    let mut req = MockRequest::new("GET", "/status");
    testing::on_request(&mut p, &mut req).unwrap();
    assert_eq!(req.method(), "POST");
    let els = elements(req.body());
    assert_eq!(els.len(), 3);
    assert_eq!(els[2].1, "CreateOrder");
}

#[test]
fn envelope_past_the_body_limit_is_413() {
    let mut p = soap_plugin("1.1", None);
    let body = json!({"a": "x".repeat(100)}).to_string();
    let mut req = post(&body).with_body_limit(body.len() + 10);
    let r = reply(testing::on_request(&mut p, &mut req).unwrap());
    assert_eq!(r.status, 413);
    assert_eq!(body_json(&r.body)["error"], "payload_too_large");
}

// ---- SOAP to JSON ----

fn soap_response(status: u16, content_type: &str, body: &str) -> MockResponse {
    MockResponse::new(status)
        .with_header("content-type", content_type)
        .with_body(body)
}

fn respond(p: &mut Transform, mut resp: MockResponse) -> MockResponse {
    let mut req = MockRequest::new("POST", "/orders");
    assert!(
        testing::on_response(p, &mut req, &mut resp)
            .unwrap()
            .is_continue()
    );
    resp
}

const RESPONSE11: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tns="http://example.com/orders"><soap11env:Body><tns:CreateOrderResponse><tns:CreateOrderResult><tns:id>ord-1</tns:id><tns:items><tns:sku>a</tns:sku><tns:quantity>2</tns:quantity></tns:items><tns:items><tns:sku>b</tns:sku><tns:quantity>1</tns:quantity></tns:items><tns:express>true</tns:express><tns:total>6.00</tns:total></tns:CreateOrderResult></tns:CreateOrderResponse></soap11env:Body></soap11env:Envelope>"#;

#[test]
fn soap_response_becomes_json() {
    let mut p = soap_plugin("1.1", None);
    let resp = respond(
        &mut p,
        soap_response(200, "text/xml; charset=utf-8", RESPONSE11).with_header("etag", "\"x\""),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("etag"), None);
    assert_eq!(
        body_json(resp.body()),
        json!({"CreateOrderResult": {
            "id": "ord-1",
            "items": [{"sku": "a", "quantity": "2"}, {"sku": "b", "quantity": "1"}],
            "express": "true",
            "total": "6.00"
        }})
    );
}

#[test]
fn numbers_and_booleans_options_and_response_json_ops() {
    let mut p = plugin(json!({"response": {
        "soap_to_json": {"numbers": true, "booleans": true},
        "json": {"rename": {"CreateOrderResult": "order"}, "remove": ["order.express"]}
    }}));
    let resp = respond(&mut p, soap_response(200, "text/xml", RESPONSE11));
    assert_eq!(
        body_json(resp.body()),
        json!({"order": {
            "id": "ord-1",
            "items": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}],
            "total": 6.0
        }})
    );
    let mut p = plugin(json!({"response": {"soap_to_json": {"booleans": true}}}));
    let resp = respond(&mut p, soap_response(200, "text/xml", RESPONSE11));
    let v = body_json(resp.body());
    assert_eq!(v["CreateOrderResult"]["express"], true);
    assert_eq!(v["CreateOrderResult"]["total"], "6.00");
}

#[test]
fn soap_faults_map_to_400_and_502() {
    let mut p = soap_plugin("1.1", None);
    let client11 = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client.InvalidOrder</faultcode><faultstring>no items</faultstring><detail><trace>internal</trace></detail></s:Fault></s:Body></s:Envelope>"#;
    let server11 = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>db down</faultstring></s:Fault></s:Body></s:Envelope>"#;
    let sender12 = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text xml:lang="en">bad id</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#;
    let receiver12 = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value><e:Subcode><e:Value>m:Timeout</e:Value></e:Subcode></e:Code><e:Reason><e:Text xml:lang="en">slow</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#;
    let cases = [
        (client11, 400, "Client.InvalidOrder", "no items"),
        (server11, 502, "Server", "db down"),
        (sender12, 400, "Sender", "bad id"),
        (receiver12, 502, "Receiver.Timeout", "slow"),
    ];
    for (doc, status, code, message) in cases {
        let resp = respond(&mut p, soap_response(500, "text/xml", doc));
        assert_eq!(resp.status(), status, "{doc}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(
            body_json(resp.body()),
            json!({"error": {"code": code, "message": message}})
        );
    }
}

#[test]
fn what_is_not_soap_becomes_502() {
    let mut p = soap_plugin("1.1", None);
    let cases = [
        ("text/html", "<html><body>Service Unavailable</body></html>"),
        ("text/plain", "upstream exploded"),
        (
            "text/xml",
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>",
        ),
        ("text/xml", "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>"),
        ("text/xml", ""),
    ];
    for (ct, body) in cases {
        let resp = respond(&mut p, soap_response(200, ct, body));
        assert_eq!(resp.status(), 502, "{body}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(
            body_json(resp.body()),
            json!({"error": "bad_gateway", "message": "the upstream service sent an invalid response"})
        );
    }
    let resp = respond(
        &mut p,
        soap_response(200, "text/xml", RESPONSE11).with_header("content-encoding", "gzip"),
    );
    assert_eq!(resp.status(), 502);
}

#[test]
fn json_and_empty_answers_pass_through() {
    let mut p = soap_plugin("1.1", None);
    let gateway_error =
        r#"{"error":"upstream_timeout","message":"the upstream service did not answer in time"}"#;
    let resp = respond(
        &mut p,
        soap_response(504, "application/json", gateway_error),
    );
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.body(), gateway_error.as_bytes());
    let resp = respond(&mut p, MockResponse::new(202));
    assert_eq!((resp.status(), resp.body()), (202, &b""[..]));
}

#[test]
fn no_panics_on_arbitrary_bytes() {
    let mut p = soap_plugin("1.1", None);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let alphabet = b"<>/&;:=\"' ?!-[]xsE#a1\n\xff\xc3";
    for _ in 0..2000 {
        let len = usize::try_from(seed % 40).unwrap();
        let mut body = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push(alphabet[usize::try_from(seed % alphabet.len() as u64).unwrap()]);
        }
        let resp = respond(&mut p, MockResponse::new(200).with_body(body.clone()));
        assert!(matches!(resp.status(), 200 | 502));
        let mut req = post("").with_body(body);
        let _ = testing::on_request(&mut p, &mut req).unwrap();
    }
}
