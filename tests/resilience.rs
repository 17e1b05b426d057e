//! Upstreams that fail, against real servers: health checks take a killed target out and
//! bring it back, retries hide it from GETs and never send a POST twice, the circuit opens and
//! serves its fallback without touching the upstream, the retry budget holds, a route's
//! deadline bounds every attempt, panic mode, and targets discovered by DNS (a real DNS
//! server, dnslib) or from a file change with no reload, keeping what is known of them.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::config::GatewayConfig;
use support::{Client, Gateway};
use tokio::net::TcpListener;

/// A target the test controls: it can fail its health checks, answer 503, be slow, be killed
/// (every connection closed at once) and start again on the same address. It answers JSON
/// naming itself, and records the `x-id` of every request it received.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    delay: Duration,
    hits: Arc<AtomicU64>,
    /// Requests that came as a retry (`X-Wasmgate-Attempts`).
    retried: Arc<AtomicU64>,
    ids: Arc<Mutex<Vec<String>>>,
    tasks: Arc<Mutex<Option<tokio::task::JoinSet<()>>>>,
}

impl Target {
    async fn start(name: &'static str, delay: Duration) -> Target {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), delay).await
    }

    async fn start_on(name: &'static str, at: SocketAddr, delay: Duration) -> Target {
        let listener = TcpListener::bind(at).await.unwrap();
        let t = Target {
            name,
            addr: listener.local_addr().unwrap(),
            healthy: Arc::new(AtomicBool::new(true)),
            failing: Arc::new(AtomicBool::new(false)),
            delay,
            hits: Arc::default(),
            retried: Arc::default(),
            ids: Arc::default(),
            tasks: Arc::default(),
        };
        t.serve(listener);
        t
    }

