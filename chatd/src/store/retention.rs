//! Retention: removing old inbox messages and finished outgoing messages, by age and/or count.
//! The default keeps everything.
//!
//! Undelivered outgoing messages are never removed, and neither is the newest row of `inbox` or
//! `outbox`: seqs are rowids (the largest plus one), and links and followers hold seq cursors,
//! so the largest seq must never go away or it would be handed out again. A removed inbox
//! message leaves its dedup key (sender, message id) and its body's SHA-256 in `inbox_seen`
//! until [`SEEN_KEEP`] after it was received, so a sender that never got our acknowledgement and
//! resends it is still acknowledged without storing it twice, and one that reuses the id for
//! another body is refused (`Arrival::Conflict`).

use std::time::Duration;

use peerchat_db::rusqlite::types::ValueRef;
use peerchat_db::rusqlite::{params, OptionalExtension};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// How long after a message was received the dedup key of its removed row is kept (well beyond
/// the default 7-day lifetime after which a sender gives up on a message).
pub const SEEN_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Remove messages older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many inbox messages, and this many finished outgoing messages.
    pub max_count: Option<u64>,
}

impl Retention {
    pub fn keeps_everything(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none()
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Pruned {
    pub inbox: usize,
    pub outbox: usize,
    /// Transactions it took (at most [`PRUNE_CHUNK`] rows of each table per transaction).
    pub rounds: usize,
}

/// Most inbox rows, and most outgoing messages, removed in one transaction. Every other job
/// (sends, receives) waits while a transaction runs: one prune of 200,000 rows each took 1.5 s
/// in one; rounds of this size take tens of milliseconds, and jobs queued meanwhile go first.
pub const PRUNE_CHUNK: usize = 5_000;

const FINISHED: &str = "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.out_seq = outbox.seq
     AND d.state IN ('queued','sent') AND d.final = 0)";

const NOT_NEWEST: &str = "seq < (SELECT MAX(seq) FROM outbox)";

/// A round failed; the rounds before it (`done`) are committed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PruneFailed {
    pub done: Pruned,
    /// The message, not a `source()` (printed twice with the chain).
    pub error: StoreError,
}

impl Store {
    /// Removes everything `r` says is due, in rounds of [`PRUNE_CHUNK`] rows per table, until
    /// nothing more is due or `stop` is cancelled (looked at between rounds).
    pub async fn prune(
        &self,
        r: Retention,
        stop: &CancellationToken,
    ) -> Result<Pruned, PruneFailed> {
        self.prune_in_rounds(r, PRUNE_CHUNK, stop).await
    }

    pub(super) async fn prune_in_rounds(
        &self,
        r: Retention,
        chunk: usize,
        stop: &CancellationToken,
    ) -> Result<Pruned, PruneFailed> {
        let mut done = Pruned::default();
        while !stop.is_cancelled() {
            let first = done.rounds == 0;
            let (round, more) = match self.prune_round(r.clone(), chunk, first).await {
                Ok(r) => r,
                Err(error) => return Err(PruneFailed { done, error }),
            };
            done.inbox += round.inbox;
            done.outbox += round.outbox;
            done.rounds += 1;
            if !more {
                break;
            }
        }
        Ok(done)
    }

