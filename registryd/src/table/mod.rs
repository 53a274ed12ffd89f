//! The name table: the store (SQLite, or etcd) is the truth, an in-memory copy (`cache`)
//! answers lookups, lists and `watch`.
//!
//! A write is decided once, by the same rules for both stores (`rules`, `decide`), against the
//! state it will be applied to, and applied atomically with that check: with SQLite by the one
//! thread that owns the connection (rusqlite never runs on the async workers), in a transaction
//! that commits before the cache changes; with etcd by an etcd transaction that compares the
//! revisions the decision read, retried on what won when another instance got there first.
//! Either way a reply means "committed".
//!
//! One file per job: `types` (the entries, writes and refusals), `rules` (the binding rules,
//! one function each), `decide` (a write's outcome), `cache` (the in-memory copy), `schema`,
//! `writer` and `release` (the SQLite store: migrations, the writer thread, the operator's
//! direct deletes), `etcd` (the etcd store), `migrate` (SQLite to etcd).

mod cache;
mod decide;
pub(crate) mod etcd;
mod migrate;
mod release;
mod rules;
mod schema;
pub(crate) mod types;
mod writer;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_db::rusqlite;
use peerchat_proto::registry::Record;
use peerchat_proto::Name;
use tokio::sync::oneshot;
use tracing::debug;

pub use etcd::keys::DEFAULT_PREFIX as DEFAULT_ETCD_PREFIX;
pub use migrate::migrate;
pub use release::{release, release_legacy_offline};
pub use types::{Changes, Presence, TableError, Write};

use cache::Cache;
use decide::RuleLimits;
use etcd::EtcdStore;
use schema::{load_map, MIGRATIONS};
use types::{presence_of, Entry, Job, Lease};
use writer::{writer_loop, Writer};

pub struct Table {
    cache: Arc<Cache>,
    store: Store,
    ttl: Duration,
    rate: peerchat_daemon::limits::RateLimiter,
}

/// Where the table is kept; each applies the decisions of the same rules (`decide`).
enum Store {
    /// One SQLite file, written by one thread.
    Sqlite {
        writer: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
        thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    },
    /// An etcd cluster shared by any number of instances.
    Etcd(Box<EtcdStore>),
}

/// The store's kind and whether it answers (registryd's `status` reply).
#[derive(Debug, Clone)]
pub struct StoreHealth {
    pub kind: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Abuse limits on registrations.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most names the table holds; registering a new name beyond it is refused.
    pub max_names: usize,
    /// Most registrations (new or renewals) per source address per minute.
    pub registrations_per_minute: u32,
    /// Most legacy (seed) names registered from one source address.
    pub legacy_per_source: usize,
}

impl Limits {
    fn rules(&self) -> RuleLimits {
        RuleLimits {
            max_names: self.max_names,
            legacy_per_source: self.legacy_per_source,
        }
    }
}

impl Table {
    /// The SQLite store at `path`.
    pub fn open(path: &Path, ttl: Duration, limits: Limits) -> Result<Table, TableError> {
        let conn = peerchat_db::open(path, MIGRATIONS)?;
        let mut map = std::collections::HashMap::new();
        load_map(&conn, &mut map)?;
        let cache = Arc::new(Cache::new(map, ttl));
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = Writer {
            cache: cache.clone(),
            limits: limits.rules(),
        };
        let thread = std::thread::Builder::new()
            .name("registry-db".into())
            .spawn(move || writer_loop(conn, rx, writer))
            .map_err(|e| TableError::Storage(rusqlite::Error::ToSqlConversionFailure(e.into())))?;
        Ok(Table {
            cache,
            store: Store::Sqlite {
                writer: std::sync::Mutex::new(Some(tx)),
                thread: std::sync::Mutex::new(Some(thread)),
            },
            ttl,
            rate: peerchat_daemon::limits::RateLimiter::new(limits.registrations_per_minute),
        })
    }

    /// The etcd store at `url`: reads the registry now (etcd must answer), then follows it.
    pub async fn open_etcd(
        url: &crate::store_url::EtcdUrl,
        ttl: Duration,
        limits: Limits,
    ) -> Result<Table, TableError> {
        let (store, cache) = EtcdStore::open(url, ttl, limits.rules()).await?;
        Ok(Table {
            cache,
            store: Store::Etcd(Box::new(store)),
            ttl,
            rate: peerchat_daemon::limits::RateLimiter::new(limits.registrations_per_minute),
        })
    }

