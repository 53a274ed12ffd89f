//! The etcd store: any number of registryd instances in front of one etcd cluster.
//!
//! Lookups are answered from the cache, which one task keeps current with an etcd watch
//! (`follow`). Writes are decided by the same rules as with SQLite and applied in batches, each
//! one etcd transaction that compares the revisions it read (`commit`): of two instances
//! racing for a name exactly one wins, and the other decides again on what won. A renewal that
//! changes nothing is a keep-alive of the name's lease (`renew`), not a write.

mod admin;
mod commit;
mod follow;
mod health;
pub(crate) mod keys;
mod load;
mod renew;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::info;

use super::cache::Cache;
use super::decide::RuleLimits;
use super::types::{Job, TableError, Write};
use crate::store_url::EtcdUrl;
pub(crate) use admin::{release, release_legacy_offline};
pub(crate) use health::Health;
use keys::Keys;

/// How long one etcd request may take before the store counts as unreachable.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Writes queued for the batch writer before callers wait to queue.
const QUEUE: usize = 4096;

pub(crate) struct EtcdStore {
    client: Client,
    cache: Arc<Cache>,
    health: Arc<Health>,
    jobs: mpsc::Sender<Job>,
    tasks: Vec<JoinHandle<()>>,
}

/// Connects to the cluster at `url` (not yet contacting it).
pub(crate) async fn connect(url: &EtcdUrl) -> Result<Client, TableError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
        // A member cut off from its quorum refuses instead of answering from old data.
        .with_require_leader(true);
    Client::connect(&url.endpoints, Some(options))
        .await
        .map_err(|e| TableError::Unavailable(format!("connecting to etcd at {url}: {e}")))
}

/// Turns an etcd error (or a timeout) into the store's "unreachable" refusal.
pub(crate) fn unreachable(e: impl std::fmt::Display) -> TableError {
    TableError::Unavailable(format!("etcd: {e}"))
}

/// `fut` within [`REQUEST_TIMEOUT`].
pub(crate) async fn bounded<T>(
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, TableError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(e)),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

impl EtcdStore {
    /// Reads the whole registry from etcd (it must answer now), then follows it.
    pub(crate) async fn open(
        url: &EtcdUrl,
        ttl: Duration,
        limits: RuleLimits,
    ) -> Result<(EtcdStore, Arc<Cache>), TableError> {
        let client = connect(url).await?;
        let keys = Keys::new(&url.prefix);
        let loaded = load::load(&client, &keys).await?;
        info!(names = loaded.map.len(), revision = loaded.revision, store = %url, "loaded the registry from etcd");
        let cache = Arc::new(Cache::new(loaded.map, ttl));
        let health = Arc::new(Health::new());
        let (applied_tx, applied) = watch::channel(loaded.revision);
        let (jobs, rx) = mpsc::channel(QUEUE);
        let follower = follow::Follower {
            client: client.clone(),
            keys: keys.clone(),
            cache: cache.clone(),
            health: health.clone(),
            applied: applied_tx,
            leases: loaded.leases,
        };
        let writer = commit::Writer {
            client: client.clone(),
            keys: keys.clone(),
            cache: cache.clone(),
            health: health.clone(),
            applied,
            limits,
            ttl,
        };
        let tasks = vec![
            tokio::spawn(follower.run(loaded.revision)),
            tokio::spawn(writer.run(rx)),
            tokio::spawn(health::probe(client.clone(), keys.clone(), health.clone())),
        ];
        let store = EtcdStore {
            client,
            cache: cache.clone(),
            health,
            jobs,
            tasks,
        };
        Ok((store, cache))
    }

    pub(crate) async fn write(&self, w: Write) -> Result<(), TableError> {
        if let Some(done) = renew::try_renew(&self.client, &self.cache, &self.health, &w).await {
            return done;
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((w, tx))
            .await
            .map_err(|_| TableError::Closed)?;
        rx.await.map_err(|_| TableError::Closed)?
    }

    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    pub(crate) fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
