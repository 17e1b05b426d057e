//! Reload latency: how long a config that grows the route table takes to go live.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::payloads::JWT_SECRET;
use super::processes::{Proc, free_ports};
use super::stats::{median, min_max};
use crate::root;

/// Reload latency: from writing a config that grows the table from 1 route to 100 routes, each
/// running the sample plugins (jwt-auth, rate-limit, headers, transform: 400 pipeline entries to
/// initialise), to the last new route answering. Cold: the plugins are new to the gateway and its
/// compile cache is empty. Warm: a fresh gateway whose disk cache already holds them. The
/// gateway's file watcher triggers the reload (its debounce is set to 50 ms, included).
pub(super) fn reload_latency(dir: &Path, upstream: u16, rounds: u32) -> Result<String> {
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
