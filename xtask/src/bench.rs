//! The end-to-end benchmark suite: the release gateway against nginx and HAProxy, all in front
//! of the same local nginx upstream, loaded by wrk. Results go to `BENCHMARKS.md`.
//!
//! Every process the suite starts is held in a [`Proc`], which kills it when dropped, so an
//! error anywhere still leaves nothing running.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::root;

const RESULTS_MARKER: &str = "<!-- Everything below is written by `cargo xtask bench`. -->";
const JWT_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const BIG_BYTES: u64 = 64 * 1024 * 1024;

/// What `cargo xtask bench` was asked for.
#[derive(Debug, Clone)]
pub struct Args {
    pub quick: bool,
    pub only: Option<String>,
    pub rounds: u32,
    pub duration_s: u32,
    pub workers: u32,
    pub threads: u32,
    pub connections: u32,
    pub downloads: u32,
    /// Arguments after `--`, for Criterion.
    pub criterion: Vec<String>,
    /// The command line, as given, for the report.
    pub command: String,
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Args> {
        let mut a = Args {
            quick: false,
            only: None,
            rounds: 3,
            duration_s: 10,
            workers: 2,
            threads: 2,
            connections: 50,
            downloads: 5,
            criterion: Vec::new(),
            command: std::iter::once("cargo xtask bench".to_owned())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let mut rounds = None;
        let mut duration = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> Result<u32> {
                let v = it.next().with_context(|| format!("{name} needs a value"))?;
                let n: u32 = v
                    .parse()
                    .with_context(|| format!("{name}: not a number: {v:?}"))?;
                if n == 0 {
                    bail!("{name} must be at least 1");
                }
                Ok(n)
            };
            match arg.as_str() {
                "--quick" => a.quick = true,
                "--only" => {
                    let v = it.next().context("--only needs e2e, micro or noisy")?;
                    if !["e2e", "micro", "noisy"].contains(&v.as_str()) {
                        bail!("--only: expected e2e, micro or noisy, got {v:?}");
                    }
                    a.only = Some(v.clone());
                }
                "--rounds" => rounds = Some(value("--rounds")?),
                "--duration" => duration = Some(value("--duration")?),
                "--workers" => a.workers = value("--workers")?,
                "--threads" => a.threads = value("--threads")?,
                "--connections" => a.connections = value("--connections")?,
                "--downloads" => a.downloads = value("--downloads")?,
                "--" => {
                    a.criterion.extend(it.by_ref().cloned());
                }
                // A Criterion filter, as `cargo xtask bench NAME` always took.
                filter if !filter.starts_with('-') => a.criterion.push(filter.to_owned()),
                other => bail!(
                    "unknown bench option {other:?}; usage: cargo xtask bench [--quick] \
                     [--only e2e|micro|noisy] [--rounds N] [--duration SECONDS] [--workers N] \
                     [--threads N] [--connections N] [--downloads N] [FILTER] [-- CRITERION ARGS]"
                ),
            }
        }
        if a.quick {
            a.rounds = 1;
            a.duration_s = 3;
        }
        a.rounds = rounds.unwrap_or(a.rounds);
        a.duration_s = duration.unwrap_or(a.duration_s);
        if a.connections < a.threads {
            bail!("--connections must be at least --threads (wrk needs one per thread)");
        }
        Ok(a)
    }

    /// The Criterion microbenchmarks run unless only e2e was asked for; `--quick` alone skips
    /// them, as they take minutes.
    pub fn run_micro(&self) -> bool {
        match self.only.as_deref() {
            Some(o) => o == "micro",
            None => !self.quick,
        }
    }

    pub fn run_e2e(&self) -> bool {
        self.only.as_deref() != Some("micro")
    }

    /// `--only noisy`: S8 alone, printed and not written to `BENCHMARKS.md`.
    fn noisy_only(&self) -> bool {
        self.only.as_deref() == Some("noisy")
    }

