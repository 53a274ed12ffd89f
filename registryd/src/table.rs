//! The name table: SQLite is the truth, an in-memory copy answers lookups.
//!
//! All writes go through one thread that owns the connection (rusqlite never runs on the async
//! workers). It commits first, then updates the in-memory map, then replies, so a reply always
//! means "on disk". Because only that thread mutates the map, checks such as "a legacy
//! registration cannot take a name held by one of our nodes" are atomic with the write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_db::rusqlite::{self, params, Connection};
use peerchat_proto::registry::Record;
use peerchat_proto::Name;
use tokio::sync::oneshot;
use tracing::{debug, error, info};

const MIGRATIONS: &[&str] = &["CREATE TABLE names (
        name TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        offline INTEGER NOT NULL DEFAULT 0,
        legacy INTEGER NOT NULL DEFAULT 0,
        first_registered_ms INTEGER NOT NULL
    ) STRICT;"];

#[derive(Debug, Clone)]
struct Entry {
    address: String,
    last_seen_ms: u64,
    offline: bool,
    legacy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Open(#[from] peerchat_db::DbError),
    #[error("name {0} is not registered")]
    NotFound(Name),
    #[error("name {0} is held by a peerchat node; a legacy registration cannot take it")]
    Conflict(Name),
    #[error("too many registrations from this address (limit {0} per minute); try again later")]
    RateLimited(u32),
    #[error("the registry is full ({0} names); ask its operator to raise --max-names")]
    Full(usize),
    #[error("database transaction failed: {0}")]
    Commit(String),
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("the registry is shutting down")]
    Closed,
}

enum Write {
    Register {
        name: Name,
        address: String,
        legacy: bool,
    },
    Offline(Name),
    Unregister(Name),
}

type Job = (Write, oneshot::Sender<Result<(), TableError>>);

pub struct Table {
    map: Arc<RwLock<HashMap<Name, Entry>>>,
    writer: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    ttl: Duration,
    rate: crate::limits::RateLimiter,
}

/// Abuse limits on registrations.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most names the table holds; registering a new name beyond it is refused.
    pub max_names: usize,
    /// Most registrations (new or renewals) per source address per minute.
    pub registrations_per_minute: u32,
}

