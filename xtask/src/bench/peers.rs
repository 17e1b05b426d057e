//! The peers: the upstream nginx, nginx and HAProxy as proxies, and the gateway, each started
//! from its config template in `bench/`; and the tools the suite runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::arguments::Args;
use super::payloads::{JWT_SECRET, api_key_sha256, json_answer, soap_answer};
use super::processes::{Proc, children_of, free_ports};
use super::{BIG_BYTES, Target};
use crate::packages::{self, Tool};
use crate::root;

/// Every running peer, and the processes whose CPU and memory count for each target; the
/// same for the TLS listeners (nginx and HAProxy serve both from one process, the gateway from
/// a second one).
pub(super) struct Peers {
    pub(super) ports: BTreeMap<Target, u16>,
    pub(super) pids: BTreeMap<Target, Vec<u32>>,
    pub(super) tls_ports: BTreeMap<Target, u16>,
    pub(super) tls_pids: BTreeMap<Target, Vec<u32>>,
    /// The certificate every TLS listener serves (ECDSA P-256, for 127.0.0.1).
    pub(super) cert: PathBuf,
    /// The redis-server of the gateway whose state is on Redis.
    pub(super) redis: Option<RedisPeer>,
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

/// The suite's redis-server: one process, no persistence.
pub(super) struct RedisPeer {
    pub(super) pid: u32,
    port: u16,
}

impl RedisPeer {
    /// The rate-limit checks it has run: its `EVALSHA` calls (`INFO commandstats`; the
    /// commands the script runs are counted apart, under their own names).
    pub(super) fn checks(&self) -> Result<u64> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["INFO", "commandstats"])
            .output()
            .context("running redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        else {
            // No check yet.
            return Ok(0);
        };
        line.split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.trim().parse().ok())
            .context("redis-cli INFO commandstats: no calls= for evalsha")
    }
}

/// redis-server's config: its port, loopback only, nothing written to disk.
const REDIS_CONF: &str = "port {{PORT}}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {{DIR}}\n";

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// The tools the end-to-end suite runs: nginx, its Lua module (S3-lua), HAProxy, wrk, h2load
/// (S1-h2), curl and openssl (which signs the JWT and makes the TLS scenarios' certificate),
/// and redis-server (S4-redis).
const BENCH_TOOLS: &[Tool] = &[
    Tool::Command("redis-server", "redis-server"),
    Tool::Command("nginx", "nginx"),
    Tool::Command("haproxy", "haproxy"),
    Tool::Command("wrk", "wrk"),
    Tool::Command("h2load", "nghttp2-client"),
    Tool::Command("curl", "curl"),
    Tool::Command("openssl", "openssl"),
    Tool::File(LUA_MODULES[0], LUA_PACKAGE),
    Tool::File(LUA_MODULES[1], LUA_PACKAGE),
];

/// The nginx proxy's TLS listener, as `bench/nginx-proxy.conf` has it.
const TLS_LISTEN: &str =
    "        listen 127.0.0.1:{{TLS_PORT}} ssl http2 reuseport backlog=4096;\n";

/// Debian's package of lua-nginx-module, which brings the module it needs (ndk) along.
const LUA_PACKAGE: &str = "libnginx-mod-http-lua";

/// The modules S3-lua's nginx loads, in this order: the Lua module needs the NDK's.
const LUA_MODULES: [&str; 2] = [
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
];

/// The certificate of the TLS scenarios, made with openssl: an ECDSA P-256 key, as most
/// sites now serve, for `localhost` and `127.0.0.1`. Returns the certificate, the key, and
/// both in one file (HAProxy's `crt`).
fn make_certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let cert = dir.join("bench-cert.pem");
    let key = dir.join("bench-key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl could not make the benchmark's certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let both = dir.join("bench-cert-key.pem");
    fs::write(
        &both,
        fs::read_to_string(&cert)? + &fs::read_to_string(&key)?,
    )?;
    Ok((cert, key, both))
}

