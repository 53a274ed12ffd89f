//! The stored events behind the `events` stream, read page by page after a cursor.

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::{ConvKey, DeliveryState, Event};
use peerchat_proto::Name;

use super::{entries, unread_above, DELIVERY, IN, OUT, READ};
use crate::store::{Store, StoreError};

/// One stored event with its cursor.
pub type StoredEvent = (i64, Event);

/// Events (delivery and read ones) at or below this seq were pruned: a stream resuming
/// from below it has a gap. Kept in `seq_floor` under this name.
pub(crate) const PRUNED_MARK: &str = "events_pruned";

impl Store {
    /// The newest cursor now, and whether resuming from `after` (if given) skips pruned events.
    pub async fn events_start(&self, after: Option<i64>) -> Result<(i64, bool), StoreError> {
        self.call(move |conn| {
            let newest = super::newest_event(conn)?;
            let pruned: i64 = conn
                .prepare_cached("SELECT seq FROM seq_floor WHERE name = ?1")?
                .query_row(params![PRUNED_MARK], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            Ok((newest, after.is_some_and(|a| a < pruned)))
        })
        .await
    }

    /// Up to `limit` events after `after`, oldest first, and the seq of the last row read
    /// (rows with nothing to show, such as a message retention removed, are skipped).
    pub async fn events_after(
        &self,
        after: i64,
        limit: u32,
        me: Name,
    ) -> Result<(Vec<StoredEvent>, i64), StoreError> {
        self.call(move |conn| events_after(conn, after, limit, &me))
            .await
    }
}

type Row = (
    i64,
    i64,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
);

fn events_after(
    conn: &Connection,
    after: i64,
    limit: u32,
    me: &Name,
) -> Result<(Vec<StoredEvent>, i64), StoreError> {
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT seq, kind, conv, ref, recipient, state FROM events WHERE seq > ?1
             ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after, i64::from(limit)], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let last = rows.last().map_or(after, |r| r.0);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(e) = event(conn, row, me)? {
            out.push(e);
        }
    }
    Ok((out, last))
}

fn event(conn: &Connection, row: Row, me: &Name) -> Result<Option<StoredEvent>, StoreError> {
    let (seq, kind, conv, r, recipient, state) = row;
    let with = conv.as_deref().and_then(|c| ConvKey::parse(c).ok());
    let ev = match kind {
        IN | OUT => {
            let (Some(with), Some(entry)) = (with, entries::load(conn, seq, kind, r, me)?) else {
                return Ok(None);
            };
            Event::Message { with, entry }
        }
        DELIVERY => {
            let (Some(to), Some(state)) = (
                recipient.and_then(|n| Name::new(n).ok()),
                state.as_deref().and_then(DeliveryState::parse),
            ) else {
                return Ok(None);
            };
            let msg: Option<(String, Option<String>, Option<String>)> = conn
                .prepare_cached(
                    "SELECT o.msg_id, o.conv, d.last_error FROM outbox o
                     JOIN deliveries d ON d.out_seq = o.seq AND d.recipient = ?2
                     WHERE o.seq = ?1",
                )?
                .query_row(params![r, to.as_str()], |x| {
                    Ok((x.get(0)?, x.get(1)?, x.get(2)?))
                })
                .optional()?;
            let Some((id, group, error)) = msg else {
                return Ok(None);
            };
            let with = match group.as_deref().map(ConvKey::parse) {
                Some(Ok(g)) => g,
                _ => ConvKey::Peer(to.clone()),
            };
            Event::Delivery {
                with,
                id,
                to,
                state,
                error: error.filter(|_| state == DeliveryState::Failed),
            }
        }
        READ => {
            let (Some(with), Some(conv)) = (with, conv) else {
                return Ok(None);
            };
            Event::Read {
                with,
                up_to: r,
                unread: unread_above(conn, &conv, r)?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some((seq, ev)))
}
