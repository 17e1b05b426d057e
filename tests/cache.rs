mod support;

// The cache plugin through the real gateway: a hit never reaches the upstream and says so
// (`X-Cache`, `Age`, seen by curl), a response larger than `max_entry_bytes` streams through
// uncached without the gateway's memory growing by it, a stale entry answers when the
// upstream is killed, and `kv_max_value_bytes` on the plugin lets a large entry be stored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use support::config::GatewayConfig;
use support::curl::{curl, header};
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};
use tokio::net::TcpListener;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

/// Each test starts a gateway, which compiles the plugin on start: one at a time, so that
/// burst of CPU does not push another test's plugin calls past the host's call deadline.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: AsyncMutex<()> = AsyncMutex::const_new(());
    SERIAL.lock().await
}

/// The README's example: `/api/products` for 300 s, `/api/users` for 60 s.
const SEED: &str = r#"{ paths = [{ prefix = "/api/products", ttl_s = 300 }, { prefix = "/api/users", ttl_s = 60 }] }"#;

/// A gateway with the cache plugin on `/api`, in front of `up`.
fn gateway(up: &str, cache: &str) -> Gateway {
    Gateway::start(
        &GatewayConfig::new()
            .plugin("cache", &plugin("cache"))
            .upstream("app", up)
            .route("api", "/api", "app")
            .stage("cache", cache)
            .to_string(),
    )
}

/// Prints the gateway's log when a test fails, so a failure explains itself.
struct LogsOnPanic<'a>(&'a Gateway);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gateway log:\n{}", self.0.logs());
        }
    }
}