    /// S8 runs in the full suite and alone, not in the quick check.
    fn run_noisy(&self) -> bool {
        self.noisy_only() || !self.quick
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    Nginx,
    Haproxy,
    Wasmgate,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct (no proxy)",
            Target::Nginx => "nginx",
            Target::Haproxy => "HAProxy",
            Target::Wasmgate => "wasmgate",
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

/// S8's healthy route (no plugins) and its noisy neighbour, whose plugin loops until its
/// deadline; both on the gateway's workers alike.
const NOISY_HEALTHY: &str = "/plain/hello";
const NOISY_LOOP: &str = "/loop/x";
/// S8's phases: how many clients hammer the looping route while the healthy one is measured.
const NOISY_PHASES: [u32; 3] = [0, 1, 4];
/// Longest S8 phase, in seconds: enough requests for a p99 at two connections.
const NOISY_SECONDS: u32 = 5;

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
}

const SCENARIOS: &[Scenario] = &[
    // The latency probes first: one connection, so p50 is a request's own time through the
    // gateway, without the queueing that 50 connections on 2 cores add.
    Scenario {
        id: "S1-c1",
        title: "empty pipeline, one connection",
        path: "/plain/hello",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: false,
        plugins: 0,
        single: true,
    },
    Scenario {
        id: "S3-pooled-c1",
        title: "headers plugin, pooled, one connection",
        path: "/headers-pooled/hello",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: false,
        plugins: 1,
        single: true,
    },
    Scenario {
        id: "S1",
        title: "empty pipeline, keep-alive",
        path: "/plain/hello",
        targets: ALL,
        close: false,
        auth: false,
        post_json: false,
        plugins: 0,
        single: false,
    },
    Scenario {
        id: "S2",
        title: "a new connection per request (Connection: close)",
        path: "/plain/hello",
        targets: ALL,
        close: true,
        auth: false,
        post_json: false,
        plugins: 0,
        single: false,
    },
    Scenario {
        id: "S3-fresh",
        title: "headers plugin, fresh instances",
        path: "/headers-fresh/hello",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: false,
        plugins: 1,
        single: false,
    },
    Scenario {
        id: "S3-pooled",
        title: "headers plugin, pooled instances",
        path: "/headers-pooled/hello",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: false,
        plugins: 1,
        single: false,
    },
    Scenario {
        id: "S4",
        title: "jwt-auth (HS256) + rate-limit + headers, pooled",
        path: "/auth/hello",
        targets: GATEWAY,
        close: false,
        auth: true,
        post_json: false,
        plugins: 3,
        single: false,
    },
    Scenario {
        id: "S5",
        title: "transform: 1 KiB JSON POST to SOAP 1.1 and the SOAP answer back to JSON",
        path: "/soap",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: true,
        plugins: 1,
        single: false,
    },
    Scenario {
        id: "S6-python",
        title: "Python plugin (validate): a 1 KiB JSON POST checked against body rules",
        path: "/validate",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: true,
        plugins: 1,
        single: false,
    },
    Scenario {
        id: "S6-js",
        title: "JavaScript plugin (redact): fields of a 1 KiB JSON answer masked",
        path: "/redact/users.json",
        targets: GATEWAY,
        close: false,
        auth: false,
        post_json: false,
        plugins: 1,
        single: false,
    },
];

/// A process the suite started, and the workers it forked (nginx's); all killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    workers: Vec<u32>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers itself. SIGKILL if it lingers,
        // and the master always before the workers, so that it cannot replace them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.workers {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let out = fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name,
            child,
            workers: Vec::new(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `port` accepts connections, failing early when the process died.
    fn wait_ready(&mut self, port: u16, log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before listening; its log ({}):\n{}",
                    self.name,
                    log.display(),
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on port {port} within 30 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every running peer, and the processes whose CPU and memory count for each target.
struct Peers {
    ports: BTreeMap<Target, u16>,
    pids: BTreeMap<Target, Vec<u32>>,
    // Dropped in reverse order of starting: the proxies before their upstream.
    procs: Vec<Proc>,
}

impl Drop for Peers {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Held together so that the n ports differ; released just before the peers bind them.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(stat) = read_stat(child)
            && stat.ppid == pid
        {
            out.push(child);
        }
    }
    out
}

struct Stat {
    ppid: u32,
    ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        ticks: utime + stime,
    })
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| read_stat(p))
        .map(|s| s.ticks)
        .sum()
}

