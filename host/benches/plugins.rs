//! Microbenchmarks of the plugin machinery and routing, through the library's own types: a
//! phase call on a pooled and on a fresh instance (Rust, Python and JavaScript plugins; the
//! Rust one both directly and on fibers), the
//! same header work done by the host as header rules, pipelines of N plugins, route
//! matching among 1,000 routes, and each balancer's pick among 2, 16 and 256 targets. Run with `cargo xtask bench`
//! (it builds the plugins first).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::capabilities::{kv, log, rate_limit};
use wasmgate::config::{InstanceMode, Limits, OnError, WasmConfig};
use wasmgate::metrics::Metrics;
use wasmgate::pipeline::header_rules::HeaderRules;
use wasmgate::pipeline::{Exchange, Pipeline, RequestOutcome, ResponseState, Stage};
use wasmgate::plugins::bindings::{Decision, Registration};
use wasmgate::plugins::pool::Instances;
use wasmgate::plugins::state::StageContext;
use wasmgate::plugins::{LoadedPlugin, Runtime, Sandbox};
use wasmgate::router::{Matcher, Request, Router};
use wasmgate::wire::Peer;

fn wasm(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask bench`",
        p.display()
    );
    p
}

fn exchange() -> Box<Exchange> {
    let (parts, ()) = http::Request::get("/api/users/7?expand=1")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("x-request-id", "bench-request-0001")
        .body(())
        .unwrap()
        .into_parts();
    let client = Peer::new("127.0.0.1:40000".parse().unwrap());
    Box::new(Exchange::new(parts, client, "users".into(), 1 << 20))
}

fn instances(loaded: &LoadedPlugin, config: &str, mode: InstanceMode) -> Instances {
    init(loaded, config, mode).0
}

/// An entry's instances, its registration and the header rules its `init` declared.
fn init(
    loaded: &LoadedPlugin,
    config: &str,
    mode: InstanceMode,
) -> (Instances, Registration, HeaderRules) {
    let ctx = Arc::new(StageContext {
        plugin: loaded.name.clone(),
        route: "users".into(),
        kv: kv::Namespaces::default().get(&loaded.name),
        kv_max_value: wasmgate_rules::kv::MAX_VALUE_BYTES,
        limiters: Arc::new(rate_limit::Registry::default()),
        redis: None,
        kv_redis_prefix: String::new(),
        log: log::Budgets::default().get(&loaded.name, &Limits::default(), &Metrics::new()),
        outbound: None,
    });
    let sandbox = Sandbox::new(&Limits::default(), false);
    Instances::new(loaded.clone(), config.into(), ctx, mode, sandbox, 1, 4).unwrap()
}

/// The headers plugin's work as the benchmarks and S3 configure it.
const HEADERS_CONFIG: &str = r#"{"request_id": true, "request": {"set": {"x-client-ip": "${client_ip}", "x-route": "${route}"}}}"#;

/// Plugin calls are async (a direct call completes in its first poll; others run on fibers);
/// the benchmarks drive them on the same kind of single-threaded runtime a worker uses.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn plugin_calls(c: &mut Criterion) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let rt = runtime();
    let runtime = Runtime::new(&WasmConfig::default(), false).unwrap();
    // The headers plugin as it was built against 0.1.2, doing its work in a call: what one
    // pooled call of a plugin that sets three headers costs.
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/headers-0.1.2.wasm");
    let headers = runtime.load("headers", &fixture).unwrap();
    assert!(headers.direct, "a Rust plugin is called directly");
    // The same component called on fibers, as a plugin whose imports can wait is.
    let on_fibers = LoadedPlugin {
        direct: false,
        ..headers.clone()
    };
    let config = HEADERS_CONFIG;
    let mut group = c.benchmark_group("plugin_call");
    for (label, plugin, mode) in [
        ("pooled", &headers, InstanceMode::Pooled),
        ("fresh", &headers, InstanceMode::Fresh),
        ("pooled-fibers", &on_fibers, InstanceMode::Pooled),
        ("fresh-fibers", &on_fibers, InstanceMode::Fresh),
    ] {
        let inst = instances(plugin, config, mode);
        let mut slot = Some(exchange());
        group.bench_function(format!("{label}/headers_on_request"), |b| {
            b.iter(|| {
                // The plugin queues its response header each call: a request's worth at a time.
                let mut ex = slot.take().unwrap();
                ex.response_edits.clear();
                let (back, result) = rt.block_on(inst.on_request(ex));
                black_box(result.unwrap());
                slot = Some(back);
            })
        });
    }
    group.finish();
}

/// The same work as `plugin_call/*/headers_on_request`, by today's headers plugin: header
/// rules the host applies, with no call into the plugin.
fn header_rules(c: &mut Criterion) {
    let rt = runtime();
    let runtime = Runtime::new(&WasmConfig::default(), false).unwrap();
    let headers = runtime.load("headers", &wasm("headers")).unwrap();
    let metrics = Metrics::new();
    let (instances, registration, rules) = init(&headers, HEADERS_CONFIG, InstanceMode::Pooled);
    assert!(!registration.on_request && rules.len() == 4);
    let pipeline = Pipeline {
        stages: vec![Arc::new(Stage {
            plugin: headers.name.clone(),
            hash: headers.hash.clone(),
            registration,
            rules,
            on_error: OnError::Deny,
            instances,
        })],
    };
    let mut slot = Some(exchange());
    c.bench_function("header_rules/headers_request_phase", |b| {
        b.iter(|| {
            let (back, _, outcome) =
                rt.block_on(pipeline.on_request(slot.take().unwrap(), &metrics));
            assert!(matches!(outcome, RequestOutcome::Forward));
            slot = Some(back);
        })
    });
}

fn pipelines(c: &mut Criterion) {
    let rt = runtime();
    let runtime = Runtime::new(&WasmConfig::default(), false).unwrap();
    let fixture = runtime.load("fixture", &wasm("fixture")).unwrap();
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("pipeline_request_phase");
    for n in [1usize, 2, 4, 8] {
        let stages = (0..n)
            .map(|i| {
                let cfg = format!(r#"{{"set_var": {{"v{i}": "x"}}}}"#);
                let instances = instances(&fixture, &cfg, InstanceMode::Pooled);
                Arc::new(Stage {
                    plugin: fixture.name.clone(),
                    hash: fixture.hash.clone(),
                    registration: Registration {
                        on_request: true,
                        on_response: false,
                        request_body: false,
                        response_body: false,
                    },
                    rules: Default::default(),
                    on_error: OnError::Deny,
                    instances,
                })
            })
            .collect();
        let pipeline = Pipeline { stages };
        let mut slot = Some(exchange());
        group.bench_function(format!("{n}_plugins"), |b| {
            b.iter(|| {
                let mut ex = slot.take().unwrap();
                ex.vars.clear();
                let (back, _, outcome) = rt.block_on(pipeline.on_request(ex, &metrics));
                assert!(matches!(outcome, RequestOutcome::Forward));
                slot = Some(back);
            })
        });
    }
    group.finish();
}

/// The order the Python and JavaScript plugins work on, about 1 KiB of JSON.
fn order_json() -> String {
    let items: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:04}","quantity":{},"price":{}.50}}"#,
                i + 1,
                10 + i
            )
        })
        .collect();
    format!(
        r#"{{"customer":{{"name":"Ann Example","email":"ann@example.com","ssn":"078-05-1120","address":{{"street":"1 Main Street","city":"Springfield","zip":"12345"}}}},"card":{{"number":"4111111111111111","expiry":"12/30"}},"items":[{}],"note":"leave at the door"}}"#,
        items.join(",")
    )
}

/// A phase call of the plugins built with componentize-py (`validate`: a request-body and query
/// check) and componentize-js (`redact`: masking fields of a JSON response), pooled and fresh:
/// what a plugin in those languages costs per request, interpreter included.
fn other_languages(c: &mut Criterion) {
    let rt = runtime();
    let runtime = Runtime::new(&WasmConfig::default(), false).unwrap();
    let body = bytes::Bytes::from(order_json());
    let mut group = c.benchmark_group("plugin_call");
    // A fresh instance of these components costs milliseconds: fewer samples keep the run short.
    group.sample_size(20);

    let validate = runtime.load("validate", &wasm("validate")).unwrap();
    let config = r#"{"query": {"expand": {"type": "integer", "minimum": 0, "maximum": 1}}, "headers": {"accept": {"required": true}}, "body": {"customer.name": {"type": "string", "required": true, "max_length": 64}, "customer.email": {"type": "string", "pattern": "[^@ ]+@[^@ ]+"}, "customer.address.zip": {"type": "string", "pattern": "[0-9]{5}"}, "items": {"type": "array", "max_length": 100}}}"#;
    for (label, mode) in [
        ("pooled", InstanceMode::Pooled),
        ("fresh", InstanceMode::Fresh),
    ] {
        let inst = instances(&validate, config, mode);
        let mut ex = exchange();
        ex.request.method = http::Method::POST;
        ex.request.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        ex.allow_request_body = true;
        ex.request_body = Some(body.clone());
        let mut slot = Some(ex);
        group.bench_function(format!("{label}/python_validate_on_request"), |b| {
            b.iter(|| {
                let (back, result) = rt.block_on(inst.on_request(slot.take().unwrap()));
                assert!(
                    matches!(result, Ok(Decision::Continue)),
                    "the order is valid: {result:?}"
                );
                slot = Some(back);
            })
        });
    }

    let redact = runtime.load("redact", &wasm("redact")).unwrap();
    let config =
        r#"{"fields": ["customer.email", "*.ssn", {"path": "card.number", "keep_last": 4}]}"#;
    for (label, mode) in [
        ("pooled", InstanceMode::Pooled),
        ("fresh", InstanceMode::Fresh),
    ] {
        let inst = instances(&redact, config, mode);
        let (parts, ()) = http::Response::builder()
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts();
        let mut ex = exchange();
        ex.phase = wasmgate::pipeline::Phase::Response;
        ex.allow_response_body = true;
        let mut slot = Some((ex, parts));
        group.bench_function(format!("{label}/js_redact_on_response"), |b| {
            b.iter(|| {
                let (mut ex, parts) = slot.take().unwrap();
                ex.response = Some(ResponseState {
                    parts,
                    body: Some(body.clone()),
                });
                let (mut back, result) = rt.block_on(inst.on_response(ex));
                assert!(
                    matches!(result, Ok(Decision::Continue)),
                    "the body was masked: {result:?}"
                );
                let response = back.response.take().unwrap();
                assert_ne!(response.body.as_ref(), Some(&body), "fields were masked");
                slot = Some((back, response.parts));
            })
        });
    }
    group.finish();
}

fn route_match(c: &mut Criterion) {
    let routes: Vec<(Matcher, usize)> = (0..1000)
        .map(|i| {
            let host = if i % 4 == 0 {
                format!("host = \"svc{i}.example.com\"\n")
            } else {
                String::new()
            };
            let route: wasmgate::config::RouteConfig = toml::from_str(&format!(
                "name = \"r{i}\"\nupstream = \"u\"\n{host}path_prefix = \"/api/v{}/svc{i}/items\"",
                i % 3
            ))
            .unwrap();
            (Matcher::new(&route).unwrap(), i)
        })
        .collect();
    let router = Router::new(routes);
    let get = http::Method::GET;
    let headers = http::HeaderMap::new();
    c.bench_function("route_match/1000_routes", |b| {
        b.iter(|| {
            black_box(router.find(&Request {
                host: Some("svc998.example.com"),
                method: &get,
                path: black_box("/api/v2/svc998/items/12345/details"),
                query: None,
                headers: &headers,
            }))
        })
    });
}

/// What the sandbox's time limits cost: a CPU-heavy call (the transform plugin turning a ~1 KB
/// JSON body into a SOAP envelope) on an engine without interruption, with epoch interruption
/// (the default), and with epoch interruption and fuel metering.
fn sandbox_overhead(c: &mut Criterion) {
    let rt = runtime();
    let config = r#"{"request": {"json_to_soap": {"version": "1.1", "operation": "CreateOrder", "namespace": "http://example.com/orders", "soap_action": "http://example.com/orders/CreateOrder"}}}"#;
    let mut body = String::from(
        r#"{"customer": {"id": 42, "name": "Ada <Lovelace> & Co", "email": "ada@example.com"}, "items": ["#,
    );
    for i in 0..12 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sku": "SKU-{i:04}", "quantity": {i}, "price": "19.99", "gift": false}}"#
        ));
    }
    body.push_str(r#"], "note": "leave at the door"}"#);
    let mut group = c.benchmark_group("sandbox_overhead");
    for (label, fuel, epoch) in [
        ("none", false, false),
        ("epoch", false, true),
        ("epoch+fuel", true, true),
    ] {
        let runtime = Runtime::with_interruption(&WasmConfig::default(), fuel, epoch).unwrap();
        let transform = runtime.load("transform", &wasm("transform")).unwrap();
        let ctx = Arc::new(StageContext {
            plugin: transform.name.clone(),
            route: "orders".into(),
            kv: kv::Namespaces::default().get("transform"),
            kv_max_value: wasmgate_rules::kv::MAX_VALUE_BYTES,
            limiters: Arc::new(rate_limit::Registry::default()),
            redis: None,
            kv_redis_prefix: String::new(),
            log: log::Budgets::default().get(&transform.name, &Limits::default(), &Metrics::new()),
            outbound: None,
        });
        let sandbox = Sandbox::new(&Limits::default(), fuel);
        let inst = Instances::new(
            transform.clone(),
            config.into(),
            ctx,
            InstanceMode::Pooled,
            sandbox,
            1,
            4,
        )
        .unwrap()
        .0;
        let mut ex = exchange();
        ex.allow_request_body = true;
        let mut slot = Some(ex);
        group.bench_function(format!("{label}/json_to_soap_1k"), |b| {
            b.iter(|| {
                let mut ex = slot.take().unwrap();
                ex.request_body = Some(bytes::Bytes::from(body.clone()));
                ex.request.method = http::Method::POST;
                let (back, result) = rt.block_on(inst.on_request(ex));
                assert!(
                    matches!(result, Ok(Decision::Continue)),
                    "the envelope was built"
                );
                slot = Some(back);
            })
        });
    }
    group.finish();
}

fn balancers(c: &mut Criterion) {
    use wasmgate::config::Balance;
    use wasmgate::upstream::balance::Balancer;
    let mut group = c.benchmark_group("balance");
    for n in [2usize, 16, 256] {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://10.0.{}.{}:80", i / 256, i % 256))
            .collect();
        // Weights 1..=3, so weighted code paths are the ones measured.
        let targets: Vec<(&str, u32)> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), 1 + (i % 3) as u32))
            .collect();
        for (label, kind) in [
            ("round_robin", Balance::RoundRobin),
            ("least_connections", Balance::LeastConnections),
            ("random", Balance::Random),
            ("hash", Balance::Hash),
        ] {
            let b = Balancer::new(kind, &targets);
            let key = Balancer::key(b"203.0.113.7");
            // Requests in flight, read and counted as the gateway does.
            let load: Vec<std::sync::atomic::AtomicUsize> =
                (0..n).map(|_| Default::default()).collect();
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            group.bench_function(format!("{label}/{n}"), |bench| {
                bench.iter(|| {
                    let t = b
                        .pick(black_box(Some(key)), |_| true, |t| load[t].load(relaxed))
                        .unwrap();
                    load[t].fetch_add(1, relaxed);
                    load[t].fetch_sub(1, relaxed);
                    black_box(t)
                })
            });
        }
    }
    group.finish();
}

/// A local upstream answering every request with a small JSON body, on `rt`.
fn json_upstream(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            br#"{"id":7,"name":"alice","tier":"gold"}"#,
                        )),
                    ))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// What an outbound call costs: the aggregate plugin answering from one part fetched through
/// an upstream by name (the plugin call, the `wasi:http` request and response, the upstream's
/// pooled connection, the JSON merge), against the same request made straight with hyper's
/// pooled client. The difference is the call's own overhead.
fn outbound_calls(c: &mut Criterion) {
    let rt = runtime();
    let addr = json_upstream(&rt);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [plugins.aggregate]\npath = \"{}\"\ncapabilities = [\"log\", \"outbound\"]\noutbound = [\"upstream:up\"]\n\
         [upstreams.up]\ntargets = [\"http://{addr}\"]\n\
         [[routes]]\nname = \"agg\"\npath_prefix = \"/agg\"\nupstream = \"up\"\n\
         [[routes.pipeline]]\nplugin = \"aggregate\"\nconfig = {{ parts = {{ user = {{ url = \"http://up/users/7\" }} }} }}\n",
        wasm("aggregate").display()
    );
    let config =
        wasmgate::config::Config::parse(&text, std::path::Path::new("bench.toml")).unwrap();
    let (shared, table) = wasmgate::run::build(&config).unwrap();
    let table = table.unwrap();
    let route = table
        .router
        .routes()
        .map(|(_, r)| r)
        .find(|r| &*r.name == "agg")
        .unwrap()
        .clone();
    let pipeline = route.pipeline.as_ref().unwrap();
    let metrics = &shared.metrics;
    let mut group = c.benchmark_group("outbound");
    group.bench_function("aggregate_one_part", |b| {
        b.iter(|| {
            let (_, _, outcome) = rt.block_on(pipeline.on_request(exchange(), metrics));
            let RequestOutcome::Reply(parts, body) = outcome else {
                panic!("the plugin answers");
            };
            assert_eq!(parts.status, 200, "{body:?}");
            black_box(body)
        })
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}/users/7").parse().unwrap();
    group.bench_function("hyper_get_baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                let resp = client.get(uri.clone()).await.unwrap();
                assert_eq!(resp.status(), 200);
                black_box(
                    http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .unwrap(),
                )
            })
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    outbound_calls,
    balancers,
    plugin_calls,
    header_rules,
    other_languages,
    pipelines,
    route_match,
    sandbox_overhead
);
criterion_main!(benches);
