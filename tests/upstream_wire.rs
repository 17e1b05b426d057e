//! The gateway's HTTP/1.1 client against upstreams scripted byte by byte: every way a
//! response can be framed, responses that lie about their framing, and keep-alive connections
//! that close under the gateway. A connection is only reused when the response's end was
//! certain; anything else closes it, so no response can bleed into the next request's.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use support::raw::{Raw, Script, read_request};
use support::{Client, Gateway};
use tokio::io::AsyncWriteExt;

fn gateway(raw: &Raw) -> Gateway {
    Gateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
[upstreams.raw]
targets = ["http://{}"]
timeout_ms = 2000
read_timeout_ms = 1000
[[routes]]
name = "raw"
path_prefix = "/"
upstream = "raw"
"#,
        raw.addr
    ))
}

/// Answers each request on a connection with the next of `answers` (by the request's path:
/// `/N` gets answer N), then keeps the connection open.
fn answering(answers: &'static [&'static [u8]]) -> Script {
    Arc::new(move |_, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            while let Some((head, _)) = read_request(&mut s, &mut buf).await {
                let path = head.split(' ').nth(1).unwrap_or("/0");
                let i: usize = path.trim_start_matches('/').parse().unwrap_or(0);
                if s.write_all(answers[i]).await.is_err() {
                    return;
                }
            }
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_passes_through_and_keeps_the_connection_when_it_can() {
    static ANSWERS: &[&[u8]] = &[
        // 0: interim responses, then a chunked body with extensions and trailers.
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 0\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        // 1: a length.
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Up: 1\r\n\r\nabc",
        // 2: no body by status (one announcing a body would close: see hostile_upstreams).
        b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
        // 3: an empty length.
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        // 4: for HEAD: the length the body would have.
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
    ];
    let raw = Raw::start(answering(ANSWERS)).await;
    let gw = gateway(&raw);
    let c = Client::new();
    for round in 0..3 {
        let r = c.get(&gw.url("/0")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "hello world");
        assert_eq!(r.header("x-up"), Some("0"));
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "re-framed for the client"
        );
        assert!(r.header("x-trailer").is_none());
        let r = c.get(&gw.url("/1")).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::CREATED, "abc"));
        let r = c.get(&gw.url("/2")).await;
        assert_eq!((r.status, r.body.len()), (StatusCode::NOT_MODIFIED, 0));
        let r = c.get(&gw.url("/3")).await;
        assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
        // A response to HEAD has no body, whatever its length says.
        let r = c
            .request(Method::HEAD, &gw.url("/4"), &[], Bytes::new())
            .await;
        assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
        assert_eq!(r.header("content-length"), Some("10"));
        assert_eq!(
            raw.conns(),
            1,
            "one upstream connection carries it all (round {round})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_delimited_by_close_is_read_to_the_end_and_its_connection_not_reused() {
    let raw = Raw::start(Arc::new(|n, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                let body = format!("connection {n}: ").repeat(5000);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                    .await;
                let _ = s.write_all(body.as_bytes()).await;
            }
        })
    }))
    .await;
    let gw = gateway(&raw);
    let c = Client::new();
    for n in 0..3 {
        let r = c.get(&gw.url("/")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), format!("connection {n}: ").repeat(5000));
    }
    assert_eq!(raw.conns(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_a_response_never_become_the_next_response() {
    // The first answer carries a whole second response after its declared end; the next
    // request must not get it.
    let raw = Raw::start(Arc::new(|n, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                let answer: &[u8] = if n == 0 {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                      HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
                };
                let _ = s.write_all(answer).await;
            }
        })
    }))
    .await;
    let gw = gateway(&raw);
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/")).await.text(), "ok");
    for _ in 0..3 {
        assert_eq!(c.get(&gw.url("/")).await.text(), "fresh");
    }
    assert_eq!(raw.conns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_lie_about_their_framing_are_refused() {
    static ANSWERS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"NONSENSE\r\n\r\n",
        b"HTTP/1.1 99 Low\r\n\r\n",
    ];
    let raw = Raw::start(answering(ANSWERS)).await;
    let gw = gateway(&raw);
    let c = Client::new();
    for i in 0..ANSWERS.len() {
        let r = c.get(&gw.url(&format!("/{i}"))).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "answer {i}");
        assert_eq!(r.json()["error"], "bad_gateway");
    }
    assert!(gw.logs().contains("invalid response"), "{}", gw.logs());
    // Each refused response took its connection with it.
    assert_eq!(raw.conns(), ANSWERS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_broken_bodies_fail_without_harm() {
    let raw = Raw::start(Arc::new(|_, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            let Some((head, _)) = read_request(&mut s, &mut buf).await else { return };
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            match path.as_str() {
                "/huge-head" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
                    for _ in 0..2000 {
                        let _ = s.write_all(b"x-filler: 0123456789012345678901234567890123456789\r\n").await;
                    }
                }
                "/many-headers" => {
                    let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
                    h.extend(b"x: y\r\n".repeat(200));
                    h.extend(b"Content-Length: 0\r\n\r\n");
                    let _ = s.write_all(&h).await;
                }
                "/trickle" => {
                    let _ = s.set_nodelay(true);
                    for b in b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ntrickle" {
                        if s.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                "/short" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b").await;
                }
                "/bad-chunk" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!!\r\n").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        })
    }))
    .await;
    let gw = gateway(&raw);
    let c = Client::new();
    for path in ["/huge-head", "/many-headers"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
    }
    // A head that arrives a byte at a time is read all the same.
    assert_eq!(c.get(&gw.url("/trickle")).await.text(), "trickle");
    // Past the head, the status is out: the client's response is cut short (or, when the
    // head had not left the gateway yet, never comes). It never ends as if complete.
    for path in ["/short", "/bad-chunk"] {
        let req = Request::get(gw.url(path))
            .body(support::full(Bytes::new()))
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<support::ClientBody>();
        if let Ok(resp) = client.request(req).await {
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let body = resp.into_body().collect().await;
            assert!(
                body.is_err(),
                "{path}: the body must fail, not end early: {body:?}"
            );
        }
    }
    let r = c.get(&gw.url("/fine")).await;
    assert_eq!(r.text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_after_the_read_timeout_and_a_slow_one_is_not() {
    let raw = Raw::start(Arc::new(|_, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            let Some((head, _)) = read_request(&mut s, &mut buf).await else {
                return;
            };
            if head.starts_with("get /stall ") {
                // Three bytes of ten, then silence on an open connection.
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            // Five chunks 400 ms apart: 2 s in all, never 1 s of silence.
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                if s.write_all(b"2\r\nok\r\n").await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    }))
    .await;
    let gw = gateway(&raw);

    let started = std::time::Instant::now();
    let req = Request::get(gw.url("/stall"))
        .body(support::full(Bytes::new()))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<support::ClientBody>();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "a stalled body must fail: {body:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "cut after {waited:?}, not after the 1 s read timeout"
    );
    assert!(
        gw.logs_containing(&["upstream response body stalled"])
            .contains("upstream response body stalled")
    );

    // The read timeout is for silence, not for the whole body.
    let r = Client::new().get(&gw.url("/slow")).await;
    assert_eq!(r.text(), "okokokokok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_the_upstream_are_replaced() {
    // Connection 0 answers one request, then closes (an upstream's keep-alive timeout);
    // connection 1 reads the next request and closes without a word (the close crossed
    // the request on the wire); later connections answer normally.
    let raw = Raw::start(Arc::new(|n, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            match n {
                0 => {
                    if read_request(&mut s, &mut buf).await.is_some() {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0")
                            .await;
                    }
                }
                1 => {
                    if read_request(&mut s, &mut buf).await.is_some() {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
                            .await;
                    }
                    let _ = read_request(&mut s, &mut buf).await;
                }
                _ => {
                    while read_request(&mut s, &mut buf).await.is_some() {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nn")
                            .await;
                    }
                }
            }
        })
    }))
    .await;
    let gw = gateway(&raw);
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/")).await.text(), "0");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The closed connection is noticed before use: a new one is opened.
    assert_eq!(c.get(&gw.url("/")).await.text(), "1");
    assert_eq!(raw.conns(), 2);
    // This one closes when the request arrives: a GET is sent again on a new connection.
    assert_eq!(c.get(&gw.url("/")).await.text(), "n");
    assert_eq!(raw.conns(), 3);

    // A POST is not: the upstream may have acted on it. A fresh upstream whose one connection
    // answers a GET, then closes when the next request (the POST) arrives.
    let raw = Raw::start(Arc::new(|n, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() && n == 0 {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0")
                    .await;
                let _ = read_request(&mut s, &mut buf).await;
            }
        })
    }))
    .await;
    let gw = gateway(&raw);
    assert_eq!(c.get(&gw.url("/")).await.text(), "0");
    let r = c.request(Method::POST, &gw.url("/"), &[], "order=1").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(raw.conns(), 1, "the POST was not sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_framed_by_what_they_are() {
    type Seen = Arc<parking_lot::Mutex<Vec<(String, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let raw = Raw::start(Arc::new(move |_, mut s| {
        let log = log.clone();
        Box::pin(async move {
            let mut buf = Vec::new();
            while let Some(req) = read_request(&mut s, &mut buf).await {
                log.lock().push(req);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        })
    }))
    .await;
    let gw = gateway(&raw);
    let c = Client::new();

    c.get(&gw.url("/get")).await;
    c.request(Method::POST, &gw.url("/sized"), &[], "0123456789")
        .await;
    c.request(Method::POST, &gw.url("/empty"), &[], Bytes::new())
        .await;
    // A body of unknown length from the client goes on in chunks.
    let frames = futures_util::stream::iter(
        ["abc", "", "defg"]
            .map(|s| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(s)))),
    );
    let body = StreamBody::new(frames).map_err(|e| match e {}).boxed();
    let req = Request::post(gw.url("/chunked")).body(body).unwrap();
    assert_eq!(c.send(req).await.status, StatusCode::OK);

    let seen = seen.lock();
    let get = &seen[0];
    assert!(get.0.starts_with("get /get http/1.1\r\n"), "{}", get.0);
    assert!(!get.0.contains("content-length") && !get.0.contains("transfer-encoding"));
    let sized = &seen[1];
    assert!(sized.0.contains("content-length: 10\r\n") && sized.1 == b"0123456789");
    let empty = &seen[2];
    assert!(empty.0.contains("content-length: 0\r\n"), "{}", empty.0);
    let chunked = &seen[3];
    assert!(
        chunked.0.contains("transfer-encoding: chunked\r\n"),
        "{}",
        chunked.0
    );
    assert!(!chunked.0.contains("content-length"));
    assert_eq!(chunked.1, b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
}