/// Resets each process's peak RSS to its current RSS (`clear_refs` 5), so that VmHWM after a run
/// is that run's peak. Needs root or the same user, which the suite has for its own children.
fn reset_peak_rss(pids: &[u32]) {
    for p in pids {
        let _ = fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

fn peak_rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// The 1, 5 and 15 minute load averages: a shared machine's other work shows here.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {cmd} >/dev/null 2>&1 || test -x /usr/sbin/{cmd}"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs nginx, HAProxy, wrk, curl and openssl (which signs the JWT) from Debian's packages
/// when any is missing.
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = ["nginx", "haproxy", "wrk", "curl", "openssl"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(", "));
    crate::exec(Command::new("apt-get").arg("update"))?;
    crate::exec(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn tool_path(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_owned()
    }
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An HS256 token valid for a day, signed with openssl's HMAC (present wherever curl is).
fn hs256_token() -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64url(
        format!(
            r#"{{"sub":"bench-user","iss":"bench","iat":{now},"exp":{},"roles":["bench"]}}"#,
            now + 86_400
        )
        .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-hmac", JWT_SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running openssl to sign the benchmark's JWT")?;
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("openssl stdin")?
            .write_all(input.as_bytes())?;
    }
    let mut mac = Vec::new();
    child
        .stdout
        .take()
        .context("openssl stdout")?
        .read_to_end(&mut mac)?;
    if !child.wait()?.success() || mac.len() != 32 {
        bail!("openssl dgst -hmac failed");
    }
    Ok(format!("{input}.{}", b64url(&mac)))
}

/// Twelve order lines, as a JSON array's elements.
fn order_items() -> String {
    (0..12)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:04}","quantity":{},"price":{}.50}}"#,
                i + 1,
                10 + i
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A JSON order of about 1 KiB.
fn json_body() -> String {
    let mut body = format!(
        r#"{{"customer":{{"name":"Ann Example","email":"ann@example.com","address":{{"street":"1 Main Street","city":"Springfield","zip":"12345"}}}},"items":[{}],"note":""#,
        order_items()
    );
    while body.len() < 1022 {
        body.push('x');
    }
    body.push_str("\"}");
    body
}

/// A JSON document with personal data, about 1 KiB, for the redaction plugin.
fn json_answer() -> String {
    format!(
        r#"{{"customer":{{"name":"Ann Example","email":"ann@example.com","ssn":"078-05-1120","address":{{"street":"1 Main Street","city":"Springfield","zip":"12345"}}}},"card":{{"number":"4111111111111111","expiry":"12/30"}},"items":[{}],"note":"leave at the door"}}"#,
        order_items()
    )
}

/// The SOAP service's answer, about 1 KiB.
fn soap_answer() -> String {
    let items: String = (0..12)
        .map(|i| format!("<line><sku>SKU-{i:04}</sku><status>accepted</status></line>"))
        .collect();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope \
         xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <CreateOrderResponse xmlns=\"http://example.com/orders\"><CreateOrderResult>\
         <id>42</id><total>1234.50</total><paid>true</paid>{items}<note>"
    );
    let tail = "</note></CreateOrderResult></CreateOrderResponse></soap:Body></soap:Envelope>";
    while s.len() + tail.len() < 1024 {
        s.push('x');
    }
    s.push_str(tail);
    s
}

