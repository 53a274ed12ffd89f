//! What retention removes with a message: its timeline rows, its index entry and its delivery
//! events, in the transaction that removes the message; and the `events_pruned` mark that tells
//! an `events` stream resuming from below it that it missed something (`gap`).

use peerchat_db::rusqlite::{params, Connection};

use super::events::PRUNED_MARK;
use super::{newest_event, DELIVERY, IN, OUT};
use crate::store::StoreError;

/// Forgets the rows behind the inbox messages up to `inbox_cut` (`inbox_removed` of them were
/// just removed) and the outgoing messages `outbox`. Returns how many events rows went.
///
/// The newest `events` row always stays (its message may be gone: readers skip it): its seq is
/// a plain rowid, so removing it would hand the same cursor out again.
pub(in crate::store) fn forget(
    conn: &Connection,
    inbox_cut: i64,
    inbox_removed: usize,
    outbox: &[i64],
) -> Result<usize, StoreError> {
    let mut gone: Vec<(i64, i64)> = Vec::new(); // (seq, kind)
    if inbox_cut > 0 && inbox_removed > 0 {
        // At most one timeline row per received message, and the oldest messages go first,
        // so this scan usually stops near the start of the table (one more: the newest row may be
        // the kept row of a message removed earlier).
        let rows = conn
            .prepare_cached(
                "SELECT seq, kind FROM events WHERE kind = ?1 AND ref <= ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![IN, inbox_cut, inbox_removed as i64 + 1], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        gone.extend(rows);
    }
    if !outbox.is_empty() {
        // One scan for the whole round (no index by `ref`: it would cost every insert).
        let list = format!(
            "[{}]",
            outbox
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let rows = conn
            .prepare_cached(
                "SELECT seq, kind FROM events WHERE kind IN (?1, ?2)
                 AND ref IN (SELECT value FROM json_each(?3))",
            )?
            .query_map(params![OUT, DELIVERY, list], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        gone.extend(rows);
    }
    if gone.is_empty() {
        return Ok(0);
    }
    let newest = newest_event(conn)?;
    let mut unindex = conn.prepare_cached("DELETE FROM bodies WHERE rowid = ?1")?;
    let mut remove = conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
    let mut mark = 0;
    let mut removed = 0;
    for (seq, kind) in gone {
        if kind != DELIVERY {
            // A sent message's index entry is at its first timeline row; the others have none.
            unindex.execute(params![seq])?;
        }
        if seq != newest {
            removed += remove.execute(params![seq])?;
            mark = mark.max(seq);
        }
    }
    if mark > 0 {
        conn.prepare_cached(
            "INSERT INTO seq_floor (name, seq) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        )?
        .execute(params![PRUNED_MARK, mark])?;
    }
    Ok(removed)
}
