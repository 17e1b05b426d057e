//! Upstreams that attack the gateway, and the bounds that hold against them and against slow
//! or vanishing clients. Upstreams are scripted byte by byte over raw TCP, and so are the
//! hostile clients. After each attack the process must still be up and the next normal
//! request must work.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::raw::{Raw, Script, path_of, read_request, read_response, send};
use support::{Client, Gateway, plugin};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A gateway with one route to `raw`; `upstream` and `server` are extra keys for those tables
/// (2 s `timeout_ms` and 1 s `read_timeout_ms` unless `upstream` sets them).
fn gateway_with(raw: &Raw, server: &str, upstream: &str) -> Gateway {
    let mut upstream = upstream.to_owned();
    for default in ["timeout_ms = 2000", "read_timeout_ms = 1000"] {
        let key = default.split(' ').next().unwrap();
        if !upstream.lines().any(|l| l.starts_with(key)) {
            upstream.push('\n');
            upstream.push_str(default);
        }
    }
    Gateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
{server}
[upstreams.raw]
targets = ["http://{}"]
{upstream}
[[routes]]
name = "raw"
path_prefix = "/"
upstream = "raw"
"#,
        raw.addr
    ))
}

/// Still up, and a normal request through it works.
async fn still_serving(gw: &mut Gateway, c: &Client) {
    assert!(gw.is_running(), "the gateway died:\n{}", gw.logs());
    let r = c.get(&gw.url("/ok")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "ok"),
        "{}",
        gw.logs()
    );
}