impl Table {
    pub fn open(path: &Path, ttl: Duration, limits: Limits) -> Result<Table, TableError> {
        let conn = peerchat_db::open(path, MIGRATIONS)?;
        let mut map = HashMap::new();
        {
            let mut stmt =
                conn.prepare("SELECT name, address, last_seen_ms, offline, legacy FROM names")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Entry {
                        address: r.get(1)?,
                        last_seen_ms: r.get::<_, i64>(2)? as u64,
                        offline: r.get(3)?,
                        legacy: r.get(4)?,
                    },
                ))
            })?;
            for row in rows {
                let (name, entry) = row?;
                // Rows were validated on the way in; skip anything that was edited by hand.
                if let Ok(name) = Name::new(name) {
                    map.insert(name, entry);
                }
            }
        }
        let map = Arc::new(RwLock::new(map));
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_map = map.clone();
        let thread = std::thread::Builder::new()
            .name("registry-db".into())
            .spawn(move || writer_loop(conn, rx, thread_map, limits.max_names))
            .map_err(|e| TableError::Storage(rusqlite::Error::ToSqlConversionFailure(e.into())))?;
        Ok(Table {
            map,
            writer: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
            ttl,
            rate: crate::limits::RateLimiter::new(limits.registrations_per_minute),
        })
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
            online: !e.offline && now.saturating_sub(e.last_seen_ms) <= self.ttl.as_millis() as u64,
            last_seen_ms: e.last_seen_ms,
            legacy: e.legacy,
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

    /// Registers (or renews) `name` for a client at `source`.
    pub async fn register(
        &self,
        name: Name,
        address: String,
        legacy: bool,
        source: std::net::IpAddr,
    ) -> Result<(), TableError> {
        if !self.rate.allow(source) {
            return Err(TableError::RateLimited(self.rate.per_minute()));
        }
        self.write(Write::Register {
            name,
            address,
            legacy,
        })
        .await
    }

    pub async fn offline(&self, name: Name) -> Result<(), TableError> {
        self.write(Write::Offline(name)).await
    }

    pub async fn unregister(&self, name: Name) -> Result<(), TableError> {
        self.write(Write::Unregister(name)).await
    }

    async fn write(&self, w: Write) -> Result<(), TableError> {
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

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    map: Arc<RwLock<HashMap<Name, Entry>>>,
    max_names: usize,
) {
    while let Ok(first) = rx.recv() {
        // Batch whatever else is already waiting into the same transaction (group commit).
        let mut jobs = vec![first];
        while jobs.len() < 256 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let results = apply_batch(&mut conn, &jobs, &map, max_names);
        for ((_, reply), result) in jobs.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
    debug!("registry writer stopped");
}

/// Applies a batch in one transaction; the map is updated only after the commit succeeded.
fn apply_batch(
    conn: &mut Connection,
    jobs: &[Job],
    map: &RwLock<HashMap<Name, Entry>>,
    max_names: usize,
) -> Vec<Result<(), TableError>> {
    let now = now_ms();
    // Names in the table as this batch goes along (for the --max-names limit).
    let mut names = map.read().unwrap_or_else(|p| p.into_inner()).len();
    // Work on a copy of the affected entries so that later jobs in the batch see earlier ones.
    let mut pending: HashMap<Name, Option<Entry>> = HashMap::new();
    let current = |pending: &HashMap<Name, Option<Entry>>, name: &Name| -> Option<Entry> {
        match pending.get(name) {
            Some(e) => e.clone(),
            None => map
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned(),
        }
    };
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return jobs.iter().map(|_| Err(storage(&e))).collect(),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for (job, _) in jobs {
        let r: Result<(), TableError> = (|| match job {
            Write::Register {
                name,
                address,
                legacy,
            } => {
                let old = current(&pending, name);
                if *legacy && old.as_ref().is_some_and(|e| !e.legacy) {
                    return Err(TableError::Conflict(name.clone()));
                }
                if old.is_none() {
                    if names >= max_names {
                        return Err(TableError::Full(max_names));
                    }
                    names += 1;
                }
                tx.execute(
                    "INSERT INTO names (name, address, last_seen_ms, offline, legacy, first_registered_ms)
                     VALUES (?1, ?2, ?3, 0, ?4, ?3)
                     ON CONFLICT(name) DO UPDATE SET address = ?2, last_seen_ms = ?3, offline = 0, legacy = ?4",
                    params![name.as_str(), address, now as i64, legacy],
                )?;
                pending.insert(
                    name.clone(),
                    Some(Entry {
                        address: address.clone(),
                        last_seen_ms: now,
                        offline: false,
                        legacy: *legacy,
                    }),
                );
                Ok(())
            }
            Write::Offline(name) => {
                let mut e =
                    current(&pending, name).ok_or_else(|| TableError::NotFound(name.clone()))?;
                tx.execute(
                    "UPDATE names SET offline = 1 WHERE name = ?1",
                    params![name.as_str()],
                )?;
                e.offline = true;
                pending.insert(name.clone(), Some(e));
                Ok(())
            }
            Write::Unregister(name) => {
                current(&pending, name).ok_or_else(|| TableError::NotFound(name.clone()))?;
                tx.execute("DELETE FROM names WHERE name = ?1", params![name.as_str()])?;
                pending.insert(name.clone(), None);
                names = names.saturating_sub(1);
                Ok(())
            }
        })();
        results.push(r);
    }
    if let Err(e) = tx.commit() {
        error!(error = %e, "registry commit failed; batch refused");
        return jobs.iter().map(|_| Err(storage(&e))).collect();
    }
    let mut m = map.write().unwrap_or_else(|p| p.into_inner());
    for (name, entry) in pending {
        match entry {
            Some(e) => {
                if !m.contains_key(&name) {
                    info!(name = %name, address = %e.address, legacy = e.legacy, "name registered");
                }
                m.insert(name, e);
            }
            None => {
                info!(name = %name, "name unregistered");
                m.remove(&name);
            }
        }
    }
    results
}

/// The whole batch failed: every job hears why (rusqlite errors are not `Clone`).
fn storage(e: &rusqlite::Error) -> TableError {
    TableError::Commit(e.to_string())
}
