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
use peerchat_db::rusqlite::{self, params, Connection, OptionalExtension};
use peerchat_proto::registry::{Record, Rotation, SignedRegistration};
use peerchat_proto::{Name, PublicKey};
use tokio::sync::oneshot;
use tracing::{debug, error, info};

/// Append-only: never edit an entry, add one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE names (
        name TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        offline INTEGER NOT NULL DEFAULT 0,
        legacy INTEGER NOT NULL DEFAULT 0,
        first_registered_ms INTEGER NOT NULL
    ) STRICT;",
    // Signed registrations: the node's signed part (JSON of `SignedRegistration`), the highest
    // sequence number accepted, and the name's key rotations (JSON list). Rows from before have
    // no key and are taken over by the first signed registration.
    "ALTER TABLE names ADD COLUMN signed TEXT;
     ALTER TABLE names ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE names ADD COLUMN rotations TEXT NOT NULL DEFAULT '[]';",
    // The last sequence number of each key a name had when it was unregistered or released, so
    // that an old signed registration cannot be replayed to take the name back.
    "CREATE TABLE tombstones (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (name, key)
    ) STRICT, WITHOUT ROWID;",
    // The source address of each seed (legacy) registration, for the per-address cap
    // (`--max-legacy-per-source`). NULL for signed records and legacy rows from before.
    "ALTER TABLE names ADD COLUMN source TEXT;
     CREATE INDEX names_legacy_source ON names (source) WHERE legacy = 1;",
];

const SAVE_TOMBSTONE: &str = "INSERT INTO tombstones (name, key, last_seq) VALUES (?1, ?2, ?3)
     ON CONFLICT(name, key) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)";

/// Most rotations kept per name (the newest); a peer that pinned a key older than that must
/// `chatctl trust` again.
pub const MAX_ROTATIONS: usize = 16;

#[derive(Debug, Clone)]
struct Entry {
    address: String,
    last_seen_ms: u64,
    offline: bool,
    legacy: bool,
    signed: Option<SignedRegistration>,
    last_seq: u64,
    rotations: Vec<Rotation>,
    /// The source address of a legacy registration.
    source: Option<String>,
}

impl Entry {
    /// The key the name is bound to, if any.
    fn key(&self) -> Option<PublicKey> {
        self.signed.as_ref().map(|s| s.key)
    }

    /// Renewed within the TTL and not marked offline, at `now`.
    fn online(&self, now: u64, ttl: Duration) -> bool {
        !self.offline && now.saturating_sub(self.last_seen_ms) <= ttl.as_millis() as u64
    }
}

/// What `watch` reports of a name: whether it is online, and its address (`None`: not
/// registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub online: bool,
    pub address: Option<String>,
}

fn presence_of(e: Option<&Entry>, now: u64, ttl: Duration) -> Presence {
    match e {
        Some(e) => Presence {
            online: e.online(now, ttl),
            address: Some(e.address.clone()),
        },
        None => Presence {
            online: false,
            address: None,
        },
    }
}

/// Names whose presence may have changed (a commit, a reload, leases running out). Receivers
/// compare with what they last announced; one that lags resends its whole set.
pub type Changes = Arc<[Name]>;

/// Queued change notices per receiver before it counts as lagging.
const CHANGES_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Open(#[from] peerchat_db::DbError),
    #[error("name {0} is not registered")]
    NotFound(Name),
    #[error("name {0} is held by a peerchat node; a legacy registration cannot take it")]
    Conflict(Name),
    #[error("name {name} is bound to another key (fingerprint {bound}); only its holder can change it, or the registry's operator can release it")]
    KeyMismatch { name: Name, bound: String },
    #[error("sequence number {seq} is not above {last}, the last one accepted for {name} (a replayed request?)")]
    Replay { name: Name, seq: u64, last: u64 },
    #[error("too many registrations from this address (limit {0} per minute); try again later")]
    RateLimited(u32),
    #[error("the registry is full ({0} names); ask its operator to raise --max-names")]
    Full(usize),
    #[error("{address} already holds {limit} seed registrations (--max-legacy-per-source)")]
    LegacyLimit {
        address: std::net::IpAddr,
        limit: usize,
    },
    #[error("database transaction failed: {0}")]
    Commit(String),
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("the registry is shutting down")]
    Closed,
}

