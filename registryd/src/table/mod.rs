//! The name table: SQLite is the truth, an in-memory copy answers lookups.
//!
//! All writes go through one thread that owns the connection (rusqlite never runs on the async
//! workers). It commits first, then updates the in-memory map, then replies, so a reply always
//! means "on disk". Because only that thread mutates the map, checks such as "a legacy
//! registration cannot take a name held by one of our nodes" are atomic with the write.

//!
//! One file per job: `types` (the entries, writes and refusals), `schema` (migrations, loading),
//! `rules` (the binding rules, one function each), `writer` (the writer thread), `release`
//! (the operator's direct deletes).

mod release;
mod rules;
mod schema;
mod types;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_db::rusqlite;
use peerchat_proto::registry::Record;
use peerchat_proto::Name;
use tokio::sync::oneshot;
use tracing::debug;

pub use release::{release, release_legacy_offline};
pub use types::{Changes, Presence, TableError, Write};

use schema::{load_map, MIGRATIONS};
use types::{presence_of, Entry, Job, CHANGES_CAPACITY};
use writer::{writer_loop, Writer};

pub struct Table {
    map: Arc<RwLock<HashMap<Name, Entry>>>,
    writer: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    ttl: Duration,
    rate: peerchat_daemon::limits::RateLimiter,
    changes: tokio::sync::broadcast::Sender<Changes>,
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

impl Table {
    pub fn open(path: &Path, ttl: Duration, limits: Limits) -> Result<Table, TableError> {
        let conn = peerchat_db::open(path, MIGRATIONS)?;
        let mut map = HashMap::new();
        {
            load_map(&conn, &mut map)?;
        }
        let map = Arc::new(RwLock::new(map));
        let (tx, rx) = mpsc::channel::<Job>();
        let (changes, _) = tokio::sync::broadcast::channel(CHANGES_CAPACITY);
        let writer = Writer {
            map: map.clone(),
            max_names: limits.max_names,
            legacy_per_source: limits.legacy_per_source,
            ttl,
            changes: changes.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("registry-db".into())
            .spawn(move || writer_loop(conn, rx, writer))
            .map_err(|e| TableError::Storage(rusqlite::Error::ToSqlConversionFailure(e.into())))?;
        Ok(Table {
            map,
            writer: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
            ttl,
            rate: peerchat_daemon::limits::RateLimiter::new(limits.registrations_per_minute),
            changes,
        })
    }

    /// Notices of names whose presence may have changed, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Changes> {
        self.changes.subscribe()
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
        if now <= since || self.changes.receiver_count() == 0 {
            return now.max(since);
        }
        let ttl = self.ttl.as_millis() as u64;
        let expired: Vec<Name> = self
            .read()
            .iter()
            .filter(|(_, e)| {
                let deadline = e.last_seen_ms.saturating_add(ttl);
                !e.offline && since <= deadline && deadline < now
            })
            .map(|(n, _)| n.clone())
            .collect();
        if !expired.is_empty() {
            debug!(names = expired.len(), "leases ran out");
            let _ = self.changes.send(expired.into());
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Name, Entry>> {
        // A poisoned lock only means a panic elsewhere mid-read; the map itself is intact.
        self.map.read().unwrap_or_else(|p| p.into_inner())
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
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let sender = guard.as_ref().ok_or(TableError::Closed)?;
            sender.send((w, tx)).map_err(|_| TableError::Closed)?;
        }
        rx.await.map_err(|_| TableError::Closed)?
    }

    /// Stops the writer after the queued writes are committed.
    pub fn close(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.close();
    }
}