fn start_peers(args: &Args, dir: &Path, with_big: bool) -> Result<Peers> {
    let root = root();
    let templates = root.join("bench");
    let read = |f: &str| {
        fs::read_to_string(templates.join(f)).with_context(|| format!("reading bench/{f}"))
    };
    let p = free_ports(4)?;
    let (up, ngx, hap, gw) = (p[0], p[1], p[2], p[3]);
    for d in ["upstream-tmp", "proxy-tmp", "www"] {
        fs::create_dir_all(dir.join(d))?;
    }
    if with_big {
        let big = dir.join("www/big.bin");
        if fs::metadata(&big).map(|m| m.len()).ok() != Some(BIG_BYTES) {
            let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
            let mut f = fs::File::create(&big)?;
            for _ in 0..BIG_BYTES / chunk.len() as u64 {
                std::io::Write::write_all(&mut f, &chunk)?;
            }
        }
    }
    let dir_s = dir.display().to_string();
    let body: String = "0123456789abcdef".repeat(64);
    let mut vars = vec![
        ("DIR", dir_s.clone()),
        ("BODY", body),
        ("SOAP", soap_answer()),
        ("JSON", json_answer()),
        ("WORKERS", args.workers.to_string()),
        ("UPSTREAM", up.to_string()),
        (
            "WASM",
            root.join("target/wasm32-wasip2/release")
                .display()
                .to_string(),
        ),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
    ];
    let mut peers = Peers {
        ports: BTreeMap::new(),
        pids: BTreeMap::new(),
        procs: Vec::new(),
    };

    let mut start = |name: &'static str,
                     target: Option<Target>,
                     workers: usize,
                     template: &str,
                     file: &str,
                     port: u16,
                     vars: &mut Vec<(&str, String)>,
                     cmd: &dyn Fn(&Path) -> Command|
     -> Result<()> {
        vars.retain(|(k, _)| *k != "PORT");
        vars.push(("PORT", port.to_string()));
        let conf = dir.join(file);
        fs::write(&conf, fill(&read(template)?, vars))?;
        let log = dir.join(format!("{file}.log"));
        let mut proc = Proc::spawn(name, &mut cmd(&conf), &log)?;
        proc.wait_ready(port, &log)?;
        let pid = proc.pid();
        // nginx's master binds before it forks its workers, which do the work.
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc.workers.len() < workers && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            proc.workers = children_of(pid);
        }
        if proc.workers.len() < workers {
            bail!(
                "{name}: {workers} worker processes expected, found {}",
                proc.workers.len()
            );
        }
        let mut pids = vec![pid];
        pids.extend(&proc.workers);
        peers.procs.push(proc);
        if let Some(t) = target {
            peers.pids.insert(t, pids);
            peers.ports.insert(t, port);
        }
        Ok(())
    };
    let nginx = tool_path("nginx");
    let haproxy = tool_path("haproxy");
    let dir2 = dir.to_owned();
    start(
        "upstream nginx",
        None,
        1,
        "nginx-upstream.conf",
        "nginx-upstream.conf",
        up,
        &mut vars,
        &|conf| {
            let mut c = Command::new(&nginx);
            c.arg("-p")
                .arg(&dir2)
                .arg("-e")
                .arg(dir2.join("nginx-startup.log"))
                .arg("-c")
                .arg(conf);
            c
        },
    )?;
    start(
        "nginx proxy",
        Some(Target::Nginx),
        args.workers as usize,
        "nginx-proxy.conf",
        "nginx-proxy.conf",
        ngx,
        &mut vars,
        &|conf| {
            let mut c = Command::new(&nginx);
            c.arg("-p")
                .arg(&dir2)
                .arg("-e")
                .arg(dir2.join("nginx-startup.log"))
                .arg("-c")
                .arg(conf);
            c
        },
    )?;
    start(
        "haproxy",
        Some(Target::Haproxy),
        0,
        "haproxy.cfg",
        "haproxy.cfg",
        hap,
        &mut vars,
        &|conf| {
            let mut c = Command::new(&haproxy);
            c.arg("-db").arg("-f").arg(conf);
            c
        },
    )?;
    // Another build of the gateway, to compare two versions under the same suite.
    let gateway = std::env::var_os("WASMGATE_BENCH_GATEWAY")
        .map_or_else(|| root.join("target/release/wasmgate"), PathBuf::from);
    start(
        "wasmgate",
        Some(Target::Wasmgate),
        0,
        "gateway.toml",
        "gateway.toml",
        gw,
        &mut vars,
        &|conf| {
            let mut c = Command::new(&gateway);
            c.arg("run").arg("--config").arg(conf);
            c.env("WASMGATE_LOG", "warn");
            c
        },
    )?;
    peers.ports.insert(Target::Direct, up);
    peers.pids.insert(Target::Direct, Vec::new());
    Ok(peers)
}

/// One wrk run's numbers.
#[derive(Debug, Clone, Default)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
    cpu_s_per_10k: Option<f64>,
    rss_kib: Option<u64>,
}

