//! Putting load on the peers: wrk runs and their Lua scripts, parsing wrk's output, S8's
//! noisy-neighbour phases and S7's downloads; and the curl checks before any load.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::arguments::Args;
use super::payloads::json_body;
use super::peers::Peers;
use super::processes::{cpu_ticks, peak_rss_kib, reset_peak_rss};
use super::{BIG_BYTES, NOISY_HEALTHY, NOISY_LOOP, Scenario, Target};

/// One wrk run's numbers.
#[derive(Debug, Clone, Default)]
pub(super) struct Run {
    pub(super) rps: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) requests: u64,
    pub(super) errors: u64,
    pub(super) cpu_s_per_10k: Option<f64>,
    pub(super) rss_kib: Option<u64>,
    /// On the gateway with its state on Redis: redis-server's CPU seconds per 10k requests,
    /// and the rate-limit checks (`EVALSHA`) it ran per request.
    pub(super) redis: Option<(f64, f64)>,
}

const LUA_DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"#;

/// A query of its own for each request: the thread's number and a count.
const LUA_NEW_QUERY: &str = r#"
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, wrk.path .. "?n=" .. id .. "-" .. n)
end
"#;

pub(super) struct Ctx<'a> {
    pub(super) args: &'a Args,
    pub(super) dir: PathBuf,
    pub(super) peers: &'a Peers,
    pub(super) token: String,
    pub(super) tck: f64,
}

