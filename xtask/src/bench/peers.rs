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
/// its Lua module (S3-lua), HAProxy, wrk, curl and openssl (which signs the JWT).
fn missing_packages() -> Vec<&'static str> {
    let mut missing: Vec<&str> = ["nginx", "haproxy", "wrk", "curl", "openssl"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !LUA_MODULES.iter().all(|m| Path::new(m).exists()) {
        missing.push(LUA_PACKAGE);
    }
    missing
}

/// Debian's package of lua-nginx-module, which brings the module it needs (ndk) along.
const LUA_PACKAGE: &str = "libnginx-mod-http-lua";

/// The modules S3-lua's nginx loads, in this order: the Lua module needs the NDK's.
const LUA_MODULES: [&str; 2] = [
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
];

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

/// S3-lua's nginx: the nginx proxy's config (`bench/nginx-proxy.conf`), so that the two differ
/// only by the Lua module loaded and [`LUA_HEADERS`] in its one location; with files of its own.
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
    conf = edit(conf, "/nginx-proxy-error.log", "/nginx-lua-error.log")?;
    conf = edit(conf, "/proxy-tmp/", "/lua-tmp/")?;
    edit(
        conf,
        "        location / {\n",
        &format!("        location / {{\n{LUA_HEADERS}"),
    )
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
    let p = free_ports(5)?;
    let (up, ngx, lua, hap, gw) = (p[0], p[1], p[2], p[3], p[4]);
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
            peers.pids.insert(t, pids);
            peers.ports.insert(t, port);
        }
        Ok(())
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
    start(
        "wasmgate",
        Some(Target::Wasmgate),
        0,
        &read("gateway.toml")?,
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
        for line in proxy
            .lines()
            .filter(|l| !l.contains("nginx-proxy") && !l.contains("proxy-tmp"))
        {
            assert!(lua.contains(line), "{line:?} is not in the Lua config");
        }
        assert!(nginx_lua_conf("worker_processes 1;").is_err());
    }
}