    /// The store's kind and health.
    pub fn store_health(&self) -> StoreHealth {
        match &self.store {
            Store::Sqlite { .. } => StoreHealth {
                kind: "sqlite",
                ok: true,
                detail: "SQLite database open".into(),
            },
            Store::Etcd(e) => StoreHealth {
                kind: "etcd",
                ok: e.health().ok(),
                detail: e.health().detail(),
            },
        }
    }

    /// Notices of names whose presence may have changed, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Changes> {
        self.cache.changes.subscribe()
    }

    /// The presence of `name` now.
    pub fn presence(&self, name: &Name) -> Presence {
        presence_of(self.read().get(name), now_ms(), self.ttl)
    }

    /// Announces the names whose lease ran out in `[since, now)` (their `online` turned false
    /// without a write), and returns `now` for the next call. Called periodically by
    /// [`crate::run`]; consecutive calls cover time without gaps.
    pub fn sweep_expired(&self, since: u64) -> u64 {
        let now = now_ms();
        if now <= since || self.cache.changes.receiver_count() == 0 {
            return now.max(since);
        }
        let ttl = self.ttl.as_millis() as u64;
        let expired: Vec<Name> = self
            .read()
            .iter()
            .filter(|(_, e)| {
                let deadline = e.last_seen_ms.saturating_add(ttl);
                e.lease == Lease::Clock && !e.offline && since <= deadline && deadline < now
            })
            .map(|(n, _)| n.clone())
            .collect();
        if !expired.is_empty() {
            debug!(names = expired.len(), "leases ran out");
            self.cache.announce(expired);
        }
        now
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<Name, Entry>> {
        self.cache.read()
    }

    fn record(&self, name: &Name, e: &Entry, now: u64) -> Record {
        Record {
            name: name.clone(),
            address: e.address.clone(),
            online: e.online(now, self.ttl),
            last_seen_ms: e.last_seen_ms,
            legacy: e.legacy,
            signed: e.signed.clone(),
            rotations: e.rotations.clone(),
            last_seq: e.last_seq,
        }
    }

    pub fn lookup(&self, name: &Name) -> Option<Record> {
        let now = now_ms();
        self.read().get(name).map(|e| self.record(name, e, now))
    }

    pub fn list(&self) -> Vec<Record> {
        let now = now_ms();
        let mut v: Vec<Record> = self
            .read()
            .iter()
            .map(|(n, e)| self.record(n, e, now))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Registers (or renews) a name for a client at `source` (`Register` or `Legacy`), subject to
    /// the per-address rate limit.
    pub async fn register(&self, w: Write, source: std::net::IpAddr) -> Result<(), TableError> {
        self.check_rate(source)?;
        self.write(w).await
    }

    /// Counts one registration attempt from `source` (before any work on it, so that requests
    /// with bad signatures count too).
    pub fn check_rate(&self, source: std::net::IpAddr) -> Result<(), TableError> {
        if !self.rate.allow(source) {
            return Err(TableError::RateLimited(self.rate.per_minute()));
        }
        Ok(())
    }

    pub async fn write(&self, w: Write) -> Result<(), TableError> {
        let writer = match &self.store {
            Store::Etcd(e) => return e.write(w).await,
            Store::Sqlite { writer, .. } => writer,
        };
        let (tx, rx) = oneshot::channel();
        {
            let guard = writer.lock().unwrap_or_else(|p| p.into_inner());
            let sender = guard.as_ref().ok_or(TableError::Closed)?;
            sender.send((w, tx)).map_err(|_| TableError::Closed)?;
        }
        rx.await.map_err(|_| TableError::Closed)?
    }

    /// Stops the writer after the queued writes are committed (SQLite), or the store's tasks
    /// (etcd: every reply was sent after its commit).
    pub fn close(&self) {
        match &self.store {
            Store::Sqlite { writer, thread } => {
                writer.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(t) = thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = t.join();
                }
            }
            Store::Etcd(e) => e.close(),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.close();
    }
}