const LUA_DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"#;

struct Ctx<'a> {
    args: &'a Args,
    dir: PathBuf,
    peers: &'a Peers,
    token: String,
    tck: f64,
}

impl Ctx<'_> {
    fn url(&self, target: Target, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.peers.ports[&target])
    }

    fn script(&self, s: &Scenario) -> Result<PathBuf> {
        let path = self.dir.join(format!("{}.lua", s.id));
        let mut lua = String::new();
        if s.post_json {
            writeln!(lua, "wrk.method = \"POST\"")?;
            writeln!(lua, "wrk.body = [[{}]]", json_body())?;
            writeln!(lua, "wrk.headers[\"Content-Type\"] = \"application/json\"")?;
        }
        lua.push_str(LUA_DONE);
        fs::write(&path, lua)?;
        Ok(path)
    }

    /// Checks with curl that the scenario's request gets a 200, before load is put on it.
    fn check(&self, s: &Scenario, t: Target) -> Result<()> {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ]);
        if s.auth {
            c.arg("-H")
                .arg(format!("Authorization: Bearer {}", self.token));
        }
        if s.post_json {
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(json_body());
        }
        c.arg(self.url(t, s.path));
        let out = c.output().context("running curl")?;
        let code = String::from_utf8_lossy(&out.stdout);
        if code != "200" {
            bail!(
                "{} via {}: expected 200, got {code} {}",
                s.id,
                t.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn wrk(&self, s: &Scenario, t: Target, seconds: u32) -> Result<Run> {
        let pids = &self.peers.pids[&t];
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
        c.arg(self.url(t, s.path));
        reset_peak_rss(pids);
        let before = cpu_ticks(pids);
        let out = c.output().context("running wrk")?;
        let after = cpu_ticks(pids);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut run = wrk_result(&text)?;
        let requests = run.requests as f64;
        run.cpu_s_per_10k = (!pids.is_empty() && run.requests > 0)
            .then(|| (after - before) as f64 / self.tck / requests * 10_000.0);
        run.rss_kib = (!pids.is_empty()).then(|| peak_rss_kib(pids));
        Ok(run)
    }

    /// Checks that S8's looping route fails its request with a timeout (500, after its
    /// deadline) and that the healthy route answers, before load is put on them.
    fn check_noisy(&self) -> Result<()> {
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
    fn noisy(&self, looping: u32, seconds: u32) -> Result<(Run, Option<Run>)> {
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
    fn downloads(&self, t: Target) -> Result<(Vec<f64>, Option<f64>, Option<u64>)> {
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
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .copied()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

#[derive(Debug, Clone)]
struct Summary {
    rps: f64,
    rps_range: (f64, f64),
    p50: f64,
    p50_range: (f64, f64),
    p99: f64,
    p99_range: (f64, f64),
    cpu: Option<f64>,
    rss_kib: Option<u64>,
    errors: u64,
    requests: u64,
}

fn summarize(runs: &[Run]) -> Summary {
    let col = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let (rps, p50, p99) = (col(|r| r.rps), col(|r| r.p50_us), col(|r| r.p99_us));
    let cpus: Vec<f64> = runs.iter().filter_map(|r| r.cpu_s_per_10k).collect();
    Summary {
        rps: median(&rps),
        rps_range: min_max(&rps),
        p50: median(&p50),
        p50_range: min_max(&p50),
        p99: median(&p99),
        p99_range: min_max(&p99),
        cpu: (!cpus.is_empty()).then(|| median(&cpus)),
        rss_kib: runs.iter().filter_map(|r| r.rss_kib).max(),
        errors: runs.iter().map(|r| r.errors).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn run_cmd(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "unknown".into())
}

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
        "- CPUs: {nproc} × {cpu}\n- Memory: {mem}\n- Kernel: Linux {kernel}\n- nginx: {}\n- HAProxy: {}\n- wrk: {}\n- curl: {}\n",
        run_cmd(&tool_path("nginx"), &["-v"]).replace("nginx version: ", ""),
        run_cmd(&tool_path("haproxy"), &["-v"]),
        run_cmd("wrk", &["-v"]),
        run_cmd("curl", &["--version"])
            .split(" (")
            .next()
            .unwrap_or("")
            .to_owned(),
    )
}

/// Runs the suite, prints the results, and (unless `--quick`) writes them to `BENCHMARKS.md`.
pub fn e2e(args: &Args) -> Result<()> {
    ensure_tools()?;
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
        token: hs256_token()?,
        tck: clk_tck(),
    };
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| !args.noisy_only() && (!args.quick || s.id == "S1" || s.id == "S4"))
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

/// Reload latency: from writing a config that grows the table from 1 route to 100 routes, each
/// running the sample plugins (jwt-auth, rate-limit, headers, transform: 400 pipeline entries to
/// initialise), to the last new route answering. Cold: the plugins are new to the gateway and its
/// compile cache is empty. Warm: a fresh gateway whose disk cache already holds them. The
/// gateway's file watcher triggers the reload (its debounce is set to 50 ms, included).
fn reload_latency(dir: &Path, upstream: u16, rounds: u32) -> Result<String> {
    let root = root();
    let gateway = root.join("target/release/wasmgate");
    let wasm = |n: &str| root.join(format!("target/wasm32-wasip2/release/{n}.wasm"));
    let status_of = |port: u16, path: &str| -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..rounds.max(1) {
        let cache = dir.join(format!("reload-cache-{round}"));
        let _ = fs::remove_dir_all(&cache);
        for warm_cache in [false, true] {
            let port = free_ports(1)?[0];
            let conf = dir.join("reload.toml");
            let head = format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[reload]\ndebounce_ms = 50\n[upstreams.up]\ntargets = [\"http://127.0.0.1:{upstream}\"]\n"
            );
            fs::write(
                &conf,
                format!(
                    "{head}[[routes]]\nname = \"r0\"\npath_prefix = \"/r0\"\nupstream = \"up\"\n"
                ),
            )?;
            let log = dir.join("reload-gateway.log");
            let mut cmd = Command::new(&gateway);
            cmd.arg("run")
                .arg("--config")
                .arg(&conf)
                .env("WASMGATE_LOG", "warn")
                .env("WASMGATE_CACHE_DIR", &cache);
            let mut proc = Proc::spawn("wasmgate (reload)", &mut cmd, &log)?;
            proc.wait_ready(port, &log)?;
            let mut next = head.clone();
            for (name, file) in [
                ("jwt", "jwt_auth"),
                ("limit", "rate_limit"),
                ("headers", "headers"),
                ("transform", "transform"),
            ] {
                next.push_str(&format!(
                    "[plugins.{name}]\npath = \"{}\"\n",
                    wasm(file).display()
                ));
            }
            for i in 0..100 {
                next.push_str(&format!(
                    "[[routes]]\nname = \"r{i}\"\npath_prefix = \"/r{i}\"\nupstream = \"up\"\n\
                     [[routes.pipeline]]\nplugin = \"limit\"\nconfig = {{ rate = 1000000, per = \"second\", burst = 1000000 }}\n\
                     [[routes.pipeline]]\nplugin = \"headers\"\nconfig = {{ response = {{ set = {{ \"x-route\" = \"r{i}\" }} }} }}\n\
                     [[routes.pipeline]]\nplugin = \"transform\"\nconfig = {{ request = {{ headers = {{ add = {{ \"x-t\" = \"{i}\" }} }} }} }}\n\
                     [[routes.pipeline]]\nplugin = \"jwt\"\nconfig = {{ algorithms = [\"HS256\"], secret = \"{JWT_SECRET}-{i}\" }}\n"
                ));
            }
            let tmp = dir.join("reload.toml.new");
            fs::write(&tmp, next)?;
            let started = Instant::now();
            fs::rename(&tmp, &conf)?;
            // The new route answers (401: no token) once its pipeline is live; 404 before.
            loop {
                if status_of(port, "/r99/x").is_some_and(|s| s != 404) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "the 100-route config did not go live in 120 s; log: {}",
                        log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            eprintln!(
                "xtask: reload 1 -> 100 routes, {} cache: {ms:.0} ms",
                if warm_cache { "warm" } else { "cold" }
            );
            if warm_cache {
                warm.push(ms)
            } else {
                cold.push(ms)
            }
            drop(proc);
        }
    }
    let row = |label: &str, v: &[f64]| {
        let (lo, hi) = min_max(v);
        format!("| {label} | {:.0} ms | {lo:.0}–{hi:.0} ms |\n", median(v))
    };
    Ok(format!(
        "\n### Reload latency\n\nFrom writing a config that grows the table from 1 route to 100 routes, each running \
         rate-limit, headers, transform and jwt-auth (400 pipeline entries initialised), to the last new \
         route answering; the file watcher's 50 ms debounce is included. Cold: the plugins are new and the \
         compile cache is empty; warm: a fresh gateway whose disk cache holds them. {} rounds.\n\n\
         | cache | median | min–max |\n|---|---|---|\n{}{}",
        rounds.max(1),
        row("cold", &cold),
        row("warm", &warm)
    ))
}

/// S7's numbers for one target, over all rounds.
#[derive(Debug, Default)]
struct Downloads {
    /// MB/s of each download.
    speeds: Vec<f64>,
    /// The proxy's CPU seconds per GiB, one per round.
    cpu: Vec<f64>,
    rss_kib: Option<u64>,
}

/// One S8 phase over all rounds: the healthy route's runs, and the looping clients' runs.
#[derive(Debug, Default)]
struct Noisy {
    healthy: Vec<Run>,
    looping: Vec<Run>,
}

/// When and where the run happened, for the report.
struct RunInfo {
    date: String,
    commit: String,
    elapsed: u64,
    load: String,
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

fn report(
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
    for id in ["S1", "S2"] {
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
    let get = |id: &'static str, t: Target| sum.get(&(id, t));
    if let (Some(g), Some(n), Some(h)) = (
        get("S1", Target::Wasmgate),
        get("S1", Target::Nginx),
        get("S1", Target::Haproxy),
    ) {
        writeln!(
            o,
            "| S1 req/s ≥ 1.0× nginx | {} | {} |",
            ratio(g.rps, n.rps),
            verdict(g.rps >= n.rps)
        )?;
        writeln!(
            o,
            "| S1 req/s ≥ 1.0× HAProxy | {} | {} |",
            ratio(g.rps, h.rps),
            verdict(g.rps >= h.rps)
        )?;
        writeln!(
            o,
            "| S1 p99 ≤ nginx's | {} vs {} | {} |",
            fmt_us(g.p99),
            fmt_us(n.p99),
            verdict(g.p99 <= n.p99)
        )?;
    }
    if let (Some(s4), Some(s1)) = (get("S4", Target::Wasmgate), &s1) {
        writeln!(
            o,
            "| S4 req/s ≥ 0.7× S1 | {} | {} |",
            ratio(s4.rps, s1.rps),
            verdict(s4.rps >= 0.7 * s1.rps)
        )?;
    }
    if let (Some(s3), Some(s1)) = (get("S3-pooled", Target::Wasmgate), &s1) {
        let added = s3.p50 - s1.p50;
        writeln!(
            o,
            "| pooled plugin adds ≤ 10 µs p50 (S3 pooled − S1, {} connections) | {added:.0} µs | {} |",
            args.connections,
            verdict(added <= 10.0)
        )?;
    }
    if let (Some(s3), Some(s1)) = (
        get("S3-pooled-c1", Target::Wasmgate),
        get("S1-c1", Target::Wasmgate),
    ) {
        let added = s3.p50 - s1.p50;
        writeln!(
            o,
            "| pooled plugin adds ≤ 10 µs p50 (S3 pooled − S1, one connection) | {added:.0} µs | {} |",
            verdict(added <= 10.0)
        )?;
    }
    if let (Some(s3), Some(s1)) = (get("S3-pooled", Target::Wasmgate), &s1)
        && let (Some(c3), Some(c1)) = (s3.cpu, s1.cpu)
    {
        // CPU seconds per 10k requests → µs per request.
        writeln!(
            o,
            "| (for reference) CPU added per request by the pooled plugin (S3 pooled − S1) | {:.1} µs | — |",
            (c3 - c1) * 100.0
        )?;
    }
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

fn write_results(report: &str) -> Result<()> {
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
