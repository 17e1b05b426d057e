//! The report: the run's numbers as Markdown, printed and written to BENCHMARKS.md's results
//! section.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use anyhow::Result;

use super::arguments::Args;
use super::peers::tool_path;
use super::processes::run_cmd;
use super::stats::{Summary, fmt_us, median, min_max, ratio, summarize, verdict};
use super::wrk::Run;
use super::{NOISY_SECONDS, Scenario, Target};
use crate::root;

const RESULTS_MARKER: &str = "<!-- Everything below is written by `cargo xtask bench`. -->";

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib / 1048576.0),
        );
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "- CPUs: {nproc} × {cpu}\n- Memory: {mem}\n- Kernel: Linux {kernel}\n- nginx: {}\n- nginx's Lua module: libnginx-mod-http-lua {}\n- HAProxy: {}\n- wrk: {}\n- curl: {}\n",
        run_cmd(&tool_path("nginx"), &["-v"]).replace("nginx version: ", ""),
        run_cmd(
            "dpkg-query",
            &["-W", "-f=${Version}", "libnginx-mod-http-lua"]
        ),
        run_cmd(&tool_path("haproxy"), &["-v"]),
        run_cmd("wrk", &["-v"]),
        run_cmd("curl", &["--version"])
            .split(" (")
            .next()
            .unwrap_or("")
            .to_owned(),
    )
}

/// S7's numbers for one target, over all rounds.
#[derive(Debug, Default)]
pub(super) struct Downloads {
    /// MB/s of each download.
    pub(super) speeds: Vec<f64>,
    /// The proxy's CPU seconds per GiB, one per round.
    pub(super) cpu: Vec<f64>,
    pub(super) rss_kib: Option<u64>,
}

/// One S8 phase over all rounds: the healthy route's runs, and the looping clients' runs.
#[derive(Debug, Default)]
pub(super) struct Noisy {
    pub(super) healthy: Vec<Run>,
    pub(super) looping: Vec<Run>,
}

/// When and where the run happened, for the report.
pub(super) struct RunInfo {
    pub(super) date: String,
    pub(super) commit: String,
    pub(super) elapsed: u64,
    pub(super) load: String,
}

