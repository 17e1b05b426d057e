//! The end-to-end benchmark suite: the release gateway against nginx (also with S3's header work
//! in Lua) and HAProxy, all in front of the same local nginx upstream, loaded by wrk. Results go
//! to `BENCHMARKS.md`.
//!
//! - [`arguments`]: the command line;
//! - [`processes`]: the processes the suite starts, and their CPU and memory from `/proc`;
//! - [`peers`]: the upstream, the proxies and the gateway, and the tools the suite needs;
//! - [`wrk`]: the load, and the checks before it;
//! - [`stats`]: medians, spreads and how numbers are written;
//! - [`report`]: the results as Markdown, and `BENCHMARKS.md`;
//! - [`payloads`] and [`reload`]: the bodies and token the load sends, and the reload test.

mod arguments;
mod payloads;
mod peers;
mod processes;
mod reload;
mod report;
mod stats;
mod wrk;

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use anyhow::Result;

pub use arguments::Args;
use peers::start_peers;
use processes::{clk_tck, loadavg, run_cmd};
use reload::reload_latency;
use report::{Downloads, Noisy, RunInfo, report, write_results};
use stats::{fmt_us, median};
use wrk::{Ctx, Run};

use crate::root;

/// The size of S7's download.
const BIG_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    Nginx,
    /// nginx as the proxy with S3's header work in its Lua module (S3-lua).
    NginxLua,
    Haproxy,
    Wasmgate,
    /// The gateway with `[state] backend = "redis"`, on a redis-server of the suite's own.
    WasmgateRedis,
    /// The same, with approximate rate limits (`sync_ms = 50`).
    WasmgateRedisSync,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct (no proxy)",
            Target::Nginx => "nginx",
            Target::NginxLua => "nginx + Lua",
            Target::Haproxy => "HAProxy",
            Target::Wasmgate => "wasmgate",
            Target::WasmgateRedis => "wasmgate, state on Redis",
            Target::WasmgateRedisSync => "wasmgate, state on Redis, sync_ms = 50",
        }
    }
}

const ALL: &[Target] = &[
    Target::Direct,
    Target::Nginx,
    Target::Haproxy,
    Target::Wasmgate,
];
const GATEWAY: &[Target] = &[Target::Wasmgate];
/// The proxies that have a TLS listener.
const TLS_PEERS: &[Target] = &[Target::Nginx, Target::Haproxy, Target::Wasmgate];
const NGINX_LUA: &[Target] = &[Target::NginxLua];
const ON_REDIS: &[Target] = &[Target::WasmgateRedis];
const ON_REDIS_SYNC: &[Target] = &[Target::WasmgateRedisSync];

/// The scenarios of `--quick`: the plain path, answered from the cache, in front of four
/// targets and over TLS; one pooled plugin and its nginx + Lua counterpart; the pipelines of
/// three (S4 in memory and on Redis, S9); and S10's aggregation beside its counterparts.
const QUICK: &[&str] = &[
    "S1",
    "S1-hit",
    "S1-4t",
    "S1-TLS",
    "S3-pooled",
    "S3-lua",
    "S4",
    "S4-c1",
    "S4-redis",
    "S4-redis-c1",
    "S4-redis-sync",
    "S9",
    "S10",
    "S10-part",
    "S10-lua",
];

/// The response headers of S3's header work (and S4's), which the check before any load wants
/// in the answer.
const S3_HEADERS: &[&str] = &["x-request-id", "x-served-by"];

/// S9's request headers: its API key, and the page's origin that CORS allows.
const S9_HEADERS: &[(&str, &str)] = &[
    ("X-API-Key", payloads::API_KEY),
    ("Origin", "https://app.example.com"),
];

/// S8's healthy route (no plugins) and its noisy neighbour, whose plugin loops until its
/// deadline; both on the gateway's workers alike.
const NOISY_HEALTHY: &str = "/plain/hello";
const NOISY_LOOP: &str = "/loop/x";
/// S8's phases: how many clients hammer the looping route while the healthy one is measured.
const NOISY_PHASES: [u32; 3] = [0, 1, 4];
/// Longest S8 phase, in seconds: enough requests for a p99 at two connections.
const NOISY_SECONDS: u32 = 5;

