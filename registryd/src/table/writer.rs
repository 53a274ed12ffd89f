//! The `registry-db` writer thread: batches of writes in one transaction each (group commit),
//! the binding rules checked in that transaction, the map updated after the commit, and the
//! names whose presence changed announced. Reloads the map when another process changed the
//! database.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_db::rusqlite::{self, params, Connection, Transaction};
use peerchat_proto::registry::{Rotation, SignedRegistration};
use peerchat_proto::{Name, PublicKey};
use tracing::{debug, error, info};

use super::rules;
use super::schema::{data_version, load_map, SAVE_TOMBSTONE};
use super::types::{presence_of, Changes, Entry, Job, TableError, Write};

/// What the writer thread shares with the table.
pub(super) struct Writer {
    pub(super) map: Arc<RwLock<HashMap<Name, Entry>>>,
    pub(super) max_names: usize,
    pub(super) legacy_per_source: usize,
    pub(super) ttl: Duration,
    pub(super) changes: tokio::sync::broadcast::Sender<Changes>,
}

impl Writer {
    fn announce(&self, changed: Vec<Name>) {
        if !changed.is_empty() {
            // No receiver (nobody watching) is not an error.
            let _ = self.changes.send(changed.into());
        }
    }

    /// Replaces the map with the database's rows and announces the names whose presence
    /// differs.
    fn reload(&self, conn: &Connection) {
        let mut fresh = HashMap::new();
        match load_map(conn, &mut fresh) {
            Ok(()) => {
                info!(
                    names = fresh.len(),
                    "database changed by another process; reloaded"
                );
                let now = now_ms();
                let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
                let changed: Vec<Name> = m
                    .keys()
                    .chain(fresh.keys().filter(|n| !m.contains_key(*n)))
                    .filter(|n| {
                        presence_of(m.get(*n), now, self.ttl)
                            != presence_of(fresh.get(*n), now, self.ttl)
                    })
                    .cloned()
                    .collect();
                *m = fresh;
                drop(m);
                self.announce(changed);
            }
            Err(e) => error!(error = %e, "could not reload the changed database"),
        }
    }
}

pub(super) fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, w: Writer) {
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
            w.reload(&conn);
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

/// One batch's view of the table: the committed map plus this batch's changes so far, so
/// that later jobs in the batch see earlier ones.
struct BatchState<'w> {
    map: &'w RwLock<HashMap<Name, Entry>>,
    /// The affected entries (`None`: deleted).
    pending: HashMap<Name, Option<Entry>>,
    /// Names in the table as this batch goes along (for the --max-names limit).
    names: usize,
    now: u64,
}

impl BatchState<'_> {
    fn current(&self, name: &Name) -> Option<Entry> {
        match self.pending.get(name) {
            Some(e) => e.clone(),
            None => self
                .map
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned(),
        }
    }
}

/// Applies a batch in one transaction; the map is updated only after the commit succeeded, and
/// then the names whose presence changed are announced.
fn apply_batch(conn: &mut Connection, jobs: &[Job], w: &Writer) -> Vec<Result<(), TableError>> {
    let mut state = BatchState {
        map: &w.map,
        pending: HashMap::new(),
        names: w.map.read().unwrap_or_else(|p| p.into_inner()).len(),
        now: now_ms(),
    };
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return jobs.iter().map(|_| Err(storage(&e))).collect(),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for (job, _) in jobs {
        results.push(match job {
            Write::Register {
                name,
                address,
                signed,
                rotation,
            } => apply_register(&tx, w, &mut state, name, address, signed, rotation.as_ref()),
            Write::Legacy {
                name,
                address,
                source,
            } => apply_legacy(&tx, w, &mut state, name, address, *source),
            Write::Offline { name, key, seq } => apply_offline(&tx, &mut state, name, key, *seq),
            Write::Unregister { name, key, seq } => {
                apply_unregister(&tx, &mut state, name, key, *seq)
            }
        });
    }
    if let Err(e) = tx.commit() {
        error!(error = %e, "registry commit failed; batch refused");
        return jobs.iter().map(|_| Err(storage(&e))).collect();
    }
    publish(w, state);
    results
}

