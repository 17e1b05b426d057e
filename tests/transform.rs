mod support;

// The `transform` plugin through the real gateway: JSON clients talking to a real SOAP service
// (spyne, `tests/peers/soap_service.py`, SOAP 1.1 and 1.2), faults, hostile strings, refused
// bodies that never reach the service, non-SOAP answers, the envelope compared with zeep's,
// and header, query, method and JSON rewriting against an echo upstream.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin, python, workspace_root};

const ORDERS_NS: &str = "http://example.com/orders";
const CREATE_ACTION: &str = "http://example.com/orders/CreateOrder";

/// The spyne service, killed on drop (and it exits by itself when its stdin closes).
struct SoapService {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl SoapService {
    fn start() -> SoapService {
        let mut child = Command::new(python())
            .arg(workspace_root().join("tests/peers/soap_service.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the SOAP service starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the SOAP service prints its port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a port: {line:?}"));
        SoapService {
            child,
            _stdin: stdin,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SOAP requests that reached the service so far.
    async fn calls(&self, c: &Client) -> u64 {
        let r = c.get(&format!("{}/calls", self.url())).await;
        r.text().trim().parse().expect("a count")
    }
}

impl Drop for SoapService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with the transform plugin, the SOAP service as `soap`, and `extra` (more
/// upstreams) and `routes` as given.
fn gateway(soap: &SoapService, extra: &str, routes: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
[plugins.transform]
path = "{plugin}"
[upstreams.soap]
targets = ["{soap}"]
{extra}
{routes}
"#,
        plugin = plugin("transform").display(),
        soap = soap.url(),
    ))
}

/// A route from `prefix` to `upstream` whose transform config is the TOML tables in `config`
/// (headers relative to `[routes.pipeline.config]`).
fn route(name: &str, prefix: &str, upstream: &str, config: &str) -> String {
    let config = config
        .trim()
        .lines()
        .map(|l| {
            let l = l.trim();
            match l.strip_prefix('[') {
                Some(rest) => format!("[routes.pipeline.config.{rest}"),
                None => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        r#"
[[routes]]
name = "{name}"
path_prefix = "{prefix}"
upstream = "{upstream}"
[[routes.pipeline]]
plugin = "transform"
[routes.pipeline.config]
{config}
"#
    )
}

fn soap_route(name: &str, prefix: &str, version: &str, operation: &str, extra: &str) -> String {
    route(
        name,
        prefix,
        "soap",
        &format!(
            r#"
[request.json_to_soap]
version = "{version}"
operation = "{operation}"
namespace = "{ORDERS_NS}"
soap_action = "{ORDERS_NS}/{operation}"
[response.soap_to_json]
{extra}
"#
        ),
    )
}

async fn post_json(c: &Client, url: &str, body: &str) -> Resp {
    c.request(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// Written out, not built with `json!`, which would sort the keys: SOAP wants its elements in
/// the schema's order, and the gateway keeps the client's.
const ORDER_REQUEST: &str = r#"{"customer":{"fullName":"Ann <CEO> & \"Co\"","email":"ann@example.com","address":{"street":"1 Main St","city":"Oslo","zip":"0150"}},"items":[{"sku":"A-1","quantity":2,"price":1.5},{"sku":"B-2","quantity":1,"price":3}],"tags":["rush","gift"],"note":null,"express":true}"#;

/// CreateOrder with a rename on each side, numbers and booleans on.
fn orders_route(name: &str, prefix: &str, version: &str) -> String {
    route(
        name,
        prefix,
        "soap",
        &format!(
            r#"
[request.json.rename]
"customer.fullName" = "customer.name"
[request.json_to_soap]
version = "{version}"
operation = "CreateOrder"
namespace = "{ORDERS_NS}"
soap_action = "{CREATE_ACTION}"
[response.json.rename]
CreateOrderResult = "order"
[response.soap_to_json]
numbers = true
booleans = true
"#
        ),
    )
}

fn expected_order() -> Value {
    json!({"order": {
        "id": "ord-2002",
        "customer": {
            "name": "Ann <CEO> & \"Co\"",
            "email": "ann@example.com",
            // A leading zero is not a JSON number: the zip stays text.
            "address": {"street": "1 Main St", "city": "Oslo", "zip": "0150"}
        },
        "items": [
            {"sku": "A-1", "quantity": 2, "price": 1.5},
            {"sku": "B-2", "quantity": 1, "price": 3}
        ],
        "tags": ["rush", "gift"],
        "express": true,
        "item_count": 2,
        "total": 6.0
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_round_trip_through_a_soap_service_both_versions() {
    let soap = SoapService::start();
    let gw = gateway(
        &soap,
        "",
        &(orders_route("o11", "/soap11/orders", "1.1")
            + &orders_route("o12", "/soap12/orders", "1.2")),
    );
    let c = Client::new();
    for path in ["/soap11/orders", "/soap12/orders"] {
        let r = post_json(&c, &gw.url(path), ORDER_REQUEST).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json(), expected_order(), "{path}");
    }
    assert_eq!(soap.calls(&c).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_survive_the_round_trip() {
    let soap = SoapService::start();
    let gw = gateway(
        &soap,
        "",
        &(soap_route("e11", "/soap11/echo", "1.1", "Echo", "")
            + &soap_route("e12", "/soap12/echo", "1.2", "Echo", "")),
    );
    let c = Client::new();
    let hostile = [
        "<b>&amp;\"'</b>",
        "]]><injected xmlns=\"urn:x\"/>",
        "</text></Echo><FailOrder/>",
        "&lt; &#x41; &unknown; &",
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>&e;",
        "tab\there\nnewline and cr\r here",
        "😀 é 名前 \u{FFFD}",
        "  padded  ",
    ];
    for path in ["/soap11/echo", "/soap12/echo"] {
        for s in hostile {
            let r = post_json(&c, &gw.url(path), &json!({"text": s}).to_string()).await;
            assert_eq!(r.status, StatusCode::OK, "{s:?}: {}", r.text());
            assert_eq!(r.json(), json!({"EchoResult": s}), "{path}");
        }
    }
    assert_eq!(soap.calls(&c).await, 2 * hostile.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_become_json_errors() {
    let soap = SoapService::start();
    let mut routes = String::new();
    for v in ["11", "12"] {
        let version = if v == "11" { "1.1" } else { "1.2" };
        routes += &soap_route(
            &format!("r{v}"),
            &format!("/soap{v}/reject"),
            version,
            "RejectOrder",
            "",
        );
        routes += &soap_route(
            &format!("f{v}"),
            &format!("/soap{v}/fail"),
            version,
            "FailOrder",
            "",
        );
    }
    let gw = gateway(&soap, "", &routes);
    let c = Client::new();
    let reason = "no items <in> & \"order\"";
    let cases = [
        ("/soap11/reject", 400, "Client.InvalidOrder", reason),
        ("/soap12/reject", 400, "Sender.InvalidOrder", reason),
        ("/soap11/fail", 502, "Server", "the order database is down"),
        (
            "/soap12/fail",
            502,
            "Receiver",
            "the order database is down",
        ),
    ];
    for (path, status, code, message) in cases {
        let body = match status {
            400 => json!({"reason": reason}).to_string(),
            _ => "{}".to_owned(),
        };
        let r = post_json(&c, &gw.url(path), &body).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({"error": {"code": code, "message": message}}),
            "{path}"
        );
    }
    assert_eq!(soap.calls(&c).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_never_reach_the_service() {
    let soap = SoapService::start();
    let gw = gateway(&soap, "", &orders_route("o11", "/soap11/orders", "1.1"));
    let c = Client::new();
    let url = gw.url("/soap11/orders");
    let refused = [
        ("{\"customer\": {\"name\": ", "invalid_json"),
        ("<CreateOrder/>", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ("{\"a\": 1, \"a\": 2}", "invalid_json"),
        ("{\"a b\": 1}", "invalid_field"),
        ("{\"<x>\": 1}", "invalid_field"),
        ("{\"customer\": {\"1st\": \"x\"}}", "invalid_field"),
        ("{\"note\": \"bell \\u0007\"}", "invalid_field"),
        ("{\"tags\": [[\"nested\"]]}", "invalid_field"),
    ];
    for (body, code) in refused {
        let r = post_json(&c, &url, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"], code, "{body}: {v}");
        assert!(v["message"].is_string());
    }
    assert_eq!(soap.calls(&c).await, 0, "nothing refused was forwarded");

    // The same route still forwards a good body (so the count above could have moved).
    let r = post_json(&c, &url, ORDER_REQUEST).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(soap.calls(&c).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_soap_become_502() {
    let soap = SoapService::start();
    let html = Upstream::start(
        "html",
        Behaviour::Fixed(
            "text/html",
            "<html><body><h1>Service Unavailable</h1></body></html>",
        ),
    )
    .await;
    let text = Upstream::start("text", Behaviour::Fixed("text/plain", "upstream exploded")).await;
    let truncated = Upstream::start(
        "truncated",
        Behaviour::Fixed(
            "text/xml",
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><R>",
        ),
    )
    .await;
    let extra = format!(
        "[upstreams.html]\ntargets = [\"{}\"]\n[upstreams.text]\ntargets = [\"{}\"]\n[upstreams.truncated]\ntargets = [\"{}\"]\n",
        html.url(),
        text.url(),
        truncated.url()
    );
    let soap_config = format!(
        "[request.json_to_soap]\noperation = \"Echo\"\nnamespace = \"{ORDERS_NS}\"\n[response.soap_to_json]\n"
    );
    let routes = route("html", "/html", "html", &soap_config)
        + &route("text", "/text", "text", &soap_config)
        + &route("truncated", "/truncated", "truncated", &soap_config);
    let gw = gateway(&soap, &extra, &routes);
    let c = Client::new();
    for (path, up) in [
        ("/html", &html),
        ("/text", &text),
        ("/truncated", &truncated),
    ] {
        let r = post_json(&c, &gw.url(path), r#"{"text":"hi"}"#).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({"error": "bad_gateway", "message": "the upstream service sent an invalid response"})
        );
        assert_eq!(up.hits(), 1, "{path}");
    }
}

/// The envelope as the upstream got it, seen through an echo upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_headers_and_zeep_agree() {
    let soap = SoapService::start();
    let echo = Upstream::start("echo", Behaviour::Echo).await;
    let extra = format!("[upstreams.echo]\ntargets = [\"{}\"]\n", echo.url());
    let inspect = |name: &str, version: &str| {
        route(
            name,
            &format!("/{name}"),
            "echo",
            &format!(
                "[request.json_to_soap]\nversion = \"{version}\"\noperation = \"CreateOrder\"\nnamespace = \"{ORDERS_NS}\"\nsoap_action = \"{CREATE_ACTION}\"\n"
            ),
        )
    };
    let gw = gateway(
        &soap,
        &extra,
        &(inspect("v11", "1.1") + &inspect("v12", "1.2")),
    );
    let c = Client::new();
    let params = r#"{"customer":{"name":"Ann & Bob","address":{"city":"Oslo"}},"items":[{"sku":"a","quantity":2,"price":1.5},{"sku":"b","quantity":1,"price":3}],"tags":["x","y"],"express":true}"#;

    // Sent with PUT and a spoofed SOAPAction: the upstream gets POST and the configured action.
    let r = c
        .request(
            Method::PUT,
            &gw.url("/v11"),
            &[
                ("content-type", "application/json"),
                ("soapaction", "\"urn:spoofed\""),
            ],
            params,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["method"], "POST");
    let headers = &seen["headers"];
    assert_eq!(headers["content-type"], "text/xml; charset=utf-8");
    assert_eq!(headers["soapaction"], format!("\"{CREATE_ACTION}\""));
    let envelope = seen["body"].as_str().unwrap().to_owned();
    assert_eq!(headers["content-length"], envelope.len().to_string());
    assert!(envelope.contains("http://schemas.xmlsoap.org/soap/envelope/"));
    assert!(
        envelope.contains("<customer><name>Ann &amp; Bob</name>"),
        "{envelope}"
    );

    // zeep, from the service's WSDL, makes the same infoset.
    let job = json!({
        "wsdl": format!("{}/soap11/wsdl?wsdl", soap.url()),
        "operation": "CreateOrder",
        "params": serde_json::from_str::<Value>(params).unwrap(),
        "ours": envelope,
    });
    let mut zeep = Command::new(python())
        .arg(workspace_root().join("tests/peers/soap_zeep_envelope.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    zeep.stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = zeep.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "zeep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = both["ours"].as_array().unwrap();
    assert!(ours.len() > 10, "{ours:?}");
    assert_eq!(both["zeep"], both["ours"]);

    // SOAP 1.2: the action rides in the content type; no SOAPAction header.
    let r = post_json(&c, &gw.url("/v12"), params).await;
    let seen = r.json();
    let headers = &seen["headers"];
    assert_eq!(
        headers["content-type"],
        format!("application/soap+xml; charset=utf-8; action=\"{CREATE_ACTION}\"")
    );
    assert!(headers.get("soapaction").is_none(), "{headers}");
    let envelope = seen["body"].as_str().unwrap();
    assert_eq!(headers["content-length"], envelope.len().to_string());
    assert!(envelope.contains("xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\""));
    assert!(envelope.contains(&format!("<CreateOrder xmlns=\"{ORDERS_NS}\">")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_query_method_and_json_are_rewritten_both_ways() {
    let soap = SoapService::start();
    let echo = Upstream::start("echo", Behaviour::Echo).await;
    let extra = format!("[upstreams.echo]\ntargets = [\"{}\"]\n", echo.url());
    let config = r#"
[request]
method = "PUT"
[request.headers]
rename = { "X-Client-Id" = "X-Consumer" }
add = { "X-Gateway" = "wasmgate" }
remove = ["X-Debug"]
[request.query]
add = { v = "2" }
remove = ["token"]
[request.json]
rename = { clientId = "client_id", "user.name" = "user.full_name" }
add = { source = "gateway", "meta.via" = { name = "wasmgate", hops = 1 } }
remove = ["debug", "user.password"]
[response.headers]
rename = { "X-Upstream" = "X-Served-By" }
add = { "X-Transformed" = "yes" }
[response.json]
rename = { upstream = "served_by" }
remove = ["path"]
add = { "gateway.transformed" = true }
"#;
    let gw = gateway(&soap, &extra, &route("rest", "/rest", "echo", config));
    let c = Client::new();
    let body = r#"{"clientId":"c-1","user":{"name":"Ann","password":"pw","age":30},"debug":true,"source":"client"}"#;
    let r = c
        .request(
            Method::POST,
            &gw.url("/rest/users?token=secret&a=1&v=1"),
            &[
                ("content-type", "application/json"),
                ("x-client-id", "client-7"),
                ("x-debug", "1"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-served-by"), Some("echo"));
    assert!(r.header("x-upstream").is_none());
    assert_eq!(r.header("x-transformed"), Some("yes"));

    let seen = r.json();
    assert_eq!(seen["served_by"], "echo");
    assert!(
        seen.get("upstream").is_none() && seen.get("path").is_none(),
        "{seen}"
    );
    assert_eq!(seen["gateway"], json!({"transformed": true}));
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["query"], "a=1&v=2");
    let headers = &seen["headers"];
    assert_eq!(headers["x-consumer"], "client-7");
    assert_eq!(headers["x-gateway"], "wasmgate");
    assert!(headers.get("x-client-id").is_none() && headers.get("x-debug").is_none());
    let forwarded = seen["body"].as_str().unwrap();
    assert_eq!(headers["content-length"], forwarded.len().to_string());
    let forwarded: Value = serde_json::from_str(forwarded).unwrap();
    assert_eq!(
        forwarded,
        json!({
            "user": {"age": 30, "full_name": "Ann"},
            "source": "gateway",
            "client_id": "c-1",
            "meta": {"via": {"name": "wasmgate", "hops": 1}}
        })
    );

    // Malformed JSON is refused here too, and not forwarded.
    let before = echo.hits();
    let r = post_json(&c, &gw.url("/rest/users"), "{\"clientId\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_json");
    assert_eq!(echo.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_refused_naming_the_key() {
    let cases = [
        (
            "[request.json_to_soap]\nversion = \"1.3\"\noperation = \"Op\"\nnamespace = \"urn:x\"\n",
            "request.json_to_soap.version",
        ),
        (
            "[request.json_to_soap]\noperation = \"a b\"\nnamespace = \"urn:x\"\n",
            "request.json_to_soap.operation",
        ),
        (
            "[request.json]\nrename = { \"a..b\" = \"c\" }\n",
            "request.json.rename.a..b",
        ),
        (
            "[response.headers]\nadd = { \"Content-Length\" = \"1\" }\n",
            "response.headers.add.Content-Length",
        ),
    ];
    for (config, key) in cases {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[plugins.transform]\npath = \"{}\"\n[upstreams.soap]\ntargets = [\"http://127.0.0.1:{}\"]\n{}",
            plugin("transform").display(),
            support::closed_port(),
            route("bad", "/bad", "soap", config)
        );
        let (ok, out) = support::check(&text);
        assert!(!ok, "{config} accepted");
        assert!(out.contains(key), "{key} not named in: {out}");
    }
}
