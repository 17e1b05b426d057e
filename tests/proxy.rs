//! The gateway as a plain reverse proxy: routing, errors, forwarded headers, streaming,
//! concurrency and shutdown, through the real binary against real upstreams.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, closed_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_prefix_and_method() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("a", &a.url())
            .upstream("b", &b.url())
            .route("catch-all", "/", "a")
            .route("api", "/api", "b")
            .route("api-on-host", "/api", "a")
            .with(r#"host = "api.example.com""#)
            .route("users-read", "/api/users", "a")
            .with(r#"methods = ["GET"]"#)
            .with("strip_prefix = true")
            .to_string(),
    );
    let c = Client::new();

    let r = c.get(&gw.url("/api/orders?x=1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["upstream"], "b");
    assert_eq!(r.json()["path"], "/api/orders");
    assert_eq!(r.json()["query"], "x=1");

    // The host-specific route wins over the any-host one at the same prefix.
    let r = c
        .get_with(&gw.url("/api/orders"), &[("host", "API.example.com:8080")])
        .await;
    assert_eq!(r.json()["upstream"], "a");

    // Longest prefix, then strip_prefix.
    let r = c.get(&gw.url("/api/users/7?full=1")).await;
    assert_eq!(r.json()["upstream"], "a");
    assert_eq!(r.json()["path"], "/7");
    assert_eq!(r.json()["query"], "full=1");
    let r = c.get(&gw.url("/api/users")).await;
    assert_eq!(r.json()["path"], "/");

    // A prefix matches at segment boundaries only.
    let r = c.get(&gw.url("/api/usersX")).await;
    assert_eq!(r.json()["upstream"], "b");
    assert_eq!(r.json()["path"], "/api/usersX");

    // A method the longest route refuses falls back to the next prefix.
    let r = c
        .request(Method::POST, &gw.url("/api/users/7"), &[], "x")
        .await;
    assert_eq!(r.json()["upstream"], "b");
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["body"], "x");

    // Dot segments are resolved before routing: this is /admin, for the catch-all route.
    let r = c.get(&gw.url("/api/users/../../admin")).await;
    assert_eq!(r.json()["upstream"], "a");
    assert_eq!(r.json()["path"], "/admin");
    assert_eq!(a.hits() + b.hits(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_without_detail() {
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_secs(5))).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("down", &format!("http://127.0.0.1:{}", closed_port()))
            .upstream_with("slow", &[&slow.url()], &["timeout_ms = 300"])
            .route("down", "/down", "down")
            .route("slow", "/slow", "slow")
            .to_string(),
    );
    let c = Client::new();

    let r = c.get(&gw.url("/nothing-here")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "not_found");

    let r = c.get(&gw.url("/down/x")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert!(
        !r.text().contains("127.0.0.1"),
        "no internal detail: {}",
        r.text()
    );

    let started = std::time::Instant::now();
    let r = c.get(&gw.url("/slow/x")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(4));

    // The log has what the client does not: which upstream, which target.
    let logs = gw.logs();
    assert!(
        logs.contains("upstream request failed") && logs.contains("\"upstream\":\"down\""),
        "{logs}"
    );
    assert!(logs.contains("upstream timed out"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_hop_by_hop() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("up", &up.url())
            .route("all", "/", "up")
            .to_string(),
    );
    let c = Client::new();
    let r = c
        .get_with(
            &gw.url("/h"),
            &[
                ("host", "shop.example.com"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "x-private"),
                ("x-private", "secret"),
                ("x-keep", "yes"),
            ],
        )
        .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-keep"], "yes");
    assert!(h.get("x-private").is_none(), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_targets() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream_with("pair", &[&a.url(), &b.url()], &[])
            .route("all", "/", "pair")
            .to_string(),
    );
    let c = Client::new();
    for _ in 0..10 {
        assert_eq!(c.get(&gw.url("/")).await.status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests() {
    let up = Upstream::start("up", Behaviour::Slow(Duration::from_millis(50))).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("up", &up.url())
            .route("all", "/", "up")
            .to_string(),
    );
    let c = Client::new();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        let url = gw.url(&format!("/n/{i}"));
        tasks.push(tokio::spawn(async move { (i, c.get(&url).await) }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["path"], format!("/n/{i}"));
    }
    assert_eq!(up.hits(), 200);
}

const BIG: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_64_mib_both_ways_without_buffering() {
    let down = Upstream::start("down", Behaviour::Download(BIG)).await;
    let sink = Upstream::start("sink", Behaviour::Sink).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("down", &down.url())
            .upstream("sink", &sink.url())
            .route("download", "/download", "down")
            .route("upload", "/upload", "sink")
            .to_string(),
    );
    let c = Client::new();
    // Warm up both paths, then take the peak RSS as the baseline.
    assert_eq!(
        c.request(Method::POST, &gw.url("/upload"), &[], "warm")
            .await
            .text(),
        "4"
    );
    let before = gw.mem_kib("VmHWM");

    let r = c.get(&gw.url("/download")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len() as u64, BIG);

    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (BIG / chunk.len() as u64) as usize;
    let frames = futures_util::stream::iter(
        (0..chunks)
            .map(move |_| Ok::<_, support::BoxError>(hyper::body::Frame::data(chunk.clone()))),
    );
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames));
    let req = http::Request::post(gw.url("/upload")).body(body).unwrap();
    let r = c.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), BIG.to_string());

    let grown_kib = gw.mem_kib("VmHWM").saturating_sub(before);
    assert!(
        grown_kib < 16 * 1024,
        "peak RSS grew by {grown_kib} KiB moving 2 x 64 MiB: bodies are being buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_millis(1500))).await;
    let mut gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("slow", &slow.url())
            .route("all", "/", "slow")
            .to_string(),
    );
    let c = Client::new();
    let url = gw.url("/in-flight");
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { c.get(&url).await }
    });
    // Let the request reach the upstream, then ask the gateway to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while slow.hits() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("TERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "the in-flight request completes");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    // Nothing listens any more.
    assert!(Client::new().try_get(&gw.url("/after")).await.is_err());
    assert!(gw.logs().contains("drained"), "{}", gw.logs());
}
