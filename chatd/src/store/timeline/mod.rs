//! Conversations (protocol.md §2.9): the timeline (`events` rows of kind 1 and 2, one per
//! conversation entry of a message), read positions, the full-text index, and the event log
//! the `events` stream reads. Written in the transaction of the change they record; read here.
//!
//! `events.kind`: [`IN`] a received message (`ref` = inbox seq), [`OUT`] a sent one (`ref` =
//! outbox seq), [`DELIVERY`] a delivery state change (written by the `deliveries_state_event`
//! trigger: `ref` = outbox seq, `recipient`, `state`), [`READ`] a read position moved (`ref` =
//! the position). A conversation key is a peer's name or `@OWNER/NAME`.

mod conversations;
mod entries;
mod events;
mod history;
pub(super) mod prune;
mod search;

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::ConvKey;
use peerchat_proto::Name;

use super::{Store, StoreError};

pub use conversations::ConvSummary;
pub use history::Page;
pub use search::SearchQuery;

pub(crate) const IN: i64 = 1;
pub(crate) const OUT: i64 = 2;
pub(crate) const DELIVERY: i64 = 3;
pub(crate) const READ: i64 = 4;

/// The newest event (and timeline) seq, 0 for none.
pub(super) fn newest_event(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?
        .query_row([], |r| r.get(0))?)
}

/// A received message's timeline entry and index entry (same transaction as its inbox row).
/// Senders that are not names (seed peers, `legacy:ADDR`) have no conversation.
pub(super) fn record_in(
    conn: &Connection,
    conv: Option<&str>,
    sender: &str,
    inbox_seq: i64,
    body: &str,
) -> Result<(), StoreError> {
    if let Some(c) = conv {
        conn.prepare_cached("UPDATE inbox SET conv = ?1 WHERE seq = ?2")?
            .execute(params![c, inbox_seq])?;
    } else if Name::new(sender).is_err() {
        return Ok(());
    }
    let conv = conv.unwrap_or(sender);
    conn.prepare_cached("INSERT INTO events (kind, conv, ref) VALUES (1, ?1, ?2)")?
        .execute(params![conv, inbox_seq])?;
    index_body(conn, conn.last_insert_rowid(), body)
}

/// A sent message's timeline entries (one in its group conversation, or one per recipient)
/// and its index entry. Returns its first position (the group's entry, or the first
/// recipient's).
pub(super) fn record_out(
    conn: &Connection,
    group: Option<&str>,
    to: &[Name],
    out_seq: i64,
    body: &str,
) -> Result<i64, StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT INTO events (kind, conv, ref) VALUES (2, ?1, ?2)")?;
    let first = match group {
        Some(g) => {
            conn.prepare_cached("UPDATE outbox SET conv = ?1 WHERE seq = ?2")?
                .execute(params![g, out_seq])?;
            insert.execute(params![g, out_seq])?;
            conn.last_insert_rowid()
        }
        None => {
            let mut first = 0;
            for r in to {
                insert.execute(params![r.as_str(), out_seq])?;
                if first == 0 {
                    first = conn.last_insert_rowid();
                }
            }
            first
        }
    };
    index_body(conn, first, body)?;
    Ok(first)
}

fn index_body(conn: &Connection, pos: i64, body: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO bodies (rowid, body) VALUES (?1, ?2)")?
        .execute(params![pos, body])?;
    Ok(())
}

/// The read position of a conversation (0: none).
fn read_up_to(conn: &Connection, conv: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT up_to FROM read_positions WHERE conv = ?1")?
        .query_row(params![conv], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Received entries of a conversation above `pos`.
fn unread_above(conn: &Connection, conv: &str, pos: i64) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM events WHERE conv = ?1 AND kind <= 2 AND seq > ?2 AND kind = 1",
        )?
        .query_row(params![conv, pos], |r| r.get::<_, i64>(0))? as u64)
}

/// Why a conversation key could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no group conversation named {0}")]
    NotFound(String),
    #[error("@{name} is ambiguous: {} (give the owner: @OWNER/{name})", .candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<peerchat_db::rusqlite::Error> for ResolveError {
    fn from(e: peerchat_db::rusqlite::Error) -> Self {
        ResolveError::Store(e.into())
    }
}

