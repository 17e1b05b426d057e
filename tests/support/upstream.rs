//! Real upstream servers for the tests, each on its own ephemeral port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type UpBody = BoxBody<Bytes, Infallible>;

/// What an upstream does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// Answers JSON describing the request: name, method, path, query, headers, body.
    Echo,
    /// Waits, then echoes.
    Slow(Duration),
    /// Streams this many bytes of `x` without holding them in memory.
    Download(u64),
    /// The same, with no `content-length`: chunked, its size unknown until the end.
    Stream(u64),
    /// Reads the body chunk by chunk and answers with the byte count.
    Sink,
    /// Answers with this body and content-type.
    Fixed(&'static str, &'static str),
    /// Answers JSON of the request's version and trailers, with trailers of its own
    /// (`x-up-trailer: yes`, and each request trailer as `x-echo-NAME`).
    Trailers,
}

pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an HTTP/1.1 server; must be called inside a Tokio runtime.
    pub async fn start(name: &'static str, behaviour: Behaviour) -> Upstream {
        Self::serve(name, behaviour, false).await
    }

    /// Starts a server that speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
    pub async fn start_h2(name: &'static str, behaviour: Behaviour) -> Upstream {
        Self::serve(name, behaviour, true).await
    }

    async fn serve(name: &'static str, behaviour: Behaviour, h2: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let behaviour = behaviour.clone();
                let hits = h.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        respond(name, behaviour.clone(), req)
                    });
                    let io = TokioIo::new(stream);
                    let _ = if h2 {
                        hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await
                    } else {
                        http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                            .map_err(Into::into)
                    };
                });
            }
        });
        Upstream { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

async fn echo(name: &str, req: Request<Incoming>) -> Response<UpBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let json = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(full(json.to_string()))
        .unwrap()
}

async fn respond(
    name: &'static str,
    b: Behaviour,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    Ok(match b {
        Behaviour::Echo => echo(name, req).await,
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            echo(name, req).await
        }
        Behaviour::Download(size) | Behaviour::Stream(size) => {
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let n = size / CHUNK as u64;
            let frames =
                stream::iter((0..n).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
            let mut resp = Response::builder();
            if matches!(b, Behaviour::Download(_)) {
                resp = resp.header("content-length", size.to_string());
            }
            resp.body(BodyExt::boxed(StreamBody::new(frames))).unwrap()
        }
        Behaviour::Sink => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    total += data.map(|d| d.len() as u64).unwrap_or(0);
                } else {
                    break;
                }
            }
            Response::new(full(total.to_string()))
        }
        Behaviour::Fixed(ct, body) => Response::builder()
            .header("content-type", ct)
            .body(full(body))
            .unwrap(),
        Behaviour::Trailers => {
            let version = format!("{:?}", req.version());
            let collected = req.into_body().collect().await.unwrap();
            let got = collected.trailers().cloned().unwrap_or_default();
            let mut back = http::HeaderMap::new();
            back.insert("x-up-trailer", http::HeaderValue::from_static("yes"));
            let mut seen = serde_json::Map::new();
            for (n, v) in &got {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                back.insert(
                    http::HeaderName::try_from(format!("x-echo-{n}")).unwrap(),
                    http::HeaderValue::try_from(v.as_str()).unwrap(),
                );
                seen.insert(n.to_string(), v.into());
            }
            let json = serde_json::json!({
                "version": version,
                "trailers": seen,
                "body": String::from_utf8_lossy(&collected.to_bytes()),
            });
            let frames = stream::iter([
                Ok::<_, Infallible>(Frame::data(Bytes::from(json.to_string()))),
                Ok(Frame::trailers(back)),
            ]);
            Response::builder()
                .header("content-type", "application/json")
                // An HTTP/1.1 server sends only the trailers it announced.
                .header("trailer", "x-up-trailer, x-echo-x-req-trailer")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap()
        }
    })
}
