//! Sent messages in acceptance order, with every recipient's state (`sent` request, for
//! `chatctl export`). A page reads the outbox from a seq on, by its primary key.

use peerchat_db::rusqlite::params;
use peerchat_proto::Name;

use super::reports::{delivery_row, DeliveryRow, DELIVERY_COLUMNS};
use crate::store::{Store, StoreError};

/// One sent message and its recipients, in the order they were given.
#[derive(Debug, Clone)]
pub struct SentRow {
    pub seq: i64,
    pub msg_id: String,
    pub body: String,
    pub created_at_ms: u64,
    pub recipients: Vec<DeliveryRow>,
}

impl Store {
    /// Up to `limit` sent messages with seq above `after` (to `to`, if given), oldest first,
    /// stopping once `max_bytes` of bodies are taken (at least one message always is). Returns
    /// the page and whether it stopped for the byte limit.
    pub async fn sent_page(
        &self,
        to: Option<Name>,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<SentRow>, bool), StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, msg_id, body, created_at_ms, recipients FROM outbox o
                 WHERE seq > ?1
                   AND (?2 IS NULL OR EXISTS (SELECT 1 FROM deliveries d
                                              WHERE d.out_seq = o.seq AND d.recipient = ?2))
                 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![after, to.as_ref().map(Name::as_str), limit])?;
            let mut page = Vec::new();
            let mut bytes = 0usize;
            let mut cut = false;
            while let Some(r) = rows.next()? {
                let body: String = r.get(2)?;
                if !page.is_empty() && bytes + body.len() > max_bytes {
                    cut = true;
                    break;
                }
                bytes += body.len();
                let order: String = r.get(4)?;
                page.push((
                    SentRow {
                        seq: r.get(0)?,
                        msg_id: r.get(1)?,
                        body,
                        created_at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                        recipients: Vec::new(),
                    },
                    serde_json::from_str::<Vec<Name>>(&order).unwrap_or_default(),
                ));
            }
            let mut recipients = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN deliveries d ON d.out_seq = o.seq
                 WHERE o.seq = ?1"
            ))?;
            let mut out = Vec::with_capacity(page.len());
            for (mut row, order) in page {
                let mut rs: Vec<DeliveryRow> = recipients
                    .query_map(params![row.seq], delivery_row)?
                    .filter_map(|r| r.transpose())
                    .collect::<Result<_, _>>()?;
                rs.sort_by_key(|r| order.iter().position(|n| *n == r.to));
                row.recipients = rs;
                out.push(row);
            }
            Ok((out, cut))
        })
        .await
    }
}
