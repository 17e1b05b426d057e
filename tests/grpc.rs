//! gRPC and HTTP/2 upstreams: grpcio (from PyPI) calls each streaming shape through the gateway
//! to a grpcio service, over h2c and over TLS; the gateway's own failures reach a gRPC client
//! as gRPC statuses; and trailers pass both ways between HTTP/1.1 and HTTP/2 on either side.

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::config::GatewayConfig;
use support::peers::{self, PeerServer};
use support::pki::{Ca, cert_entry};
use support::upstream::{Behaviour, Upstream};
use support::{Gateway, closed_port};
use tokio::net::TcpStream;

/// The grpcio client with these arguments: the JSON it printed.
fn client(args: &[&str]) -> Value {
    peers::run("grpc_peer.py", args, "")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_streaming_shape_passes_with_its_status_and_trailers_over_h2c_and_tls() {
    let service = PeerServer::start("grpc_peer.py");
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("wasmgate test CA");
    let ca_pem = ca.write(certs.path(), "ca");
    let api = ca.server(&["api.test"], 1).write(certs.path(), "api");
    let tls = format!("tls = {{ certs = [{}] }}", cert_entry(&api));
    let ca_arg = ca_pem.display().to_string();

    for (listener, client_tls) in [
        ("h2c = true", vec![]),
        (
            tls.as_str(),
            vec!["--ca", ca_arg.as_str(), "--name", "api.test"],
        ),
    ] {
        let cfg = GatewayConfig::new()
            .server(listener)
            .server("workers = 2")
            .upstream_with("echo", &[&service.url()], &[r#"protocol = "h2""#])
            .route("echo", "/wasmgate.test.Echo/", "echo");
        let gw = Gateway::start(&cfg.to_string());
        let target = gw.addr.to_string();
        let mut args = vec!["call", target.as_str()];
        args.extend(&client_tls);
        let got = client(&args);

        assert_eq!(got["unary"]["reply"], "echo:hi", "{listener}: {got}");
        assert_eq!(got["unary"]["code"], "OK");
        assert_eq!(got["unary"]["trailing"]["x-served-by"], "grpcio");
        // A status the service chose, its message and its trailing metadata, as it sent them.
        assert_eq!(got["fail"]["code"], "NOT_FOUND", "{got}");
        assert_eq!(got["fail"]["details"], "no such thing");
        assert_eq!(got["fail"]["trailing"]["x-detail"], "gone");

        let numbers: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(got["server_stream"], serde_json::json!(numbers));
        assert_eq!(got["server_stream_code"], "OK");
        let parts: Vec<String> = (0..20).map(|i| format!("part{i}")).collect();
        assert_eq!(got["client_stream"], parts.join("+"));
        // Each reply came back before the next message was sent.
        let upper: Vec<String> = (0..30).map(|i| format!("M{i}")).collect();
        assert_eq!(got["bidi"], serde_json::json!(upper));
        assert_eq!(got["bidi_rest"], serde_json::json!([]));

        let mut concurrent: Vec<String> = (0..64).map(|i| format!("echo:c{i}")).collect();
        concurrent.sort();
        assert_eq!(got["concurrent"], serde_json::json!(concurrent));
        // 70-odd calls, many at once, over at most one connection per worker.
        let peers = got["peers"].as_array().unwrap().len();
        assert!(
            (1..=2).contains(&peers),
            "{listener}: the service saw {peers} connections"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_own_failures_reach_a_grpc_client_as_grpc_statuses() {
    let slow = Upstream::start_h2("slow", Behaviour::Slow(Duration::from_secs(5))).await;
    let down = format!("http://127.0.0.1:{}", closed_port());
    let cases = [
        (
            "unknown route",
            GatewayConfig::new()
                .upstream_with("svc", &[&slow.url()], &[r#"protocol = "h2""#])
                .route("other", "/elsewhere/", "svc"),
            "UNIMPLEMENTED",
            "no route matches this request",
        ),
        (
            "upstream down",
            GatewayConfig::new()
                .upstream_with("svc", &[&down], &[r#"protocol = "h2""#])
                .route("echo", "/", "svc"),
            "UNAVAILABLE",
            "the upstream service could not be reached",
        ),
        (
            "upstream too slow",
            GatewayConfig::new()
                .upstream_with(
                    "svc",
                    &[&slow.url()],
                    &[r#"protocol = "h2""#, "timeout_ms = 300"],
                )
                .route("echo", "/", "svc"),
            "DEADLINE_EXCEEDED",
            "the upstream service did not answer in time",
        ),
    ];
    for (what, cfg, code, details) in cases {
        let gw = Gateway::start(&cfg.server("h2c = true").to_string());
        let got = client(&["unary", &gw.addr.to_string(), "hello"]);
        assert_eq!(got["code"], code, "{what}: {got}");
        assert_eq!(got["details"], details, "{what}");
    }
}

/// Sends a body with a trailer over HTTP/1.1 or HTTP/2 (prior knowledge) to the gateway;
/// returns the upstream's JSON and the response trailers.
async fn with_trailers(addr: std::net::SocketAddr, h2: bool, path: &str) -> (Value, HeaderMap) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let mut trailers = HeaderMap::new();
    trailers.insert("x-req-trailer", HeaderValue::from_static("ping"));
    let frames = stream::iter([
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let req = Request::post(format!("http://127.0.0.1{path}"))
        .header("host", "gw.test")
        .header("te", "trailers")
        // An HTTP/1.1 client sends only the trailers it announced.
        .header("trailer", "x-req-trailer")
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().remove("trailer");
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let json = serde_json::from_slice(&collected.to_bytes()).unwrap();
    (json, trailers)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_upstream_gets_http2_and_trailers_pass_both_ways_across_protocols() {
    let h2 = Upstream::start_h2("h2", Behaviour::Trailers).await;
    let h1 = Upstream::start("h1", Behaviour::Trailers).await;
    let cfg = GatewayConfig::new()
        .server("h2c = true")
        .upstream_with("h2", &[&h2.url()], &[r#"protocol = "h2""#])
        .upstream("h1", &h1.url())
        .route("h2", "/h2/", "h2")
        .route("h1", "/h1/", "h1");
    let gw = Gateway::start(&cfg.to_string());

    for (client_h2, path, upstream_version) in [
        (true, "/h2/x", "HTTP/2.0"),
        (false, "/h2/x", "HTTP/2.0"),
        (true, "/h1/x", "HTTP/1.1"),
        (false, "/h1/x", "HTTP/1.1"),
    ] {
        let what = format!("client h2 {client_h2}, {path}");
        let (json, trailers) = with_trailers(gw.addr, client_h2, path).await;
        assert_eq!(json["version"], upstream_version, "{what}");
        assert_eq!(json["body"], "payload", "{what}");
        assert_eq!(json["trailers"]["x-req-trailer"], "ping", "{what}: {json}");
        assert_eq!(trailers["x-up-trailer"], "yes", "{what}");
        assert_eq!(trailers["x-echo-x-req-trailer"], "ping", "{what}");
    }

    // curl over HTTP/1.1, whose request the gateway sends on over HTTP/2.
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "--max-time", "20", &gw.url("/h2/plain")])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], "HTTP/2.0");
}
