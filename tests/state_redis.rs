mod support;

// `[state] backend = "redis"` with a real redis-server: two gateway processes share one quota
// exactly and one kv store (the cache plugin's entries); Redis killed, hung and restarted under
// each `on_unavailable` policy; the GCRA script after SCRIPT FLUSH and a restart; rediss://;
// the backend's state in /admin/status and /metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::redis::RedisServer;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};
use tokio::sync::{Barrier, Mutex, MutexGuard};

/// Gateways compile their plugins at start: one test at a time keeps that off the others'
/// deadlines on a small machine.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// A gateway on `redis` (`state` is extra TOML for `[state.redis]`), with the rate-limit
/// plugin on `/limited` (a bucket of `burst` per hour, keyed on `X-Tenant`) and the cache
/// plugin on `/cached` (a TTL of `ttl_s`), both in front of `up`, and an admin listener.
fn config(redis: &str, state: &str, up: &Upstream, burst: u32, ttl_s: u32) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[state]
backend = "redis"
[state.redis]
url = "{redis}"
{state}
[plugins.rate-limit]
path = "{rate_limit}"
[plugins.cache]
path = "{cache}"
[upstreams.up]
targets = ["{up}"]
[[routes]]
name = "limited"
path_prefix = "/limited"
upstream = "up"
[[routes.pipeline]]
plugin = "rate-limit"
config = {{ rate = 1, per = "hour", burst = {burst}, key = "header:x-tenant" }}
[[routes]]
name = "cached"
path_prefix = "/cached"
upstream = "up"
[[routes.pipeline]]
plugin = "cache"
config = {{ paths = [{{ prefix = "/cached", ttl_s = {ttl_s} }}] }}
"#,
        rate_limit = plugin("rate_limit").display(),
        cache = plugin("cache").display(),
        up = up.url(),
    )
}

/// Prints the gateways' logs when a test fails.
struct LogsOnPanic<'a>(Vec<&'a Gateway>);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, g) in self.0.iter().enumerate() {
                eprintln!("gateway {i} log:\n{}", g.logs());
            }
        }
    }
}