#[allow(clippy::too_many_arguments)]
fn apply_register(
    tx: &Transaction,
    w: &Writer,
    state: &mut BatchState,
    name: &Name,
    address: &str,
    signed: &SignedRegistration,
    rotation: Option<&Rotation>,
) -> Result<(), TableError> {
    let old = state.current(name);
    let rotations: Vec<Rotation> = rules::register(
        tx,
        name,
        old.as_ref(),
        signed,
        rotation,
        &mut state.names,
        w.max_names,
    )?;
    let now = state.now;
    let signed_json = serde_json::to_string(signed).unwrap_or_default();
    let rotations_json = serde_json::to_string(&rotations).unwrap_or_default();
    tx.execute(
        "INSERT INTO names (name, address, last_seen_ms, offline, legacy, first_registered_ms, signed, last_seq, rotations)
                     VALUES (?1, ?2, ?3, 0, 0, ?3, ?4, ?5, ?6)
                     ON CONFLICT(name) DO UPDATE SET address = ?2, last_seen_ms = ?3, offline = 0, legacy = 0,
                        signed = ?4, last_seq = ?5, rotations = ?6, source = NULL",
        params![name.as_str(), address, now as i64, signed_json, signed.seq as i64, rotations_json],
    )?;
    state.pending.insert(
        name.clone(),
        Some(Entry {
            address: address.to_owned(),
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

fn apply_legacy(
    tx: &Transaction,
    w: &Writer,
    state: &mut BatchState,
    name: &Name,
    address: &str,
    source: std::net::IpAddr,
) -> Result<(), TableError> {
    let old = state.current(name);
    rules::legacy(
        tx,
        name,
        old.as_ref(),
        source,
        w.legacy_per_source,
        &mut state.names,
        w.max_names,
    )?;
    let now = state.now;
    let source_text = source.to_string();
    tx.execute(
        "INSERT INTO names (name, address, last_seen_ms, offline, legacy, first_registered_ms, source)
                     VALUES (?1, ?2, ?3, 0, 1, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET address = ?2, last_seen_ms = ?3, offline = 0, legacy = 1,
                        signed = NULL, last_seq = 0, rotations = '[]', source = ?4",
        params![name.as_str(), address, now as i64, source_text],
    )?;
    state.pending.insert(
        name.clone(),
        Some(Entry {
            address: address.to_owned(),
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

fn apply_offline(
    tx: &Transaction,
    state: &mut BatchState,
    name: &Name,
    key: &PublicKey,
    seq: u64,
) -> Result<(), TableError> {
    let mut e = state
        .current(name)
        .ok_or_else(|| TableError::NotFound(name.clone()))?;
    rules::owner(name, key, seq, &e)?;
    tx.execute(
        "UPDATE names SET offline = 1, last_seq = ?2 WHERE name = ?1",
        params![name.as_str(), seq as i64],
    )?;
    e.offline = true;
    e.last_seq = seq;
    state.pending.insert(name.clone(), Some(e));
    Ok(())
}

fn apply_unregister(
    tx: &Transaction,
    state: &mut BatchState,
    name: &Name,
    key: &PublicKey,
    seq: u64,
) -> Result<(), TableError> {
    let e = state
        .current(name)
        .ok_or_else(|| TableError::NotFound(name.clone()))?;
    rules::owner(name, key, seq, &e)?;
    tx.execute(
        SAVE_TOMBSTONE,
        params![name.as_str(), key.to_hex(), seq as i64],
    )?;
    tx.execute("DELETE FROM names WHERE name = ?1", params![name.as_str()])?;
    state.pending.insert(name.clone(), None);
    state.names = state.names.saturating_sub(1);
    Ok(())
}

/// After the commit: the batch's entries go into the map, and the names whose presence changed
/// are announced.
fn publish(w: &Writer, state: BatchState) {
    let now = state.now;
    let mut m = w.map.write().unwrap_or_else(|p| p.into_inner());
    let mut changed = Vec::new();
    for (name, entry) in state.pending {
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
}

/// The whole batch failed: every job hears why (rusqlite errors are not `Clone`).
fn storage(e: &rusqlite::Error) -> TableError {
    TableError::Commit(e.to_string())
}
