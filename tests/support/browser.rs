//! A real browser for the end-to-end tests: Debian's Chromium, headless, and a static page
//! server that gives its pages an origin of their own (`http://127.0.0.1:PORT`).
//!
//! A page reports what it saw by writing `encodeURIComponent(JSON.stringify(outcome))` into
//! `<pre id="result">`; [`run_page`] loads it, lets its scripts and fetches finish, and returns
//! that outcome.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One path a [`PageServer`] answers, whatever the method.
#[derive(Clone, Debug)]
pub struct Page {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    /// An HTML page.
    pub fn html(path: &str, body: impl Into<String>) -> Page {
        Page::new(path, "text/html; charset=utf-8", body)
    }

    pub fn new(path: &str, content_type: &str, body: impl Into<String>) -> Page {
        Page {
            path: path.to_owned(),
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// One more response header.
    pub fn header(mut self, name: &str, value: &str) -> Page {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Serves fixed pages on `127.0.0.1:0` (404 for any other path) until dropped.
pub struct PageServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    /// Must be called inside a Tokio runtime.
    pub async fn start(pages: Vec<Page>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pages = Arc::new(pages);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let pages = pages.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let pages = pages.clone();
                        async move { Ok::<_, Infallible>(answer(&pages, req.uri().path())) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        PageServer { addr, task }
    }

    /// The origin its pages have.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(pages: &[Page], path: &str) -> Response<Full<Bytes>> {
    let Some(page) = pages.iter().find(|p| p.path == path) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap();
    };
    let mut b = Response::builder();
    for (n, v) in &page.headers {
        b = b.header(n, v);
    }
    b.body(Full::new(Bytes::from(page.body.clone()))).unwrap()
}

/// Debian's Chromium; fails the test when it is not installed.
pub fn chromium() -> PathBuf {
    let candidates = [PathBuf::from("/usr/bin/chromium")];
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("chromium"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed: `cargo xtask test` installs it (Debian's chromium and \
                 chromium-driver), or run `apt-get install chromium chromium-driver`"
            )
        })
}

/// Loads `url` in headless Chromium, in a fresh profile, and returns the DOM once its scripts
/// and fetches are done (Chromium's virtual time waits for pending fetches).
pub async fn dump_dom(url: &str) -> String {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || dump_dom_blocking(&url))
        .await
        .unwrap()
}

fn dump_dom_blocking(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a hung browser is stopped with all its children.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting chromium: {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = pipe.read_to_string(&mut out);
            out
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (dom, log) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(s) if s.success() => dom,
        Some(s) => panic!("chromium exited with {s} on {url}:\n{log}"),
        None => panic!("chromium did not finish {url} in 90 s:\n{log}"),
    }
}

/// Loads a page that reports its outcome in `<pre id="result">` (see the module doc) and
/// returns that outcome.
pub async fn run_page(url: &str) -> serde_json::Value {
    let dom = dump_dom(url).await;
    let text = dom
        .split_once("<pre id=\"result\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(text, _)| text)
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| panic!("{url} reported no result; its DOM:\n{dom}"));
    let json = percent_decode(text);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{url} reported {json:?}: {e}"))
}

/// Undoes `encodeURIComponent`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