    /// One transaction: the oldest due inbox rows and finished outgoing messages, at most
    /// `chunk` of each, and (in a run's first round) the expired `inbox_seen` keys. True if a
    /// limit was reached (more may be due).
    async fn prune_round(
        &self,
        r: Retention,
        chunk: usize,
        expire_seen: bool,
    ) -> Result<(Pruned, bool), StoreError> {
        let seen_keys = self.seen_keys.clone();
        self.call(move |conn| {
            let now = peerchat_db::now_ms() as i64;
            let chunk = chunk.max(1) as i64;
            let mut inbox_cut: i64 = 0; // remove inbox rows with seq <= inbox_cut
            if let Some(age) = r.max_age {
                // Seqs grow with arrival, so the due rows are the oldest: only the oldest
                // `chunk` rows are looked at.
                let cutoff = now - age.as_millis() as i64;
                let seq: i64 = conn.query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM
                        (SELECT seq, received_at_ms FROM inbox ORDER BY seq LIMIT ?2)
                     WHERE received_at_ms < ?1",
                    params![cutoff, chunk],
                    |row| row.get(0),
                )?;
                inbox_cut = inbox_cut.max(seq);
            }
            if let Some(n) = r.max_count {
                let seq: i64 = conn.query_row(
                    "SELECT COALESCE((SELECT seq FROM inbox ORDER BY seq DESC LIMIT 1 OFFSET ?1), 0)",
                    params![n as i64],
                    |row| row.get(0),
                )?;
                inbox_cut = inbox_cut.max(seq);
            }
            // Never the newest row (see the module docs), and at most `chunk` rows.
            inbox_cut = inbox_cut.min(super::inbox::max_seq(conn)? - 1);
            let chunk_end: Option<i64> = conn
                .query_row(
                    "SELECT seq FROM inbox ORDER BY seq LIMIT 1 OFFSET ?1",
                    params![chunk - 1],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(end) = chunk_end {
                inbox_cut = inbox_cut.min(end);
            }
            let mut pruned = Pruned::default();
            if inbox_cut > 0 {
                // Before the keys exist: from now on every received message is looked up.
                seen_keys.store(true, std::sync::atomic::Ordering::Relaxed);
                // Each key with its body's digest (SQLite has no SHA-256 of its own).
                let mut keep = conn.prepare_cached(
                    "INSERT OR IGNORE INTO inbox_seen (sender, msg_id, received_at_ms, body_sha256)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut removed = conn.prepare(
                    "SELECT sender, msg_id, received_at_ms, body FROM inbox WHERE seq <= ?1",
                )?;
                let mut rows = removed.query(params![inbox_cut])?;
                while let Some(row) = rows.next()? {
                    // The body's bytes as stored: no String copy, and no UTF-8 check that
                    // could fail every prune for good.
                    let body = match row.get_ref(3)? {
                        ValueRef::Text(b) | ValueRef::Blob(b) => b,
                        _ => &[],
                    };
                    let digest = super::inbox::body_digest(body);
                    keep.execute(params![
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        &digest[..],
                    ])?;
                }
                pruned.inbox = conn.execute("DELETE FROM inbox WHERE seq <= ?1", params![inbox_cut])?;
            }
            // Only a full chunk may leave more behind (and a round that removed nothing ends it).
            let mut more = pruned.inbox as i64 == chunk;
            if expire_seen {
                // A scan of the whole table (it has no index by time): once per run is enough.
                conn.execute(
                    "DELETE FROM inbox_seen WHERE received_at_ms < ?1",
                    params![now - SEEN_KEEP.as_millis() as i64],
                )?;
            }
            // The oldest finished messages that are due, at most `chunk` in all (undelivered
            // ones are skipped, so they never hold up the ones after them).
            let mut removed: Vec<i64> = Vec::new();
            if let Some(age) = r.max_age {
                let due = conn
                    .prepare(&format!(
                        "DELETE FROM outbox WHERE seq IN
                            (SELECT seq FROM outbox
                             WHERE created_at_ms < ?1 AND {FINISHED} AND {NOT_NEWEST}
                             ORDER BY seq LIMIT ?2)
                         RETURNING seq"
                    ))?
                    .query_map(params![now - age.as_millis() as i64, chunk], |row| {
                        row.get::<_, i64>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                removed.extend(due);
            }
            if let Some(n) = r.max_count.filter(|_| (removed.len() as i64) < chunk) {
                let due = conn
                    .prepare(&format!(
                        "DELETE FROM outbox WHERE seq IN
                            (SELECT seq FROM outbox
                             WHERE {FINISHED} AND {NOT_NEWEST} AND seq NOT IN
                                (SELECT seq FROM outbox WHERE {FINISHED} ORDER BY seq DESC LIMIT ?1)
                             ORDER BY seq LIMIT ?2)
                         RETURNING seq"
                    ))?
                    .query_map(params![n as i64, chunk - removed.len() as i64], |row| {
                        row.get::<_, i64>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                removed.extend(due);
            }
            // The removed messages' delivery rows go with them (no foreign key does it).
            let mut rows = conn.prepare("DELETE FROM deliveries WHERE out_seq = ?1")?;
            for seq in &removed {
                rows.execute(params![seq])?;
            }
            pruned.outbox = removed.len();
            // Their timeline rows, index entries and delivery events go in this transaction.
            super::timeline::prune::forget(conn, inbox_cut, pruned.inbox, &removed)?;
            more |= removed.len() as i64 == chunk;
            Ok((pruned, more))
        })
        .await
    }
}