impl Ctx<'_> {
    fn url(&self, target: Target, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.peers.ports[&target])
    }

    /// The scenario's URL on `target`: its TLS listener for a TLS scenario.
    fn scenario_url(&self, s: &Scenario, target: Target) -> String {
        if s.tls {
            format!(
                "https://127.0.0.1:{}{}",
                self.peers.tls_ports[&target], s.path
            )
        } else {
            self.url(target, s.path)
        }
    }

    /// The processes whose CPU and memory count for the scenario on `target`.
    fn pids(&self, s: &Scenario, target: Target) -> &[u32] {
        if s.tls {
            &self.peers.tls_pids[&target]
        } else {
            &self.peers.pids[&target]
        }
    }

    fn script(&self, s: &Scenario) -> Result<PathBuf> {
        let path = self.dir.join(format!("{}.lua", s.id));
        let mut lua = String::new();
        if s.post_json {
            writeln!(lua, "wrk.method = \"POST\"")?;
            writeln!(lua, "wrk.body = [[{}]]", json_body())?;
            writeln!(lua, "wrk.headers[\"Content-Type\"] = \"application/json\"")?;
        }
        if s.new_query {
            lua.push_str(LUA_NEW_QUERY);
        }
        lua.push_str(LUA_DONE);
        fs::write(&path, lua)?;
        Ok(path)
    }

    /// Checks with curl that the scenario's request gets a 200, with the response headers the
    /// scenario's header work adds, before load is put on it.
    pub(super) fn check(&self, s: &Scenario, t: Target) -> Result<()> {
        if s.primed {
            self.check_once(s, t, &[])?;
        }
        self.check_once(s, t, s.response_headers)
    }

    fn check_once(&self, s: &Scenario, t: Target, wanted: &[&str]) -> Result<()> {
        let mut c = Command::new("curl");
        // The head on stdout (-D -), and the status code after it (-w).
        c.args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "10",
        ]);
        if s.auth {
            c.arg("-H")
                .arg(format!("Authorization: Bearer {}", self.token));
        }
        for (name, value) in s.request_headers {
            c.arg("-H").arg(format!("{name}: {value}"));
        }
        if s.post_json {
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(json_body());
        }
        if s.tls {
            c.arg("--cacert")
                .arg(&self.peers.cert)
                .arg(if s.h2 { "--http2" } else { "--http1.1" });
            // The protocol that was spoken, to check after the status (the last -w counts).
            c.args(["-w", "\n%{http_code} %{http_version}"]);
        }
        c.arg(self.scenario_url(s, t));
        let out = c.output().context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (head, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (code, version) = code.split_once(' ').unwrap_or((code, ""));
        let want = if s.h2 { "2" } else { "1.1" };
        if s.tls && version != want {
            bail!(
                "{} via {}: expected HTTP/{want} over TLS, got HTTP/{version}",
                s.id,
                t.name()
            );
        }
        if code != "200" {
            bail!(
                "{} via {}: expected 200, got {code} {}",
                s.id,
                t.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for want in wanted {
            let (name, value) = match want.split_once(": ") {
                Some((n, v)) => (n, Some(v)),
                None => (*want, None),
            };
            let present = head.lines().any(|l| {
                l.split_once(':').is_some_and(|(n, v)| {
                    n.eq_ignore_ascii_case(name)
                        && value.map_or(!v.trim().is_empty(), |want| v.trim() == want)
                })
            });
            if !present {
                bail!(
                    "{} via {}: no {want} header in the answer:\n{head}",
                    s.id,
                    t.name()
                );
            }
        }
        Ok(())
    }

    pub(super) fn wrk(&self, s: &Scenario, t: Target, seconds: u32) -> Result<Run> {
        if s.h2 {
            return self.h2load(s, t, seconds);
        }
        let pids = self.pids(s, t);
        let script = self.script(s)?;
        let mut c = Command::new("wrk");
        let (threads, connections) = if s.single {
            (1, 1)
        } else {
            (self.args.threads, self.args.connections)
        };
        c.arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .args(["--latency", "--timeout", "5s", "-s"])
            .arg(&script);
        if s.close {
            c.args(["-H", "Connection: close"]);
        }
        if s.auth {
            c.arg("-H")
                .arg(format!("Authorization: Bearer {}", self.token));
        }
        for (name, value) in s.request_headers {
            c.arg("-H").arg(format!("{name}: {value}"));
        }
        c.arg(self.scenario_url(s, t));
        let on_redis = matches!(t, Target::WasmgateRedis | Target::WasmgateRedisSync);
        let Some(redis) = self.peers.redis.as_ref().filter(|_| on_redis) else {
            return self.measure(pids, &mut c, "wrk", wrk_result);
        };
        let (ticks, checks) = (cpu_ticks(&[redis.pid]), redis.checks()?);
        let mut run = self.measure(pids, &mut c, "wrk", wrk_result)?;
        let (ticks, checks) = (
            cpu_ticks(&[redis.pid]) - ticks,
            redis.checks()?.saturating_sub(checks),
        );
        if run.requests > 0 {
            let requests = run.requests as f64;
            run.redis = Some((
                ticks as f64 / self.tck / requests * 10_000.0,
                checks as f64 / requests,
            ));
        }
        Ok(run)
    }

    /// Runs a load tool, reads its numbers with `parse`, and adds the CPU and peak memory of
    /// `pids` over the run.
    fn measure(
        &self,
        pids: &[u32],
        c: &mut Command,
        tool: &str,
        parse: fn(&str) -> Result<Run>,
    ) -> Result<Run> {
        reset_peak_rss(pids);
        let before = cpu_ticks(pids);
        let out = c.output().with_context(|| format!("running {tool}"))?;
        let after = cpu_ticks(pids);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{tool} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut run = parse(&text)?;
        let requests = run.requests as f64;
        run.cpu_s_per_10k = (!pids.is_empty() && run.requests > 0)
            .then(|| (after - before) as f64 / self.tck / requests * 10_000.0);
        run.rss_kib = (!pids.is_empty()).then(|| peak_rss_kib(pids));
        Ok(run)
    }

    /// An HTTP/2 scenario: h2load for `seconds`, over `--connections` connections with 10
    /// streams each. h2load reports no percentiles: p50 is its mean time for a request, p99
    /// its longest.
    fn h2load(&self, s: &Scenario, t: Target, seconds: u32) -> Result<Run> {
        let pids = self.pids(s, t);
        let mut c = Command::new("h2load");
        c.arg(format!("-D{seconds}"))
            .arg(format!("-c{}", self.args.connections))
            .arg(format!("-t{}", self.args.threads))
            .args(["-m10", "--warm-up-time=0"])
            .arg(self.scenario_url(s, t));
        self.measure(pids, &mut c, "h2load", h2load_result)
    }

    /// Checks that S8's looping route fails its request with a timeout (500, after its
    /// deadline) and that the healthy route answers, before load is put on them.
    pub(super) fn check_noisy(&self) -> Result<()> {
        for (path, want) in [(NOISY_HEALTHY, "200"), (NOISY_LOOP, "500")] {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "--max-time", "10", "-w"])
                .arg("%{http_code} %{time_total}")
                .arg(self.url(Target::Wasmgate, path))
                .output()
                .context("running curl")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let f: Vec<&str> = text.split_whitespace().collect();
            let secs: f64 = f.get(1).and_then(|t| t.parse().ok()).unwrap_or(0.0);
            if f.first() != Some(&want) || (want == "500" && secs < 0.04) {
                bail!("S8: {path}: expected {want}, got {text:?}");
            }
        }
        Ok(())
    }

    /// One S8 phase: `looping` clients hammer the looping route (from half a second before
    /// to half a second after) while two connections measure the healthy route for `seconds`.
    /// The healthy run, and the looping one's when there is one.
    pub(super) fn noisy(&self, looping: u32, seconds: u32) -> Result<(Run, Option<Run>)> {
        let script = self.dir.join("S8.lua");
        fs::write(&script, LUA_DONE)?;
        let wrk = |threads: u32, connections: u32, seconds: u32, path: &str| {
            let mut c = Command::new("wrk");
            c.arg(format!("-t{threads}"))
                .arg(format!("-c{connections}"))
                .arg(format!("-d{seconds}s"))
                .args(["--latency", "--timeout", "5s", "-s"])
                .arg(&script)
                .arg(self.url(Target::Wasmgate, path))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        };
        let noise = if looping > 0 {
            let child = wrk(looping.min(2), looping, seconds + 1, NOISY_LOOP)
                .spawn()
                .context("running wrk")?;
            std::thread::sleep(Duration::from_millis(500));
            Some(child)
        } else {
            None
        };
        let healthy = wrk(1, 2, seconds, NOISY_HEALTHY)
            .output()
            .context("running wrk");
        let noise = noise
            .map(|c| c.wait_with_output().context("running wrk"))
            .transpose()?;
        let healthy = healthy?;
        let parse = |out: &std::process::Output| {
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!(
                    "wrk failed ({}): {text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            wrk_result(&text)
        };
        Ok((parse(&healthy)?, noise.as_ref().map(parse).transpose()?))
    }

    /// S7: `downloads` timed downloads of the 64 MiB file; MB/s of each, and the proxy's CPU
    /// seconds per GiB over all of them.
    pub(super) fn downloads(&self, t: Target) -> Result<(Vec<f64>, Option<f64>, Option<u64>)> {
        let pids = &self.peers.pids[&t];
        let url = self.url(t, "/plain/big");
        reset_peak_rss(pids);
        let before = cpu_ticks(pids);
        let mut speeds = Vec::new();
        for _ in 0..self.args.downloads {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "--max-time", "60", "-w"])
                .arg("%{http_code} %{size_download} %{time_total}")
                .arg(&url)
                .output()
                .context("running curl")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let f: Vec<&str> = text.split_whitespace().collect();
            let (Some(&"200"), Some(size), Some(time)) = (f.first(), f.get(1), f.get(2)) else {
                bail!("S7 via {}: unexpected curl result {text:?}", t.name());
            };
            let size: f64 = size.parse()?;
            let time: f64 = time.parse()?;
            if size as u64 != BIG_BYTES {
                bail!(
                    "S7 via {}: got {size} bytes, expected {BIG_BYTES}",
                    t.name()
                );
            }
            speeds.push(size / time / 1e6);
        }
        let after = cpu_ticks(pids);
        let gib = f64::from(self.args.downloads) * BIG_BYTES as f64 / (1u64 << 30) as f64;
        let cpu = (!pids.is_empty()).then(|| (after - before) as f64 / self.tck / gib);
        let rss = (!pids.is_empty()).then(|| peak_rss_kib(pids));
        Ok((speeds, cpu, rss))
    }
}