/// The gateway's config with its listener on TLS, the benchmark's certificate its one.
fn gateway_tls_conf(plain: &str) -> String {
    format!(
        "{plain}\n[server.tls]\ncerts = [{{ cert = \"{{{{CERT}}}}\", key = \"{{{{KEY}}}}\" }}]\n"
    )
}

/// S3's header work (the headers plugin's config on the gateway's `headers-*` routes in
/// `bench/gateway.toml`) in Lua: the client's request id kept when it is short and plain, a new
/// UUID v4 otherwise, set on the request and echoed on the response; `x-internal` removed;
/// `x-client-ip` set to the client's address and `x-route` to the route's name; `x-served-by`
/// on the response, naming the route. The values that depend on the request are read from
/// nginx's variables per request, as the plugin renders its templates.
const LUA_HEADERS: &str = r#"            set $route headers-lua;

            rewrite_by_lua_block {
                local id = ngx.var.http_x_request_id
                if not id or #id == 0 or #id > 128 or id:find("[^%w_.:%-]") then
                    -- nginx's $request_id: 16 random bytes in hex, laid out as a UUID v4.
                    local r = ngx.var.request_id
                    local v = tonumber(r:sub(17, 17), 16) % 4 + 1
                    id = r:sub(1, 8) .. "-" .. r:sub(9, 12) .. "-4" .. r:sub(14, 16) .. "-"
                        .. ("89ab"):sub(v, v) .. r:sub(18, 20) .. "-" .. r:sub(21, 32)
                end
                ngx.req.set_header("X-Request-ID", id)
                ngx.req.clear_header("X-Internal")
                local route = ngx.var.route
                ngx.req.set_header("X-Client-IP", ngx.var.remote_addr)
                ngx.req.set_header("X-Route", route)
                local ctx = ngx.ctx
                ctx.request_id = id
                ctx.served_by = "nginx (route " .. route .. ")"
            }

            header_filter_by_lua_block {
                local ctx = ngx.ctx
                ngx.header["X-Request-ID"] = ctx.request_id
                ngx.header["X-Served-By"] = ctx.served_by
            }

"#;

