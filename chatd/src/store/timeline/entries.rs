//! Timeline rows as protocol entries: the message (inbox or outbox row) behind a position.

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::{DeliveryState, Direction, Entry, EntryDelivery};
use peerchat_proto::Name;

use super::{IN, OUT};
use crate::store::StoreError;
use crate::time::rfc3339;

fn names(json: &str) -> Vec<Name> {
    serde_json::from_str::<Vec<String>>(json)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| Name::new(n).ok())
        .collect()
}

/// The entry at `pos` (timeline row of `kind` for message `seq`); `None` when the message is
/// gone (retention) or its sender is not a name.
pub(super) fn load(
    conn: &Connection,
    pos: i64,
    kind: i64,
    seq: i64,
    me: &Name,
) -> Result<Option<Entry>, StoreError> {
    match kind {
        IN => load_in(conn, pos, seq),
        OUT => load_out(conn, pos, seq, me),
        _ => Ok(None),
    }
}

fn load_in(conn: &Connection, pos: i64, seq: i64) -> Result<Option<Entry>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated
             FROM inbox WHERE seq = ?1",
        )?
        .query_row(params![seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, bool>(6)?,
            ))
        })
        .optional()?;
    let Some((sender, id, to, body, sent, received, authenticated)) = row else {
        return Ok(None);
    };
    let Ok(from) = Name::new(sender) else {
        return Ok(None);
    };
    Ok(Some(Entry {
        pos,
        direction: Direction::In,
        id,
        from,
        to: names(&to),
        body,
        sent_at: rfc3339(sent.max(0) as u64),
        received_at: Some(rfc3339(received.max(0) as u64)),
        authenticated: Some(authenticated),
        delivery: Vec::new(),
    }))
}

fn load_out(conn: &Connection, pos: i64, seq: i64, me: &Name) -> Result<Option<Entry>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT msg_id, recipients, body, created_at_ms FROM outbox WHERE seq = ?1",
        )?
        .query_row(params![seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((id, to, body, created)) = row else {
        return Ok(None);
    };
    Ok(Some(Entry {
        pos,
        direction: Direction::Out,
        id,
        from: me.clone(),
        to: names(&to),
        body,
        sent_at: rfc3339(created.max(0) as u64),
        received_at: None,
        authenticated: None,
        delivery: deliveries(conn, seq)?,
    }))
}

/// Each recipient's state of outgoing message `seq`, in the order of its recipient list.
pub(super) fn deliveries(conn: &Connection, seq: i64) -> Result<Vec<EntryDelivery>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT d.recipient, d.state, d.last_error FROM deliveries d
             JOIN outbox o ON o.seq = d.out_seq, json_each(o.recipients) j
             WHERE d.out_seq = ?1 AND j.value = d.recipient ORDER BY j.key",
        )?
        .query_map(params![seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(to, state, error)| {
            let state = DeliveryState::parse(&state)?;
            Some(EntryDelivery {
                to: Name::new(to).ok()?,
                state,
                error: error.filter(|_| state == DeliveryState::Failed),
            })
        })
        .collect())
}

/// The sender and recipients of the message behind a timeline row.
pub(super) fn participants(
    conn: &Connection,
    kind: i64,
    seq: i64,
    me: &Name,
) -> Result<Option<(Name, Vec<Name>)>, StoreError> {
    let sql = if kind == IN {
        "SELECT sender, recipients FROM inbox WHERE seq = ?1"
    } else {
        "SELECT '', recipients FROM outbox WHERE seq = ?1"
    };
    let row = conn
        .prepare_cached(sql)?
        .query_row(params![seq], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    Ok(row.and_then(|(from, to)| {
        let from = if kind == IN {
            Name::new(from).ok()?
        } else {
            me.clone()
        };
        Some((from, names(&to)))
    }))
}
