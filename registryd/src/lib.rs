//! registryd: the peerchat name registry.
//!
//! Entry point: [`run`], which serves a bound listener until `shutdown` resolves. `main` only
//! parses arguments, sets up logging and calls it; tests call it in-process.

pub mod cli;
mod json_conn;
mod legacy_conn;
mod limits;
mod metrics;
pub mod store_url;
mod table;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peerchat_daemon::accept;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use limits::{EXPIRY_SWEEP, FIRST_REQUEST_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};
pub use store_url::{EtcdUrl, StoreUrl};
pub use table::{
    migrate, release, release_legacy_offline, Limits, StoreHealth, Table, TableError, Write,
    DEFAULT_ETCD_PREFIX,
};

/// `registryd release NAME` on an etcd store.
pub async fn release_etcd(url: &EtcdUrl, name: &peerchat_proto::Name) -> Result<bool, TableError> {
    table::etcd::release(url, name).await
}

/// `registryd release --legacy-offline` on an etcd store.
pub async fn release_legacy_offline_etcd(url: &EtcdUrl) -> Result<usize, TableError> {
    table::etcd::release_legacy_offline(url).await
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the table is kept.
    pub store: StoreUrl,
    pub ttl: Duration,
    pub max_connections: usize,
    pub limits: Limits,
    /// Answer the seed's text protocol (3.7); when false such connections are closed.
    pub seed_protocol: bool,
    /// `--metrics`: serve Prometheus text on this (loopback) address; `None`: off.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Serves registry requests on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Bound before anything else starts, so a bad --metrics is a start-up error.
    let metrics_listener = match config.metrics {
        Some(addr) => Some(peerchat_daemon::metrics::bind(addr).await?),
        None => None,
    };
    let (table, _lock) = open_store(&config).await?;
    let table = Arc::new(table);
    let local = listener.local_addr()?;
    let exporter = Arc::new(match metrics_listener {
        Some(_) => peerchat_daemon::metrics::Exporter::enabled(),
        None => peerchat_daemon::metrics::Exporter::disabled(),
    });
    let metrics = Arc::new(metrics::Metrics::new(&exporter));
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let metrics_addr = match metrics_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            let render = metrics::render(exporter.clone(), metrics.clone(), table.clone());
            let stop = metrics_stop.clone();
            tokio::spawn(async move {
                let connections = TaskTracker::new();
                peerchat_daemon::metrics::serve(l, exporter, render, stop.cancelled(), &connections)
                    .await
            });
            addr.to_string()
        }
        None => "off".to_string(),
    };
    info!(listen = %local, store = %config.store, ttl_secs = config.ttl.as_secs(), names = table.len(), metrics = %metrics_addr, "registryd ready");
    peerchat_daemon::notify::ready();
    // Leases run out without a write: one task notices them for every watching connection.
    let sweeping = table.clone();
    let sweeper = tokio::spawn(async move {
        let mut since = peerchat_db::now_ms();
        let mut tick = tokio::time::interval(EXPIRY_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            since = sweeping.sweep_expired(since);
        }
    });
    let options = accept::Options {
        max_connections: config.max_connections,
        max_per_address: None,
        accept_backoff: accept::ACCEPT_BACKOFF,
        on_accept_error: |e| warn!(error = %e, "accept failed"),
        on_refused: |(_, peer), _| warn!(%peer, "connection limit reached; closing new connection"),
    };
    // Connections are not waited for at shutdown: they end with the runtime.
    let connections = TaskTracker::new();
    let seed_protocol = config.seed_protocol;
    accept::serve(
        listener,
        options,
        shutdown,
        &connections,
        |(stream, peer)| serve(stream, peer, table.clone(), metrics.clone(), seed_protocol),
    )
    .await;
    metrics_stop.cancel();
    info!("registryd stopping");
    peerchat_daemon::notify::stopping();
    sweeper.abort();
    // Joining the writer thread blocks; keep it off the async workers.
    let closing = table.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    Ok(())
}

/// Opens the configured store; with SQLite also the lock that keeps a second registryd off the
/// same database (held until `run` returns).
async fn open_store(config: &Config) -> anyhow::Result<(Table, Option<std::fs::File>)> {
    let (ttl, limits) = (config.ttl, config.limits);
    match &config.store {
        StoreUrl::Sqlite(db) => {
            if db.is_dir() {
                anyhow::bail!(
                    "database {} is a directory; --db takes the database file (e.g. {})",
                    db.display(),
                    db.join("registry.db").display()
                );
            }
            // One registryd per database: a second one would serve a stale copy of the table
            // and reload it on every write of the first.
            let lock = peerchat_daemon::lock::lock_database(db, "registryd")?;
            let db: PathBuf = db.clone();
            let table =
                tokio::task::spawn_blocking(move || Table::open(&db, ttl, limits)).await??;
            Ok((table, Some(lock)))
        }
        // Any number of instances share one etcd cluster: no lock.
        StoreUrl::Etcd(url) => {
            let table = Table::open_etcd(url, ttl, limits)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the etcd store {url}: {e}"))?;
            Ok((table, None))
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    table: Arc<Table>,
    metrics: Arc<metrics::Metrics>,
    seed_protocol: bool,
) {
    let _ = stream.set_nodelay(true);
    // The first byte decides the protocol: `{` is ours (JSON lines), anything else the seed's text.
    let mut first = [0u8; 1];
    let n = match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    if n == 0 {
        return;
    }
    if first[0] == b'{' {
        json_conn::serve(stream, peer, table, metrics).await
    } else if seed_protocol {
        legacy_conn::serve(stream, peer, table, metrics).await
    } else {
        tracing::debug!(%peer, "seed text protocol is off (--seed-protocol off); closing");
    }
}