/// An upstream that answers `/ok` normally and each attack path with its attack, on every
/// connection.
fn hostile() -> Script {
    Arc::new(|_, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            // The body a 204 or 304 announced, sent late: before the next answer.
            let mut owed: &[u8] = b"";
            while let Some((head, _)) = read_request(&mut s, &mut buf).await {
                if !send(&mut s, std::mem::take(&mut owed)).await {
                    return;
                }
                let answer: Vec<u8> = match path_of(&head) {
                    "/cl-te" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                        .to_vec(),
                    "/short" => {
                        let _ = send(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b").await;
                        return;
                    }
                    "/bad-chunk" => {
                        let _ = send(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n").await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        return;
                    }
                    "/huge-header" => {
                        let mut h = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
                        h.extend(std::iter::repeat_n(b'a', 100 * 1024));
                        h.extend(b"\r\nContent-Length: 2\r\n\r\nok");
                        h
                    }
                    "/huge-header-trickled" => {
                        let _ = send(&mut s, b"HTTP/1.1 200 OK\r\nX-Big: ").await;
                        for _ in 0..100 {
                            if !send(&mut s, &[b'a'; 1024]).await {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        b"\r\nContent-Length: 2\r\n\r\nok".to_vec()
                    }
                    "/endless-1xx" => {
                        while send(&mut s, b"HTTP/1.1 100 Continue\r\n\r\n").await {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        return;
                    }
                    "/204-with-body" => {
                        owed = b"smuggled";
                        b"HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\n".to_vec()
                    }
                    "/304-with-length" => {
                        owed = b"smuggled";
                        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n".to_vec()
                    }
                    "/two-answers" => {
                        // One answer now, a second once the connection sits idle in the pool.
                        let _ = send(&mut s, OK).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()
                    }
                    "/silence" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => OK.to_vec(),
                };
                if !send(&mut s, &answer).await {
                    return;
                }
            }
        })
    })
}

/// A client that gives up on a response body it sees fail.
async fn get_lenient(gw: &Gateway, path: &str) -> Result<(StatusCode, Bytes), String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<support::ClientBody>();
    let req = http::Request::get(gw.url(path))
        .body(support::full(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| "no response in 20 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_both_length_and_chunking_is_read_as_chunked_and_its_connection_closed() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "");
    let c = Client::new();
    let r = c.get(&gw.url("/cl-te")).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "hello"));
    assert!(r.header("content-length").is_none());
    let before = raw.conns();
    for _ in 0..3 {
        still_serving(&mut gw, &c).await;
    }
    assert_eq!(
        raw.conns(),
        before + 1,
        "the CL+TE connection was not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_badly_chunked_bodies_fail_the_client_body_not_the_gateway() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "");
    let c = Client::new();
    for path in ["/short", "/bad-chunk"] {
        match get_lenient(&gw, path).await {
            Ok((status, body)) => {
                panic!("{path}: a broken body ended as complete: {status} {body:?}")
            }
            Err(e) => assert!(!e.contains("no response in"), "{path}: {e}"),
        }
        still_serving(&mut gw, &c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_kb_header_is_refused_however_it_arrives() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "");
    let c = Client::new();
    for path in ["/huge-header", "/huge-header-trickled"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(r.header("x-big").is_none());
        still_serving(&mut gw, &c).await;
    }
    assert!(
        gw.logs_containing(&["head too large"])
            .contains("head too large")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_interim_responses_are_cut_off_at_the_cap() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "timeout_ms = 20000");
    let c = Client::new();
    let started = Instant::now();
    let r = c.get(&gw.url("/endless-1xx")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at the cap, not at the 20 s timeout: {:?}",
        started.elapsed()
    );
    let logs = gw.logs_containing(&["too many interim responses"]);
    assert!(logs.contains("too many interim responses"), "{logs}");
    still_serving(&mut gw, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_or_304_announcing_a_body_closes_its_connection_and_the_body_goes_nowhere() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "");
    let c = Client::new();
    for (path, status) in [
        ("/204-with-body", StatusCode::NO_CONTENT),
        ("/304-with-length", StatusCode::NOT_MODIFIED),
    ] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!((r.status, r.body.len()), (status, 0), "{path}");
        let before = raw.conns();
        // Reused, the connection would hand its late body to the next request as its answer.
        for _ in 0..3 {
            still_serving(&mut gw, &c).await;
        }
        assert_eq!(
            raw.conns(),
            before + 1,
            "{path}: its connection closed, and the next one is reused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_response_to_one_request_never_reaches_another_client() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "");
    for _ in 0..5 {
        let first = Client::new();
        assert_eq!(first.get(&gw.url("/two-answers")).await.text(), "ok");
        // Once the extra response has arrived on the idle connection, another client asks.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let other = Client::new();
        let r = other.get(&gw.url("/ok")).await;
        assert_eq!(r.text(), "ok");
        still_serving(&mut gw, &other).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out_and_the_gateway_goes_on() {
    let raw = Raw::start(hostile()).await;
    let mut gw = gateway_with(&raw, "", "");
    let c = Client::new();
    let started = Instant::now();
    let r = c.get(&gw.url("/silence")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    still_serving(&mut gw, &c).await;
}

/// An upstream that answers every request on a connection with `OK`, and notes when each of
/// its connections is closed by the gateway.
fn noting_closes(closed: Arc<AtomicUsize>) -> Script {
    Arc::new(move |_, mut s| {
        let closed = closed.clone();
        Box::pin(async move {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                if !send(&mut s, OK).await {
                    break;
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_connections_are_closed_after_the_idle_timeout() {
    let closed = Arc::new(AtomicUsize::new(0));
    let raw = Raw::start(noting_closes(closed.clone())).await;
    let gw = gateway_with(&raw, "", "idle_timeout_ms = 300");
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/")).await.text(), "ok");
    // Reused while fresh.
    assert_eq!(c.get(&gw.url("/")).await.text(), "ok");
    assert_eq!(raw.conns(), 1);
    // Left idle: the gateway closes it, with no request to notice it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while closed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        1,
        "the idle connection was closed"
    );
    assert_eq!(c.get(&gw.url("/")).await.text(), "ok");
    assert_eq!(raw.conns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_replaced_after_its_maximum_lifetime() {
    let closed = Arc::new(AtomicUsize::new(0));
    let raw = Raw::start(noting_closes(closed)).await;
    let gw = gateway_with(&raw, "", "max_connection_lifetime_ms = 400");
    let c = Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1300) {
        assert_eq!(c.get(&gw.url("/")).await.text(), "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conns = raw.conns();
    assert!(
        (3..=5).contains(&conns),
        "one connection per 400 ms, got {conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_stale_connection_is_sent_again_once_at_most() {
    // Connections 0 and 1 answer one request slowly (so both are opened), then close when
    // the next request arrives; later connections answer.
    let replays = Arc::new(AtomicUsize::new(0));
    let seen = replays.clone();
    let raw = Raw::start(Arc::new(move |n, mut s| {
        let seen = seen.clone();
        Box::pin(async move {
            let mut buf = Vec::new();
            while let Some((head, _)) = read_request(&mut s, &mut buf).await {
                if path_of(&head) == "/again" {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if n < 2 {
                        return;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if !send(&mut s, OK).await {
                    return;
                }
            }
        })
    }))
    .await;
    let gw = gateway_with(&raw, "", "");
    let c = Client::new();
    let (url_a, url_b, other) = (gw.url("/a"), gw.url("/b"), Client::new());
    let (a, b) = tokio::join!(c.get(&url_a), other.get(&url_b));
    assert_eq!((a.text(), b.text()), ("ok".into(), "ok".into()));
    assert_eq!(raw.conns(), 2, "two connections in the pool");
    let r = c.get(&gw.url("/again")).await;
    assert_eq!(r.text(), "ok", "sent again on a new connection");
    assert_eq!(
        replays.load(Ordering::SeqCst),
        2,
        "the stale connection, then one new one: not every pooled connection in turn"
    );
}

/// A raw client: sends `head` and then `body` in pieces `gap` apart, and reads the answer.
async fn upload(gw: &Gateway, head: &str, pieces: &[&[u8]], gap: Duration) -> (u16, String) {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        tokio::time::sleep(gap).await;
        if s.write_all(piece).await.is_err() {
            break;
        }
    }
    read_response(&mut s, Duration::from_secs(15)).await
}

/// An upstream that reads each request whole, then answers `OK` at once.
fn reading() -> Script {
    Arc::new(|_, mut s| {
        Box::pin(async move {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                if !send(&mut s, OK).await {
                    return;
                }
            }
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ms_starts_once_the_body_is_sent() {
    let raw = Raw::start(reading()).await;
    let gw = gateway_with(&raw, "body_read_timeout_ms = 5000", "timeout_ms = 500");
    // 1.5 s of upload against a 500 ms response timeout.
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
    let pieces: [&[u8]; 5] = [b"01", b"23", b"45", b"67", b"89"];
    let (status, text) = upload(&gw, head, &pieces, Duration::from_millis(300)).await;
    assert_eq!(status, 200, "{text}\n{}", gw.logs());

    // Once the body is in, the upstream's silence is timed.
    let raw = Raw::start(hostile()).await;
    let gw = gateway_with(&raw, "", "timeout_ms = 500");
    let started = Instant::now();
    let head = "POST /silence HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
    let (status, _) = upload(&gw, head, &[b"ab", b"cd"], Duration::from_millis(300)).await;
    assert_eq!(status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "timed from the body's end: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streamed_upload_gets_the_body_timeout_not_a_504() {
    let raw = Raw::start(reading()).await;
    let mut gw = gateway_with(&raw, "body_read_timeout_ms = 400", "timeout_ms = 10000");
    let started = Instant::now();
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let (status, text) = upload(&gw, head, &[b"only some"], Duration::ZERO).await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let logs = gw.logs_containing(&["client's upload timed out"]);
    assert!(logs.contains(r#""fault":"client""#), "{logs}");
    assert!(!logs.contains("upstream timed out"), "{logs}");

    // The bound is on silence: a slow upload that never pauses that long goes through.
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n";
    let pieces: [&[u8]; 4] = [b"ab", b"cd", b"ef", b"gh"];
    let (status, _) = upload(&gw, head, &pieces, Duration::from_millis(250)).await;
    assert_eq!(status, 200);
    still_serving(&mut gw, &Client::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_aborts_its_upload_is_logged_as_a_client_abort() {
    let raw = Raw::start(reading()).await;
    let mut gw = gateway_with(&raw, "", "");
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nten bytes.")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let logs = gw.logs_containing(&["client aborted its upload"]);
    assert!(logs.contains("client aborted its upload"), "{logs}");
    assert!(logs.contains(r#""fault":"client""#), "{logs}");
    assert!(!logs.contains("upstream request failed"), "{logs}");
    still_serving(&mut gw, &Client::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_upload_is_a_400_and_the_clients_fault() {
    let raw = Raw::start(reading()).await;
    let mut gw = gateway_with(&raw, "", "");
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (status, text) = upload(&gw, head, &[b"zz\r\n"], Duration::from_millis(50)).await;
    assert_eq!(status, 400, "{text}");
    let logs = gw.logs_containing(&["client's upload is malformed"]);
    assert!(logs.contains(r#""fault":"client""#), "{logs}");
    assert!(!logs.contains("upstream request failed"), "{logs}");
    still_serving(&mut gw, &Client::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_upload_is_never_held_longer_than_the_body_timeout() {
    let raw = Raw::start(reading()).await;
    let mut gw = Gateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
body_read_timeout_ms = 600
[plugins.fixture]
path = "{}"
[upstreams.raw]
targets = ["http://{}"]
[[routes]]
name = "buffered"
path_prefix = "/"
upstream = "raw"
[[routes.pipeline]]
plugin = "fixture"
config = {{ request_body = "append:XYZ" }}
"#,
        plugin("fixture").display(),
        raw.addr
    ));
    // A byte every 150 ms: never silent for 600 ms, yet never done.
    let started = Instant::now();
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n";
    let pieces = [&b"x"[..]; 40];
    let (status, text) = upload(&gw, head, &pieces, Duration::from_millis(150)).await;
    assert_eq!(status, 408, "{text}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "cut at 600 ms in all: {took:?}"
    );
    let logs = gw.logs_containing(&["client's request body could not be read"]);
    assert!(logs.contains(r#""fault":"client""#), "{logs}");

    // A quick one is buffered and forwarded.
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
    let (status, _) = upload(&gw, head, &[b"abcd"], Duration::ZERO).await;
    assert_eq!(status, 200);
    still_serving(&mut gw, &Client::new()).await;
}

#[test]
fn pool_and_body_bounds_are_validated() {
    for (server, upstream, key) in [
        (
            "body_read_timeout_ms = 0",
            "",
            "server.body_read_timeout_ms",
        ),
        ("", "idle_timeout_ms = 0", "upstreams.raw.idle_timeout_ms"),
        (
            "",
            "max_connection_lifetime_ms = 86400001",
            "upstreams.raw.max_connection_lifetime_ms",
        ),
    ] {
        let (ok, out) = support::check(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[upstreams.raw]\ntargets = [\"http://127.0.0.1:1\"]\n{upstream}\n"
        ));
        assert!(!ok && out.contains(key), "{key}: {out}");
    }
}