/// The full key of `key` (protocol.md §2.9.1): `@NAME` becomes `@ME/NAME` if this node has
/// that group or conversation, else the only group conversation of that name.
fn resolve(conn: &Connection, key: &ConvKey, me: &Name) -> Result<ConvKey, ResolveError> {
    let ConvKey::Group { owner: None, name } = key else {
        return Ok(key.clone());
    };
    let mine = ConvKey::group(me.clone(), name.clone());
    let has_group: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM groups WHERE name = ?1)")?
        .query_row(params![name.as_str()], |r| r.get(0))?;
    if has_group || has_entries(conn, &mine.to_string())? {
        return Ok(mine);
    }
    // Group keys sort between '@' and 'A' ('@' + 1): a range of the timeline index.
    let suffix = format!("/{name}");
    let mut candidates: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT conv FROM events WHERE conv >= '@' AND conv < 'A' AND kind <= 2",
        )?
        .query_map([], |r| r.get::<_, String>(0))?
        .filter_map(Result::ok)
        .filter(|c| c.ends_with(&suffix))
        .collect();
    match candidates.len() {
        0 => Err(ResolveError::NotFound(key.to_string())),
        1 => ConvKey::parse(&candidates.remove(0))
            .map_err(|_| ResolveError::NotFound(key.to_string())),
        _ => Err(ResolveError::Ambiguous {
            name: name.to_string(),
            candidates,
        }),
    }
}

fn has_entries(conn: &Connection, conv: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE conv = ?1 AND kind <= 2)")?
        .query_row(params![conv], |r| r.get(0))?)
}

/// A group conversation's members (protocol.md §2.9.1), this node included, sorted: this
/// node's own group's members, else the sender and recipients of its newest entry.
fn group_members(
    conn: &Connection,
    owner: &Name,
    name: &Name,
    me: &Name,
) -> Result<Vec<Name>, StoreError> {
    let mut members: Vec<Name> = Vec::new();
    if owner == me {
        members = conn
            .prepare_cached("SELECT member FROM group_members WHERE group_name = ?1")?
            .query_map(params![name.as_str()], |r| r.get::<_, String>(0))?
            .filter_map(|r| r.ok().and_then(|n| Name::new(n).ok()))
            .collect();
    }
    if members.is_empty() {
        let conv = ConvKey::group(owner.clone(), name.clone()).to_string();
        let newest: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT kind, ref FROM events WHERE conv = ?1 AND kind <= 2
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![conv], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((kind, seq)) = newest {
            if let Some((from, to)) = entries::participants(conn, kind, seq, me)? {
                members.push(from);
                members.extend(to);
            }
        }
    }
    if !members.is_empty() {
        members.push(me.clone());
    }
    members.sort();
    members.dedup();
    Ok(members)
}

impl Store {
    /// The full key of a conversation (`@NAME` resolved).
    pub async fn resolve_conversation(
        &self,
        key: ConvKey,
        me: Name,
    ) -> Result<ConvKey, ResolveError> {
        let r = self.call(move |conn| Ok(resolve(conn, &key, &me)));
        r.await?
    }

    /// Who a send into a conversation goes to: the peer, or the group's members but `me`
    /// (empty: no such group conversation). The key must be resolved.
    pub async fn conversation_recipients(
        &self,
        key: ConvKey,
        me: Name,
    ) -> Result<Vec<Name>, StoreError> {
        self.call(move |conn| match &key {
            ConvKey::Peer(p) => Ok(vec![p.clone()]),
            ConvKey::Group {
                owner: Some(owner),
                name,
            } => {
                let mut m = group_members(conn, owner, name, &me)?;
                m.retain(|n| *n != me);
                Ok(m)
            }
            ConvKey::Group { owner: None, .. } => Ok(Vec::new()),
        })
        .await
    }

    /// Moves a conversation's read position up to `up_to` (never back), recording an event if
    /// it moved. Returns the position now stored and the unread count above it.
    pub async fn mark_read(&self, conv: ConvKey, up_to: i64) -> Result<(i64, u64), StoreError> {
        self.call(move |conn| {
            let conv = conv.to_string();
            let old = read_up_to(conn, &conv)?;
            if up_to > old {
                conn.prepare_cached(
                    "INSERT INTO read_positions (conv, up_to) VALUES (?1, ?2)
                     ON CONFLICT (conv) DO UPDATE SET up_to = excluded.up_to",
                )?
                .execute(params![conv, up_to])?;
                conn.prepare_cached("INSERT INTO events (kind, conv, ref) VALUES (4, ?1, ?2)")?
                    .execute(params![conv, up_to])?;
            }
            let now = old.max(up_to);
            Ok((now, unread_above(conn, &conv, now)?))
        })
        .await
    }
}