    fn serve(&self, listener: TcpListener) {
        let mut set = tokio::task::JoinSet::new();
        let me = self.clone();
        let tasks = self.tasks.clone();
        set.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                let conn = async move {
                    let svc = hyper::service::service_fn(move |req| me.clone().answer(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                };
                if let Some(set) = tasks.lock().unwrap().as_mut() {
                    set.spawn(conn);
                }
            }
        });
        *self.tasks.lock().unwrap() = Some(set);
    }

    async fn answer(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        if req.uri().path() == "/health" {
            let status = if self.healthy.load(Ordering::SeqCst) {
                200
            } else {
                500
            };
            return Ok(Response::builder()
                .status(status)
                .body(Full::default())
                .unwrap());
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = req.headers().get("x-id") {
            self.ids
                .lock()
                .unwrap()
                .push(id.to_str().unwrap().to_owned());
        }
        let req_attempts = req
            .headers()
            .get("x-wasmgate-attempts")
            .map(|v| v.to_str().unwrap().to_owned());
        if req_attempts.is_some() {
            self.retried.fetch_add(1, Ordering::SeqCst);
        }
        let _ = req.into_body().collect().await;
        tokio::time::sleep(self.delay).await;
        let status = if self.failing.load(Ordering::SeqCst) {
            503
        } else {
            200
        };
        let body = serde_json::json!({ "upstream": self.name }).to_string();
        // Echoed, so a test can see the gateway never passes it back.
        let attempts = req_attempts.unwrap_or_default();
        Ok(Response::builder()
            .status(status)
            .header("x-wasmgate-attempts", attempts)
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap())
    }

    /// Closes the listener and every connection, as a crash would.
    fn kill(&self) {
        self.tasks.lock().unwrap().take();
    }

    /// Listens again on the same address.
    async fn revive(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn upstreams_json(gw: &Gateway) -> serde_json::Value {
    Client::new()
        .get(&gw.admin_url("/admin/upstreams"))
        .await
        .json()
}

/// Whether the admin API reports the target at `addr` of upstream `app` as healthy.
async fn healthy(gw: &Gateway, addr: SocketAddr) -> bool {
    let all = upstreams_json(gw).await;
    let targets = all["upstreams"]["app"]["targets"]
        .as_array()
        .unwrap()
        .clone();
    let t = targets
        .iter()
        .find(|t| t["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} in {all}"));
    t["healthy"].as_bool().unwrap()
}

/// How many targets upstream `app` has now.
async fn target_count(gw: &Gateway) -> usize {
    upstreams_json(gw).await["upstreams"]["app"]["targets"]
        .as_array()
        .unwrap()
        .len()
}

/// Waits until `cond` holds, for at most `limit`; returns how long it took.
async fn within<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut cond: impl FnMut() -> F,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_killed_under_load_fails_no_get_and_no_post_twice_and_health_checks_follow_it() {
    let a = Target::start("a", Duration::from_millis(5)).await;
    let b = Target::start("b", Duration::from_millis(5)).await;
    let cfg = GatewayConfig::new()
        .admin()
        .upstream_with(
            "app",
            &[&a.url(), &b.url()],
            &[
                "[upstreams.app.health_check]",
                "interval_ms = 200",
                "timeout_ms = 150",
                "unhealthy_after = 2",
                "healthy_after = 2",
                "[upstreams.app.retry]",
                "attempts = 2",
            ],
        )
        .route("all", "/", "app");
    let gw = Gateway::start(&cfg.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let (gets, get_failures, posts, post_failures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let client = Client::new();
    let mut load = Vec::new();
    for c in 0..12usize {
        let post = c.is_multiple_of(3);
        let (client, url, stop) = (client.clone(), gw.url("/"), stop.clone());
        let (gets, get_failures, posts, post_failures) = (
            gets.clone(),
            get_failures.clone(),
            posts.clone(),
            post_failures.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("{c}-{i}");
                if post {
                    let req = Request::post(&url)
                        .header("x-id", &id)
                        .body(support::full("order"))
                        .unwrap();
                    posts.fetch_add(1, Ordering::SeqCst);
                    if client.send(req).await.status != 200 {
                        post_failures.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    gets.fetch_add(1, Ordering::SeqCst);
                    let resp = client.get_with(&url, &[("x-id", &id)]).await;
                    if resp.status != 200 {
                        get_failures
                            .lock()
                            .unwrap()
                            .push((resp.status, resp.text()));
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill();
    let killed = Instant::now();
    // Down within interval × unhealthy_after, and a probe's timeout, with room for a busy
    // machine.
    let down = within(Duration::from_secs(3), || async {
        !healthy(&gw, b.addr).await
    })
    .await;
    assert!(down.is_some(), "b was never marked down: {}", gw.logs());
    let down_after = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_hits_while_down = b.hits();
    b.revive().await;
    let up = within(Duration::from_secs(3), || async {
        healthy(&gw, b.addr).await
    })
    .await;
    assert!(up.is_some(), "b never came back: {}", gw.logs());
    // Back in the rotation.
    let back = within(Duration::from_secs(3), || async {
        b.hits() > b_hits_while_down
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    join_all(load).await;
    assert!(back.is_some(), "b got no traffic after it came back");

    let get_failures = get_failures.lock().unwrap().clone();
    assert!(
        get_failures.is_empty(),
        "{} GETs failed, the first: {:?}",
        get_failures.len(),
        get_failures.first()
    );
    assert!(
        gets.load(Ordering::SeqCst) > 200,
        "too little load to judge"
    );
    // Only a POST in flight on b when it died may fail, once: 4 POST clients.
    let post_failures = post_failures.load(Ordering::SeqCst);
    assert!(post_failures <= 4, "{post_failures} POSTs failed");
    // And none was received twice.
    let mut seen = HashSet::new();
    for id in a
        .ids
        .lock()
        .unwrap()
        .iter()
        .chain(b.ids.lock().unwrap().iter())
    {
        let c: usize = id.split('-').next().unwrap().parse().unwrap();
        if c.is_multiple_of(3) {
            assert!(seen.insert(id.clone()), "POST {id} was sent twice");
        }
    }
    assert!(seen.len() + post_failures >= posts.load(Ordering::SeqCst) - 12);
    assert!(down_after < Duration::from_secs(3), "{down_after:?}");
    let logs = gw.logs();
    assert_eq!(
        logs.matches("target down: health checks failed").count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("target up: health checks passed").count(),
        1,
        "{logs}"
    );
    let metrics = Client::new().get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(&format!(
            "wasmgate_upstream_target_up{{upstream=\"app\",target=\"{}\"}} 1",
            b.url()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("wasmgate_upstream_retries_total{upstream=\"app\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_circuit_opens_serves_its_fallback_without_the_upstream_and_probes_close_it() {
    let t = Target::start("t", Duration::ZERO).await;
    t.failing.store(true, Ordering::SeqCst);
    let cfg = GatewayConfig::new()
        .admin()
        .upstream_with(
            "users",
            &[&t.url()],
            &[
                "[upstreams.users.circuit_breaker]",
                "failure_ratio = 0.5",
                "min_requests = 5",
                "window_ms = 10000",
                "open_ms = 600",
                "half_open_requests = 2",
                r#"fallback = { status = 503, headers = { "content-type" = "application/json" }, body = '{"error":"users is unavailable"}' }"#,
            ],
        )
        .route("all", "/", "users");
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/")).await.status, 503);
    }
    assert_eq!(t.hits(), 5);
    for _ in 0..20 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.text(), r#"{"error":"users is unavailable"}"#);
    }
    assert_eq!(t.hits(), 5, "an open circuit never touches the upstream");
    let state = upstreams_json(&gw).await;
    assert_eq!(state["upstreams"]["users"]["circuit"], "open", "{state}");

    t.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..10 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(t.hits(), 15);
    let state = upstreams_json(&gw).await;
    assert_eq!(state["upstreams"]["users"]["circuit"], "closed", "{state}");
    let logs = gw.logs();
    for line in [
        "circuit opened",
        "circuit half-open: probing",
        "circuit closed",
    ] {
        assert_eq!(logs.matches(line).count(), 1, "{line}: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_hold_to_their_budget_and_a_sent_post_is_never_retried() {
    let a = Target::start("a", Duration::ZERO).await;
    let b = Target::start("b", Duration::ZERO).await;
    for t in [&a, &b] {
        t.failing.store(true, Ordering::SeqCst);
    }
    let cfg = GatewayConfig::new()
        .admin()
        .upstream_with(
            "app",
            &[&a.url(), &b.url()],
            &[
                "[upstreams.app.retry]",
                "attempts = 2",
                "backoff_ms = 1",
                "budget_percent = 20",
                "min_retries_per_second = 0",
            ],
        )
        .route("all", "/", "app");
    let gw = Gateway::start(&cfg.to_string());
    let client = Client::new();
    let n = 300;
    for chunk in 0..(n / 10) {
        let calls = (0..10).map(|i| {
            let (client, url) = (client.clone(), gw.url("/"));
            async move {
                client
                    .get_with(&url, &[("x-id", &format!("{chunk}-{i}"))])
                    .await
                    .status
            }
        });
        assert!(join_all(calls).await.iter().all(|s| *s == 503));
    }
    let sent = a.hits() + b.hits();
    let retries = sent - n as u64;
    assert!(retries > 0, "some requests were retried");
    assert!(
        retries <= n as u64 / 5,
        "{retries} retries for {n} requests"
    );
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(&format!(
            "wasmgate_upstream_retries_total{{upstream=\"app\"}} {retries}"
        )),
        "{metrics}"
    );
    // A POST answered 503 was sent: it is not sent again.
    let before = a.hits() + b.hits();
    let req = Request::post(gw.url("/")).body(support::full("x")).unwrap();
    assert_eq!(client.send(req).await.status, 503);
    assert_eq!(a.hits() + b.hits(), before + 1);
    // Each retry tells the upstream its attempt number (echoed back by it); the client never
    // sees it.
    assert_eq!(
        a.retried.load(Ordering::SeqCst) + b.retried.load(Ordering::SeqCst),
        retries
    );
    let resp = client.get(&gw.url("/")).await;
    assert!(resp.header("x-wasmgate-attempts").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routes_timeout_bounds_every_attempt_together() {
    let slow = Target::start("slow", Duration::from_secs(5)).await;
    let cfg = GatewayConfig::new()
        .upstream_with(
            "app",
            &[&slow.url()],
            &[
                "timeout_ms = 1000",
                "[upstreams.app.retry]",
                "attempts = 2",
                r#"on = ["timeout"]"#,
            ],
        )
        .route("all", "/", "app")
        .with("timeout_ms = 400");
    let gw = Gateway::start(&cfg.to_string());
    let started = Instant::now();
    let resp = Client::new().get(&gw.url("/")).await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    // Three attempts of a second each would take three seconds.
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_target_down_panic_mode_still_sends_and_without_it_the_client_gets_503() {
    let a = Target::start("a", Duration::ZERO).await;
    a.healthy.store(false, Ordering::SeqCst);
    let b = Target::start("b", Duration::ZERO).await;
    b.healthy.store(false, Ordering::SeqCst);
    for (panic, expect) in [(0, 503), (50, 200)] {
        let cfg = GatewayConfig::new()
            .admin()
            .upstream_with(
                "app",
                &[&a.url(), &b.url()],
                &[
                    &format!("panic_below_percent = {panic}"),
                    "[upstreams.app.health_check]",
                    "interval_ms = 100",
                    "timeout_ms = 100",
                    "unhealthy_after = 1",
                ],
            )
            .route("all", "/", "app");
        let gw = Gateway::start(&cfg.to_string());
        let both_down = within(Duration::from_secs(3), || async {
            !healthy(&gw, a.addr).await && !healthy(&gw, b.addr).await
        })
        .await;
        assert!(both_down.is_some());
        let resp = Client::new().get(&gw.url("/")).await;
        assert_eq!(
            resp.status,
            expect,
            "panic_below_percent = {panic}: {}",
            resp.text()
        );
    }
}

/// Which targets answer `n` GETs, all of which must succeed.
async fn answered_by(gw: &Gateway, n: usize) -> HashSet<String> {
    let client = Client::new();
    let mut names = HashSet::new();
    for _ in 0..n {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        names.insert(resp.json()["upstream"].as_str().unwrap().to_owned());
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_discovery_follows_the_records_with_no_failed_request() {
    let one = Target::start_on("one", "127.0.0.2:0".parse().unwrap(), Duration::ZERO).await;
    let port = one.addr.port();
    let two = Target::start_on(
        "two",
        format!("127.0.0.3:{port}").parse().unwrap(),
        Duration::ZERO,
    )
    .await;
    let mut dns = support::dns::Dns::start();
    dns.set(serde_json::json!({ "app.test": ["127.0.0.2"] }));
    let cfg = GatewayConfig::new()
        .admin()
        .upstream_with(
            "app",
            &[&format!("http://app.test:{port}")],
            &["[upstreams.app.discovery]", "dns_refresh_ms = 100"],
        )
        .route("all", "/", "app")
        .raw(&format!("[dns]\nservers = [\"127.0.0.1:{}\"]\n", dns.port));
    let gw = Gateway::start(&cfg.to_string());
    let resolved = within(Duration::from_secs(3), || async {
        upstreams_json(&gw).await["upstreams"]["app"]["targets"][0]["address"]
            == format!("127.0.0.2:{port}")
    })
    .await;
    assert!(resolved.is_some(), "{}", upstreams_json(&gw).await);
    assert_eq!(
        answered_by(&gw, 10).await,
        HashSet::from(["one".to_owned()])
    );

    // A second address: both serve, and the first keeps its counts (the same endpoint).
    let before =
        upstreams_json(&gw).await["upstreams"]["app"]["targets"][0]["requests"]["ok"].clone();
    dns.set(serde_json::json!({ "app.test": ["127.0.0.2", "127.0.0.3"] }));
    let both = within(Duration::from_secs(3), || async {
        target_count(&gw).await == 2
    })
    .await;
    assert!(both.is_some());
    let state = upstreams_json(&gw).await;
    assert_eq!(
        state["upstreams"]["app"]["targets"][0]["requests"]["ok"], before,
        "{state}"
    );
    assert_eq!(answered_by(&gw, 20).await.len(), 2);

    // The first goes away; requests go on, to the second alone.
    dns.set(serde_json::json!({ "app.test": ["127.0.0.3"] }));
    let gone = within(Duration::from_secs(3), || async {
        target_count(&gw).await == 1
    })
    .await;
    assert!(gone.is_some());
    assert_eq!(
        answered_by(&gw, 10).await,
        HashSet::from(["two".to_owned()])
    );

    // The name stops resolving: the last addresses stay, and that is logged once.
    dns.set(serde_json::json!({}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(answered_by(&gw, 5).await, HashSet::from(["two".to_owned()]));
    assert_eq!(gw.logs().matches("target name did not resolve").count(), 1);
    drop((one, two));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_targets_file_is_followed_and_a_reload_keeps_what_is_known_of_the_targets() {
    let a = Target::start("a", Duration::ZERO).await;
    let b = Target::start("b", Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.json");
    std::fs::write(&file, serde_json::json!([a.url()]).to_string()).unwrap();
    let cfg = |route: &str| {
        GatewayConfig::new()
            .admin()
            .upstream_with(
                "app",
                &[],
                &[
                    "[upstreams.app.discovery]",
                    &format!("file = {:?}", file.to_str().unwrap()),
                ],
            )
            .route(route, "/", "app")
            .to_string()
    };
    let gw = Gateway::start(&cfg("first"));
    assert_eq!(answered_by(&gw, 5).await, HashSet::from(["a".to_owned()]));
    std::fs::write(
        &file,
        serde_json::json!([a.url(), { "url": b.url(), "weight": 2 }]).to_string(),
    )
    .unwrap();
    let both = within(Duration::from_secs(5), || async {
        target_count(&gw).await == 2
    })
    .await;
    assert!(both.is_some(), "{}", gw.logs());
    assert_eq!(answered_by(&gw, 6).await.len(), 2);
    // A broken file changes nothing, and says so once.
    std::fs::write(&file, "[not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(answered_by(&gw, 6).await.len(), 2);
    assert_eq!(gw.logs().matches("targets file not applied").count(), 1);

    // A reload that leaves the upstream as it was keeps it: the same targets, counts and all.
    let counted = upstreams_json(&gw).await["upstreams"]["app"]["targets"].clone();
    std::fs::write(gw.dir.path().join("gateway.toml"), cfg("renamed")).unwrap();
    let reloaded = Client::new()
        .request(http::Method::POST, &gw.admin_url("/admin/reload"), &[], "")
        .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(
        upstreams_json(&gw).await["upstreams"]["app"]["targets"],
        counted
    );
}
