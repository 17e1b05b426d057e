//! The peers: the upstream nginx, nginx and HAProxy as proxies, and the gateway, each started
//! from its config template in `bench/`; and the tools the suite runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::arguments::Args;
use super::payloads::{JWT_SECRET, json_answer, soap_answer};
use super::processes::{Proc, children_of, free_ports};
use super::{BIG_BYTES, Target};
use crate::root;

/// Every running peer, and the processes whose CPU and memory count for each target.
pub(super) struct Peers {
    pub(super) ports: BTreeMap<Target, u16>,
    pub(super) pids: BTreeMap<Target, Vec<u32>>,
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

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
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

/// The Debian packages of the tools the end-to-end suite runs that are not installed: nginx,
/// HAProxy, wrk, curl and openssl (which signs the JWT).
fn missing_packages() -> Vec<&'static str> {
    ["nginx", "haproxy", "wrk", "curl", "openssl"]
        .into_iter()
        .filter(|c| !have(c))
        .collect()
}

/// Checks that every tool the end-to-end suite runs is installed. A missing one is an error
/// that names it, unless `install` is set: then the missing ones are installed from Debian's
/// packages.
pub(super) fn tools(install: bool) -> Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        bail!(
            "the end-to-end suite needs {} (not installed); `cargo xtask bench --install` \
             installs the missing tools with apt-get",
            missing.join(", ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(", "));
    crate::exec(Command::new("apt-get").arg("update"))?;
    crate::exec(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = missing_packages();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}

pub(super) fn tool_path(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_owned()
    }
}

pub(super) fn start_peers(args: &Args, dir: &Path, with_big: bool) -> Result<Peers> {
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