/// `n` requests at once to each URL (a connection each), all released together.
async fn fire(urls: &[String], n: usize, tenant: &str) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(n * urls.len()));
    let mut tasks = Vec::new();
    for url in urls {
        for _ in 0..n {
            let (barrier, url, tenant) = (barrier.clone(), url.clone(), tenant.to_owned());
            tasks.push(tokio::spawn(async move {
                let client = Client::new();
                barrier.wait().await;
                client.get_with(&url, &[("x-tenant", &tenant)]).await
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(rs: &[Resp], status: StatusCode) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

/// One request, and how long it took.
async fn timed(client: &Client, url: &str, tenant: &str) -> (Resp, Duration) {
    let started = Instant::now();
    let r = client.get_with(url, &[("x-tenant", tenant)]).await;
    (r, started.elapsed())
}

async fn status_json(gw: &Gateway) -> serde_json::Value {
    Client::new()
        .get(&gw.admin_url("/admin/status"))
        .await
        .json()["state"]
        .clone()
}

/// Waits until the gateway's admin status says the backend is `want` ("up" or "down").
async fn wait_backend(gw: &Gateway, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_json(gw).await;
        if s["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "backend never {want}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_quota_exactly_under_concurrency() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = config(&redis.url(), "", &up, 20, 60);
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let _logs = LogsOnPanic(vec![&a, &b]);
    let urls = [a.url("/limited/x"), b.url("/limited/x")];

    // 2 × 25 requests at once, half through each gateway, on one bucket of 20.
    let hits = up.hits();
    let rs = fire(&urls, 25, "acme").await;
    assert_eq!(count(&rs, StatusCode::OK), 20, "{rs:?}");
    assert_eq!(count(&rs, StatusCode::TOO_MANY_REQUESTS), 30, "{rs:?}");
    // (A bucket per process would have let up to 40 through.)
    assert_eq!(
        up.hits() - hits,
        20,
        "refused requests reached the upstream"
    );
    // The refusals carry the shared bucket's state.
    let refused = rs
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    assert_eq!(refused.header("ratelimit-limit"), Some("20"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // One token an hour, none left: the next one in an hour.
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&retry), "Retry-After {retry}");

    // Another key has a bucket of its own, across both gateways too.
    let rs = fire(&urls, 12, "globex").await;
    assert_eq!(count(&rs, StatusCode::OK), 20, "{rs:?}");

    // The bucket is one key in Redis, under the prefix, with a TTL.
    let keys = redis.cli(&["--scan", "--pattern", "wasmgate:rl:*"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(keys.lines().all(|k| k.contains("rate-limit")), "{keys}");
    let k = keys.lines().next().unwrap();
    let ttl: i64 = redis.cli(&["PTTL", k]).parse().unwrap();
    assert!(ttl > 0, "{k}: PTTL {ttl}");

    // A changed quota starts fresh, as it does in memory: a gateway with a bucket of 3 for
    // the same key gets 3 through, however spent the old bucket is.
    let c = Gateway::start(&config(&redis.url(), "", &up, 3, 60));
    let rs = fire(&[c.url("/limited/x")], 5, "acme").await;
    assert_eq!(count(&rs, StatusCode::OK), 3, "{rs:?}");

    let s = status_json(&a).await;
    assert_eq!(s["backend"], "redis");
    assert_eq!(s["status"], "up");
    assert_eq!(s["per_worker"], 4, "8 connections over 2 workers: {s}");
    assert!(s["commands"]["ok"].as_u64().unwrap() >= 25, "{s}");
    let metrics = Client::new().get(&a.admin_url("/metrics")).await.text();
    assert!(metrics.contains("wasmgate_state_redis_up 1"), "{metrics}");
    assert!(
        metrics.contains("wasmgate_state_redis_commands_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasmgate_state_redis_command_duration_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_is_shared_between_gateways_and_its_ttls_expire() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = config(&redis.url(), "", &up, 5, 1);
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let _logs = LogsOnPanic(vec![&a, &b]);
    let client = Client::new();

    // Stored through one gateway, answered through the other without the upstream (the host
    // is part of the key: both are asked for the same one, as behind a balancer).
    let host = [("host", "api.example.com")];
    let r = client.get_with(&a.url("/cached/item"), &host).await;
    assert_eq!(
        (r.status, r.header("x-cache")),
        (StatusCode::OK, Some("MISS"))
    );
    let hits = up.hits();
    let r = client.get_with(&b.url("/cached/item"), &host).await;
    assert_eq!(
        (r.status, r.header("x-cache")),
        (StatusCode::OK, Some("HIT")),
        "{r:?}"
    );
    assert_eq!(up.hits(), hits);

    // The entry is in Redis, namespaced by plugin, with its TTL as PX.
    let keys = redis.cli(&["--scan", "--pattern", "wasmgate:kv:5:cache:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let pttl: i64 = redis.cli(&["PTTL", keys.trim()]).parse().unwrap();
    assert!(pttl > 0 && pttl <= 1_000, "PTTL {pttl}");

    // Past the TTL, Redis has expired it: a miss on either gateway.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(redis.cli(&["EXISTS", keys.trim()]), "0");
    let r = client.get_with(&b.url("/cached/item"), &host).await;
    assert_eq!(r.header("x-cache"), Some("MISS"), "{r:?}");
}

/// One policy's behaviour with Redis killed, then hung, then back.
async fn outage(policy: &str) {
    let mut redis = RedisServer::start();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let state = format!("timeout_ms = 100\non_unavailable = \"{policy}\"");
    let gw = Gateway::start(&config(&redis.url(), &state, &up, 3, 60));
    let _logs = LogsOnPanic(vec![&gw]);
    let url = gw.url("/limited/x");
    let client = Client::new();

    // Shared state first: the bucket of 3 is spent in Redis.
    for _ in 0..3 {
        assert_eq!(
            client.get_with(&url, &[("x-tenant", "t")]).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        client.get_with(&url, &[("x-tenant", "t")]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Killed mid-load: four clients keep going, on another key, while Redis dies under them;
    // every request is answered (200 or 429, never a 5xx), and none waits past the timeout
    // (with room for a loaded machine, well under the 1 s a reconnection attempt takes).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = Client::new();
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.push(timed(&client, &url, "load").await);
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut under_load = Vec::new();
    for l in load {
        under_load.extend(l.await.unwrap());
    }
    assert!(
        under_load.len() > 20,
        "{policy}: {} requests",
        under_load.len()
    );
    for (r, took) in &under_load {
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::TOO_MANY_REQUESTS,
            "{policy}: {r:?}"
        );
        assert!(
            *took < Duration::from_millis(900),
            "{policy}: a request took {took:?}"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (r, took) = timed(&client, &url, "t").await;
        assert!(
            took < Duration::from_millis(900),
            "{policy}: a request took {took:?}"
        );
        statuses.push(r.status);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    match policy {
        // This process's own bucket, which Redis's spending never touched: 3 pass.
        "local" => assert_eq!(ok, 3, "{policy}: {statuses:?}"),
        "allow" => assert_eq!(ok, 6, "{policy}: {statuses:?}"),
        "deny" => assert_eq!(ok, 0, "{policy}: {statuses:?}"),
        _ => unreachable!(),
    }
    wait_backend(&gw, "down").await;
    gw.assert_logged(&["state: redis unavailable"]);

    // Back, empty: shared again with no restart of the gateway.
    redis.restart();
    wait_backend(&gw, "up").await;
    gw.assert_logged(&["state: redis connected"]);
    let rs: Vec<StatusCode> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(client.get_with(&url, &[("x-tenant", "t")]).await.status);
        }
        v
    };
    assert_eq!(
        rs,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "{policy}"
    );
    assert_eq!(
        redis
            .cli(&["--scan", "--pattern", "wasmgate:rl:*"])
            .lines()
            .count(),
        1
    );

    // Hung (SIGSTOP: connections open, no answers): each request waits the timeout at most.
    redis.pause();
    for _ in 0..3 {
        let (_, took) = timed(&client, &url, "u").await;
        assert!(
            took < Duration::from_millis(900),
            "{policy}: a request took {took:?} on a hung Redis"
        );
    }
    redis.resume();
    wait_backend(&gw, "up").await;
    // Still serving, from shared state again.
    let r = client.get_with(&url, &[("x-tenant", "v")]).await;
    assert_eq!(r.status, StatusCode::OK, "{policy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_local_policy_uses_this_process_state() {
    let _serial = one_at_a_time().await;
    outage("local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_allow_policy_lets_requests_through() {
    let _serial = one_at_a_time().await;
    outage("allow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_deny_policy_refuses_requests() {
    let _serial = one_at_a_time().await;
    outage("deny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_script_survives_script_flush_and_a_restart() {
    let _serial = one_at_a_time().await;
    let mut redis = RedisServer::start();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&redis.url(), "", &up, 4, 60));
    let _logs = LogsOnPanic(vec![&gw]);
    let url = gw.url("/limited/x");
    let client = Client::new();
    let get = || client.get_with(&url, &[("x-tenant", "t")]);

    assert_eq!(get().await.status, StatusCode::OK);
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    // EVALSHA meets NOSCRIPT, loads the script again, and the bucket goes on where it was.
    for _ in 0..3 {
        assert_eq!(get().await.status, StatusCode::OK);
    }
    assert_eq!(get().await.status, StatusCode::TOO_MANY_REQUESTS);
    let s = status_json(&gw).await;
    assert_eq!(s["commands"]["error"], 0, "{s}");

    // A restart loses the script and the bucket: the script is loaded again on reconnection,
    // and the bucket is new.
    redis.restart();
    wait_backend(&gw, "up").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The first requests after the restart may still meet a dropped connection.
        let r = get().await;
        if r.status == StatusCode::OK && redis.cli(&["DBSIZE"]) == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "never shared again: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_private_ca_and_a_wrong_one() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start_tls();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let ca = redis.ca();
    let gw = Gateway::start(&config(
        &redis.url(),
        &format!("ca_file = \"{}\"", ca.display()),
        &up,
        2,
        60,
    ));
    let _logs = LogsOnPanic(vec![&gw]);
    let url = gw.url("/limited/x");
    let client = Client::new();
    for want in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(
            client.get_with(&url, &[("x-tenant", "t")]).await.status,
            want
        );
    }
    assert_eq!(
        redis
            .cli(&["--scan", "--pattern", "wasmgate:rl:*"])
            .lines()
            .count(),
        1
    );

    // A server the CA does not vouch for (the system's roots): down, logged, and the policy
    // (local) answers.
    let gw2 = Gateway::start(&config(&redis.url(), "", &up, 2, 60));
    let _logs2 = LogsOnPanic(vec![&gw2]);
    wait_backend(&gw2, "down").await;
    let s = status_json(&gw2).await;
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("cert"),
        "{s}"
    );
    let url2 = gw2.url("/limited/x");
    for want in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(
            client.get_with(&url2, &[("x-tenant", "t")]).await.status,
            want
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_is_down_at_start_is_joined_when_it_comes_up() {
    let _serial = one_at_a_time().await;
    let mut redis = RedisServer::start();
    redis.kill();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&redis.url(), "timeout_ms = 50", &up, 2, 60));
    let _logs = LogsOnPanic(vec![&gw]);
    gw.assert_logged(&["state: redis unavailable"]);
    assert_eq!(status_json(&gw).await["status"], "down");
    redis.restart();
    wait_backend(&gw, "up").await;
    let client = Client::new();
    let url = gw.url("/limited/x");
    assert_eq!(
        client.get_with(&url, &[("x-tenant", "t")]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        redis
            .cli(&["--scan", "--pattern", "wasmgate:rl:*"])
            .lines()
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approximate_limits_settle_between_gateways_every_sync_ms() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = config(&redis.url(), "sync_ms = 50", &up, 10, 60);
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let _logs = LogsOnPanic(vec![&a, &b]);
    let client = Client::new();
    let statuses = |gw: &Gateway, n: usize| {
        let (client, url) = (&client, gw.url("/limited/x"));
        async move {
            let mut oks = 0;
            for _ in 0..n {
                let r = client.get_with(&url, &[("x-tenant", "t")]).await;
                if r.status == StatusCode::OK {
                    oks += 1;
                } else {
                    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{r:?}");
                    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
                }
            }
            oks
        }
    };
    let round_trips = || -> u64 {
        redis
            .cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .map_or(0, |l| l.split(',').next().unwrap().parse().unwrap())
    };

    // Six through one gateway; once it has settled, the other sees four left, and after
    // that the first sees none.
    assert_eq!(statuses(&a, 6).await, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(statuses(&b, 6).await, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(statuses(&a, 3).await, 0);

    // A hot key costs a round trip per settlement, not per check: 200 checks, the first one
    // exact, then a settlement every 50 ms while it is in use.
    let before = round_trips();
    let started = Instant::now();
    let url = a.url("/limited/x");
    let mut oks = 0;
    for _ in 0..200 {
        let r = client.get_with(&url, &[("x-tenant", "hot")]).await;
        oks += usize::from(r.status == StatusCode::OK);
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let trips = round_trips() - before;
    let settlements = took.as_millis() as u64 / 50 + 6;
    assert_eq!(oks, 10);
    assert!(
        trips <= 1 + settlements && trips < 200,
        "{trips} round trips for 200 checks in {took:?}"
    );
    // Both buckets are in Redis, empty.
    let keys = redis.cli(&["--scan", "--pattern", "wasmgate:rl:*"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
}