/// A scenario's defaults: on the gateway alone, keep-alive, `GET` without a token, at
/// `--connections`, with no response header checked.
impl Scenario {
    const fn new(id: &'static str, title: &'static str, path: &'static str, plugins: u32) -> Self {
        Self {
            id,
            title,
            path,
            targets: GATEWAY,
            close: false,
            auth: false,
            post_json: false,
            plugins,
            single: false,
            response_headers: &[],
            tls: false,
            h2: false,
            request_headers: &[],
            new_query: false,
            primed: false,
        }
    }

    /// On the TLS listeners, with HTTP/1.1.
    const fn over_tls(mut self) -> Self {
        self.tls = true;
        self.targets = TLS_PEERS;
        self
    }

    /// On the TLS listeners, with HTTP/2 (h2load instead of wrk).
    const fn over_h2(mut self) -> Self {
        self.h2 = true;
        self.over_tls()
    }

    const fn on(mut self, targets: &'static [Target]) -> Self {
        self.targets = targets;
        self
    }

    const fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    const fn with_token(mut self) -> Self {
        self.auth = true;
        self
    }

    const fn posting_json(mut self) -> Self {
        self.post_json = true;
        self
    }

    const fn one_connection(mut self) -> Self {
        self.single = true;
        self
    }

    const fn wanting(mut self, headers: &'static [&'static str]) -> Self {
        self.response_headers = headers;
        self
    }

    const fn sending(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.request_headers = headers;
        self
    }

    /// Each request with a query of its own (`?n=THREAD-COUNT`), so no two share a cache key.
    const fn each_new(mut self) -> Self {
        self.new_query = true;
        self
    }

    /// The check sends the request once before the one it checks (a cache's first answer is a
    /// miss).
    const fn primed(mut self) -> Self {
        self.primed = true;
        self
    }
}

#[derive(Debug)]
struct Scenario {
    id: &'static str,
    title: &'static str,
    path: &'static str,
    targets: &'static [Target],
    close: bool,
    auth: bool,
    post_json: bool,
    /// How many plugins the pipeline runs, for the added latency per plugin.
    plugins: u32,
    /// One connection instead of `--connections`: latency without queueing.
    single: bool,
    /// Response headers the check before any load wants in the answer: a name, or `name: value`
    /// for that value exactly.
    response_headers: &'static [&'static str],
    /// Request headers sent besides the token.
    request_headers: &'static [(&'static str, &'static str)],
    new_query: bool,
    primed: bool,
    /// Over TLS (the peers' TLS listeners), and with HTTP/2.
    tls: bool,
    h2: bool,
}