fn x_cache(r: &Resp) -> &str {
    r.header("x-cache")
        .unwrap_or_else(|| panic!("no x-cache on {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_answered_by_the_gateway_with_x_cache_and_age() {
    let _serial = one_at_a_time().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = gateway(&up.url(), SEED);
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let url = gw.url("/api/products/1?page=2");

    let miss = c.get(&url).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(x_cache(&miss), "MISS");
    assert_eq!(miss.header("age"), None);
    assert_eq!(miss.json()["path"], "/api/products/1");
    assert_eq!(up.hits(), 1);

    let hit = c.get(&url).await;
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(hit.header("age"), Some("0"));
    assert_eq!(hit.body, miss.body);
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(hit.header("x-upstream"), Some("up"));
    assert_eq!(up.hits(), 1, "a hit reached the upstream");

    // As a client sees it, a second later.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (headers, body) = curl(&[&url]);
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(header(&headers, "x-cache"), Some("hit"), "{headers}");
    let age: u64 = header(&headers, "age").unwrap().parse().unwrap();
    assert!((1..=3).contains(&age), "{headers}");
    assert_eq!(body, miss.body);

    // HEAD from the GET's entry, without a body.
    let head = c.request(Method::HEAD, &url, &[], Bytes::new()).await;
    assert_eq!((head.status, x_cache(&head)), (StatusCode::OK, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(up.hits(), 1);

    // Another query, a path under no prefix, and another method go upstream.
    assert_eq!(x_cache(&c.get(&gw.url("/api/products/1")).await), "MISS");
    assert_eq!(x_cache(&c.get(&gw.url("/api/orders")).await), "BYPASS");
    let post = c.request(Method::POST, &url, &[], "{}").await;
    assert_eq!(x_cache(&post), "BYPASS");
    assert_eq!(post.json()["method"], "POST");
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_max_entry_bytes_streams_through_uncached() {
    const SIZE: u64 = 5 * 1024 * 1024;
    let _serial = one_at_a_time().await;
    // One upstream states its length, the other sends it chunked, its size unknown.
    let sized = Upstream::start("sized", Behaviour::Download(SIZE)).await;
    let chunked = Upstream::start("chunked", Behaviour::Stream(SIZE)).await;
    let cache = r#"{ default_ttl_s = 300 }"#;
    // One worker, so the warm-up below warms the instances every request then uses.
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server("workers = 1")
            .plugin("cache", &plugin("cache"))
            .upstream("sized", &sized.url())
            .upstream("chunked", &chunked.url())
            .route("sized", "/sized", "sized")
            .stage("cache", cache)
            .route("chunked", "/chunked", "chunked")
            .stage("cache", cache)
            .to_string(),
    );
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();

    // Warm both routes' instances and the streaming path with a POST (passed by, streamed),
    // then take the peak RSS as the baseline.
    for path in ["/sized/file", "/chunked/file"] {
        let warm = c.request(Method::POST, &gw.url(path), &[], "").await;
        assert_eq!((warm.status, x_cache(&warm)), (StatusCode::OK, "BYPASS"));
        assert_eq!(warm.body.len() as u64, SIZE);
    }
    let before = gw.mem_kib("VmHWM");

    for (path, up) in [("/sized/file", &sized), ("/chunked/file", &chunked)] {
        for n in 1..=2 {
            let r = c.get(&gw.url(path)).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body.len() as u64, SIZE, "{path}");
            assert_eq!(x_cache(&r), "MISS", "{path}");
            assert_eq!(
                up.hits(),
                1 + n,
                "{path}: request {n} did not reach the upstream"
            );
        }
    }
    let grown_kib = gw.mem_kib("VmHWM").saturating_sub(before);
    assert!(
        grown_kib < 3 * 1024,
        "peak RSS grew by {grown_kib} KiB passing 4 x 5 MiB through: a body was buffered"
    );
}

/// An upstream that can be killed: its listener and every connection closed at once, as a
/// crash would. It answers JSON with its count of requests.
struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    tasks: Arc<Mutex<Option<tokio::task::JoinSet<()>>>>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = Origin {
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            tasks: Arc::default(),
        };
        let (hits, tasks) = (o.hits.clone(), o.tasks.clone());
        let mut set = tokio::task::JoinSet::new();
        set.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let hits = hits.clone();
                let conn = async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                        let resp = http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(format!(r#"{{"n":{n}}}"#))))
                            .unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                };
                if let Some(set) = tasks.lock().unwrap().as_mut() {
                    set.spawn(conn);
                }
            }
        });
        *o.tasks.lock().unwrap() = Some(set);
        o
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&self) {
        self.tasks.lock().unwrap().take();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_answers_while_the_upstream_is_down() {
    let _serial = one_at_a_time().await;
    let origin = Origin::start().await;
    let gw = gateway(
        &origin.url(),
        r#"{ paths = [{ prefix = "/api/products", ttl_s = 1 }], stale_if_error_s = 60 }"#,
    );
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let url = gw.url("/api/products/1");

    let first = c.get(&url).await;
    assert_eq!((first.status, x_cache(&first)), (StatusCode::OK, "MISS"));
    assert_eq!(first.text(), r#"{"n":1}"#);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Stale now: asked again, and stored again.
    assert_eq!(c.get(&url).await.text(), r#"{"n":2}"#);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    origin.kill();
    let stale = c.get(&url).await;
    assert_eq!(stale.status, StatusCode::OK, "{stale:?}");
    assert_eq!(x_cache(&stale), "STALE");
    assert_eq!(stale.text(), r#"{"n":2}"#);
    let age: u64 = stale.header("age").unwrap().parse().unwrap();
    assert!((1..=3).contains(&age), "{stale:?}");

    // Nothing stored: the gateway's own error.
    let none = c.get(&gw.url("/api/products/2")).await;
    assert_eq!(none.status, StatusCode::BAD_GATEWAY);
    assert_eq!(x_cache(&none), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_max_value_bytes_lets_a_large_entry_be_stored() {
    let _serial = one_at_a_time().await;
    let body: &'static str = Box::leak("x".repeat(200 * 1024).into_boxed_str());
    let up = Upstream::start("up", Behaviour::Fixed("text/plain", body)).await;
    let cache = r#"{ default_ttl_s = 300, max_entry_bytes = 250000 }"#;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin("cache", &plugin("cache"))
            .plugin_with(
                "cache-256k",
                &plugin("cache"),
                &["kv_max_value_bytes = 262144"],
            )
            .upstream("app", &up.url())
            .route("default", "/default", "app")
            .stage("cache", cache)
            .route("raised", "/raised", "app")
            .stage("cache-256k", cache)
            .to_string(),
    );
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();

    // The default 64 KiB value: kv refuses the entry, and every request goes upstream.
    for _ in 0..2 {
        let r = c.get(&gw.url("/default/doc")).await;
        assert_eq!(
            (r.status, x_cache(&r), r.body.len()),
            (StatusCode::OK, "MISS", body.len())
        );
    }
    assert_eq!(up.hits(), 2);

    let miss = c.get(&gw.url("/raised/doc")).await;
    assert_eq!(x_cache(&miss), "MISS");
    let hit = c.get(&gw.url("/raised/doc")).await;
    assert_eq!((hit.status, x_cache(&hit)), (StatusCode::OK, "HIT"));
    assert_eq!(hit.body, body.as_bytes());
    assert_eq!(hit.header("content-type"), Some("text/plain"));
    assert_eq!(up.hits(), 3);
}
