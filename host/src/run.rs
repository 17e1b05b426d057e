//! Starting and stopping the gateway: build the state from a config, bind the listeners, start
//! one single-threaded runtime per worker and the reload thread, serve until SIGINT or SIGTERM
//! (SIGHUP reloads), drain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::gateway::{Gateway, Shared, Table};
use crate::metrics::Metrics;
use crate::plugins::Runtime;
use crate::reload;
use crate::server::{self, ConnLimits, Connections};
use crate::wire::TrustedProxies;

/// Worker threads: `server.workers`, or one per core.
pub fn workers(config: &Config) -> usize {
    config
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1)
}

/// Builds the shared state and the first table. Blocking.
pub fn build(config: &Config) -> anyhow::Result<(Shared, Result<Table, Vec<String>>)> {
    let redis = config
        .state
        .redis()
        .map(|r| crate::state::Redis::start(r, &config.base_dir, workers(config)))
        .transpose()?;
    let runtime = Runtime::with_state(&config.wasm, config.wants_fuel(), redis.is_some())
        .context("starting the Wasm engine")?;
    let shared = Shared {
        runtime,
        limiters: Default::default(),
        kv: Default::default(),
        redis,
        log_budgets: Default::default(),
        metrics: Metrics::new(),
        workers: workers(config),
        trusted: Arc::new(
            TrustedProxies::parse(&config.server.trusted_proxies).map_err(anyhow::Error::msg)?,
        ),
        tls_sessions: Arc::new(crate::server::tls::Sessions::new()?),
    };
    let table = Gateway::build_table(&shared, config);
    Ok((shared, table))
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Serves `config`, read from `path` (which hot reload watches), until SIGINT or SIGTERM, then
/// drains. Blocks until everything stopped.
pub fn serve(path: &Path, config: Config, shared: Shared, table: Table) -> anyhow::Result<()> {
    // Signal handlers first: a SIGHUP sent as soon as the gateway says it listens must reload,
    // not kill it.
    let main_rt = current_thread_runtime()?;
    let mut signals = {
        let _in_rt = main_rt.enter();
        Signals::new().context("installing signal handlers")?
    };
    let workers = shared.workers;
    let gw = Arc::new(Gateway {
        shared,
        table: ArcSwap::from_pointee(table),
        background: main_rt.handle().clone(),
    });
    gw.start_upstreams();
    let limits = ConnLimits::from_config(&config.server);
    raise_open_file_limit(config.server.max_connections);
    let admin_token = config
        .admin_token()
        .map_err(anyhow::Error::msg)?
        .map(Arc::<str>::from);

    // Bind everything before starting anything, so a bad address fails cleanly.
    let listeners = server::reuseport_listeners(config.server.listen, workers)
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    let redirects = match &config.server.redirect {
        Some(r) => Some(
            server::reuseport_listeners(r.listen, workers)
                .with_context(|| format!("binding server.redirect.listen {}", r.listen))?,
        ),
        None => None,
    };
    let redirect = config.server.redirect.as_ref().map(|r| {
        server::redirect::Redirect::new(
            r.status,
            listeners[0].local_addr().map_or(443, |a| a.port()),
            config.server.escaped_slashes,
        )
    });
    let admin = match &config.admin {
        Some(a) => {
            let l = std::net::TcpListener::bind(a.listen)
                .with_context(|| format!("binding admin.listen {}", a.listen))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    tracing::info!(
        addr = %listeners[0].local_addr()?,
        workers,
        tls = config.server.tls.is_some(),
        h2c = config.server.h2c,
        "listening"
    );
    if let Some(r) = &redirects {
        tracing::info!(addr = %r[0].local_addr()?, "redirecting to https");
    }
    if let Some(a) = &admin {
        tracing::info!(addr = %a.local_addr()?, "admin listening");
    }

    let (reloader, _reload_thread) =
        reload::start(gw.clone(), path, config.clone()).context("starting the reload thread")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Connections::new(config.server.max_connections);
    let protocols =
        {
            let gw = gw.clone();
            server::Protocols {
                tls: config.server.tls.is_some().then(|| -> server::TlsSource {
                    Arc::new(move || gw.table.load().tls.clone())
                }),
                h2c: config.server.h2c,
                http2: config.server.http2.clone(),
            }
        };
    let mut admin = admin;
    let mut redirects = redirects.map(Vec::into_iter);
    let mut threads = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let redirect = redirect.zip(redirects.as_mut().and_then(Iterator::next));
        let protocols = protocols.clone();
        let gw = gw.clone();
        let stop = stop_rx.clone();
        let admin = if i == 0 { admin.take() } else { None };
        let reloader = reloader.clone();
        let connections = connections.clone();
        let admin_token = admin_token.clone();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                crate::wire::set_worker_index(i);
                let rt = current_thread_runtime()?;
                let admin = admin.map(|l| (l, admin_token));
                rt.block_on(worker(
                    i,
                    gw,
                    reloader,
                    Listeners {
                        proxy: listener,
                        protocols,
                        redirect,
                        admin,
                    },
                    limits,
                    connections,
                    stop,
                ))
            })?;
        threads.push(thread);
    }

    main_rt.block_on(signals.until_shutdown(&reloader));
    tracing::info!("shutting down: draining open requests");
    reloader.stop();
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a worker thread panicked")),
        }
    }
    tracing::info!("stopped");
    result
}

