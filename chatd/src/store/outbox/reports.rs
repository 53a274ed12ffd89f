//! Reports over the outbox: counts per state, one message's recipients, the pending page of
//! `chatctl outbox`. They read every recipient's rows; none runs per message.

use peerchat_db::rusqlite::{params, OptionalExtension};
use peerchat_proto::control::{Counts, DeliveryState};
use peerchat_proto::Name;

use crate::observe::Queued;
use crate::store::{Store, StoreError};

impl Store {
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        self.call(|conn| {
            let mut c = Counts {
                inbox: conn.query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get::<_, i64>(0))?
                    as u64,
                outbox: conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
                    as u64,
                ..Counts::default()
            };
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            for row in rows {
                let (state, n) = row?;
                match DeliveryState::parse(&state) {
                    Some(DeliveryState::Queued) => c.queued = n,
                    Some(DeliveryState::Sent) => c.sent = n,
                    Some(DeliveryState::Delivered) => c.delivered = n,
                    Some(DeliveryState::Failed) => c.failed = n,
                    Some(DeliveryState::Cancelled) => c.cancelled = n,
                    None => {}
                }
            }
            Ok(c)
        })
        .await
    }
}

impl Store {
    /// Pending deliveries (queued or sent, not final): in all, how many recipients have any,
    /// and the `top` recipients with the most (for the metrics). One scan of the rows above the
    /// lowest pending floor.
    pub async fn queued_by_recipient(&self, top: usize) -> Result<Queued, StoreError> {
        self.call(move |conn| {
            let mut per: Vec<(String, u64)> = conn
                .prepare_cached(
                    "SELECT recipient, COUNT(*) FROM deliveries
                     WHERE out_seq > (SELECT COALESCE(MIN(seq), 0) FROM pending_floor)
                       AND state IN ('queued','sent') AND final = 0
                     GROUP BY recipient",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
                .collect::<Result<_, _>>()?;
            let q = Queued {
                total: per.iter().map(|(_, n)| n).sum(),
                recipients: per.len() as u64,
                top: Vec::new(),
            };
            // Only valid names become labels (they need no escaping).
            per.retain(|(name, _)| Name::new(name.as_str()).is_ok());
            per.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            per.truncate(top);
            Ok(Queued { top: per, ..q })
        })
        .await
    }
}

/// One recipient of an outgoing message, as stored.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// The message's position in the outbox (with `to`, the row's place in `outbox` pages).
    pub out_seq: i64,
    pub msg_id: String,
    pub to: Name,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The last delivery error, only while it still tells something: the recipient is pending
    /// (`queued`, non-final `sent`) or `failed`. Once the message was delivered (also after a
    /// cancel), cancelled, or finally `sent` to a seed peer, an earlier error is stale.
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub done: bool,
}

pub(super) const DELIVERY_COLUMNS: &str =
    "o.msg_id, d.recipient, d.state, d.attempts, d.last_error, o.created_at_ms,
     d.updated_at_ms, d.final, d.out_seq";

pub(super) fn delivery_row(
    r: &peerchat_db::rusqlite::Row<'_>,
) -> peerchat_db::rusqlite::Result<Option<DeliveryRow>> {
    let to: String = r.get(1)?;
    let state: String = r.get(2)?;
    let (Ok(to), Some(state)) = (Name::new(to), DeliveryState::parse(&state)) else {
        return Ok(None);
    };
    let is_final: bool = r.get(7)?;
    let pending = !is_final && matches!(state, DeliveryState::Queued | DeliveryState::Sent);
    let error_counts = pending || state == DeliveryState::Failed;
    Ok(Some(DeliveryRow {
        out_seq: r.get(8)?,
        msg_id: r.get(0)?,
        to,
        state,
        attempts: r.get::<_, i64>(3)?.max(0) as u32,
        error: if error_counts { r.get(4)? } else { None },
        created_at_ms: r.get::<_, i64>(5)? as u64,
        updated_at_ms: r.get::<_, i64>(6)? as u64,
        done: !pending,
    }))
}

impl Store {
    /// Every recipient of one message, in the order they were given; `None` if no such message.
    pub async fn message_detail(
        &self,
        msg_id: String,
    ) -> Result<Option<Vec<DeliveryRow>>, StoreError> {
        self.call(move |conn| {
            let order: Option<String> = conn
                .prepare_cached("SELECT recipients FROM outbox WHERE msg_id = ?1")?
                .query_row(params![msg_id], |r| r.get(0))
                .optional()?;
            let Some(order) = order else { return Ok(None) };
            let order: Vec<Name> = serde_json::from_str(&order).unwrap_or_default();
            let mut rows: Vec<DeliveryRow> = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN deliveries d ON d.out_seq = o.seq
                     WHERE o.msg_id = ?1"
                ))?
                .query_map(params![msg_id], delivery_row)?
                .filter_map(|r| r.transpose())
                .collect::<Result<_, _>>()?;
            rows.sort_by_key(|r| order.iter().position(|n| *n == r.to));
            Ok(Some(rows))
        })
        .await
    }

    /// Undelivered (queued or sent) recipients, oldest message first, then by recipient: at
    /// most `limit` of them after the position `after` (`(out_seq, recipient)`, exclusive), and
    /// how many more pending rows follow the last one returned.
    pub async fn outbox_pending(
        &self,
        limit: u32,
        after: Option<(i64, String)>,
    ) -> Result<(Vec<DeliveryRow>, u64), StoreError> {
        self.call(move |conn| {
            let (seq, to) = after.unwrap_or((i64::MIN, String::new()));
            let read: Vec<Option<DeliveryRow>> = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.seq = d.out_seq
                     WHERE (d.out_seq, d.recipient) > (?1, ?2)
                       AND d.state IN ('queued','sent') AND d.final = 0
                     ORDER BY d.out_seq, d.recipient LIMIT ?3"
                ))?
                .query_map(params![seq, to, limit as i64], delivery_row)?
                .collect::<Result<_, _>>()?;
            // A short page read every pending row there was: nothing follows, no need to count.
            let full = read.len() as u64 >= limit as u64;
            let rows: Vec<DeliveryRow> = read.into_iter().flatten().collect();
            let more = match rows.last() {
                Some(last) if full => conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM deliveries
                         WHERE (out_seq, recipient) > (?1, ?2)
                           AND state IN ('queued','sent') AND final = 0",
                    )?
                    .query_row(params![last.out_seq, last.to.as_str()], |r| {
                        r.get::<_, i64>(0)
                    })?
                    .max(0) as u64,
                _ => 0,
            };
            Ok((rows, more))
        })
        .await
    }
}