/// S10's aggregation in Lua, as one writes it there: three subrequests through the upstream at
/// once (`ngx.location.capture_multi`), each 200 body put in the answer under its part's name
/// as it came (not parsed: cheaper than the plugin, which parses each part and writes the
/// merged JSON), any other part `null` and named in `errors`.
const LUA_AGGREGATE: &str = r#"        location = /aggregate-lua {
            default_type application/json;
            content_by_lua_block {
                local names = { "a", "b", "c" }
                local answers = { ngx.location.capture_multi({
                    { "/_part/a/users.json" }, { "/_part/b/users.json" }, { "/_part/c/users.json" },
                }) }
                local out, errors = { "{" }, {}
                for i, name in ipairs(names) do
                    local r = answers[i]
                    local ok = r.status == 200 and #r.body > 0
                    out[#out + 1] = '"' .. name .. '":' .. (ok and r.body or "null") .. ","
                    if not ok then
                        errors[#errors + 1] = '{"part":"' .. name .. '","error":"status ' .. r.status .. '"}'
                    end
                end
                out[#out + 1] = '"errors":[' .. table.concat(errors, ",") .. "]}"
                ngx.print(table.concat(out))
            }
        }

        location /_part/ {
            internal;
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

"#;

/// nginx + Lua's config: the nginx proxy's (`bench/nginx-proxy.conf`), so that the two differ
/// only by the Lua module loaded, [`LUA_HEADERS`] in its one location and S10's
/// [`LUA_AGGREGATE`] locations beside it; with files of its own.
fn nginx_lua_conf(proxy: &str) -> Result<String> {
    let edit = |conf: String, from: &str, to: &str| {
        if !conf.contains(from) {
            bail!("bench/nginx-proxy.conf has no {from:?}, from which S3-lua's config is made");
        }
        Ok(conf.replace(from, to))
    };
    let modules: String = LUA_MODULES
        .iter()
        .map(|m| format!("load_module {m};\n"))
        .collect();
    let mut conf = format!(
        "# S3-lua: the nginx proxy's config with S3's header work in Lua, made by `cargo xtask bench`.\n{modules}{proxy}"
    );
    conf = edit(conf, "/nginx-proxy.pid", "/nginx-lua.pid")?;
    // The TLS listener is the nginx proxy's alone.
    conf = edit(conf, TLS_LISTEN, "")?;
    conf = edit(conf, "/nginx-proxy-error.log", "/nginx-lua-error.log")?;
    conf = edit(conf, "/proxy-tmp/", "/lua-tmp/")?;
    edit(
        conf,
        "        location / {\n",
        &format!("{LUA_AGGREGATE}        location / {{\n{LUA_HEADERS}"),
    )
}

/// Checks that every tool the end-to-end suite runs is installed. A missing one is an error
/// that names it, unless `install` is set: then the missing ones are installed from Debian's
/// packages.
pub(super) fn tools(install: bool) -> Result<()> {
    if install {
        return packages::install(BENCH_TOOLS);
    }
    let missing = packages::missing(BENCH_TOOLS);
    if !missing.is_empty() {
        bail!(
            "the end-to-end suite needs {} (not installed); `cargo xtask bench --install` \
             installs the missing tools with apt-get",
            missing.join(", ")
        );
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
    let p = free_ports(11)?;
    let (up, ngx, lua, hap, gw) = (p[0], p[1], p[2], p[3], p[4]);
    let (ngx_tls, hap_tls, gw_tls) = (p[5], p[6], p[7]);
    let (redis, gw_redis, gw_redis_sync) = (p[8], p[9], p[10]);
    let (cert, key, cert_key) = make_certificate(dir)?;
    for d in ["upstream-tmp", "proxy-tmp", "lua-tmp", "www"] {
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
        (
            "FIXTURES",
            root.join("tests/fixtures").display().to_string(),
        ),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("API_KEY_SHA256", api_key_sha256()?),
        ("CERT", cert.display().to_string()),
        ("KEY", key.display().to_string()),
        ("CERT_KEY", cert_key.display().to_string()),
    ];
    let mut peers = Peers {
        ports: BTreeMap::new(),
        pids: BTreeMap::new(),
        tls_ports: BTreeMap::new(),
        tls_pids: BTreeMap::new(),
        cert: cert.clone(),
        redis: None,
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
     -> Result<Vec<u32>> {
        vars.retain(|(k, _)| *k != "PORT");
        vars.push(("PORT", port.to_string()));
        let conf = dir.join(file);
        fs::write(&conf, fill(template, vars))?;
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
            peers.pids.insert(t, pids.clone());
            peers.ports.insert(t, port);
        }
        Ok(pids)
    };
    let nginx = tool_path("nginx");
    let haproxy = tool_path("haproxy");
    let dir2 = dir.to_owned();
    let nginx_cmd = |conf: &Path| {
        let mut c = Command::new(&nginx);
        c.arg("-p")
            .arg(&dir2)
            .arg("-e")
            .arg(dir2.join("nginx-startup.log"))
            .arg("-c")
            .arg(conf);
        c
    };
    start(
        "upstream nginx",
        None,
        1,
        &read("nginx-upstream.conf")?,
        "nginx-upstream.conf",
        up,
        &mut vars,
        &nginx_cmd,
    )?;
    let proxy = read("nginx-proxy.conf")?;
    vars.push(("TLS_PORT", ngx_tls.to_string()));
    start(
        "nginx proxy",
        Some(Target::Nginx),
        args.workers as usize,
        &proxy,
        "nginx-proxy.conf",
        ngx,
        &mut vars,
        &nginx_cmd,
    )?;
    start(
        "nginx + Lua",
        Some(Target::NginxLua),
        args.workers as usize,
        &nginx_lua_conf(&proxy)?,
        "nginx-lua.conf",
        lua,
        &mut vars,
        &nginx_cmd,
    )?;
    vars.retain(|(k, _)| *k != "TLS_PORT");
    vars.push(("TLS_PORT", hap_tls.to_string()));
    start(
        "haproxy",
        Some(Target::Haproxy),
        0,
        &read("haproxy.cfg")?,
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
    let gateway_cmd = |conf: &Path| {
        let mut c = Command::new(&gateway);
        c.arg("run").arg("--config").arg(conf);
        c.env("WASMGATE_LOG", "warn");
        c
    };
    let gateway_conf = read("gateway.toml")?;
    start(
        "wasmgate",
        Some(Target::Wasmgate),
        0,
        &gateway_conf,
        "gateway.toml",
        gw,
        &mut vars,
        &gateway_cmd,
    )?;
    // The same gateway with its listener on TLS: a process of its own, since a listener is
    // plain or TLS.
    let tls = start(
        "wasmgate (TLS)",
        None,
        0,
        &gateway_tls_conf(&gateway_conf),
        "gateway-tls.toml",
        gw_tls,
        &mut vars,
        &gateway_cmd,
    )?;
    // S4-redis: the same gateway with its state on a redis-server of its own.
    let redis_pid = start(
        "redis-server",
        None,
        0,
        REDIS_CONF,
        "redis.conf",
        redis,
        &mut vars,
        &|conf| {
            let mut c = Command::new(tool_path("redis-server"));
            c.arg(conf);
            c
        },
    )?[0];
    let on_redis = format!(
        "{gateway_conf}\n[state]\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://127.0.0.1:{redis}/0\"\n"
    );
    start(
        "wasmgate (state on Redis)",
        Some(Target::WasmgateRedis),
        0,
        &on_redis,
        "gateway-redis.toml",
        gw_redis,
        &mut vars,
        &gateway_cmd,
    )?;
    start(
        "wasmgate (state on Redis, sync_ms = 50)",
        Some(Target::WasmgateRedisSync),
        0,
        &format!("{on_redis}sync_ms = 50\n"),
        "gateway-redis-sync.toml",
        gw_redis_sync,
        &mut vars,
        &gateway_cmd,
    )?;
    peers.redis = Some(RedisPeer {
        pid: redis_pid,
        port: redis,
    });
    peers.tls_pids.insert(Target::Wasmgate, tls);
    peers.tls_ports.insert(Target::Wasmgate, gw_tls);
    for (t, port) in [(Target::Nginx, ngx_tls), (Target::Haproxy, hap_tls)] {
        peers.tls_pids.insert(t, peers.pids[&t].clone());
        peers.tls_ports.insert(t, port);
    }
    peers.ports.insert(Target::Direct, up);
    peers.pids.insert(Target::Direct, Vec::new());
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lua_config_is_the_nginx_proxy_config_with_the_header_work() {
        let proxy = fs::read_to_string(root().join("bench/nginx-proxy.conf")).unwrap();
        let lua = nginx_lua_conf(&proxy).unwrap();
        let ndk = lua.find("load_module /usr/lib/nginx/modules/ndk_http_module.so;");
        let module = lua.find("load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;");
        assert!(ndk.is_some() && module.is_some() && ndk < module);
        assert!(!lua.contains("nginx-proxy") && !lua.contains("proxy-tmp"));
        assert!(lua.contains("pid {{DIR}}/nginx-lua.pid;"));
        let location = lua.find("location / {").unwrap();
        let rewrite = lua.find("rewrite_by_lua_block {").unwrap();
        let filter = lua.find("header_filter_by_lua_block {").unwrap();
        let proxy_pass = lua.find("proxy_pass http://up;").unwrap();
        assert!(location < rewrite && rewrite < filter && filter < proxy_pass);
        // Everything else is the proxy's config as it is.
        assert!(!lua.contains("{{TLS_PORT}}"));
        for line in proxy.lines().filter(|l| {
            !l.contains("nginx-proxy") && !l.contains("proxy-tmp") && !l.contains("{{TLS_PORT}}")
        }) {
            assert!(lua.contains(line), "{line:?} is not in the Lua config");
        }
        assert!(nginx_lua_conf("worker_processes 1;").is_err());
    }
}