const SCENARIOS: &[Scenario] = &[
    // The latency probes first: one connection, so p50 is a request's own time through the
    // gateway, without the queueing that 50 connections on 2 cores add.
    Scenario::new("S1-c1", "empty pipeline, one connection", "/plain/hello", 0).one_connection(),
    Scenario::new(
        "S3-pooled-c1",
        "headers plugin, pooled, one connection",
        "/headers-pooled/hello",
        1,
    )
    .one_connection()
    .wanting(S3_HEADERS),
    Scenario::new("S1", "empty pipeline, keep-alive", "/plain/hello", 0).on(ALL),
    // S1's request answered by the cache plugin: what a hit costs against proxying.
    Scenario::new(
        "S1-hit",
        "S1's request, a cache HIT (cache plugin)",
        "/cached/hello",
        1,
    )
    .primed()
    .wanting(&["x-cache: HIT", "age"]),
    Scenario::new(
        "S1-4t",
        "empty pipeline, keep-alive, a 4-target upstream with health checks and a breaker",
        "/four/hello",
        0,
    ),
    Scenario::new(
        "S2",
        "a new connection per request (Connection: close)",
        "/plain/hello",
        0,
    )
    .on(ALL)
    .closing(),
    Scenario::new(
        "S1-TLS",
        "empty pipeline, keep-alive, over TLS",
        "/plain/hello",
        0,
    )
    .over_tls(),
    Scenario::new(
        "S2-TLS",
        "a new TLS connection per request (Connection: close)",
        "/plain/hello",
        0,
    )
    .over_tls()
    .closing(),
    Scenario::new(
        "S1-h2",
        "empty pipeline, HTTP/2 over TLS (h2load, 10 streams per connection)",
        "/plain/hello",
        0,
    )
    .over_h2(),
    Scenario::new(
        "S3-fresh",
        "headers plugin, fresh instances",
        "/headers-fresh/hello",
        1,
    )
    .wanting(S3_HEADERS),
    Scenario::new(
        "S3-pooled",
        "headers plugin, pooled instances",
        "/headers-pooled/hello",
        1,
    )
    .wanting(S3_HEADERS),
    // The same header work in a pooled call (the headers plugin as built against 0.1.2), so
    // what one plugin call costs stays measured.
    Scenario::new(
        "S3-call",
        "S3's header work in a pooled plugin call (headers built against 0.1.2)",
        "/headers-call/hello",
        1,
    )
    .wanting(S3_HEADERS),
    Scenario::new(
        "S3-fresh-call",
        "S3's header work in a plugin call on a fresh instance (headers built against 0.1.2)",
        "/headers-call-fresh/hello",
        1,
    )
    .wanting(S3_HEADERS),
    // S3's header work in nginx's Lua module, for comparison with wasmgate's S3-pooled.
    Scenario::new(
        "S3-lua",
        "S3's header work in Lua (lua-nginx-module)",
        "/headers-lua/hello",
        0,
    )
    .on(NGINX_LUA)
    .wanting(S3_HEADERS),
    Scenario::new(
        "S4",
        "jwt-auth (HS256) + rate-limit + headers, pooled",
        "/auth/hello",
        3,
    )
    .with_token()
    .wanting(S3_HEADERS),
    // S4 with its rate limit (and jwt-auth's kv) on Redis, and both at one connection, for
    // the latency a check on Redis adds.
    Scenario::new(
        "S4-redis",
        "S4 with [state] on Redis: the rate limit checked there (GCRA, EVALSHA)",
        "/auth/hello",
        3,
    )
    .on(ON_REDIS)
    .with_token()
    .wanting(S3_HEADERS),
    Scenario::new(
        "S4-redis-sync",
        "S4-redis with approximate rate limits (sync_ms = 50)",
        "/auth/hello",
        3,
    )
    .on(ON_REDIS_SYNC)
    .with_token()
    .wanting(S3_HEADERS),
    Scenario::new("S4-c1", "S4, one connection", "/auth/hello", 3)
        .one_connection()
        .with_token()
        .wanting(S3_HEADERS),
    Scenario::new("S4-redis-c1", "S4-redis, one connection", "/auth/hello", 3)
        .on(ON_REDIS)
        .one_connection()
        .with_token()
        .wanting(S3_HEADERS),
    Scenario::new(
        "S9",
        "api-key + cors + cache MISS (a query of its own per request: lookup, upstream, store)",
        "/s9/hello",
        3,
    )
    .sending(S9_HEADERS)
    .each_new()
    .wanting(&["x-cache: MISS", "access-control-allow-origin", "vary"]),
    Scenario::new(
        "S5",
        "transform: 1 KiB JSON POST to SOAP 1.1 and the SOAP answer back to JSON",
        "/soap",
        1,
    )
    .posting_json(),
    Scenario::new(
        "S6-python",
        "Python plugin (validate): a 1 KiB JSON POST checked against body rules",
        "/validate",
        1,
    )
    .posting_json(),
    Scenario::new(
        "S6-js",
        "JavaScript plugin (redact): fields of a 1 KiB JSON answer masked",
        "/redact/users.json",
        1,
    ),
    Scenario::new(
        "S10",
        "aggregate: three 1 KiB JSON parts fetched at once through the upstream, merged",
        "/aggregate",
        1,
    ),
    // One of S10's parts, proxied: what S10 is measured against.
    Scenario::new(
        "S10-part",
        "one of S10's parts (1 KiB JSON), proxied",
        "/plain/a/users.json",
        0,
    ),
    // S10's work in nginx's Lua module, for comparison.
    Scenario::new(
        "S10-lua",
        "S10's work in Lua: three subrequests at once (capture_multi), bodies concatenated",
        "/aggregate-lua",
        0,
    )
    .on(NGINX_LUA),
];

