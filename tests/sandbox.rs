//! The sandbox: hostile plugins through the real gateway. Each attack must fail only its own
//! request (with the configured policy), never the process, never other routes, and leave
//! memory where it was.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, plugin};

/// One route per hostile behaviour (`/h/NAME`), plus a healthy route `/ok`. The sleeping
/// routes run `sleeper`, which waits through WASI and so is called on fibers; `hostile` is
/// called directly.
fn config(up: &Upstream, extra: &str) -> String {
    let behaviours = [
        ("loop", ""),
        ("grow_memory", ""),
        ("recurse", ""),
        ("panic", ""),
        ("bad_header_name", ""),
        ("bad_header_value", ""),
        ("bad_status", ""),
        ("huge_body", ""),
        ("absurd_host_args", ""),
        ("spin", ", ms = 30"),
        ("print", ", ms = 3"),
        ("counter", ""),
        ("leak", ", kib = 512"),
    ];
    let mut routes = String::new();
    for (b, args) in behaviours {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{b}\"\npath_prefix = \"/h/{b}\"\nupstream = \"up\"\n[[routes.pipeline]]\nplugin = \"hostile\"\nconfig = {{ behaviour = \"{b}\"{args} }}\n"
        ));
    }
    for (name, ms) in [("sleep", 30), ("sleep_forever", 3_600_000)] {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"/h/{name}\"\nupstream = \"up\"\n[[routes.pipeline]]\nplugin = \"sleeper\"\nconfig = {{ ms = {ms} }}\n"
        ));
    }
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1048576
[admin]
listen = "127.0.0.1:0"
[wasm]
call_timeout_ms = 100
[plugins.hostile]
path = "{hostile}"
[plugins.sleeper]
path = "{sleeper}"
[upstreams.up]
targets = ["{up}"]
[[routes]]
name = "ok"
path_prefix = "/ok"
upstream = "up"
{routes}
{extra}
"#,
        hostile = plugin("hostile").display(),
        sleeper = plugin("sleeper").display(),
        up = up.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_fails_only_its_own_request() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let mut gw = Gateway::start(&config(&up, ""));
    let c = Client::new();
    let cases = [
        ("loop", "timeout"),
        ("sleep_forever", "timeout"),
        ("grow_memory", "memory"),
        ("recurse", "trap"),
        ("panic", "trap"),
        ("bad_header_name", "bad_output"),
        ("bad_header_value", "bad_output"),
        ("bad_status", "bad_output"),
        ("huge_body", "bad_output"),
    ];
    for (name, kind) in cases {
        let started = Instant::now();
        let r = c.get(&gw.url(&format!("/h/{name}"))).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{name}: {}",
            r.text()
        );
        assert_eq!(r.json()["error"], "plugin_error", "{name}");
        assert!(r.header("x-injected").is_none());
        // The loop is stopped within its 100 ms deadline plus a tick (generously bounded here;
        // the benchmark suite measures it).
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name} took {:?}",
            started.elapsed()
        );
        let metrics = c.get(&gw.admin_url("/metrics")).await.text();
        let plugin = if name.starts_with("sleep") {
            "sleeper"
        } else {
            "hostile"
        };
        let line = format!(
            r#"wasmgate_plugin_errors_total{{route="{name}",plugin="{plugin}",kind="{kind}"}}"#
        );
        assert!(metrics.contains(&line), "{name}: no {line} in\n{metrics}");
        assert!(gw.is_running());
        assert_eq!(
            c.get(&gw.url("/ok")).await.status,
            StatusCode::OK,
            "after {name}"
        );
    }
    // The loop was interrupted by its tick budget (at about 100 ms of running), not by the
    // ten-times wall-clock backstop, which names itself differently.
    let logs = gw.logs();
    let loop_failure = logs
        .lines()
        .find(|l| l.contains("plugin failed") && l.contains("\"route\":\"loop\""))
        .unwrap_or_else(|| panic!("no failure logged for the loop:\n{logs}"));
    assert!(
        loop_failure.contains("ran past its 100 ms deadline"),
        "{loop_failure}"
    );
    // `hostile` was called directly, so its loop could not yield; from that timeout on, the
    // loop route's calls run on fibers (the second round below times out there too).
    assert!(
        logs.lines()
            .any(|l| l.contains("now run on fibers") && l.contains("\"route\":\"loop\"")),
        "no move to fibers logged for the loop:\n{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("now run on fibers") && !l.contains("\"route\":\"loop\"")),
        "only the loop moved to fibers:\n{logs}"
    );
    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    let calls = |route: &str| {
        routes["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == route))
            .map(|r| r["pipeline"][0]["calls"].clone())
            .unwrap_or_else(|| panic!("no route {route} in {routes}"))
    };
    assert_eq!(calls("loop"), "fibers");
    assert_eq!(calls("panic"), "direct");
    assert_eq!(
        calls("sleep_forever"),
        "fibers",
        "sleeper waits through WASI"
    );

    // A second round: trapped instances were replaced, not reused in a broken state.
    for (name, _) in cases {
        assert_eq!(
            c.get(&gw.url(&format!("/h/{name}"))).await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(
        up.hits(),
        cases.len() as u64,
        "only /ok reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_host_arguments_are_refused_and_the_request_goes_on() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, ""));
    let c = Client::new();
    for _ in 0..3 {
        let r = c.get(&gw.url("/h/absurd_host_args")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(
            r.json()["path"],
            "/h/absurd_host_args",
            "path rewrite to 2 MiB was refused"
        );
    }
    // The 2 MiB log line was cut.
    let longest = gw.logs().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 * 1024, "a log line of {longest} bytes");
    // Every refused call was counted: one line per request and kind, with the count and the
    // first refusal's detail (cut short).
    let expected = [
        ("kv", 2, "kv.set: key of 2097152 bytes"),
        ("rate_limit", 3, "limiter.open: count and burst"),
        ("set_var", 1, "of 4194304 bytes, over 16384"),
        ("header", 1, "request.set-header \"kkkk"),
        ("body", 1, "body-not-declared"),
        ("path", 1, "set-path \"kkkk"),
    ];
    let refused = refusal_lines(&gw, "absurd_host_args", 3 * expected.len());
    for (kind, count, first) in expected {
        let lines: Vec<_> = refused.iter().filter(|l| l["kind"] == kind).collect();
        assert_eq!(lines.len(), 3, "one {kind} line per request: {refused:#?}");
        for l in lines {
            assert_eq!(l["count"], count, "{l}");
            assert_eq!(l["plugin"], "hostile", "{l}");
            let detail = l["first"].as_str().unwrap();
            assert!(detail.contains(first) && detail.len() <= 256, "{l}");
        }
    }
}

/// The gateway's "plugin output refused" lines for `route`, parsed, once there are at least
/// `n` of them (or after 10 s, for the caller's assertion to fail on).
fn refusal_lines(gw: &Gateway, route: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = json_lines(gw)
            .into_iter()
            .filter(|l| l["message"] == "plugin output refused" && l["route"] == route)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.logs()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const VAR_FLOOD: &str = r#"
[[routes]]
name = "var_flood"
path_prefix = "/var_flood"
upstream = "up"
[[routes.pipeline]]
plugin = "hostile"
config = { behaviour = "var_flood", count = 10000 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_refused_calls_make_one_log_line() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, VAR_FLOOD));
    let c = Client::new();
    for round in 1..=2 {
        // 10,000 host calls fit in the plugin's 100 ms: nothing is logged while it runs.
        let r = c.get(&gw.url("/var_flood")).await;
        assert_eq!(r.status, StatusCode::OK, "round {round}: {}", r.text());
        assert_eq!(r.json()["path"], "/var_flood");
        let lines = refusal_lines(&gw, "var_flood", round);
        assert_eq!(lines.len(), round, "one line per request: {lines:#?}");
        let l = &lines[round - 1];
        assert_eq!(l["level"], "WARN", "{l}");
        assert_eq!(l["kind"], "set_var", "{l}");
        assert_eq!(l["plugin"], "hostile", "{l}");
        assert_eq!(
            l["count"],
            10_000 - 128,
            "the first 128 variables were kept: {l}"
        );
        assert!(
            l["first"]
                .as_str()
                .unwrap()
                .contains("\"flood-128\" past the 128 a request may carry"),
            "{l}"
        );
        assert!(l["request_id"].is_string(), "{l}");
    }
    let lines = refusal_lines(&gw, "var_flood", 2);
    assert_ne!(lines[0]["request_id"], lines[1]["request_id"]);
    let logs = gw.logs();
    assert_eq!(
        logs.lines().filter(|l| l.contains("var_flood")).count(),
        2,
        "nothing else was logged for the route:\n{logs}"
    );
    assert!(logs.len() < 64 * 1024, "{} bytes of log", logs.len());
    assert_eq!(c.get(&gw.url("/ok")).await.status, StatusCode::OK);
}

const LOG_FLOODS: &str = r#"
[[routes]]
name = "log_flood"
path_prefix = "/log_flood"
upstream = "up"
[[routes.pipeline]]
plugin = "hostile"
config = { behaviour = "log_flood", count = 10000 }
[[routes]]
name = "print_flood"
path_prefix = "/print_flood"
upstream = "up"
[[routes.pipeline]]
plugin = "hostile"
config = { behaviour = "print", ms = 10000 }
"#;

/// Lines the flooding modes wrote that reached the log, for `plugin`.
fn flood_lines(gw: &Gateway, plugin: &str) -> usize {
    json_lines(gw)
        .iter()
        .filter(|l| {
            l["plugin"] == plugin
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("hostile ") && m.contains(" line "))
        })
        .count()
}

async fn dropped_metric(c: &Client, gw: &Gateway, plugin: &str) -> u64 {
    let metrics = c.get(&gw.admin_url("/metrics")).await.text();
    let prefix = format!("wasmgate_plugin_log_dropped_total{{plugin=\"{plugin}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        .parse()
        .unwrap()
}

fn drop_summaries(gw: &Gateway, plugin: &str) -> Vec<serde_json::Value> {
    json_lines(gw)
        .into_iter()
        .filter(|l| {
            l["plugin"] == plugin
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("dropped "))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_floods_its_log_is_capped_and_the_drops_counted() {
    // The default budget: a burst of 200 lines, then 100 a second.
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, LOG_FLOODS));
    let c = Client::new();
    let started = Instant::now();

    let r = c.get(&gw.url("/log_flood")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.logs_containing(&["dropped "]);
    let logged = flood_lines(&gw, "hostile");
    let cap = 200 + (100.0 * started.elapsed().as_secs_f64()).ceil() as usize + 1;
    assert!(
        (200..=cap).contains(&logged),
        "{logged} of 10,000 lines logged, cap {cap}"
    );
    assert_eq!(
        dropped_metric(&c, &gw, "hostile").await,
        10_000 - logged as u64
    );
    let summaries = drop_summaries(&gw, "hostile");
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert_eq!(summaries[0]["dropped"], 10_000 - logged as u64);
    assert_eq!(summaries[0]["level"], "WARN");
    let message = summaries[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "dropped {} log lines from plugin hostile",
            10_000 - logged
        )),
        "{message}"
    );

    // Printing shares the budget: 10,000 lines to stdout and as many to stderr.
    let r = c.get(&gw.url("/print_flood")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let logged = flood_lines(&gw, "hostile");
    let cap = 200 + (100.0 * started.elapsed().as_secs_f64()).ceil() as usize + 1;
    assert!(logged <= cap, "{logged} lines logged, cap {cap}");
    assert_eq!(
        dropped_metric(&c, &gw, "hostile").await,
        30_000 - logged as u64
    );
    assert_eq!(
        drop_summaries(&gw, "hostile").len(),
        1,
        "at most one summary per 10 s"
    );
    let total = gw.logs().len();
    assert!(total < 512 * 1024, "{total} bytes of log");

    // The plugin and the gateway go on.
    assert_eq!(c.get(&gw.url("/h/counter")).await.status, StatusCode::OK);
    assert_eq!(c.get(&gw.url("/ok")).await.status, StatusCode::OK);
    assert_eq!(c.get(&gw.url("/log_flood")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_budgets_are_per_plugin_and_configurable() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    // `other` is the same component under another name: a budget of its own, from [wasm].
    let cfg = config(
        &up,
        &format!(
            "[plugins.other]\npath = \"{}\"\n{LOG_FLOODS}[[routes]]\nname = \"other_flood\"\npath_prefix = \"/other_flood\"\nupstream = \"up\"\n[[routes.pipeline]]\nplugin = \"other\"\nconfig = {{ behaviour = \"log_flood\", count = 10000 }}\n",
            plugin("hostile").display()
        ),
    )
    .replace(
        "[wasm]\n",
        "[wasm]\nlog_burst = 10\nlog_lines_per_second = 1\n",
    )
    .replace("[plugins.hostile]\n", "[plugins.hostile]\nlog_burst = 3\n");
    let gw = Gateway::start(&cfg);
    let c = Client::new();
    let started = Instant::now();
    for path in ["/log_flood", "/other_flood"] {
        assert_eq!(c.get(&gw.url(path)).await.status, StatusCode::OK);
    }
    let refill = started.elapsed().as_secs() as usize + 1;
    gw.logs_containing(&["plugin hostile", "plugin other"]);
    let (hostile, other) = (flood_lines(&gw, "hostile"), flood_lines(&gw, "other"));
    assert!((3..=3 + refill).contains(&hostile), "hostile: {hostile}");
    assert!((10..=10 + refill).contains(&other), "other: {other}");
    assert_eq!(
        dropped_metric(&c, &gw, "hostile").await,
        10_000 - hostile as u64
    );
    assert_eq!(
        dropped_metric(&c, &gw, "other").await,
        10_000 - other as u64
    );
}

/// A worker keeps at most two pooled instances of an entry alive: six requests at once to a
/// plugin that waits 100 ms in each call, on one worker, are served two at a time, in three
/// waves. Were an instance made for each waiting request, all six would end together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_at_most_two_instances_of_an_entry() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server("workers = 1")
            .plugin("sleeper", &plugin("sleeper"))
            .upstream("up", &up.url())
            .route("sleep", "/sleep", "up")
            .stage("sleeper", "{ ms = 100 }")
            .raw("[wasm]\ncall_timeout_ms = 100\n")
            .to_string(),
    );
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/sleep")).await.status, StatusCode::OK);
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/sleep"));
            tokio::spawn(async move { c.get(&url).await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290),
        "six 100 ms calls on two instances took {took:?}: more instances ran them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_plugins_do_not_stall_other_routes() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, ""));
    let c = Client::new();
    // Hammer the routes whose plugin sleeps or spins 30 ms (under the 100 ms deadline) ...
    let mut hammers = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        let url = gw.url(if i % 2 == 0 { "/h/sleep" } else { "/h/spin" });
        hammers.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..10 {
                if c.get(&url).await.status == StatusCode::OK {
                    ok += 1;
                }
            }
            ok
        }));
    }
    // ... while the healthy route keeps answering.
    let mut worst = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        assert_eq!(c.get(&gw.url("/ok")).await.status, StatusCode::OK);
        worst = worst.max(started.elapsed());
    }
    for h in hammers {
        assert_eq!(h.await.unwrap(), 10, "slow but in-deadline plugins succeed");
    }
    assert!(
        worst < Duration::from_secs(1),
        "the healthy route waited {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_skip_lets_the_request_through() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "skip"
path_prefix = "/skip"
upstream = "up"
[[routes.pipeline]]
plugin = "hostile"
on_error = "skip"
config = { behaviour = "panic" }
"#,
    ));
    let c = Client::new();
    let r = c.get(&gw.url("/skip/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/skip/x");
    assert!(
        gw.logs().contains("\"on_error\":\"skip\""),
        "the failure is still logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_baseline_after_hostile_load() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, ""));
    let c = Client::new();
    for _ in 0..3 {
        c.get(&gw.url("/h/grow_memory")).await;
        c.get(&gw.url("/ok")).await;
    }
    let baseline = gw.mem_kib("VmRSS");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let url = gw.url("/h/grow_memory");
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                assert_eq!(c.get(&url).await.status, StatusCode::INTERNAL_SERVER_ERROR);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = gw.mem_kib("VmRSS");
    assert!(
        after < baseline + 24 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB after 40 plugins hit their 16 MiB limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_reach_the_log() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, ""));
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/h/print")).await.status, StatusCode::OK);
    let logs = gw.logs();
    for stream in ["stdout", "stderr"] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("hostile {stream} line 2"))
                    && l.contains("\"route\":\"print\"")
                    && l.contains("\"plugin\":\"hostile\"")
                    && l.contains(&format!("\"stream\":\"{stream}\""))),
            "{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_globals_persist_until_recycled_and_fresh_ones_never_do() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(
        &up,
        r#"
