//! Received messages. `(sender, msg_id)` is unique: a repeated delivery is recognised, not stored
//! twice, and acknowledged again.

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::peer::WireMessage;
use peerchat_proto::MsgId;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct InboxRow {
    pub seq: i64,
    pub sender: String,
    pub msg_id: String,
    pub recipients: Vec<String>,
    pub body: String,
    pub sent_at_ms: u64,
    pub received_at_ms: u64,
    pub authenticated: bool,
}

impl InboxRow {
    /// The recipients shown with the message: all of them when it went to more than one,
    /// none otherwise (`InboxMessage::recipients`).
    pub fn shown_recipients(&self) -> &[String] {
        if self.recipients.len() > 1 {
            &self.recipients
        } else {
            &[]
        }
    }
}

/// One message arriving from a peer link.
pub struct Received {
    pub sender: String,
    pub msg: WireMessage,
    pub authenticated: bool,
    /// The group conversation it belongs to (`@OWNER/NAME`, protocol.md §2.9.1), `None` for a
    /// direct message.
    pub conv: Option<String>,
}

/// What became of a received message. Every outcome is committed when `receive` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Stored now.
    New,
    /// Already stored (or removed by retention, with the same body digest): acknowledge it
    /// again.
    Repeat,
    /// The inbox already holds (or held, by the digest retention kept) a *different* message
    /// (another body) from this sender under this id: the sender reused an id, e.g. after its
    /// own retention forgot it. Storing nothing and acknowledging it would lose the new message
    /// silently; it is refused instead.
    Conflict,
}

#[derive(Debug, Clone, Default)]
pub struct InboxQuery {
    pub from: Option<String>,
    /// Exclusive lower bound; when absent, the newest `limit` rows are returned.
    pub after: Option<i64>,
    pub limit: u32,
}

/// The digest `inbox_seen` keeps of a removed message's body (SHA-256 of its UTF-8 bytes).
pub(super) fn body_digest(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

pub(super) fn max_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM inbox", [], |r| r.get(0))?)
}