/// Checks, before anything starts, that the tools the end-to-end suite runs are installed;
/// with `--install`, installs the missing ones.
pub fn tools(args: &Args) -> Result<()> {
    peers::tools(args.install)
}

/// Runs the suite, prints the results, and (unless `--quick`) writes them to `BENCHMARKS.md`.
/// [`tools`] comes first.
pub fn e2e(args: &Args) -> Result<()> {
    let dir = root().join("target/bench-e2e");
    fs::create_dir_all(&dir)?;
    let with_big = !args.quick && !args.noisy_only();
    let started = Instant::now();
    let date = run_cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = run_cmd(
        "git",
        &[
            "-C",
            &root().display().to_string(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let load_before = loadavg();
    let peers = start_peers(args, &dir, with_big)?;
    let ctx = Ctx {
        args,
        dir: dir.clone(),
        peers: &peers,
        token: payloads::hs256_token()?,
        tck: clk_tck(),
    };
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| !args.noisy_only() && (!args.quick || QUICK.contains(&s.id)))
        .collect();
    for s in &scenarios {
        for &t in s.targets {
            ctx.check(s, t)?;
        }
    }
    if args.run_noisy() {
        ctx.check_noisy()?;
    }
    // Warm-up: connections, caches, pooled instances; not measured.
    let warm = if args.quick { 1 } else { 2 };
    for s in &scenarios {
        for &t in s.targets {
            ctx.wrk(s, t, warm)?;
        }
    }
    let mut results: BTreeMap<(&str, Target), Vec<Run>> = BTreeMap::new();
    let mut big: BTreeMap<Target, Downloads> = BTreeMap::new();
    let mut noisy: BTreeMap<u32, Noisy> = BTreeMap::new();
    for round in 1..=args.rounds {
        for s in &scenarios {
            for &t in s.targets {
                let r = ctx.wrk(s, t, args.duration_s)?;
                eprintln!(
                    "xtask: round {round}/{} {} {:<18} {:>9.0} req/s  p50 {:>9}  p99 {:>9}  errors {}",
                    args.rounds,
                    s.id,
                    t.name(),
                    r.rps,
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us),
                    r.errors
                );
                results.entry((s.id, t)).or_default().push(r);
            }
        }
        if with_big {
            for &t in ALL {
                let (speeds, cpu, rss) = ctx.downloads(t)?;
                eprintln!(
                    "xtask: round {round}/{} S7 {:<18} {:>7.0} MB/s (median of {})",
                    args.rounds,
                    t.name(),
                    median(&speeds),
                    speeds.len()
                );
                let e = big.entry(t).or_default();
                e.speeds.extend(speeds);
                e.cpu.extend(cpu);
                e.rss_kib = e.rss_kib.max(rss);
            }
        }
        if args.run_noisy() {
            for looping in NOISY_PHASES {
                let (healthy, noise) = ctx.noisy(looping, args.duration_s.min(NOISY_SECONDS))?;
                eprintln!(
                    "xtask: round {round}/{} S8 {looping} looping client(s): healthy {:>6.0} req/s  \
                     p50 {:>9}  p99 {:>9}  errors {}; looping {:.0} req/s",
                    args.rounds,
                    healthy.rps,
                    fmt_us(healthy.p50_us),
                    fmt_us(healthy.p99_us),
                    healthy.errors,
                    noise.as_ref().map_or(0.0, |n| n.rps),
                );
                let e = noisy.entry(looping).or_default();
                e.healthy.push(healthy);
                e.looping.extend(noise);
            }
        }
    }
    drop(ctx);
    let reload = if args.quick || args.noisy_only() {
        String::new()
    } else {
        reload_latency(&dir, peers.ports[&Target::Direct], args.rounds)?
    };
    drop(peers);
    let elapsed = started.elapsed().as_secs();

    let run = RunInfo {
        date,
        commit,
        elapsed,
        load: format!("{load_before} before the run, {} after", loadavg()),
    };
    let mut report = report(args, &scenarios, &results, &big, &noisy, &run)?;
    report.push_str(&reload);
    println!("{report}");
    if args.quick || args.noisy_only() {
        eprintln!("xtask: partial run: BENCHMARKS.md left as it is");
    } else {
        write_results(&report)?;
        eprintln!("xtask: results written to BENCHMARKS.md");
    }
    Ok(())
}