[[routes]]
name = "fresh-counter"
path_prefix = "/fresh"
upstream = "up"
[[routes.pipeline]]
plugin = "hostile"
instances = "fresh"
config = { behaviour = "counter" }
"#,
    ));
    let c = Client::new();
    let pooled: Vec<u64> = futures_seq(&c, &gw.url("/h/counter"), 4).await;
    assert!(
        pooled.windows(2).any(|w| w[1] > w[0]),
        "pooled globals persist: {pooled:?}"
    );
    let fresh: Vec<u64> = futures_seq(&c, &gw.url("/fresh"), 4).await;
    assert_eq!(fresh, vec![1, 1, 1, 1], "fresh instances share nothing");

    // With max_uses, a pooled instance is replaced after that many calls.
    drop(gw);
    let mut cfg = config(&up, "");
    cfg = cfg.replace("[plugins.hostile]\n", "[plugins.hostile]\nmax_uses = 2\n");
    let gw = Gateway::start(&cfg);
    let seen = futures_seq(&c, &gw.url("/h/counter"), 6).await;
    assert!(
        seen.iter().all(|&n| n <= 2),
        "recycled after 2 uses: {seen:?}"
    );
}

async fn futures_seq(c: &Client, url: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.get(url).await;
        assert_eq!(r.status, StatusCode::OK);
        out.push(r.text().parse().unwrap());
    }
    out
}

