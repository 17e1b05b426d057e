mod support;

// The rate-limit plugin through the real gateway: exact bursts under concurrent load on
// pooled and fresh instances, per-header keys, route isolation and shared scopes, missing
// keys, several limits and stacked entries. Refused requests never reach the upstream.

use std::sync::Arc;

use http::StatusCode;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};
use tokio::sync::{Barrier, Mutex, MutexGuard};

/// Each test starts a gateway, which compiles the plugin on start: one test at a time, so
/// that burst of CPU does not starve another test's plugin calls past the host's call
/// deadline (a 500) on a small machine.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// A gateway with one echo upstream, the rate-limit plugin, and the given routes.
fn config(upstream: &Upstream, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[plugins.rate-limit]
path = "{plugin}"
[upstreams.up]
targets = ["{up}"]
{routes}
"#,
        plugin = plugin("rate_limit").display(),
        up = upstream.url()
    )
}

/// A route on `/NAME` with one rate-limit entry; `extra` is TOML that follows the entry.
fn route(name: &str, plugin_config: &str, extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
path_prefix = "/{name}"
upstream = "up"
[[routes.pipeline]]
plugin = "rate-limit"
config = {plugin_config}
{extra}
"#
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

/// Sends `n` requests at once, each on a connection of its own.
async fn fire(url: &str, n: usize, headers: &[(&str, &str)]) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(n));
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, url, headers) = (barrier.clone(), url.to_owned(), headers.clone());
            tokio::spawn(async move {
                let client = Client::new();
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                barrier.wait().await;
                client.get_with(&url, &headers).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn num(r: &Resp, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} on {r:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} on {r:?}: {e}"))
}

fn count(rs: &[Resp], status: StatusCode) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

/// A 429 as the plugin sends it: JSON, `Retry-After` and the `RateLimit-*` headers.
fn assert_limited(r: &Resp, limit: u64, retry_after: std::ops::RangeInclusive<u64>) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], "rate_limited");
    let retry = num(r, "retry-after");
    assert!(retry_after.contains(&retry), "Retry-After {retry} on {r:?}");
    assert_eq!(j["retry_after"], retry);
    assert_eq!(num(r, "ratelimit-limit"), limit);
    assert_eq!(num(r, "ratelimit-remaining"), 0);
    assert!(num(r, "ratelimit-reset") >= retry, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_lets_exactly_burst_requests_through() {
    let _serial = one_at_a_time().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let limit = r#"{ rate = 1, per = "hour", burst = 5 }"#;
    let routes = route("pooled", limit, "") + &route("fresh", limit, r#"instances = "fresh""#);
    let gw = Gateway::start(&config(&up, &routes));
    let _logs = LogsOnPanic(&gw);

    for name in ["pooled", "fresh"] {
        let hits = up.hits();
        let rs = fire(&gw.url(&format!("/{name}/x")), 12, &[]).await;
        assert_eq!(count(&rs, StatusCode::OK), 5, "{name}: {rs:?}");
        assert_eq!(
            count(&rs, StatusCode::TOO_MANY_REQUESTS),
            7,
            "{name}: {rs:?}"
        );
        assert_eq!(
            up.hits() - hits,
            5,
            "{name}: refused requests reached the upstream"
        );

        // The first request to reach the bucket has 4 left and the last 0. (A request that
        // read the clock just before the first one but reached the bucket after it may be
        // told one fewer than it left: the host rounds the fraction down.)
        let mut remaining: Vec<u64> = rs
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .map(|r| {
                assert_eq!(r.header("x-upstream"), Some("up"));
                assert_eq!(num(r, "ratelimit-limit"), 5);
                assert!(r.header("retry-after").is_none());
                // The bucket is full again once every taken token has refilled.
                let remaining = num(r, "ratelimit-remaining");
                assert_eq!(num(r, "ratelimit-reset"), 3_600 * (5 - remaining), "{r:?}");
                remaining
            })
            .collect();
        remaining.sort_unstable();
        assert_eq!(
            (remaining[0], remaining[4]),
            (0, 4),
            "{name}: {remaining:?}"
        );
        for r in rs.iter().filter(|r| r.status != StatusCode::OK) {
            // The next token is an hour away.
            assert_limited(r, 5, 3_500..=3_600);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_header_value_has_its_own_bucket_and_a_missing_key_is_a_400() {
    let _serial = one_at_a_time().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let routes = route(
        "keyed",
        r#"{ rate = 1, per = "hour", burst = 2, key = "header:X-Api-Key" }"#,
        "",
    ) + &route(
        "fallback",
        r#"{ rate = 1, per = "hour", burst = 1, key = "header:x-api-key", on_missing_key = "client_ip" }"#,
        "",
    );
    let gw = Gateway::start(&config(&up, &routes));
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let url = gw.url("/keyed");
    let long = "k".repeat(3_000);

    for key in ["alpha", "beta", long.as_str()] {
        let hits = up.hits();
        let rs = fire(&url, 5, &[("x-api-key", key)]).await;
        assert_eq!(count(&rs, StatusCode::OK), 2, "{key:.10}: {rs:?}");
        assert_eq!(
            count(&rs, StatusCode::TOO_MANY_REQUESTS),
            3,
            "{key:.10}: {rs:?}"
        );
        assert_eq!(up.hits() - hits, 2);
    }
    // The header name is case-insensitive; the value is not.
    let r = c.get_with(&url, &[("X-API-KEY", "alpha")]).await;
    assert_limited(&r, 2, 3_500..=3_600);
    assert_eq!(
        c.get_with(&url, &[("x-api-key", "ALPHA")]).await.status,
        StatusCode::OK
    );

    let hits = up.hits();
    for headers in [&[][..], &[("x-api-key", "")][..]] {
        let r = c.get_with(&url, headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["error"], "bad_request");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("header:x-api-key"),
            "{r:?}"
        );
    }
    assert_eq!(
        up.hits(),
        hits,
        "a request without its key reached the upstream"
    );

    // With the client_ip fallback, keyless requests share the client's bucket, which is not
    // the bucket of a key that spells the client's address.
    let url = gw.url("/fallback");
    assert_eq!(c.get(&url).await.status, StatusCode::OK);
    assert_limited(&c.get(&url).await, 1, 3_500..=3_600);
    let spelled = c.get_with(&url, &[("x-api-key", "127.0.0.1")]).await;
    assert_eq!(spelled.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_keep_their_own_buckets_unless_they_share_a_scope() {
    let _serial = one_at_a_time().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let own = r#"{ rate = 1, per = "hour", burst = 1 }"#;
    let shared = r#"{ rate = 1, per = "hour", burst = 1, scope = "partners" }"#;
    let routes = route("a", own, "")
        + &route("b", own, "")
        + &route("c", shared, "")
        + &route("d", shared, "");
    let gw = Gateway::start(&config(&up, &routes));
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();

    for r in ["a", "b"] {
        assert_eq!(
            c.get(&gw.url(&format!("/{r}"))).await.status,
            StatusCode::OK
        );
    }
    for r in ["a", "b"] {
        assert_limited(&c.get(&gw.url(&format!("/{r}"))).await, 1, 3_500..=3_600);
    }
    assert_eq!(c.get(&gw.url("/c")).await.status, StatusCode::OK);
    assert_limited(&c.get(&gw.url("/d")).await, 1, 3_500..=3_600);
    assert_limited(&c.get(&gw.url("/c")).await, 1, 3_500..=3_600);
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_limits_must_all_pass_and_the_closest_is_reported() {
    let _serial = one_at_a_time().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let routes = route(
        "multi",
        r#"{ limits = [{ rate = 3, per = "hour" }, { rate = 1, per = "second", burst = 2 }] }"#,
        "",
    );
    let gw = Gateway::start(&config(&up, &routes));
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let url = gw.url("/multi");

    // Per second: 1 left; per hour: 2 left. The per-second limit is reported.
    let r = c.get(&url).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (num(&r, "ratelimit-limit"), num(&r, "ratelimit-remaining")),
        (2, 1)
    );
    // Per second: 0 left; per hour: 1 left.
    let r = c.get(&url).await;
    assert_eq!(
        (num(&r, "ratelimit-limit"), num(&r, "ratelimit-remaining")),
        (2, 0)
    );
    // Refused by the per-second limit, which a second refills.
    assert_limited(&c.get(&url).await, 2, 1..=1);

    // The refusal did not charge the hourly limit: one more passes, and it is then the one
    // closest to refusing (both have 0 left; it refills last).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = c.get(&url).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        (num(&r, "ratelimit-limit"), num(&r, "ratelimit-remaining")),
        (3, 0)
    );
    assert!(num(&r, "ratelimit-reset") > 3_000, "{r:?}");

    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_limited(&c.get(&url).await, 3, 1_100..=1_200);
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_entries_report_the_tighter_limit_even_on_a_429() {
    let _serial = one_at_a_time().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let routes = route(
        "stacked",
        r#"{ rate = 100, per = "minute" }"#,
        r#"
[[routes.pipeline]]
plugin = "rate-limit"
config = { rate = 1, per = "hour", burst = 1, key = "header:x-k" }
"#,
    );
    let gw = Gateway::start(&config(&up, &routes));
    let _logs = LogsOnPanic(&gw);
    let c = Client::new();
    let url = gw.url("/stacked");

    let r = c.get_with(&url, &[("x-k", "k")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (num(&r, "ratelimit-limit"), num(&r, "ratelimit-remaining")),
        (1, 0)
    );
    // The second entry refuses; the first entry's response phase keeps its numbers.
    let r = c.get_with(&url, &[("x-k", "k")]).await;
    assert_limited(&r, 1, 3_500..=3_600);
    assert_eq!(r.headers.get_all("ratelimit-limit").iter().count(), 1);
    // Without x-k the second entry answers 400; the first entry still reports its limit.
    let r = c.get(&url).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(num(&r, "ratelimit-limit"), 100);
    assert_eq!(num(&r, "ratelimit-remaining"), 97);
    assert_eq!(up.hits(), 1);
}
