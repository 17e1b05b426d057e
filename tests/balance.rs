//! Balancing over real upstream servers: weights split traffic as configured, least
//! connections sends less to a slow target, and a consistent hash keeps each key on its target
//! when a target is added, moving about its share of keys to it and no others.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway};

/// Which upstream answered each of `n` GETs of `path`, `concurrency` at a time, with
/// `header(i)` on request `i`.
async fn spread(
    gw: &Gateway,
    path: &str,
    n: usize,
    concurrency: usize,
    header: impl Fn(usize) -> Option<(String, String)>,
) -> Vec<String> {
    let client = Client::new();
    let mut answered = Vec::with_capacity(n);
    let ids: Vec<usize> = (0..n).collect();
    for batch in ids.chunks(concurrency) {
        let calls = batch.iter().map(|&i| {
            let h = header(i);
            let client = client.clone();
            let url = gw.url(path);
            async move {
                let headers: Vec<(&str, &str)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                client.get_with(&url, &headers).await
            }
        });
        for resp in join_all(calls).await {
            assert_eq!(resp.status, 200, "{}", resp.text());
            answered.push(resp.json()["upstream"].as_str().unwrap().to_owned());
        }
    }
    answered
}

fn counts(answered: &[String]) -> HashMap<&str, usize> {
    let mut c = HashMap::new();
    for a in answered {
        *c.entry(a.as_str()).or_default() += 1;
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_split_traffic_as_configured() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    for balance in ["round_robin", "random", "least_connections"] {
        let cfg = GatewayConfig::new()
            .upstream_weighted(
                "app",
                &[(&a.url(), 3), (&b.url(), 1)],
                &[&format!("balance = {balance:?}")],
            )
            .route("all", "/", "app");
        let gw = Gateway::start(&cfg.to_string());
        let answered = spread(&gw, "/", 4000, 16, |_| None).await;
        let c = counts(&answered);
        let share = c["a"] as f64 / 4000.0;
        // 3:1 is 75%; within ±5% of it. Least connections follows weights only under load,
        // so it gets a wider band.
        let band = if balance == "least_connections" {
            0.15
        } else {
            0.0375
        };
        assert!(
            (share - 0.75).abs() <= band,
            "{balance}: {c:?} ({share:.3} to the weight-3 target)"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_connections_sends_less_to_a_slow_target() {
    let fast = Upstream::start("fast", Behaviour::Echo).await;
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_millis(300))).await;
    let cfg = GatewayConfig::new()
        .upstream_with(
            "app",
            &[&fast.url(), &slow.url()],
            &[r#"balance = "least_connections""#],
        )
        .route("all", "/", "app");
    let gw = Gateway::start(&cfg.to_string());
    // 20 clients, each sending its next request as soon as the last is answered.
    let client = Client::new();
    let loops = (0..20).map(|_| {
        let (client, url) = (client.clone(), gw.url("/"));
        async move {
            let mut answered = Vec::new();
            for _ in 0..30 {
                let resp = client.get(&url).await;
                assert_eq!(resp.status, 200);
                answered.push(resp.json()["upstream"].as_str().unwrap().to_owned());
            }
            answered
        }
    });
    let answered: Vec<String> = join_all(loops).await.into_iter().flatten().collect();
    let c = counts(&answered);
    let slow_share = c.get("slow").copied().unwrap_or(0) as f64 / 600.0;
    // Round robin would send it half; it holds its requests longest, so it gets far fewer.
    assert!(slow_share < 0.25, "{c:?}");
    assert!(
        c.contains_key("slow"),
        "the slow target is still used: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consistent_hash_moves_only_about_a_quarter_of_keys_to_a_fourth_target() {
    let ups = [
        Upstream::start("t0", Behaviour::Echo).await,
        Upstream::start("t1", Behaviour::Echo).await,
        Upstream::start("t2", Behaviour::Echo).await,
        Upstream::start("t3", Behaviour::Echo).await,
    ];
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let placement = |n: usize| {
        let targets: Vec<&str> = urls[..n].iter().map(String::as_str).collect();
        GatewayConfig::new()
            .upstream_with(
                "app",
                &targets,
                &[r#"balance = "hash""#, r#"hash_on = "header:x-user""#],
            )
            .route("all", "/", "app")
            .to_string()
    };
    let user = |i: usize| Some(("x-user".to_owned(), format!("user-{i}")));
    let three = Gateway::start(&placement(3));
    let before = spread(&three, "/", 2000, 32, user).await;
    // The same key, the same target, every time.
    let again = spread(&three, "/", 2000, 32, user).await;
    assert_eq!(before, again);
    drop(three);

    let four = Gateway::start(&placement(4));
    let after = spread(&four, "/", 2000, 32, user).await;
    let moved: Vec<usize> = (0..2000).filter(|&i| before[i] != after[i]).collect();
    assert!(
        moved.iter().all(|&i| after[i] == "t3"),
        "a key only moves to the new target"
    );
    let share = moved.len() as f64 / 2000.0;
    assert!((0.18..=0.32).contains(&share), "{share:.3} of keys moved");
    // Keys without the header go round robin: every target sees them.
    let keyless = counts(&spread(&four, "/", 400, 8, |_| None).await).len();
    assert_eq!(keyless, 4);
}

/// Statuses of `n` GETs of `path`, one after another.
async fn statuses(gw: &Gateway, n: usize) -> Vec<u16> {
    let client = Client::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client.get(&gw.url("/")).await.status.as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_target_is_ejected_and_out_longer_when_it_fails_again() {
    let good = Upstream::start("good", Behaviour::Echo).await;
    let dead = format!("http://127.0.0.1:{}", support::closed_port());
    let cfg = GatewayConfig::new()
        .upstream_with(
            "app",
            &[&good.url(), &dead],
            &[
                "[upstreams.app.passive]",
                "max_failures = 3",
                "eject_ms = 1500",
            ],
        )
        .route("all", "/", "app");
    let gw = Gateway::start(&cfg.to_string());
    // Round robin: every other request meets the dead target until it has failed 3 times.
    let first = statuses(&gw, 60).await;
    assert_eq!(first.iter().filter(|s| **s == 502).count(), 3, "{first:?}");
    assert!(first[6..].iter().all(|s| *s == 200), "{first:?}");
    // Back after its time, it fails 3 more times and is out twice as long.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let second = statuses(&gw, 40).await;
    assert_eq!(
        second.iter().filter(|s| **s == 502).count(),
        3,
        "{second:?}"
    );
    let logs = gw.logs_containing(&["\"eject_ms\":3000"]);
    let ejections: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("target ejected"))
        .collect();
    assert_eq!(ejections.len(), 2, "each ejection logged once: {logs}");
    assert!(
        ejections[0].contains("\"eject_ms\":1500"),
        "{}",
        ejections[0]
    );
    assert!(logs.contains("target returned from ejection"));
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_target_is_out_the_client_gets_503() {
    let dead: Vec<String> = (0..2)
        .map(|_| format!("http://127.0.0.1:{}", support::closed_port()))
        .collect();
    let cfg = GatewayConfig::new()
        .upstream_with(
            "app",
            &[&dead[0], &dead[1]],
            &[
                "[upstreams.app.passive]",
                "max_failures = 1",
                "max_ejected_percent = 100",
            ],
        )
        .route("all", "/", "app");
    let gw = Gateway::start(&cfg.to_string());
    assert_eq!(statuses(&gw, 2).await, [502, 502]);
    let resp = Client::new().get(&gw.url("/")).await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "upstream_unavailable");
}
