//! Hot reload through the real gateway, under continuous load from several connections: route
//! and pipeline changes, plugin binaries swapped in place, broken configs and plugins that
//! must not replace a working one, limiter state across reloads, SIGHUP and the admin API, and
//! the on-disk compile cache.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};

/// How soon a change written to disk must be serving.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// Replaces a file the way deploy tools do: write aside, then rename over it.
fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("writing");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A directory of plugin copies the test may overwrite.
fn plugin_dir(names: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (file, built) in names {
        std::fs::copy(plugin(built), dir.path().join(file)).unwrap();
    }
    dir
}

fn header_config(up: &Upstream, plugins: &Path, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[reload]
debounce_ms = 50
[plugins.p]
path = "{p}"
# Loaded so that swapping p.wasm for the same bytes needs no compilation.
[plugins.h]
path = "{h}"
[upstreams.up]
targets = ["{up}"]
[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "up"
{routes}
"#,
        p = plugins.join("p.wasm").display(),
        h = plugin("headers").display(),
        up = up.url()
    )
}

/// Requests from several connections in a loop, counting every answer that is not a 200.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(urls: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let stop = stop.clone();
                let urls = urls.clone();
                tokio::spawn(async move {
                    let c = Client::new();
                    let (mut ok, mut failed) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        for url in &urls {
                            match c.try_get(url).await {
                                Ok(StatusCode::OK) => ok += 1,
                                Ok(s) => failed.push(format!("{url}: {s}")),
                                Err(e) => failed.push(format!("{url}: {e}")),
                            }
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients; returns how many requests succeeded and every failure.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.tasks {
            let (o, f) = t.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// Polls `url` until `check` accepts the answer; returns how long that took, or panics with
/// the last answer after `limit`.
async fn wait_for(
    c: &Client,
    url: &str,
    limit: Duration,
    check: impl Fn(&Resp) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let r = c.get(url).await;
        if check(&r) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{url}: not changed after {limit:?}; last answer {} {:?} {}",
            r.status,
            r.headers,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status(c: &Client, gw: &Gateway) -> serde_json::Value {
    c.get(&gw.admin_url("/admin/status")).await.json()
}

/// Waits until the status reports at least `n` failed reloads.
async fn wait_failed_reloads(c: &Client, gw: &Gateway, n: u64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let s = status(c, gw).await;
        if s["reloads"]["failed"].as_u64() >= Some(n) {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no failed reload reported: {s}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn route_hash(routes: &serde_json::Value, name: &str) -> String {
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name}: {routes}"))["pipeline"][0]["hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_and_plugin_changes_go_live_without_a_failed_request() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let plugins = plugin_dir(&[("p.wasm", "fixture")]);
    let fixture_route = |version: &str, extra: &str| {
        format!(
            r#"
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "up"
[[routes.pipeline]]
plugin = "p"
config = {{ response_set = {{ "x-version" = "{version}" }} }}
{extra}
"#
        )
    };
    let gw = Gateway::start(&header_config(&up, plugins.path(), &fixture_route("1", "")));
    let cfg = gw.dir.path().join("gateway.toml");
    let c = Client::new();
    assert_eq!(c.get(&gw.url("/a")).await.header("x-version"), Some("1"));
    let load = Load::start(vec![gw.url("/a"), gw.url("/plain")]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A pipeline's config changes.
    write_atomic(
        &cfg,
        header_config(&up, plugins.path(), &fixture_route("2", "")),
    );
    let took = wait_for(&c, &gw.url("/a"), VISIBLE_WITHIN, |r| {
        r.header("x-version") == Some("2")
    })
    .await;
    eprintln!("pipeline change visible after {took:?}");

    // A route is added, written in place rather than renamed.
    let with_b = fixture_route(
        "2",
        r#"
[[routes]]
name = "b"
path_prefix = "/b"
upstream = "up"
[[routes.pipeline]]
plugin = "p"
config = { respond = { status = 200, body = "from b" } }
"#,
    );
    std::fs::write(&cfg, header_config(&up, plugins.path(), &with_b)).unwrap();
    wait_for(&c, &gw.url("/b"), VISIBLE_WITHIN, |r| r.text() == "from b").await;
    let s = status(&c, &gw).await;
    assert_eq!(s["last_reload"]["outcome"], "ok", "{s}");
    // Route `a` did not change: its entry kept its instances.
    assert!(
        s["last_reload"]["stages"]["reused"].as_u64() >= Some(1),
        "{s}"
    );

    // The plugin's binary is replaced by another component, with a config the new one takes.
    let headers_route = |version: &str| {
        format!(
            r#"
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "up"
[[routes.pipeline]]
plugin = "p"
config = {{ response = {{ set = {{ "x-version" = "{version}" }} }} }}
"#
        )
    };
    std::fs::copy(plugin("headers"), plugins.path().join("p.wasm")).unwrap();
    write_atomic(
        &cfg,
        header_config(&up, plugins.path(), &headers_route("3")),
    );
    let written = Instant::now();
    wait_for(&c, &gw.url("/a"), VISIBLE_WITHIN, |r| {
        r.header("x-version") == Some("3")
    })
    .await;
    eprintln!("plugin swap visible after {:?}", written.elapsed());
    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(route_hash(&routes, "a"), sha256(&plugin("headers")));
    // Route `b` is gone with the config that named it.
    wait_for(&c, &gw.url("/b"), VISIBLE_WITHIN, |r| {
        r.status == StatusCode::NOT_FOUND
    })
    .await;
    let failed_before = status(&c, &gw).await["reloads"]["failed"].as_u64().unwrap();

    // A config that does not parse: the previous one stays live, and the error says where.
    let broken = header_config(&up, plugins.path(), &headers_route("4"))
        .replace("name = \"a\"", "name = \"a\"\npath_prefix = [");
    write_atomic(&cfg, &broken);
    let s = wait_failed_reloads(&c, &gw, failed_before + 1).await;
    let last = &s["last_reload"];
    assert_eq!(last["outcome"], "failed", "{s}");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}:", cfg.display())) && message.contains("gateway.toml:"),
        "{message}"
    );
    assert_eq!(last["config_hash"], sha256(&cfg), "{s}");
    assert_eq!(s["plugins"]["p"], sha256(&plugin("headers")), "{s}");
    assert_eq!(s["plugins"]["h"], sha256(&plugin("headers")), "{s}");
    assert_ne!(s["config"]["hash"], last["config_hash"], "{s}");
    assert_eq!(c.get(&gw.url("/a")).await.header("x-version"), Some("3"));
    let r = c
        .request(Method::POST, &gw.admin_url("/admin/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let body = r.json();
    assert_eq!(body["outcome"], "failed");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("gateway.toml:"),
        "{body}"
    );
    assert!(gw.logs().contains("reload failed"), "{}", gw.logs());

    // A config the plugin refuses at init: named by route and plugin; still the old one.
    let refused = header_config(
        &up,
        plugins.path(),
        &headers_route("4").replace("set = {", "sett = {"),
    );
    write_atomic(&cfg, refused);
    let s = wait_failed_reloads(&c, &gw, failed_before + 3).await;
    let errors = s["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("route `a`") && errors.contains("plugin `p`"),
        "{s}"
    );
    assert_eq!(c.get(&gw.url("/a")).await.header("x-version"), Some("3"));

    // A plugin file that is not a component: refused, naming the plugin.
    std::fs::write(plugins.path().join("p.wasm"), b"not wasm").unwrap();
    let s = wait_failed_reloads(&c, &gw, failed_before + 4).await;
    assert!(
        s["last_reload"]["errors"]
            .to_string()
            .contains("plugin `p`"),
        "{s}"
    );
    assert_eq!(c.get(&gw.url("/a")).await.header("x-version"), Some("3"));

    // Fixed: the new config goes live.
    std::fs::copy(plugin("headers"), plugins.path().join("p.wasm")).unwrap();
    write_atomic(
        &cfg,
        header_config(&up, plugins.path(), &headers_route("5")),
    );
    wait_for(&c, &gw.url("/a"), VISIBLE_WITHIN, |r| {
        r.header("x-version") == Some("5")
    })
    .await;
    let s = status(&c, &gw).await;
    assert_eq!(s["last_reload"]["outcome"], "ok", "{s}");
    assert_eq!(s["config"]["hash"], sha256(&cfg), "{s}");
    // Both outcomes are counted for monitoring.
    let metrics = c.get(&gw.admin_url("/metrics")).await.text();
    for outcome in ["ok", "failed"] {
        let counted = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("wasmgate_reloads_total{{outcome=\"{outcome}\"}} "))
            })
            .and_then(|n| n.parse::<u64>().ok());
        assert!(counted.is_some_and(|n| n >= 1), "{outcome}: {metrics}");
    }

    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(ok > 100, "only {ok} requests under load");
    eprintln!("{ok} requests during the reloads, none failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_binary_change_alone_reloads_and_touching_files_does_not() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let plugins = plugin_dir(&[("p.wasm", "fixture")]);
    let route = r#"
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "up"
[[routes.pipeline]]
plugin = "p"
"#;
    let gw = Gateway::start(&header_config(&up, plugins.path(), route));
    let c = Client::new();
    let load = Load::start(vec![gw.url("/a")]);
    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(route_hash(&routes, "a"), sha256(&plugin("fixture")));

    // Same bytes written again, and an unrelated file next to the config: nothing reloads.
    std::fs::copy(plugin("fixture"), plugins.path().join("p.wasm")).unwrap();
    let cfg = gw.dir.path().join("gateway.toml");
    write_atomic(&cfg, std::fs::read(&cfg).unwrap());
    std::fs::write(gw.dir.path().join("notes.txt"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = status(&c, &gw).await;
    assert_eq!(s["reloads"]["succeeded"], 0, "{s}");
    assert!(s["last_reload"].is_null(), "{s}");

    // New bytes under the same name, with the config untouched.
    std::fs::copy(plugin("headers"), plugins.path().join("p.wasm")).unwrap();
    let started = Instant::now();
    loop {
        let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
        if route_hash(&routes, "a") == sha256(&plugin("headers")) {
            break;
        }
        assert!(
            started.elapsed() < VISIBLE_WITHIN,
            "{routes}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = status(&c, &gw).await;
    assert_eq!(s["last_reload"]["trigger"], "file", "{s}");
    assert_eq!(
        s["last_reload"]["plugins"]["p"],
        sha256(&plugin("headers")),
        "{s}"
    );
    assert_eq!(s["last_reload"]["stages"]["created"], 1, "{s}");
    // Bytes already compiled (as plugin `h`) are not compiled again.
    let headers = sha256(&plugin("headers"));
    let compiled = gw
        .logs()
        .lines()
        .filter(|l| l.contains("plugin compiled") && l.contains(&headers))
        .count();
    assert_eq!(compiled, 1, "{}", gw.logs());

    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_config_file_change_alone_reloads() {
    // `config_files` are watched too: a new key file is a new pipeline config.
    let up = Upstream::start("up", Behaviour::Echo).await;
    let plugins = plugin_dir(&[("p.wasm", "fixture")]);
    let route = format!(
        r#"
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "up"
[[routes.pipeline]]
plugin = "p"
config = {{ response_body = "upper" }}
[[routes.pipeline]]
plugin = "p"
config_files = {{ request_body = "{}" }}
"#,
        plugins.path().join("op.txt").display()
    );
    std::fs::write(plugins.path().join("op.txt"), "append:one").unwrap();
    let gw = Gateway::start(&header_config(&up, plugins.path(), &route));
    let c = Client::new();
    let r = c.request(Method::POST, &gw.url("/a"), &[], "x").await;
    assert!(r.text().contains("XONE"), "{}", r.text());
    std::fs::write(plugins.path().join("op.txt"), "append:two").unwrap();
    let started = Instant::now();
    loop {
        let r = c.request(Method::POST, &gw.url("/a"), &[], "x").await;
        if r.text().contains("XTWO") {
            break;
        }
        assert!(started.elapsed() < VISIBLE_WITHIN, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limiter_state_survives_reloads_while_the_limit_is_unchanged() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = |burst: u32, instances: &str, extra: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[reload]
watch = false
[plugins.rl]
path = "{rl}"
[upstreams.up]
targets = ["{up}"]
[[routes]]
name = "limited"
path_prefix = "/limited"
upstream = "up"
[[routes.pipeline]]
plugin = "rl"
instances = "{instances}"
config = {{ rate = {burst}, per = "hour", burst = {burst}, key = "global" }}
{extra}
"#,
            rl = plugin("rate_limit").display(),
            up = up.url()
        )
    };
    let gw = Gateway::start(&config(3, "pooled", ""));
    let cfg = gw.dir.path().join("gateway.toml");
    let c = Client::new();
    let reload = || async {
        let r = c
            .request(Method::POST, &gw.admin_url("/admin/reload"), &[], "")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    };
    for _ in 0..3 {
        assert_eq!(c.get(&gw.url("/limited")).await.status, StatusCode::OK);
    }
    assert_eq!(
        c.get(&gw.url("/limited")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Another route is added: the limited entry keeps its stage and its bucket.
    let other = r#"
[[routes]]
name = "other"
path_prefix = "/other"
upstream = "up"
"#;
    std::fs::write(&cfg, config(3, "pooled", other)).unwrap();
    let out = reload().await;
    assert_eq!(out["stages"]["reused"], 1, "{out}");
    assert_eq!(out["stages"]["created"], 0, "{out}");
    assert_eq!(c.get(&gw.url("/other")).await.status, StatusCode::OK);
    assert_eq!(
        c.get(&gw.url("/limited")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // The entry itself changes (fresh instances), the limit does not: the bucket is kept.
    std::fs::write(&cfg, config(3, "fresh", other)).unwrap();
    let out = reload().await;
    assert_eq!(out["stages"]["created"], 1, "{out}");
    assert_eq!(
        c.get(&gw.url("/limited")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A different limit starts with a full bucket.
    std::fs::write(&cfg, config(5, "fresh", other)).unwrap();
    reload().await;
    for _ in 0..5 {
        assert_eq!(c.get(&gw.url("/limited")).await.status, StatusCode::OK);
    }
    assert_eq!(
        c.get(&gw.url("/limited")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_and_the_admin_api_reload_when_watching_is_off() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = |body: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[reload]
watch = false
[plugins.f]
path = "{f}"
[upstreams.up]
targets = ["{up}"]
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "up"
[[routes.pipeline]]
plugin = "f"
config = {{ respond = {{ status = 200, body = "{body}" }} }}
"#,
            f = plugin("fixture").display(),
            up = up.url()
        )
    };
    let gw = Gateway::start(&config("one"));
    let cfg = gw.dir.path().join("gateway.toml");
    let c = Client::new();
    let load = Load::start(vec![gw.url("/a")]);

    write_atomic(&cfg, config("two"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.get(&gw.url("/a")).await.text(), "one", "watch = false");

    gw.signal("HUP");
    wait_for(&c, &gw.url("/a"), VISIBLE_WITHIN, |r| r.text() == "two").await;
    assert_eq!(status(&c, &gw).await["last_reload"]["trigger"], "signal");

    write_atomic(&cfg, config("three"));
    let r = c
        .request(Method::POST, &gw.admin_url("/admin/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let out = r.json();
    assert_eq!(out["outcome"], "ok");
    assert_eq!(out["trigger"], "admin");
    assert_eq!(out["config_hash"], sha256(&cfg));
    assert_eq!(out["plugins"]["f"], sha256(&plugin("fixture")));
    // The answer comes once the new table is live.
    assert_eq!(c.get(&gw.url("/a")).await.text(), "three");

    // Admin errors say what went wrong, as proxy errors do.
    let r = c.get(&gw.admin_url("/admin/reload")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["message"], "/admin/reload takes POST");
    let r = c
        .request(Method::POST, &gw.admin_url("/admin/status"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["error"], "method_not_allowed");
    assert!(
        r.json()["message"].as_str().unwrap().contains("GET"),
        "{}",
        r.text()
    );
    let r = c.get(&gw.admin_url("/admin/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("/admin/status"),
        "{}",
        r.text()
    );

    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    let logs = gw.logs_containing(&["config reloaded"]);
    assert!(logs.contains("config reloaded"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_refused() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = |listen: &str, wasm: &str| {
        format!(
            r#"
[server]
listen = "{listen}"
[admin]
listen = "127.0.0.1:0"
[reload]
watch = false
{wasm}
[upstreams.up]
targets = ["{up}"]
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "up"
"#,
            up = up.url()
        )
    };
    let gw = Gateway::start(&config("127.0.0.1:0", ""));
    let cfg = gw.dir.path().join("gateway.toml");
    let c = Client::new();
    let reload = || async {
        c.request(Method::POST, &gw.admin_url("/admin/reload"), &[], "")
            .await
    };

    let other = format!("127.0.0.1:{}", support::closed_port());
    std::fs::write(&cfg, config(&other, "")).unwrap();
    let r = reload().await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("server.listen changed"), "{}", r.text());

    std::fs::write(&cfg, config("127.0.0.1:0", "[wasm]\nmax_instances = 7")).unwrap();
    let r = reload().await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("[wasm] changed"), "{}", r.text());
    assert_eq!(c.get(&gw.url("/a")).await.status, StatusCode::OK);

    std::fs::write(&cfg, config("127.0.0.1:0", "")).unwrap();
    assert_eq!(reload().await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_bounds_need_a_restart_and_escaped_slashes_reload_live() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = |server: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\nwatch = false\n[upstreams.up]\ntargets = [\"{}\"]\n[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"up\"\n",
            up.url()
        )
    };
    let gw = Gateway::start(&config(""));
    let cfg = gw.dir.path().join("gateway.toml");
    let c = Client::new();
    let reload = || async {
        c.request(Method::POST, &gw.admin_url("/admin/reload"), &[], "")
            .await
    };
    let slash = gw.url("/a/b%2Fc");
    assert_eq!(c.get(&slash).await.status, StatusCode::BAD_REQUEST);

    std::fs::write(&cfg, config("keepalive_timeout_ms = 5000")).unwrap();
    let r = reload().await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("server.keepalive_timeout_ms changed"),
        "{}",
        r.text()
    );

    std::fs::write(&cfg, config("escaped_slashes = \"keep\"")).unwrap();
    assert_eq!(reload().await.status, StatusCode::OK);
    let r = c.get(&slash).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/a/b%2Fc");
}

/// Runs `wasmgate check` on `config` with the compile cache in `cache`; returns whether it
/// passed, how long it took, and for each plugin whether it came from the disk cache.
fn check_with_cache(config: &Path, cache: &Path) -> (bool, Duration, Vec<(String, bool)>, String) {
    check_with_cache_env(config, cache, &[])
}

/// [`check_with_cache`] with more environment variables.
fn check_with_cache_env(
    config: &Path,
    cache: &Path,
    env: &[(&str, &str)],
) -> (bool, Duration, Vec<(String, bool)>, String) {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["--log-format", "json", "check", "--config"])
        .arg(config)
        .env("WASMGATE_CACHE_DIR", cache)
        .envs(env.iter().copied())
        .env("WASMGATE_LOG", "info")
        .output()
        .unwrap();
    let took = started.elapsed();
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    let compiled = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "plugin compiled")
        .map(|v| {
            (
                v["plugin"].as_str().unwrap().to_owned(),
                v["from_disk_cache"].as_bool().unwrap(),
            )
        })
        .collect();
    (out.status.success(), took, compiled, logs)
}

/// A config in `dir` that loads these plugins and nothing else.
fn plugins_config(dir: &Path, names: &[&str]) -> PathBuf {
    let config = names
        .iter()
        .fold(GatewayConfig::new(), |c, n| c.plugin(n, &plugin(n)))
        .to_string();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "cwasm") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn compiled_plugins_are_cached_on_disk_and_a_bad_cache_entry_is_ignored() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = ["fixture", "headers", "jwt_auth", "transform", "rate_limit"];
    let path = plugins_config(dir.path(), &names);

    let (ok, cold, compiled, logs) = check_with_cache(&path, cache.path());
    assert!(ok, "{logs}");
    assert_eq!(compiled.len(), names.len(), "{logs}");
    assert!(compiled.iter().all(|(_, hit)| !hit), "{compiled:?}");
    let files = cache_files(cache.path());
    assert!(files.len() >= names.len(), "{files:?}");

    let (ok, warm, compiled, logs) = check_with_cache(&path, cache.path());
    assert!(ok, "{logs}");
    assert!(compiled.iter().all(|(_, hit)| *hit), "{compiled:?}\n{logs}");
    eprintln!(
        "check with {} plugins: cold {cold:?}, warm {warm:?}",
        names.len()
    );
    assert!(
        warm < cold,
        "warm {warm:?} is not faster than cold {cold:?}"
    );

    // Garbage, a truncated entry, flipped bits, and an entry with a matching digest that
    // wasmtime did not write: none is used, each is compiled again and replaced.
    assert_eq!(files.len(), names.len(), "{files:?}");
    for (i, f) in files.iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        match i % 4 {
            0 => bytes = b"garbage".to_vec(),
            1 => bytes.truncate(bytes.len() / 2),
            2 => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
            }
            _ => {
                use sha2::Digest;
                bytes = vec![0x7fu8; 4096];
                let digest: String = sha2::Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                std::fs::write(f.with_extension("sha256"), digest).unwrap();
            }
        }
        std::fs::write(f, bytes).unwrap();
    }
    let (ok, _, compiled, logs) = check_with_cache(&path, cache.path());
    assert!(ok, "{logs}");
    assert_eq!(compiled.len(), names.len(), "{logs}");
    assert!(compiled.iter().all(|(_, hit)| !hit), "{compiled:?}\n{logs}");
    assert_eq!(
        logs.matches("compile cache entry ignored").count(),
        names.len(),
        "{logs}"
    );
    let (ok, _, compiled, logs) = check_with_cache(&path, cache.path());
    assert!(ok, "{logs}");
    assert!(compiled.iter().all(|(_, hit)| *hit), "{compiled:?}\n{logs}");
}

#[test]
fn the_compile_cache_keeps_to_its_size_cap() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = ["fixture", "headers", "rate_limit"];
    let path = plugins_config(dir.path(), &names);

    // Each entry is over a MiB: with a cap of one, each write leaves only itself.
    let cap = [("WASMGATE_CACHE_MAX_MIB", "1")];
    let (ok, _, compiled, logs) = check_with_cache_env(&path, cache.path(), &cap);
    assert!(ok, "{logs}");
    assert_eq!(compiled.len(), names.len(), "{logs}");
    assert_eq!(cache_files(cache.path()).len(), 1, "{logs}");
    assert_eq!(
        logs.matches("compile cache entry removed").count(),
        names.len() - 1,
        "{logs}"
    );
    // Without the cap, all stay.
    let (ok, _, _, logs) = check_with_cache(&path, cache.path());
    assert!(ok, "{logs}");
    assert_eq!(cache_files(cache.path()).len(), names.len(), "{logs}");

    // A cap that is not a number turns the cache off, saying so.
    let off = tempfile::tempdir().unwrap();
    let bad = [("WASMGATE_CACHE_MAX_MIB", "lots")];
    let (ok, _, compiled, logs) = check_with_cache_env(&path, off.path(), &bad);
    assert!(ok, "{logs}");
    assert!(compiled.iter().all(|(_, hit)| !hit), "{logs}");
    assert!(logs.contains("WASMGATE_CACHE_MAX_MIB"), "{logs}");
    assert!(cache_files(off.path()).is_empty(), "{logs}");
}
