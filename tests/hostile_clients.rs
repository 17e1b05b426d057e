//! Hostile clients against the real gateway, over raw sockets: path tricks that try to walk
//! around a guarded route, requests that are not what they claim, smuggling, slow and greedy
//! clients. After each attack the process is still up and the next normal request works, and
//! a recording upstream shows that nothing reached it that the client did not send as one
//! request.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::config::GatewayConfig;
use support::{Client, Gateway, plugin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers 200 and records what it saw: method, path (raw, as sent), the
/// `x-forwarded-host` header, and the body.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    forwarded_host: Option<String>,
    body: Bytes,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            log.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                target: parts.uri.to_string(),
                                forwarded_host: parts
                                    .headers
                                    .get("x-forwarded-host")
                                    .map(|v| v.to_str().unwrap().to_owned()),
                                body: body.unwrap_or_default(),
                            });
                            let text = format!("upstream saw {}", parts.uri);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Recorder { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn targets(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.target.clone())
            .collect()
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Writes `bytes`, then reads what comes back until the gateway closes the connection or
/// `wait` passes with nothing more. Returns the text read.
async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_until_quiet(&mut s, wait).await
}

async fn read_until_quiet(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

const SECRET: &str = "an-e2e-secret-that-is-long-enough-for-hs256";

/// `/api` is open; `/api/admin` sits behind jwt-auth; both go to the same upstream.
fn guarded_gateway(up: &Recorder, server_extra: &str) -> Gateway {
    let jwt = format!(r#"{{ algorithms = ["HS256"], secret = "{SECRET}" }}"#);
    Gateway::start(
        &GatewayConfig::new()
            .server("workers = 1")
            .server(server_extra)
            .plugin("jwt-auth", &plugin("jwt_auth"))
            .upstream("app", &up.url())
            .route("open", "/api", "app")
            .route("admin", "/api/admin", "app")
            .stage("jwt-auth", &jwt)
            .to_string(),
    )
}

async fn get_raw(gw: &Gateway, target: &str) -> Vec<u16> {
    let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    statuses(&exchange(gw.addr, req.as_bytes(), Duration::from_secs(5)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_walk_around_a_guarded_route_are_routed_as_what_they_mean() {
    let up = Recorder::start().await;
    let gw = guarded_gateway(&up, "");

    // Each of these means /api/admin/users to an upstream that decodes, merges slashes or
    // resolves dot segments: it must meet the admin route's guard, never the open route.
    for target in [
        "/api/%61dmin/users",
        "/api/%61%64%6d%69%6e/users",
        "/api//admin/users",
        "/api///admin//users",
        "/api/x/../admin/users",
        "/api/x/%2e%2e/admin/users",
        "/api/x/.%2E/admin/users",
        "/api/./admin/users",
        "/api/admin/x/../users",
    ] {
        assert_eq!(get_raw(&gw, target).await, [401], "{target}");
    }
    // Encoded separators and dot segments with parameters have no safe meaning: 400.
    for target in [
        "/api/x/..%2fadmin/users",
        "/api/x/..%2Fadmin/users",
        "/api/x/..%5cadmin/users",
        "/api/x/..%5Cadmin/users",
        "/api/x/..;/admin/users",
        "/api/x/%2e%2e;x=1/admin/users",
        "/api/a%00b",
        "/api/%zz",
    ] {
        assert_eq!(get_raw(&gw, target).await, [400], "{target}");
    }
    assert!(up.targets().is_empty(), "{:?}", up.targets());

    // What the open route forwards is the normal form, the one it was routed by.
    assert_eq!(
        get_raw(&gw, "/api/%7Euser//files/./a%2b?q=%2F").await,
        [200]
    );
    assert_eq!(up.targets(), ["/api/~user/files/a%2B?q=%2F"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_can_be_kept_or_unescaped() {
    let up = Recorder::start().await;
    let gw = guarded_gateway(&up, r#"escaped_slashes = "unescape""#);
    assert_eq!(get_raw(&gw, "/api/x/..%2fadmin/users").await, [401]);
    assert_eq!(get_raw(&gw, "/api/x/..%5Cadmin/users").await, [401]);
    assert!(up.targets().is_empty());
    drop(gw);

    let gw = guarded_gateway(&up, r#"escaped_slashes = "keep""#);
    assert_eq!(get_raw(&gw, "/api/files/a%2fb").await, [200]);
    assert_eq!(up.targets(), ["/api/files/a%2Fb"]);
    // NUL is refused whatever the setting.
    assert_eq!(get_raw(&gw, "/api/a%00b").await, [400]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_a_plugin_sets_is_normalised_too() {
    let up = Recorder::start().await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("fixture", &plugin("fixture"))
            .upstream("app", &up.url())
            .route("climbs", "/climbs", "app")
            .stage("fixture", r#"{ rewrite_path = "/a/b/../../admin//%61" }"#)
            .route("escapes", "/escapes", "app")
            .stage("fixture", r#"{ rewrite_path = "/a/..%2fadmin" }"#)
            .to_string(),
    );
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/climbs")).await.status, StatusCode::OK);
    assert_eq!(up.targets(), ["/admin/a"]);
    // The normaliser refuses it, so the plugin's call fails and so does the request.
    let r = c.get(&gw.url("/escapes")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(up.targets().len(), 1);
}

/// Two upstreams by host: what a request is routed by, and what the upstream is told.
async fn hosts_gateway() -> (Gateway, Recorder, Recorder) {
    let a = Recorder::start().await;
    let b = Recorder::start().await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("a", &a.url())
            .upstream("b", &b.url())
            .route("a", "/", "a")
            .with(r#"host = "a.example""#)
            .route("b", "/", "b")
            .with(r#"host = "b.example""#)
            .route("any", "/", "b")
            .to_string(),
    );
    (gw, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_what_they_claim_are_refused() {
    let (gw, a, b) = hosts_gateway().await;
    let wait = Duration::from_secs(5);
    for (what, req) in [
        ("no Host", "GET /x HTTP/1.1\r\n\r\n".to_owned()),
        (
            "two Hosts",
            "GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n".to_owned(),
        ),
        (
            "user info in Host",
            "GET /x HTTP/1.1\r\nHost: a.example:80@evil.example\r\n\r\n".to_owned(),
        ),
        (
            "a path in Host",
            "GET /x HTTP/1.1\r\nHost: a.example/x\r\n\r\n".to_owned(),
        ),
        (
            "a bad port",
            "GET /x HTTP/1.1\r\nHost: a.example:http\r\n\r\n".to_owned(),
        ),
        (
            "user info in an absolute-form target",
            "GET http://u@a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n".to_owned(),
        ),
    ] {
        let text = exchange(gw.addr, req.as_bytes(), wait).await;
        assert_eq!(statuses(&text), [400], "{what}: {text}");
    }
    assert!(a.targets().is_empty() && b.targets().is_empty());

    // An absolute-form target's authority wins over the Host header.
    let req = "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    assert_eq!(
        statuses(&exchange(gw.addr, req.as_bytes(), wait).await),
        [200]
    );
    let seen = a.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/x");
    assert_eq!(seen[0].forwarded_host.as_deref(), Some("a.example"));
    assert!(b.targets().is_empty());

    // HTTP/1.0 needs no Host, but a client's X-Forwarded-Host never stands in for one.
    let req = "GET /y HTTP/1.0\r\nX-Forwarded-Host: a.example\r\n\r\n";
    assert_eq!(
        statuses(&exchange(gw.addr, req.as_bytes(), wait).await),
        [200]
    );
    let seen = b.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].forwarded_host, None);
    assert!(a.targets().is_empty());

    // The Host header routes, case-insensitively and without its port.
    let c = Client::new();
    let r = c
        .get_with(&gw.url("/z"), &[("host", "A.Example:8080")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        a.take()[0].forwarded_host.as_deref(),
        Some("A.Example:8080")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_past_the_limits_get_431_however_the_bytes_arrive() {
    let up = Recorder::start().await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server("max_header_bytes = 16384")
            .server("max_headers = 20")
            .upstream("app", &up.url())
            .route("app", "/", "app")
            .to_string(),
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(100 * 1024)
    );
    // In one write.
    let text = exchange(gw.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&text), [431], "{text}");
    // In small pieces, some of them one byte.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let bytes = big.as_bytes();
    let mut i = 0;
    let mut step = 1;
    while i < bytes.len() {
        let end = (i + step).min(bytes.len());
        if s.write_all(&bytes[i..end]).await.is_err() {
            break;
        }
        i = end;
        step = if step >= 4096 { 1 } else { step * 3 };
    }
    let text = read_until_quiet(&mut s, Duration::from_secs(5)).await;
    assert_eq!(statuses(&text), [431], "{text}");
    // Just under the limit is served.
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "v".repeat(15 * 1024)
    );
    let text = exchange(gw.addr, fits.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&text), [200]);
    // Too many header fields.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let text = exchange(gw.addr, many.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&text), [431], "{text}");
    assert_eq!(up.targets().len(), 1);
}

/// Sends `attack` on one connection, then checks that a normal request on a new connection
/// still works and that the upstream saw only the targets in `allowed`.
async fn survives(gw: &Gateway, up: &Recorder, attack: &[u8], allowed: &[&str]) -> Vec<u16> {
    let text = exchange(gw.addr, attack, Duration::from_secs(3)).await;
    let ok = exchange(
        gw.addr,
        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        statuses(&ok),
        [200],
        "after {:.200}",
        String::from_utf8_lossy(attack)
    );
    // What the attack's request sent upstream may be recorded only now (the upstream records
    // a request once its body ended), so both requests' are checked together.
    let mut after = 0;
    for s in up.take() {
        if s.target == "/after" {
            after += 1;
            continue;
        }
        assert!(
            allowed.contains(&s.target.as_str()),
            "the upstream saw {:.80} {:.80} from {:.200}",
            s.method,
            s.target,
            String::from_utf8_lossy(attack)
        );
    }
    assert_eq!(after, 1);
    statuses(&text)
}

fn plain_gateway(up: &Recorder, server_extra: &str) -> Gateway {
    Gateway::start(
        &GatewayConfig::new()
            .server(server_extra)
            .upstream("app", &up.url())
            .route("app", "/", "app")
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_never_reach_the_upstream_as_requests() {
    let up = Recorder::start().await;
    let gw = plain_gateway(&up, "");
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let attacks: Vec<String> = vec![
        // Content-Length and Transfer-Encoding together.
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Two different lengths.
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        // Transfer-Encoding in disguise.
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Bad chunk sizes and extensions.
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nx\"\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{smuggled}"
        ),
        // A request hidden in a body that says how long it is: one request, body and all.
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
            smuggled.len()
        ),
    ];
    for attack in &attacks {
        let got = survives(&gw, &up, attack.as_bytes(), &["/a"]).await;
        assert!(
            got.iter().all(|s| *s == 200 || (400..500).contains(s)),
            "{got:?} for {attack:?}"
        );
    }
    // The hidden request went upstream as the body of the one request that carried it.
    let text = exchange(
        gw.addr,
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
            smuggled.len()
        )
        .as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(statuses(&text), [200]);
    let seen = up.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, smuggled.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_and_absurd_request_lines_are_refused() {
    let up = Recorder::start().await;
    let gw = plain_gateway(&up, "");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let long_method = format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "G".repeat(5_000));
    let attacks: Vec<&[u8]> = vec![
        // obs-fold, NUL and bare CR in values.
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: o\0ne\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: o\rne\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX A: one\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\n: one\r\n\r\n",
        // Request lines.
        b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /a\r\nHost: x\r\n\r\n",
        b"GET  /a  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        long_uri.as_bytes(),
        long_method.as_bytes(),
        // Targets that are not origin-form paths.
        b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        b"GET ftp://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
        // The HTTP/2 preface on the HTTP/1 port.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for attack in attacks {
        let got = survives(&gw, &up, attack, &[]).await;
        assert!(
            got.iter().all(|s| (400..=505).contains(s)),
            "{got:?} for {:?}",
            String::from_utf8_lossy(&attack[..attack.len().min(80)])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_at_the_header_timeout_and_an_idle_connection_at_keepalive() {
    let up = Recorder::start().await;
    let gw = plain_gateway(
        &up,
        "header_read_timeout_ms = 600\nkeepalive_timeout_ms = 2000",
    );

    // Slowloris: a byte every 100 ms never finishes a head in time, while normal requests
    // on other connections go on.
    let started = Instant::now();
    let meanwhile = {
        let url = gw.url("/meanwhile");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Client::new().get(&url).await.status
        })
    };
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(meanwhile.await.unwrap(), StatusCode::OK);
    let rest = read_until_quiet(&mut s, Duration::from_secs(3)).await;
    assert!(cut || statuses(&rest).is_empty(), "{rest}");
    assert!(
        started.elapsed() < Duration::from_millis(3_900),
        "cut after {:?}",
        started.elapsed()
    );
    assert_eq!(up.take().iter().filter(|s| s.target == "/slow").count(), 0);

    // A keep-alive connection may idle longer than the header timeout, up to keepalive.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let req = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(
        statuses(&read_until_quiet(&mut s, Duration::from_millis(300)).await),
        [200]
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    s.write_all(req).await.unwrap();
    assert_eq!(
        statuses(&read_until_quiet(&mut s, Duration::from_millis(300)).await),
        [200]
    );
    // Then, idle past keepalive, it is closed.
    let idle = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = idle.elapsed();
    assert!(
        waited > Duration::from_millis(1_300) && waited < Duration::from_millis(3_500),
        "closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_serves_at_most_its_request_limit() {
    let up = Recorder::start().await;
    let gw = plain_gateway(&up, "max_requests_per_connection = 3");
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut heads = Vec::new();
    for i in 0..3 {
        let req = format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        heads.push(read_until_quiet(&mut s, Duration::from_millis(300)).await);
    }
    assert!(heads.iter().all(|h| statuses(h) == [200]), "{heads:?}");
    assert!(!heads[1].to_lowercase().contains("connection: close"));
    assert!(
        heads[2].to_lowercase().contains("connection: close"),
        "{}",
        heads[2]
    );
    // The gateway closed it after the third response.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_the_rest_served() {
    let up = Recorder::start().await;
    let gw = plain_gateway(&up, "max_connections = 4\nworkers = 2");
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fifth is accepted and closed at once.
    let text = exchange(
        gw.addr,
        b"GET /fifth HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(statuses(&text).is_empty(), "{text}");
    assert!(
        gw.logs_containing(&["connection limit reached"])
            .contains("connection limit reached")
    );
    // Once some close, new ones are served.
    idle.truncate(2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = exchange(
        gw.addr,
        b"GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(statuses(&text), [200]);
    assert_eq!(up.targets(), ["/later"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_while_requests_keep_succeeding() {
    // This process holds the client ends: it needs the file descriptors too.
    let limit = rlimit::increase_nofile_limit(12_000).unwrap();
    assert!(limit >= 10_500, "open file limit {limit}");
    let up = Recorder::start().await;
    let gw = plain_gateway(
        &up,
        "max_connections = 11000\nheader_read_timeout_ms = 60000",
    );
    let c = Client::new();
    let mut idle = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
        if i % 2_000 == 1_999 {
            let r = c.get(&gw.url(&format!("/during/{i}"))).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    for i in 0..20 {
        let r = c.get(&gw.url(&format!("/after/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // The idle ones are all still open: none was dropped to make room.
    let mut buf = [0u8; 1];
    for s in idle.iter().step_by(500) {
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("an idle connection was closed: {other:?}"),
        }
    }
    assert_eq!(up.targets().len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_send_timeout() {
    let big = support::upstream::Upstream::start(
        "big",
        support::upstream::Behaviour::Download(64 * 1024 * 1024),
    )
    .await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server("send_timeout_ms = 500")
            .upstream("big", &big.url())
            .route("big", "/", "big")
            .to_string(),
    );
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Read nothing for a while: the gateway's writes stall, then time out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection stayed open after the send timeout"),
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    assert!(
        total < 48 * 1024 * 1024,
        "read {total} bytes: the gateway kept the stalled response going"
    );
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/small")).await.status, StatusCode::OK);
}

/// The fixture plugin's `echo_info` answers with the `client_addr` plugins see.
fn client_addr_gateway(server_extra: &str) -> Gateway {
    Gateway::start(
        &GatewayConfig::new()
            .server(server_extra)
            .plugin("fixture", &plugin("fixture"))
            .upstream("none", "http://127.0.0.1:9")
            .route("who", "/", "none")
            .stage("fixture", "{ echo_info = true }")
            .to_string(),
    )
}

fn body_json(text: &str) -> serde_json::Value {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
    let ask = |xff: &str| {
        format!(
            "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: {xff}\r\n\r\n"
        )
    };
    let wait = Duration::from_secs(5);

    // Nobody is trusted: a client cannot choose its address.
    let gw = client_addr_gateway("");
    let text = exchange(gw.addr, ask("6.6.6.6").as_bytes(), wait).await;
    assert_eq!(body_json(&text)["client_addr"], "127.0.0.1", "{text}");
    drop(gw);

    // The loopback peer is a trusted proxy: the first untrusted address from the right.
    let gw = client_addr_gateway(r#"trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]"#);
    let text = exchange(gw.addr, ask("6.6.6.6, 1.2.3.4, 10.0.0.7").as_bytes(), wait).await;
    assert_eq!(body_json(&text)["client_addr"], "1.2.3.4", "{text}");
    let req = "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Real-IP: 5.6.7.8\r\n\r\n";
    let text = exchange(gw.addr, req.as_bytes(), wait).await;
    assert_eq!(body_json(&text)["client_addr"], "5.6.7.8", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_names_the_client_for_trusted_balancers() {
    let gw = client_addr_gateway(
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\nheader_read_timeout_ms = 1000",
    );
    let wait = Duration::from_secs(5);
    let req = "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // v1, the header and the request in one write.
    let v1 = format!("PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n{req}");
    let text = exchange(gw.addr, v1.as_bytes(), wait).await;
    assert_eq!(body_json(&text)["client_addr"], "203.0.113.7", "{text}");

    // v2, IPv6, the header in two writes and the request after it.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]);
    v2.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v2.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]);
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&v2[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&v2[10..]).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let text = read_until_quiet(&mut s, wait).await;
    assert_eq!(body_json(&text)["client_addr"], "2001:db8::9", "{text}");

    // A LOCAL command (a balancer's health check) leaves the peer's own address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(req.as_bytes());
    let text = exchange(gw.addr, &local, wait).await;
    assert_eq!(body_json(&text)["client_addr"], "127.0.0.1", "{text}");

    // No header, or a broken one: closed without an answer.
    for bad in [
        req.as_bytes(),
        b"PROXY TCP4 nonsense\r\n".as_slice(),
        b"PROXY TCP4 1.2.3.4".as_slice(),
    ] {
        let text = exchange(gw.addr, bad, wait).await;
        assert!(statuses(&text).is_empty(), "{text}");
    }
    assert!(
        gw.logs_containing(&["no valid PROXY protocol header"])
            .contains("no valid PROXY protocol header")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_from_an_untrusted_peer_is_refused() {
    // Only 10.0.0.0/8 may send PROXY headers; this test connects from 127.0.0.1.
    let gw = client_addr_gateway(
        "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\nheader_read_timeout_ms = 1000",
    );
    let req = "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let text = exchange(gw.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(statuses(&text).is_empty(), "{text}");
    assert!(
        gw.logs_containing(&["accepted from server.trusted_proxies only"])
            .contains("accepted from server.trusted_proxies only")
    );
}
