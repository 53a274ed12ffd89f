//! Retention: removing old inbox messages and finished outgoing messages, by age and/or count.
//! The default keeps everything.
//!
//! Undelivered outgoing messages are never removed. A removed inbox message leaves its dedup key
//! (sender, message id) in `inbox_seen` for [`SEEN_KEEP`], so a sender that never got our
//! acknowledgement and resends it is still acknowledged without storing it twice.

use std::time::Duration;

use peerchat_db::rusqlite::params;

use super::{Store, StoreError};

/// How long dedup keys of removed messages are kept (well beyond the default 7-day lifetime
/// after which a sender gives up on a message).
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
}

const FINISHED: &str = "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.out_seq = outbox.seq
     AND d.state IN ('queued','sent') AND d.final = 0)";

impl Store {
    pub async fn prune(&self, r: Retention) -> Result<Pruned, StoreError> {
        self.call(move |conn| {
            let now = peerchat_db::now_ms() as i64;
            let mut inbox_cut: i64 = 0; // remove inbox rows with seq <= inbox_cut
            if let Some(age) = r.max_age {
                let cutoff = now - age.as_millis() as i64;
                let seq: i64 = conn.query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE received_at_ms < ?1",
                    params![cutoff],
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
            let mut pruned = Pruned::default();
            if inbox_cut > 0 {
                conn.execute(
                    "INSERT OR IGNORE INTO inbox_seen (sender, msg_id, received_at_ms)
                     SELECT sender, msg_id, received_at_ms FROM inbox WHERE seq <= ?1",
                    params![inbox_cut],
                )?;
                pruned.inbox = conn.execute("DELETE FROM inbox WHERE seq <= ?1", params![inbox_cut])?;
            }
            conn.execute(
                "DELETE FROM inbox_seen WHERE received_at_ms < ?1",
                params![now - SEEN_KEEP.as_millis() as i64],
            )?;
            if let Some(age) = r.max_age {
                pruned.outbox += conn.execute(
                    &format!("DELETE FROM outbox WHERE created_at_ms < ?1 AND {FINISHED}"),
                    params![now - age.as_millis() as i64],
                )?;
            }
            if let Some(n) = r.max_count {
                pruned.outbox += conn.execute(
                    &format!(
                        "DELETE FROM outbox WHERE {FINISHED} AND seq NOT IN
                         (SELECT seq FROM outbox WHERE {FINISHED} ORDER BY seq DESC LIMIT ?1)"
                    ),
                    params![n as i64],
                )?;
            }
            Ok(pruned)
        })
        .await
    }
}