/// A change to the table. Signatures are checked before a write is queued; the writer checks
/// what needs the current state (key binding, sequence numbers, limits) atomically.
// One value per request, moved once into the writer's channel: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Write {
    /// A signed registration (`signed`), optionally rotating the name to its key.
    Register {
        name: Name,
        address: String,
        signed: SignedRegistration,
        rotation: Option<Rotation>,
    },
    /// A seed (text protocol) registration from `source`: no key; cannot take a name bound to
    /// one.
    Legacy {
        name: Name,
        address: String,
        source: std::net::IpAddr,
    },
    Offline {
        name: Name,
        key: PublicKey,
        seq: u64,
    },
    Unregister {
        name: Name,
        key: PublicKey,
        seq: u64,
    },
}

type Job = (Write, oneshot::Sender<Result<(), TableError>>);

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

/// What the writer thread shares with the table.
struct Writer {
    map: Arc<RwLock<HashMap<Name, Entry>>>,
    max_names: usize,
    legacy_per_source: usize,
    ttl: Duration,
    changes: tokio::sync::broadcast::Sender<Changes>,
}

impl Writer {
    fn announce(&self, changed: Vec<Name>) {
        if !changed.is_empty() {
            // No receiver (nobody watching) is not an error.
            let _ = self.changes.send(changed.into());
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, w: Writer) {
    // Another process (`registryd release`) may change the database; SQLite's data_version
    // tells us, and the map is reloaded from disk.
    let mut seen_version = data_version(&conn);
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(j) => Some(j),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let version = data_version(&conn);
        if version != seen_version {
            seen_version = version;
            let mut fresh = HashMap::new();
            match load_map(&conn, &mut fresh) {
                Ok(()) => {
                    info!(
                        names = fresh.len(),
                        "database changed by another process; reloaded"
                    );
                    let now = now_ms();
                    let mut m = w.map.write().unwrap_or_else(|p| p.into_inner());
                    let changed: Vec<Name> = m
                        .keys()
                        .chain(fresh.keys().filter(|n| !m.contains_key(*n)))
                        .filter(|n| {
                            presence_of(m.get(*n), now, w.ttl)
                                != presence_of(fresh.get(*n), now, w.ttl)
                        })
                        .cloned()
                        .collect();
                    *m = fresh;
                    drop(m);
                    w.announce(changed);
                }
                Err(e) => error!(error = %e, "could not reload the changed database"),
            }
        }
        let Some(first) = first else { continue };
        // Batch whatever else is already waiting into the same transaction (group commit).
        let mut jobs = vec![first];
        while jobs.len() < 256 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let results = apply_batch(&mut conn, &jobs, &w);
        for ((_, reply), result) in jobs.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
    debug!("registry writer stopped");
}

/// Applies a batch in one transaction; the map is updated only after the commit succeeded, and
/// then the names whose presence changed are announced.
fn apply_batch(conn: &mut Connection, jobs: &[Job], w: &Writer) -> Vec<Result<(), TableError>> {
    let (map, max_names) = (&*w.map, w.max_names);
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
                signed,
                rotation,
            } => {
                let old = current(&pending, name);
                if old.as_ref().is_none_or(|e| e.key().is_none()) {
                    // A new binding: not with a record this key signed before the name was freed.
                    let last: Option<i64> = tx
                        .prepare_cached(
                            "SELECT last_seq FROM tombstones WHERE name = ?1 AND key = ?2",
                        )?
                        .query_row(params![name.as_str(), signed.key.to_hex()], |r| r.get(0))
                        .optional()?;
                    if let Some(last) = last.filter(|l| signed.seq <= *l as u64) {
                        return Err(TableError::Replay {
                            name: name.clone(),
                            seq: signed.seq,
                            last: last as u64,
                        });
                    }
                }
                let mut rotations = Vec::new();
                if let Some(old) = old.as_ref().filter(|e| e.key().is_some()) {
                    check_seq(name, signed.seq, old)?;
                    rotations = old.rotations.clone();
                    let bound = old.key().unwrap_or(signed.key);
                    if bound != signed.key {
                        // Signatures were checked before queueing; here: does it start at the
                        // bound key and end at the new one?
                        match rotation {
                            Some(r) if r.from == bound && r.to == signed.key => {
                                rotations.push(r.clone());
                                let excess = rotations.len().saturating_sub(MAX_ROTATIONS);
                                rotations.drain(..excess);
                                info!(name = %name, from = %bound.fingerprint(), to = %signed.key.fingerprint(), "key rotated");
                            }
                            _ => return Err(mismatch(name, &bound)),
                        }
                    }
                }
                if old.is_none() {
                    count_new_name(&mut names, max_names)?;
                }
                let signed_json = serde_json::to_string(signed).unwrap_or_default();
                let rotations_json = serde_json::to_string(&rotations).unwrap_or_default();
                tx.execute(
                    "INSERT INTO names (name, address, last_seen_ms, offline, legacy, first_registered_ms, signed, last_seq, rotations)
                     VALUES (?1, ?2, ?3, 0, 0, ?3, ?4, ?5, ?6)
                     ON CONFLICT(name) DO UPDATE SET address = ?2, last_seen_ms = ?3, offline = 0, legacy = 0,
                        signed = ?4, last_seq = ?5, rotations = ?6, source = NULL",
                    params![name.as_str(), address, now as i64, signed_json, signed.seq as i64, rotations_json],
                )?;
                pending.insert(
                    name.clone(),
                    Some(Entry {
                        address: address.clone(),
                        last_seen_ms: now,
                        offline: false,
                        legacy: false,
                        signed: Some(signed.clone()),
                        last_seq: signed.seq,
                        rotations,
                        source: None,
                    }),
                );
                Ok(())
            }
            Write::Legacy {
                name,
                address,
                source,
            } => {
                let old = current(&pending, name);
                if old.as_ref().is_some_and(|e| !e.legacy) {
                    return Err(TableError::Conflict(name.clone()));
                }
                let source_text = source.to_string();
                // A renewal from the same address keeps its place; anything else is one more
                // name for this address. The count sees this batch's earlier writes (same
                // transaction).
                if old.as_ref().and_then(|e| e.source.as_deref()) != Some(source_text.as_str()) {
                    let held: i64 = tx
                        .prepare_cached(
                            "SELECT count(*) FROM names WHERE legacy = 1 AND source = ?1",
                        )?
                        .query_row(params![source_text], |r| r.get(0))?;
                    if held as usize >= w.legacy_per_source {
                        return Err(TableError::LegacyLimit {
                            address: *source,
                            limit: w.legacy_per_source,
                        });
                    }
                }
                if old.is_none() {
                    count_new_name(&mut names, max_names)?;
                }
                tx.execute(
                    "INSERT INTO names (name, address, last_seen_ms, offline, legacy, first_registered_ms, source)
                     VALUES (?1, ?2, ?3, 0, 1, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET address = ?2, last_seen_ms = ?3, offline = 0, legacy = 1,
                        signed = NULL, last_seq = 0, rotations = '[]', source = ?4",
                    params![name.as_str(), address, now as i64, source_text],
                )?;
                pending.insert(
                    name.clone(),
                    Some(Entry {
                        address: address.clone(),
                        last_seen_ms: now,
                        offline: false,
                        legacy: true,
                        signed: None,
                        last_seq: 0,
                        rotations: Vec::new(),
                        source: Some(source_text),
                    }),
                );
                Ok(())
            }
            Write::Offline { name, key, seq } => {
                let mut e =
                    current(&pending, name).ok_or_else(|| TableError::NotFound(name.clone()))?;
                check_owner(name, key, *seq, &e)?;
                tx.execute(
                    "UPDATE names SET offline = 1, last_seq = ?2 WHERE name = ?1",
                    params![name.as_str(), *seq as i64],
                )?;
                e.offline = true;
                e.last_seq = *seq;
                pending.insert(name.clone(), Some(e));
                Ok(())
            }
            Write::Unregister { name, key, seq } => {
                let e =
                    current(&pending, name).ok_or_else(|| TableError::NotFound(name.clone()))?;
                check_owner(name, key, *seq, &e)?;
                tx.execute(
                    SAVE_TOMBSTONE,
                    params![name.as_str(), key.to_hex(), *seq as i64],
                )?;
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
    let mut changed = Vec::new();
    for (name, entry) in pending {
        if presence_of(m.get(&name), now, w.ttl) != presence_of(entry.as_ref(), now, w.ttl) {
            changed.push(name.clone());
        }
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
    drop(m);
    w.announce(changed);
    results
}

/// One more name in the table, unless that passes `--max-names`.
fn count_new_name(names: &mut usize, max_names: usize) -> Result<(), TableError> {
    if *names >= max_names {
        return Err(TableError::Full(max_names));
    }
    *names += 1;
    Ok(())
}

fn mismatch(name: &Name, bound: &PublicKey) -> TableError {
    TableError::KeyMismatch {
        name: name.clone(),
        bound: bound.fingerprint(),
    }
}

fn check_seq(name: &Name, seq: u64, e: &Entry) -> Result<(), TableError> {
    if seq <= e.last_seq {
        return Err(TableError::Replay {
            name: name.clone(),
            seq,
            last: e.last_seq,
        });
    }
    Ok(())
}

/// Offline and unregister: only the bound key, with a fresh sequence number. A name without a
/// key (a seed registration) cannot be changed through the signed protocol.
fn check_owner(name: &Name, key: &PublicKey, seq: u64, e: &Entry) -> Result<(), TableError> {
    match e.key() {
        Some(bound) if bound == *key => check_seq(name, seq, e),
        Some(bound) => Err(mismatch(name, &bound)),
        None => Err(TableError::KeyMismatch {
            name: name.clone(),
            bound: "none (a seed registration)".into(),
        }),
    }
}

fn data_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Reads every row into `map`. Rows that do not parse (edited by hand) are skipped.
fn load_map(conn: &Connection, map: &mut HashMap<Name, Entry>) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT name, address, last_seen_ms, offline, legacy, signed, last_seq, rotations, source
         FROM names",
    )?;
    let rows = stmt.query_map([], |r| {
        let signed: Option<String> = r.get(5)?;
        let rotations: String = r.get(7)?;
        Ok((
            r.get::<_, String>(0)?,
            Entry {
                address: r.get(1)?,
                last_seen_ms: r.get::<_, i64>(2)? as u64,
                offline: r.get(3)?,
                legacy: r.get(4)?,
                signed: signed.and_then(|s| serde_json::from_str(&s).ok()),
                last_seq: r.get::<_, i64>(6)? as u64,
                rotations: serde_json::from_str(&rotations).unwrap_or_default(),
                source: r.get(8)?,
            },
        ))
    })?;
    for row in rows {
        let (name, entry) = row?;
        if let Ok(name) = Name::new(name) {
            map.insert(name, entry);
        }
    }
    Ok(())
}

/// `registryd release NAME`, run by the database's owner: deletes the name directly in the
/// database (a running registryd notices within a second). Returns whether the name existed.
pub fn release(path: &Path, name: &Name) -> Result<bool, TableError> {
    let mut conn = peerchat_db::open(path, MIGRATIONS)?;
    let tx = conn.transaction()?;
    let row: Option<(Option<String>, i64)> = tx
        .query_row(
            "SELECT signed, last_seq FROM names WHERE name = ?1",
            params![name.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((signed, last_seq)) = row else {
        return Ok(false);
    };
    let key = signed.and_then(|s| serde_json::from_str::<SignedRegistration>(&s).ok());
    if let Some(s) = key {
        tx.execute(
            SAVE_TOMBSTONE,
            params![name.as_str(), s.key.to_hex(), last_seq],
        )?;
    }
    tx.execute("DELETE FROM names WHERE name = ?1", params![name.as_str()])?;
    tx.commit()?;
    Ok(true)
}

/// `registryd release --legacy-offline`: deletes every legacy (seed) record that is not online
/// (not renewed within `ttl`), directly in the database. Returns how many.
pub fn release_legacy_offline(path: &Path, ttl: Duration) -> Result<usize, TableError> {
    let conn = peerchat_db::open(path, MIGRATIONS)?;
    let cutoff = now_ms().saturating_sub(ttl.as_millis() as u64);
    let n = conn.execute(
        "DELETE FROM names WHERE legacy = 1 AND (offline = 1 OR last_seen_ms < ?1)",
        params![cutoff as i64],
    )?;
    Ok(n)
}

/// The whole batch failed: every job hears why (rusqlite errors are not `Clone`).
fn storage(e: &rusqlite::Error) -> TableError {
    TableError::Commit(e.to_string())
}