/// The numbers of h2load's summary: `finished in 10.00s, 5432.10 req/s, …`, `requests: N
/// total, N started, N done, N succeeded, F failed, E errored, T timeout`, and `time for
/// request: MIN MAX MEAN SD …`.
fn h2load_result(text: &str) -> Result<Run> {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .with_context(|| format!("no `{prefix}` line in h2load's output: {text}"))
    };
    let rps: f64 = field("finished in ")?
        .split(", ")
        .nth(1)
        .and_then(|r| r.strip_suffix(" req/s"))
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("no req/s in h2load's output: {text}"))?;
    let counts: Vec<(String, u64)> = field("requests: ")?
        .split(", ")
        .filter_map(|part| {
            let (n, what) = part.split_once(' ')?;
            Some((what.to_owned(), n.parse().ok()?))
        })
        .collect();
    let count = |what: &str| counts.iter().find(|(w, _)| w == what).map_or(0, |c| c.1);
    let times: Vec<f64> = field("time for request:")?
        .split_whitespace()
        .take(3)
        .map(duration_us)
        .collect::<Result<_>>()?;
    let [_, max, mean] = times[..] else {
        bail!("unexpected h2load time line in: {text}");
    };
    Ok(Run {
        rps,
        p50_us: mean,
        p99_us: max,
        requests: count("succeeded"),
        errors: count("failed") + count("errored") + count("timeout"),
        cpu_s_per_10k: None,
        rss_kib: None,
        redis: None,
    })
}