/// One worker's listeners: its share of the proxy (and redirect) connections and, on worker
/// 0, the admin listener.
struct Listeners {
    proxy: std::net::TcpListener,
    protocols: server::Protocols,
    redirect: Option<(server::redirect::Redirect, std::net::TcpListener)>,
    admin: Option<(std::net::TcpListener, Option<Arc<str>>)>,
}

/// One worker: its listeners and, on worker 0, housekeeping.
async fn worker(
    index: usize,
    gw: Arc<Gateway>,
    reloader: reload::Handle,
    listeners: Listeners,
    limits: ConnLimits,
    connections: Arc<Connections>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let listener = tokio::net::TcpListener::from_std(listeners.proxy)?;
    {
        let gw = gw.clone();
        tasks.spawn(server::serve(
            "proxy",
            listener,
            limits,
            listeners.protocols,
            connections.clone(),
            gw.shared.trusted.clone(),
            stop.clone(),
            move |req, down| crate::server::handler::handle(gw.clone(), req, down),
        ));
    }
    if let Some((redirect, listener)) = listeners.redirect {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tasks.spawn(server::serve(
            "redirect",
            listener,
            limits,
            server::Protocols::default(),
            connections,
            gw.shared.trusted.clone(),
            stop.clone(),
            move |req, _| std::future::ready(redirect.answer(req)),
        ));
    }
    if let Some((admin, token)) = listeners.admin {
        let admin = tokio::net::TcpListener::from_std(admin)?;
        let gw = gw.clone();
        tasks.spawn(server::serve(
            "admin",
            admin,
            ConnLimits {
                proxy_protocol: false,
                ..limits
            },
            server::Protocols::default(),
            Connections::new(ADMIN_MAX_CONNECTIONS),
            Arc::default(),
            stop.clone(),
            move |req, _| crate::admin::handle(gw.clone(), reloader.clone(), token.clone(), req),
        ));
    }
    // A timer due within a second keeps tokio's time driver from being woken through its
    // eventfd on every request: hyper arms a header-read timer after each response, and a
    // timer due sooner than the driver's next planned wake-up makes it wake (a `write` per
    // keep-alive request); one due later costs nothing.
    let timer_floor = tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
        }
    });
    let housekeeping = (index == 0).then(|| {
        // Keyed limiters forget idle keys now and then, so key churn cannot grow memory.
        let limiters = gw.shared.limiters.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let l = limiters.clone();
                let _ = tokio::task::spawn_blocking(move || l.housekeeping()).await;
            }
        })
    });
    while tasks.join_next().await.is_some() {}
    timer_floor.abort();
    if let Some(h) = housekeeping {
        h.abort();
    }
    Ok(())
}

/// Admin connections open at once: operators and scrapers, never a crowd.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Raises the soft limit on open files to the hard limit, as a server that holds many
/// connections needs (each client connection can also hold an upstream one), and warns when
/// even that is below what `max_connections` may need.
fn raise_open_file_limit(max_connections: usize) {
    let wanted = 2 * max_connections as u64;
    match rlimit::increase_nofile_limit(wanted + 256) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            max_connections,
            "the open file limit is below what server.max_connections may need (two per connection)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open file limit"),
    }
}

/// The signals the gateway acts on: SIGINT and SIGTERM stop it, SIGHUP reloads the config.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; must run inside a runtime.
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Asks for a reload at each SIGHUP; returns at SIGINT or SIGTERM.
    async fn until_shutdown(&mut self, reloader: &reload::Handle) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = self.int.recv() => return,
                _ = self.term.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    reloader.signal();
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reloader;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
