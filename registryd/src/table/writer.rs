//! The SQLite store's `registry-db` writer thread: batches of writes in one transaction each
//! (group commit), the binding rules decided in that transaction, the cache updated after the
//! commit. Reloads the cache when another process changed the database.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_db::rusqlite::{self, params, Connection, OptionalExtension, Transaction};
use peerchat_proto::{Name, PublicKey};
use tracing::{debug, error, info};

use super::cache::Cache;
use super::decide::{decide, Change, RuleLimits};
use super::rules::Facts;
use super::schema::{data_version, load_map, SAVE_TOMBSTONE};
use super::types::{Entry, Job, TableError};

/// What the writer thread shares with the table.
pub(super) struct Writer {
    pub(super) cache: Arc<Cache>,
    pub(super) limits: RuleLimits,
}

impl Writer {
    /// Replaces the cache with the database's rows.
    fn reload(&self, conn: &Connection) {
        let mut fresh = HashMap::new();
        match load_map(conn, &mut fresh) {
            Ok(()) => {
                info!(
                    names = fresh.len(),
                    "database changed by another process; reloaded"
                );
                self.cache.replace_all(fresh);
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

/// The rules' reads, in the batch's transaction (so they see its earlier writes).
impl Facts for Transaction<'_> {
    fn tombstone_seq(&self, name: &Name, key: &PublicKey) -> Result<Option<u64>, TableError> {
        let last: Option<i64> = self
            .prepare_cached("SELECT last_seq FROM tombstones WHERE name = ?1 AND key = ?2")?
            .query_row(params![name.as_str(), key.to_hex()], |r| r.get(0))
            .optional()?;
        Ok(last.map(|l| l as u64))
    }

    fn legacy_held_by(&self, source: &str) -> Result<usize, TableError> {
        let held: i64 = self
            .prepare_cached("SELECT count(*) FROM names WHERE legacy = 1 AND source = ?1")?
            .query_row(params![source], |r| r.get(0))?;
        Ok(held as usize)
    }
}

/// Applies a batch in one transaction; the cache is updated only after the commit succeeded.
/// Later jobs of the batch see earlier ones (`pending`).
fn apply_batch(conn: &mut Connection, jobs: &[Job], w: &Writer) -> Vec<Result<(), TableError>> {
    let mut pending: HashMap<Name, Option<Entry>> = HashMap::new();
    let mut names = w.cache.read().len();
    let now = now_ms();
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return jobs.iter().map(|_| Err(storage(&e))).collect(),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for (job, _) in jobs {
        let name = job.name();
        let old = match pending.get(name) {
            Some(e) => e.clone(),
            None => w.cache.get(name),
        };
        let applied = decide(job, old.as_ref(), &tx, &mut names, w.limits, now)
            .and_then(|change| save(&tx, name, &change).map(|()| change));
        results.push(applied.map(|change| {
            pending.insert(
                name.clone(),
                match change {
                    Change::Put(e) => Some(e),
                    Change::Remove { .. } => None,
                },
            );
        }));
    }
    if let Err(e) = tx.commit() {
        error!(error = %e, "registry commit failed; batch refused");
        return jobs.iter().map(|_| Err(storage(&e))).collect();
    }
    w.cache.apply(pending);
    results
}

/// Writes one decided change into the transaction.
fn save(tx: &Transaction, name: &Name, change: &Change) -> Result<(), TableError> {
    match change {
        Change::Put(e) => {
            let signed_json = e
                .signed
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_default());
            let rotations_json = serde_json::to_string(&e.rotations).unwrap_or_default();
            tx.execute(
                "INSERT INTO names (name, address, last_seen_ms, offline, legacy, first_registered_ms, signed, last_seq, rotations, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6, ?7, ?8, ?9)
                 ON CONFLICT(name) DO UPDATE SET address = ?2, last_seen_ms = ?3, offline = ?4, legacy = ?5,
                    signed = ?6, last_seq = ?7, rotations = ?8, source = ?9",
                params![
                    name.as_str(),
                    e.address,
                    e.last_seen_ms as i64,
                    e.offline,
                    e.legacy,
                    signed_json,
                    e.last_seq as i64,
                    rotations_json,
                    e.source
                ],
            )?;
        }
        Change::Remove { tombstone } => {
            if let Some((key, seq)) = tombstone {
                tx.execute(
                    SAVE_TOMBSTONE,
                    params![name.as_str(), key.to_hex(), *seq as i64],
                )?;
            }
            tx.execute("DELETE FROM names WHERE name = ?1", params![name.as_str()])?;
        }
    }
    Ok(())
}

/// The whole batch failed: every job hears why (rusqlite errors are not `Clone`).
fn storage(e: &rusqlite::Error) -> TableError {
    TableError::Commit(e.to_string())
}