pub(super) fn report(
    args: &Args,
    scenarios: &[&Scenario],
    results: &BTreeMap<(&str, Target), Vec<Run>>,
    big: &BTreeMap<Target, Downloads>,
    noisy: &BTreeMap<u32, Noisy>,
    run: &RunInfo,
) -> Result<String> {
    let RunInfo {
        date,
        commit,
        elapsed,
        load,
    } = run;
    let sum: BTreeMap<(&str, Target), Summary> =
        results.iter().map(|(k, v)| (*k, summarize(v))).collect();
    let mut o = String::new();
    writeln!(o, "## Results\n")?;
    writeln!(
        o,
        "Run on {date} at commit `{commit}`, {} round(s) of {} s per scenario and target \
         (after a warm-up), wrk `-t{} -c{}`, {} workers for wasmgate, nginx and HAProxy; \
         the whole run took {elapsed} s. Reproduce with:\n\n```sh\n{}\n```\n",
        args.rounds, args.duration_s, args.threads, args.connections, args.workers, args.command
    )?;
    writeln!(
        o,
        "### Machine\n\n{}- Load average (1, 5, 15 min): {load}\n",
        machine()
    )?;
    writeln!(
        o,
        "### Numbers\n\nMedians over the rounds, with the spread (min–max) in brackets. CPU is the \
         proxy's user + system time per 10,000 requests (nginx: master and workers summed); peak \
         RSS is the highest VmHWM of the proxy's processes (summed over nginx's) seen in a run, \
         the peak being reset before each run. Errors are wrk's socket errors and non-2xx \
         answers, summed over the rounds.\n"
    )?;
    writeln!(
        o,
        "| scenario | target | req/s | p50 | p99 | CPU s / 10k req | peak RSS | errors / requests |"
    )?;
    writeln!(o, "|---|---|---|---|---|---|---|---|")?;
    for s in scenarios {
        for &t in s.targets {
            let Some(m) = sum.get(&(s.id, t)) else {
                continue;
            };
            writeln!(
                o,
                "| {} {} | {} | {:.0} ({:.0}–{:.0}) | {} ({}–{}) | {} ({}–{}) | {} | {} | {} / {} |",
                s.id,
                s.title,
                t.name(),
                m.rps,
                m.rps_range.0,
                m.rps_range.1,
                fmt_us(m.p50),
                fmt_us(m.p50_range.0),
                fmt_us(m.p50_range.1),
                fmt_us(m.p99),
                fmt_us(m.p99_range.0),
                fmt_us(m.p99_range.1),
                m.cpu.map_or_else(|| "—".into(), |c| format!("{c:.3}")),
                m.rss_kib
                    .map_or_else(|| "—".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                m.errors,
                m.requests
            )?;
        }
    }
    writeln!(o)?;

    if !big.is_empty() {
        writeln!(
            o,
            "### S7: 64 MiB responses streamed\n\n{} sequential downloads of a 64 MiB file per \
             target and round with curl (one connection at a time); MB/s is 10^6 bytes per \
             second, median (min–max) over all downloads; CPU is the proxy's per GiB moved.\n",
            args.downloads
        )?;
        writeln!(o, "| target | MB/s | CPU s / GiB | peak RSS |")?;
        writeln!(o, "|---|---|---|---|")?;
        for (
            t,
            Downloads {
                speeds,
                cpu: cpus,
                rss_kib: rss,
            },
        ) in big
        {
            let (lo, hi) = min_max(speeds);
            writeln!(
                o,
                "| {} | {:.0} ({lo:.0}–{hi:.0}) | {} | {} |",
                t.name(),
                median(speeds),
                if cpus.is_empty() {
                    "—".into()
                } else {
                    format!("{:.3}", median(cpus))
                },
                rss.map_or_else(|| "—".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            )?;
        }
        writeln!(o)?;
    }

    let noisy_sum: BTreeMap<u32, Summary> = noisy
        .iter()
        .map(|(&n, phase)| (n, summarize(&phase.healthy)))
        .collect();
    if let Some(alone) = noisy_sum.get(&0) {
        writeln!(
            o,
            "### S8: a noisy neighbour\n\nThe plain route measured with wrk `-t1 -c2` for {} s \
             while clients (wrk, one connection each) hammer a route on the same {} workers whose \
             plugin loops until its deadline (each of its requests fails with a timeout, 500, \
             after 50 ms of running). Medians over the rounds (min–max); the p99 ratio is \
             against the healthy route alone.\n",
            args.duration_s.min(NOISY_SECONDS),
            args.workers
        )?;
        writeln!(
            o,
            "| looping clients | healthy req/s | healthy p50 | healthy p99 | p99 vs alone | looping req/s |"
        )?;
        writeln!(o, "|---|---|---|---|---|---|")?;
        for (n, m) in &noisy_sum {
            let looping: Vec<f64> = noisy[n].looping.iter().map(|r| r.rps).collect();
            writeln!(
                o,
                "| {n} | {:.0} | {} | {} ({}–{}) | {} | {} |",
                m.rps,
                fmt_us(m.p50),
                fmt_us(m.p99),
                fmt_us(m.p99_range.0),
                fmt_us(m.p99_range.1),
                ratio(m.p99, alone.p99),
                if looping.is_empty() {
                    "—".into()
                } else {
                    format!("{:.1}", median(&looping))
                },
            )?;
        }
        writeln!(o)?;
    }

    writeln!(o, "### Ratios\n")?;
    writeln!(
        o,
        "wasmgate's median req/s over the peer's, and p99 side by side.\n"
    )?;
    writeln!(
        o,
        "| scenario | vs | req/s ratio | p99 wasmgate | p99 peer |"
    )?;
    writeln!(o, "|---|---|---|---|---|")?;
    for id in ["S1", "S2", "S1-TLS", "S2-TLS", "S1-h2"] {
        let Some(g) = sum.get(&(id, Target::Wasmgate)) else {
            continue;
        };
        for peer in [Target::Nginx, Target::Haproxy, Target::Direct] {
            if let Some(p) = sum.get(&(id, peer)) {
                writeln!(
                    o,
                    "| {id} | {} | {} | {} | {} |",
                    peer.name(),
                    ratio(g.rps, p.rps),
                    fmt_us(g.p99),
                    fmt_us(p.p99)
                )?;
            }
        }
    }
    writeln!(o)?;
    header_work(&mut o, &sum)?;
    let s1 = sum.get(&("S1", Target::Wasmgate)).cloned();
    if let Some(s1) = &s1 {
        let plugin_rows: Vec<&&Scenario> = scenarios.iter().filter(|s| s.plugins > 0).collect();
        if !plugin_rows.is_empty() {
            writeln!(
                o,
                "Plugin scenarios against S1 (wasmgate, empty pipeline; the one-connection \
                 probe against S1-c1): req/s ratio, and p50 added (scenario p50 − S1 p50), in \
                 total and per plugin.\n"
            )?;
            writeln!(
                o,
                "| scenario | plugins | req/s vs S1 | p50 added | p50 added per plugin |"
            )?;
            writeln!(o, "|---|---|---|---|---|")?;
            for s in plugin_rows {
                let base = if s.single {
                    sum.get(&("S1-c1", Target::Wasmgate))
                } else {
                    Some(s1)
                };
                if let (Some(m), Some(s1)) = (sum.get(&(s.id, Target::Wasmgate)), base) {
                    let added = m.p50 - s1.p50;
                    writeln!(
                        o,
                        "| {} {} | {} | {} | {:.0} µs | {:.0} µs |",
                        s.id,
                        s.title,
                        s.plugins,
                        ratio(m.rps, s1.rps),
                        added,
                        added / f64::from(s.plugins)
                    )?;
                }
            }
            writeln!(o)?;
        }
    }

    writeln!(o, "### Targets\n")?;
    writeln!(o, "| target | measured | verdict |")?;
    writeln!(o, "|---|---|---|")?;
    targets(&mut o, &sum)?;
    if let Some(m) = noisy_sum.get(&4) {
        writeln!(
            o,
            "| S8 healthy p99 ≤ 50 ms with 4 looping clients | {} | {} |",
            fmt_us(m.p99),
            verdict(m.p99 <= 50_000.0)
        )?;
    }
    writeln!(o)?;
    // The looping route's failures are the scenario's point; the healthy route's are not.
    let errors: u64 = sum
        .values()
        .chain(noisy_sum.values())
        .map(|m| m.errors)
        .sum();
    if errors > 0 {
        writeln!(
            o,
            "**Warning**: {errors} requests failed (socket errors or non-2xx); the numbers of the \
             rows with errors are not comparable.\n"
        )?;
    }
    Ok(o)
}

/// CPU per request in µs, from CPU seconds per 10,000 requests.
fn cpu_us(m: &Summary) -> Option<f64> {
    m.cpu.map(|c| c * 100.0)
}

fn fmt_cpu(m: &Summary) -> String {
    cpu_us(m).map_or_else(|| "—".into(), |c| format!("{c:.1} µs"))
}

/// S3's header work in each proxy: nginx + Lua (S3-lua) against nginx on S1, wasmgate's pooled
/// headers plugin (S3-pooled) against wasmgate on S1, and the two against each other.
fn header_work(o: &mut String, sum: &BTreeMap<(&str, Target), Summary>) -> Result<()> {
    let rows = [
        (("S3-lua", Target::NginxLua), ("S1", Target::Nginx)),
        (("S3-pooled", Target::Wasmgate), ("S1", Target::Wasmgate)),
        (
            ("S3-pooled", Target::Wasmgate),
            ("S3-lua", Target::NginxLua),
        ),
    ];
    let rows: Vec<_> = rows
        .iter()
        .filter_map(|(a, b)| Some((a, sum.get(a)?, b, sum.get(b)?)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        o,
        "S3's header work in each proxy: nginx + Lua (S3-lua) against nginx's S1 (the share of \
         nginx's throughput that nginx + Lua keeps), wasmgate's pooled headers plugin \
         (S3-pooled) against wasmgate's S1, and the two against each other. req/s ratio, then \
         CPU per request and p99 of each side.\n"
    )?;
    writeln!(o, "| scenario | vs | req/s ratio | CPU / request | p99 |")?;
    writeln!(o, "|---|---|---|---|---|")?;
    for ((id, t), m, (base_id, base_t), base) in rows {
        writeln!(
            o,
            "| {id} ({}) | {base_id} ({}) | {} | {} vs {} | {} vs {} |",
            t.name(),
            base_t.name(),
            ratio(m.rps, base.rps),
            fmt_cpu(m),
            fmt_cpu(base),
            fmt_us(m.p99),
            fmt_us(base.p99)
        )?;
    }
    writeln!(o)?;
    Ok(())
}

/// The targets of the plugin-speed work, each with what this run measured, bar S8's.
fn targets(o: &mut String, sum: &BTreeMap<(&str, Target), Summary>) -> Result<()> {
    let get = |id: &'static str, t: Target| sum.get(&(id, t));
    let s1 = get("S1", Target::Wasmgate);
    if let Some(g) = s1 {
        for peer in [Target::Nginx, Target::Haproxy] {
            if let Some(p) = get("S1", peer) {
                writeln!(
                    o,
                    "| S1 req/s ≥ 1.1× {0}, p99 no higher than {0}'s | {1}; p99 {2} vs {3} | {4} |",
                    peer.name(),
                    ratio(g.rps, p.rps),
                    fmt_us(g.p99),
                    fmt_us(p.p99),
                    verdict(g.rps >= 1.1 * p.rps && g.p99 <= p.p99)
                )?;
            }
        }
    }
    for (id, label) in [
        ("S1-TLS", "S1-TLS (keep-alive over TLS)"),
        ("S2-TLS", "S2-TLS (new TLS connections)"),
        ("S1-h2", "S1-h2 (HTTP/2 over TLS)"),
    ] {
        if let (Some(g), Some(p)) = (get(id, Target::Wasmgate), get(id, Target::Nginx)) {
            writeln!(
                o,
                "| {label} req/s ≥ 1.0× nginx | {} | {} |",
                ratio(g.rps, p.rps),
                verdict(g.rps >= p.rps)
            )?;
        }
    }
    for (id, label, share) in [
        ("S3-pooled", "S3 pooled", 0.9),
        ("S3-fresh", "S3 fresh", 0.6),
        ("S3-fresh-call", "S3 fresh, its work in a call", 0.6),
        ("S4", "S4", 0.8),
        ("S1-4t", "S1-4t (4 targets, health checks, a breaker)", 0.98),
        // A hit must be cheaper than the proxying it saves.
        ("S1-hit", "S1-hit (a cache HIT)", 1.2),
    ] {
        if let (Some(m), Some(s1)) = (get(id, Target::Wasmgate), s1) {
            writeln!(
                o,
                "| {label} req/s ≥ {share}× S1 | {} | {} |",
                ratio(m.rps, s1.rps),
                verdict(m.rps >= share * s1.rps)
            )?;
        }
    }
    redis_state(o, &get)?;
    let s3 = get("S3-pooled", Target::Wasmgate);
    for (id, label) in [
        ("S3-pooled", "the headers plugin (header rules) adds"),
        (
            "S3-call",
            "a pooled plugin call (S3's work, 0.1.2 build) adds",
        ),
    ] {
        if let (Some(s3), Some(s1)) = (get(id, Target::Wasmgate), s1)
            && let (Some(c3), Some(c1)) = (cpu_us(s3), cpu_us(s1))
        {
            let added = c3 - c1;
            writeln!(
                o,
                "| {label} ≤ 5 µs of CPU per request ({id} − S1) | {added:.1} µs | {} |",
                verdict(added <= 5.0)
            )?;
        }
    }
    if let (Some(s3), Some(s1)) = (
        get("S3-pooled-c1", Target::Wasmgate),
        get("S1-c1", Target::Wasmgate),
    ) {
        let added = s3.p50 - s1.p50;
        writeln!(
            o,
            "| pooled plugin adds ≤ 5 µs p50 at one connection (S3-pooled-c1 − S1-c1) | {added:.0} µs | {} |",
            verdict(added <= 5.0)
        )?;
    }
    if let (Some(s3), Some(s1), Some(lua), Some(n1)) = (
        s3,
        s1,
        get("S3-lua", Target::NginxLua),
        get("S1", Target::Nginx),
    ) {
        let (ours, theirs) = (s3.rps / s1.rps, lua.rps / n1.rps);
        writeln!(
            o,
            "| S3-pooled keeps more of wasmgate's S1 than S3-lua of nginx's (req/s) | {ours:.2}× vs {theirs:.2}× | {} |",
            verdict(ours > theirs)
        )?;
        writeln!(
            o,
            "| S3 pooled req/s > S3-lua's (nginx + Lua) | {} | {} |",
            ratio(s3.rps, lua.rps),
            verdict(s3.rps > lua.rps)
        )?;
    }
    if let Some(s10) = get("S10", Target::Wasmgate) {
        // Three upstream calls per request: at most the cost of three proxied requests.
        if let Some(part) = get("S10-part", Target::Wasmgate) {
            writeln!(
                o,
                "| S10 (3 parts) req/s ≥ ⅓ × S10-part (one part proxied); p50 {} vs {} | {} | {} |",
                fmt_us(s10.p50),
                fmt_us(part.p50),
                ratio(s10.rps, part.rps),
                verdict(3.0 * s10.rps >= part.rps)
            )?;
        }
        if let Some(lua) = get("S10-lua", Target::NginxLua) {
            writeln!(
                o,
                "| S10 req/s ≥ S10-lua's (nginx + Lua) | {} | {} |",
                ratio(s10.rps, lua.rps),
                verdict(s10.rps >= lua.rps)
            )?;
        }
    }
    Ok(())
}

/// S4 with its state on Redis against S4 in memory: throughput, the latency a check adds at one
/// connection (per check on Redis), and what Redis spends.
fn redis_state<'a>(
    o: &mut String,
    get: &dyn Fn(&'static str, Target) -> Option<&'a Summary>,
) -> Result<()> {
    let on_redis = get("S4-redis", Target::WasmgateRedis);
    if let (Some(r), Some(m)) = (on_redis, get("S4", Target::Wasmgate)) {
        writeln!(
            o,
            "| S4-redis (state on Redis) req/s ≥ 0.8× S4 (in memory) | {} | {} |",
            ratio(r.rps, m.rps),
            verdict(r.rps >= 0.8 * m.rps)
        )?;
    }
    if let (Some(r), Some(m)) = (
        get("S4-redis-sync", Target::WasmgateRedisSync),
        get("S4", Target::Wasmgate),
    ) {
        writeln!(
            o,
            "| S4-redis-sync (approximate, sync_ms = 50) req/s ≥ 0.8× S4 (in memory) | {} | {} |",
            ratio(r.rps, m.rps),
            verdict(r.rps >= 0.8 * m.rps)
        )?;
    }
    let checks = on_redis.and_then(|r| r.redis).map(|(_, c)| c);
    if let (Some(r), Some(m)) = (
        get("S4-redis-c1", Target::WasmgateRedis),
        get("S4-c1", Target::Wasmgate),
    ) {
        let added = r.p50 - m.p50;
        let per = checks.filter(|c| *c >= 1.0).map_or_else(
            || "—".into(),
            |c| format!("{:.0} µs per check, {c:.1} checks per request", added / c),
        );
        writeln!(
            o,
            "| p50 added by Redis at one connection (S4-redis-c1 − S4-c1) | {added:.0} µs ({per}) | measured |"
        )?;
    }
    if let Some((cpu, _)) = on_redis.and_then(|r| r.redis) {
        writeln!(
            o,
            "| redis-server CPU per 10k requests (S4-redis) | {cpu:.3} s | measured |"
        )?;
    }
    Ok(())
}

pub(super) fn write_results(report: &str) -> Result<()> {
    let path = root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let intro = match text.find(RESULTS_MARKER) {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    let mut out = intro.trim_end().to_owned();
    write!(out, "\n\n{RESULTS_MARKER}\n\n{}", report.trim_end())?;
    out.push('\n');
    fs::write(&path, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rps: f64, p50: f64, p99: f64, cpu_us: f64) -> Summary {
        Summary {
            rps,
            rps_range: (rps, rps),
            p50,
            p50_range: (p50, p50),
            p99,
            p99_range: (p99, p99),
            cpu: Some(cpu_us / 100.0),
            rss_kib: None,
            errors: 0,
            requests: 1000,
            redis: None,
        }
    }

    fn sums() -> BTreeMap<(&'static str, Target), Summary> {
        BTreeMap::from([
            (("S1", Target::Wasmgate), m(50_000.0, 900.0, 2_000.0, 25.0)),
            (("S1", Target::Nginx), m(40_000.0, 1_100.0, 2_500.0, 30.0)),
            (("S1", Target::Haproxy), m(48_000.0, 1_000.0, 1_500.0, 28.0)),
            (("S1-c1", Target::Wasmgate), m(12_000.0, 80.0, 120.0, 60.0)),
            (
                ("S3-pooled-c1", Target::Wasmgate),
                m(11_000.0, 84.0, 130.0, 64.0),
            ),
            (
                ("S3-pooled", Target::Wasmgate),
                m(46_000.0, 1_000.0, 2_200.0, 29.0),
            ),
            (
                ("S3-fresh", Target::Wasmgate),
                m(20_000.0, 2_000.0, 4_000.0, 60.0),
            ),
            (
                ("S3-call", Target::Wasmgate),
                m(35_000.0, 1_300.0, 2_800.0, 40.0),
            ),
            (
                ("S3-lua", Target::NginxLua),
                m(30_000.0, 1_500.0, 3_000.0, 40.0),
            ),
            (
                ("S4", Target::Wasmgate),
                m(41_000.0, 1_200.0, 2_600.0, 35.0),
            ),
            (
                ("S1-4t", Target::Wasmgate),
                m(48_500.0, 950.0, 2_100.0, 26.0),
            ),
            (
                ("S4-redis", Target::WasmgateRedis),
                Summary {
                    redis: Some((0.25, 2.0)),
                    ..m(34_000.0, 1_500.0, 3_000.0, 40.0)
                },
            ),
            (
                ("S4-redis-sync", Target::WasmgateRedisSync),
                m(39_000.0, 1_300.0, 2_800.0, 36.0),
            ),
            (
                ("S4-redis-sync", Target::WasmgateRedisSync),
                m(39_000.0, 1_300.0, 2_800.0, 36.0),
            ),
            (("S4-c1", Target::Wasmgate), m(9_000.0, 100.0, 150.0, 70.0)),
            (
                ("S4-redis-c1", Target::WasmgateRedis),
                m(6_000.0, 160.0, 220.0, 80.0),
            ),
            (
                ("S1-hit", Target::Wasmgate),
                m(59_000.0, 800.0, 1_800.0, 21.0),
            ),
            (
                ("S10", Target::Wasmgate),
                m(15_000.0, 3_000.0, 6_000.0, 80.0),
            ),
            (
                ("S10-part", Target::Wasmgate),
                m(50_000.0, 900.0, 2_000.0, 25.0),
            ),
            (
                ("S10-lua", Target::NginxLua),
                m(16_000.0, 2_900.0, 5_500.0, 70.0),
            ),
        ])
    }

    #[test]
    fn header_work_compares_each_proxy_with_its_own_s1_and_the_two() {
        let mut o = String::new();
        header_work(&mut o, &sums()).unwrap();
        assert!(o.contains("| S3-lua (nginx + Lua) | S1 (nginx) | 0.75× | 40.0 µs vs 30.0 µs |"));
        assert!(
            o.contains("| S3-pooled (wasmgate) | S1 (wasmgate) | 0.92× | 29.0 µs vs 25.0 µs |")
        );
        assert!(o.contains("| S3-pooled (wasmgate) | S3-lua (nginx + Lua) | 1.53× |"));
        // Nothing to compare: no table.
        let mut o = String::new();
        header_work(&mut o, &BTreeMap::new()).unwrap();
        assert!(o.is_empty());
    }

    #[test]
    fn targets_are_computed_from_the_run() {
        let mut o = String::new();
        targets(&mut o, &sums()).unwrap();
        let row = |start: &str| {
            o.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{o}"))
                .to_owned()
        };
        // 1.25× nginx with a lower p99; 1.04× HAProxy with a higher one.
        assert!(row("| S1 req/s ≥ 1.1× nginx").ends_with("| **met** |"));
        assert!(row("| S1 req/s ≥ 1.1× HAProxy").ends_with("| **not met** |"));
        assert!(row("| S3 pooled req/s ≥ 0.9× S1").contains("0.92×"));
        assert!(row("| S3 pooled req/s ≥ 0.9× S1").ends_with("| **met** |"));
        assert!(row("| S3 fresh req/s ≥ 0.6× S1").ends_with("| **not met** |"));
        assert!(row("| S4 req/s ≥ 0.8× S1").ends_with("| **met** |"));
        assert!(
            row("| S1-4t (4 targets, health checks, a breaker) req/s ≥ 0.98× S1")
                .contains("| 0.97× | **not met** |")
        );
        assert!(row("| S1-hit (a cache HIT) req/s ≥ 1.2× S1").contains("| 1.18× | **not met** |"));
        // 34k against 41k; 60 µs more at one connection, over 2 checks.
        assert!(row("| S4-redis (state on Redis) req/s ≥ 0.8× S4").contains("| 0.83× | **met** |"));
        assert!(
            row("| S4-redis-sync (approximate, sync_ms = 50) req/s ≥ 0.8× S4")
                .contains("| 0.95× | **met** |")
        );
        assert!(
            row("| p50 added by Redis at one connection")
                .contains("| 60 µs (30 µs per check, 2.0 checks per request) | measured |")
        );
        assert!(row("| redis-server CPU per 10k requests").contains("| 0.250 s |"));
        assert!(
            row("| the headers plugin (header rules) adds ≤ 5 µs of CPU")
                .contains("| 4.0 µs | **met** |")
        );
        assert!(
            row("| a pooled plugin call (S3's work, 0.1.2 build) adds ≤ 5 µs of CPU")
                .contains("| 15.0 µs | **not met** |")
        );
        assert!(row("| pooled plugin adds ≤ 5 µs p50").contains("| 4 µs | **met** |"));
        assert!(row("| S3-pooled keeps more").contains("0.92× vs 0.75× | **met** |"));
        assert!(row("| S3 pooled req/s > S3-lua's").contains("1.53× | **met** |"));
        assert!(row("| S10 (3 parts) req/s ≥ ⅓ × S10-part").contains("| 0.30× | **not met** |"));
        assert!(row("| S10 req/s ≥ S10-lua's").contains("| 0.94× | **not met** |"));
        // The targets these replace are gone.
        assert!(!o.contains("1.0×") && !o.contains("0.7×") && !o.contains("10 µs"));
    }
}