/// A received message, unless its key is there already. `?8`: the seq high-water mark (see
/// `SeqHighWater`), normally 0: the next rowid.
pub const INSERT_INBOX: &str =
    "INSERT INTO inbox (seq, sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated)
     VALUES (CASE WHEN ?8 > 0 THEN MAX(?8, (SELECT COALESCE(MAX(seq), 0) FROM inbox)) + 1 END,
             ?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (sender, msg_id) DO NOTHING";

const COLUMNS: &str =
    "seq, sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated";

fn row(r: &peerchat_db::rusqlite::Row<'_>) -> peerchat_db::rusqlite::Result<InboxRow> {
    let recipients: String = r.get(3)?;
    Ok(InboxRow {
        seq: r.get(0)?,
        sender: r.get(1)?,
        msg_id: r.get(2)?,
        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        body: r.get(4)?,
        sent_at_ms: r.get::<_, i64>(5)? as u64,
        received_at_ms: r.get::<_, i64>(6)? as u64,
        authenticated: r.get(7)?,
    })
}

impl Store {
    /// Stores a batch of messages from one link in one go. Returns, per message, what became of
    /// it and its id; all of it is committed. `New` and `Repeat` may be acked, `Conflict` must be
    /// refused. The batch is moved in: a followed message's row takes its strings.
    pub async fn receive(&self, batch: Vec<Received>) -> Result<Vec<(Arrival, MsgId)>, StoreError> {
        let feed = self.inbox_feed.clone();
        let followers = self.inbox_feed.clone();
        let seq_mark = self.inbox_seq_mark.clone();
        let committed = self.inbox_seq_mark.clone();
        let seen_keys = self.seen_keys.clone();
        let large_rows = self.large_rows.clone();
        let job = move |conn: &super::Batch| {
            let now = peerchat_db::now_ms() as i64;
            // Two plain statements rather than one INSERT … SELECT … WHERE NOT EXISTS: that
            // form makes SQLite keep a statement journal per row (measured: a temp-file
            // write of ~16 KiB per message).
            // The key of a message retention removed, with its body's digest (migration 8).
            let mut seen = conn.prepare_cached(
                "SELECT body_sha256 FROM inbox_seen WHERE sender = ?1 AND msg_id = ?2",
            )?;
            let mut insert = conn.prepare_cached(INSERT_INBOX)?;
            let mut fresh = Vec::with_capacity(batch.len());
            let mut max = 0;
            // Only for a key already in the inbox (rare): is it the same message?
            let same_body = |m: &Received| -> Result<bool, StoreError> {
                Ok(conn
                    .prepare_cached(
                        "SELECT body = ?3 FROM inbox WHERE sender = ?1 AND msg_id = ?2",
                    )?
                    .query_row(params![m.sender, m.msg.id.as_str(), m.msg.body], |r| {
                        r.get::<_, bool>(0)
                    })
                    .optional()?
                    .unwrap_or(true))
            };
            // Rows for the followers' feed, built only when someone follows.
            let follow = followers.receiver_count() > 0;
            let mut rows = Vec::new();
            let look_up_seen = seen_keys.load(std::sync::atomic::Ordering::Relaxed);
            for m in batch {
                let removed = if look_up_seen {
                    seen.query_row(params![m.sender, m.msg.id.as_str()], |r| {
                        r.get::<_, Option<Vec<u8>>>(0)
                    })
                    .optional()?
                } else {
                    None
                };
                if let Some(digest) = removed {
                    // Retention removed it and kept its body's digest (none for keys kept
                    // before schema 8: those count as repeats, as they cannot be compared).
                    let arrival = match digest {
                        Some(d) if d[..] != body_digest(m.msg.body.as_bytes())[..] => {
                            Arrival::Conflict
                        }
                        _ => Arrival::Repeat,
                    };
                    fresh.push((arrival, m.msg.id));
                    continue;
                }
                let to = serde_json::to_string(&m.msg.to).unwrap_or_else(|_| "[]".into());
                let n = insert.execute(params![
                    m.sender,
                    m.msg.id.as_str(),
                    to,
                    m.msg.body,
                    m.msg.sent_at_ms as i64,
                    now,
                    m.authenticated,
                    seq_mark.get()
                ])?;
                if n != 1 {
                    let arrival = if same_body(&m)? {
                        Arrival::Repeat
                    } else {
                        Arrival::Conflict
                    };
                    fresh.push((arrival, m.msg.id));
                    continue;
                }
                max = conn.last_insert_rowid();
                super::timeline::record_in(conn, m.conv.as_deref(), &m.sender, max, &m.msg.body)?;
                if follow {
                    let row = InboxRow {
                        seq: max,
                        sender: m.sender,
                        msg_id: m.msg.id.as_str().to_owned(),
                        recipients: m.msg.to.into_iter().map(String::from).collect(),
                        body: m.msg.body,
                        sent_at_ms: m.msg.sent_at_ms,
                        received_at_ms: now as u64,
                        authenticated: m.authenticated,
                    };
                    // Sent only after the commit; a large row kept for a batch that then
                    // fails is never referred to, and leaves the store's budget in turn.
                    rows.push(if row.body.len() > super::FEED_MAX_BODY {
                        large_rows
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .keep(row)
                    } else {
                        super::FeedItem::Row(std::sync::Arc::new(row))
                    });
                }
                fresh.push((Arrival::New, m.msg.id));
            }
            Ok((fresh, max, rows))
        };
        let (fresh, _, _) = self
            .submit_then(job, move |(_, max, rows)| {
                committed.committed(*max);
                // On the DB thread, right after the commit: followers see rows in seq order.
                for r in rows {
                    let _ = feed.send(r.clone());
                }
            })?
            .await
            .map_err(|_| StoreError::Closed)??;
        Ok(fresh)
    }

    pub async fn inbox(&self, q: InboxQuery) -> Result<Vec<InboxRow>, StoreError> {
        self.call(move |conn| query(conn, &q)).await
    }

    /// The newest `backlog` rows (optionally from one sender) and the highest seq overall, where
    /// the follow continues: both read in one transaction so nothing falls in between.
    pub async fn follow_start(
        &self,
        from: Option<String>,
        backlog: u32,
    ) -> Result<(Vec<InboxRow>, i64), StoreError> {
        self.call(move |conn| {
            let q = InboxQuery {
                from,
                after: None,
                limit: backlog,
            };
            Ok((query(conn, &q)?, max_seq(conn)?))
        })
        .await
    }
}

fn query(conn: &Connection, q: &InboxQuery) -> Result<Vec<InboxRow>, StoreError> {
    let limit = q.limit as i64;
    let mut rows: Vec<InboxRow> = match (&q.from, q.after) {
        (None, Some(after)) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?
            .query_map(params![after, limit], row)?
            .collect::<Result<_, _>>()?,
        (Some(from), Some(after)) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbox WHERE sender = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(params![from, after, limit], row)?
            .collect::<Result<_, _>>()?,
        (None, None) => {
            let mut v: Vec<InboxRow> = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM inbox ORDER BY seq DESC LIMIT ?1"
                ))?
                .query_map(params![limit], row)?
                .collect::<Result<_, _>>()?;
            v.reverse();
            v
        }
        (Some(from), None) => {
            let mut v: Vec<InboxRow> = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM inbox WHERE sender = ?1 ORDER BY seq DESC LIMIT ?2"
                ))?
                .query_map(params![from, limit], row)?
                .collect::<Result<_, _>>()?;
            v.reverse();
            v
        }
    };
    rows.truncate(q.limit as usize);
    Ok(rows)
}