#[test]
fn ungranted_capabilities_are_refused_at_load() {
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[plugins.hostile]\npath = \"{}\"\ncapabilities = [\"log\"]\n",
        plugin("hostile").display()
    );
    let (ok, out) = support::check(&cfg);
    assert!(!ok);
    assert!(
        out.contains("plugin `hostile` imports wasmgate:plugin/")
            && out.contains("not granted (capabilities = [log])"),
        "{out}"
    );
    let granted = cfg.replace("[\"log\"]", "[\"log\", \"kv\", \"rate-limit\", \"clock\"]");
    let (ok, out) = support::check(&granted);
    assert!(ok, "{out}");
    let (ok, out) = support::check(&cfg.replace("[\"log\"]", "[\"fs\"]"));
    assert!(!ok && out.contains("unknown capability `fs`"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_gives_a_deterministic_cut_off() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = config(&up, "").replace(
        "[plugins.hostile]\n",
        "[plugins.hostile]\nfuel_per_call = 1000000\n",
    );
    let gw = Gateway::start(&cfg);
    let c = Client::new();
    let started = Instant::now();
    let r = c.get(&gw.url("/h/loop")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(started.elapsed() < Duration::from_secs(2));
    let metrics = c.get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"route="loop",plugin="hostile",kind="fuel"}"#),
        "{metrics}"
    );
    // Well-behaved calls fit in the budget.
    assert_eq!(c.get(&gw.url("/h/counter")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_keeps_growing_is_replaced_before_it_runs_out() {
    // 512 KiB leaked per call against the default 16 MiB: an instance kept for good would run
    // out within about 30 calls and fail one. The pool replaces it first, between calls.
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&config(&up, ""));
    let c = Client::new();
    let mut seen = Vec::new();
    for _ in 0..120 {
        let r = c.get(&gw.url("/h/leak")).await;
        assert_eq!(r.status, StatusCode::OK, "no call runs out of memory");
        seen.push(r.text().parse::<u64>().unwrap());
    }
    let max = *seen.iter().max().unwrap();
    assert!(
        max < 32,
        "instances were replaced before their memory ran out: {seen:?}"
    );
    assert!(
        max > 4,
        "an instance with room left is reused, not replaced at every call: {seen:?}"
    );
    assert!(
        !gw.logs().contains("plugin failed"),
        "no request failed: {}",
        gw.logs()
    );
}
