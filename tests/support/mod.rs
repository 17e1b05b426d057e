//! Shared end-to-end fixtures: the real `wasmgate` binary on `127.0.0.1:0`, real upstream
//! servers on ephemeral ports, and a real HTTP client. Everything stops on drop.

#![allow(dead_code)]

pub mod browser;
pub mod config;
pub mod curl;
pub mod dns;
pub mod h2raw;
pub mod peers;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ClientBody = BoxBody<Bytes, BoxError>;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A Wasm plugin built by `cargo xtask build`.
pub fn plugin(name: &str) -> PathBuf {
    let p = workspace_root().join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask build` (or `cargo xtask test`) first",
        p.display()
    );
    p
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `config` to a temp dir and starts the gateway on it; panics with the gateway's
    /// output if it does not come up.
    pub fn start(config: &str) -> Gateway {
        match Self::try_start(config) {
            Ok(g) => g,
            Err(out) => panic!("gateway did not start:\n{out}"),
        }
    }

    pub fn try_start(config: &str) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env("WASMGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        let msg = v["message"].as_str().unwrap_or_default();
                        if msg == "listening" || msg == "admin listening" {
                            let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
                            let _ = tx.send((msg == "admin listening", addr));
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let wants_admin = config.contains("[admin]");
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while addr.is_none() || (wants_admin && admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok((true, a)) => admin = Some(a),
                Ok((false, a)) => addr = Some(a),
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100));
                        let out = logs.lock().unwrap().join("\n");
                        return Err(format!("exited with {status}:\n{out}"));
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        return Err(logs.lock().unwrap().join("\n"));
                    }
                }
            }
        }
        Ok(Gateway {
            child,
            addr: addr.unwrap(),
            admin,
            logs,
            dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("config has [admin]"), path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The log once every one of `needles` is in it (a line written just before a response
    /// may still be on its way through the pipe when the response arrives), or after 10 s
    /// without them, for the caller's assertion to fail on.
    pub fn logs_containing(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if needles.iter().all(|n| logs.contains(n)) || std::time::Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log once it holds every one of `needles` (see [`Gateway::logs_containing`]);
    /// fails naming the first one still missing.
    pub fn assert_logged(&self, needles: &[&str]) -> String {
        let logs = self.logs_containing(needles);
        for needle in needles {
            assert!(logs.contains(needle), "{needle} not in the log:\n{logs}");
        }
        logs
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/PID/status, in KiB (`VmRSS`, `VmHWM`).
    pub fn mem_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wasmgate check` on a config text; returns (success, stdout + stderr).
pub fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A real HTTP/1.1 client with a keep-alive pool.
#[derive(Clone)]
pub struct Client(HyperClient<HttpConnector, ClientBody>);

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Self(HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new()))
    }

    pub async fn send(&self, req: Request<ClientBody>) -> Resp {
        let resp = tokio::time::timeout(Duration::from_secs(60), self.0.request(req))
            .await
            .expect("response within 60 s")
            .expect("request succeeds at the HTTP level");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(url);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        self.send(b.body(full(body)).unwrap()).await
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    /// The raw result, for tests that expect the connection itself to fail.
    pub async fn try_get(&self, url: &str) -> Result<StatusCode, String> {
        let req = Request::get(url).body(full(Bytes::new())).unwrap();
        self.0
            .request(req)
            .await
            .map(|r| r.status())
            .map_err(|e| e.to_string())
    }
}

pub fn full(b: impl Into<Bytes>) -> ClientBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The test venv's Python (spyne, zeep, PyJWT), made by `cargo xtask test`.
pub fn python() -> PathBuf {
    let p = workspace_root().join("target/pyenv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test` once to create the test venv",
        p.display()
    );
    p
}

/// Clears the variables cargo sets for the package under test from a command that runs cargo
/// on another package (a scaffolded plugin): none of them are that package's.
pub fn without_cargo_package_env(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
        {
            cmd.env_remove(key);
        }
    }
}
