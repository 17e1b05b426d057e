//! Starting and stopping the gateway: build the state from a config, bind the listeners, serve
//! until SIGINT or SIGTERM, drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::gateway::{Gateway, Shared, Table};
use crate::metrics::Metrics;
use crate::plugins::Runtime;
use crate::server::{self, ConnLimits};

/// Worker threads for the request runtime: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Builds the shared state and the first table. Blocking.
pub fn build(config: &Config) -> anyhow::Result<(Shared, Result<Table, Vec<String>>)> {
    let runtime = Runtime::new(&config.wasm).context("starting the Wasm engine")?;
    let shared = Shared {
        runtime,
        limiters: Default::default(),
        kv: Default::default(),
        metrics: Metrics::new(),
        workers: workers(),
    };
    let table = Gateway::build_table(&shared, config);
    Ok((shared, table))
}

/// Serves a config until a shutdown signal, then drains. Returns once everything stopped.
pub async fn serve(config: Config, shared: Shared, table: Table) -> anyhow::Result<()> {
    let gw = Arc::new(Gateway {
        shared,
        table: ArcSwap::from_pointee(table),
    });
    let limits = ConnLimits {
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        drain_timeout: Duration::from_millis(config.server.drain_timeout_ms),
    };
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(admin) = &config.admin {
        let admin_listener = TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("binding admin.listen {}", admin.listen))?;
        tracing::info!(addr = %admin_listener.local_addr()?, "admin listening");
        let gw = gw.clone();
        tasks.spawn(server::serve(
            "admin",
            admin_listener,
            limits,
            stop_rx.clone(),
            move |req, _| crate::admin::handle(gw.clone(), req),
        ));
    }

    {
        let gw = gw.clone();
        tasks.spawn(server::serve(
            "proxy",
            listener,
            limits,
            stop_rx.clone(),
            move |req, peer| crate::server::handler::handle(gw.clone(), req, peer),
        ));
    }

    // Keyed limiters forget idle keys now and then, so hostile key churn cannot grow memory.
    let housekeeping = {
        let limiters = gw.shared.limiters.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let l = limiters.clone();
                let _ = tokio::task::spawn_blocking(move || l.housekeeping()).await;
            }
        })
    };

    shutdown_signal().await;
    tracing::info!("shutting down: draining open requests");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    housekeeping.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the gateway");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