/// `812us`, `1.23ms` or `2.5s`, in µs.
fn duration_us(s: &str) -> Result<f64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("`{s}` is not an h2load duration");
    };
    Ok(n.parse::<f64>()
        .with_context(|| format!("`{s}` is not an h2load duration"))?
        * scale)
}

/// The numbers of wrk's `WRKRESULT` line (see [`LUA_DONE`]).
fn wrk_result(text: &str) -> Result<Run> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKRESULT "))
        .with_context(|| format!("no result line in wrk's output: {text}"))?;
    let n: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    let [requests, duration_us, p50, p99, errors] = n[..] else {
        bail!("unexpected wrk result line {line:?}");
    };
    Ok(Run {
        rps: requests / (duration_us / 1e6),
        p50_us: p50,
        p99_us: p99,
        requests: requests as u64,
        errors: errors as u64,
        cpu_s_per_10k: None,
        rss_kib: None,
        redis: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2loads_summary_is_read() {
        let text = "\
finished in 10.00s, 51234.50 req/s, 2.01MB/s
requests: 512345 total, 512845 started, 512345 done, 512340 succeeded, 3 failed, 2 errored, 0 timeout
status codes: 512340 2xx, 0 3xx, 0 4xx, 3 5xx
traffic: 20.10MB (21076301) total, 1.10MB (1153372) headers (space savings 95.31%), 8.31MB (8709865) data
                     min         max         mean         sd        +/- sd
time for request:      212us     41.07ms      9.71ms      2.42ms    74.05%
";
        let r = h2load_result(text).unwrap();
        assert_eq!(r.rps, 51234.5);
        assert_eq!((r.requests, r.errors), (512340, 5));
        assert_eq!((r.p50_us, r.p99_us), (9710.0, 41070.0));
        assert!(h2load_result("finished in 1s").is_err());
        assert_eq!(duration_us("2.5s").unwrap(), 2.5e6);
        assert!(duration_us("3 parsecs").is_err());
    }
}
