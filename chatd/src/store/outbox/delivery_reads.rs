//! What the delivery engine reads: a recipient's next pending messages, whether it has any, and
//! who has any (at start). All of them scan one recipient's rows from its pending floor.

use peerchat_db::rusqlite::params;
use peerchat_proto::control::ConvKey;
use peerchat_proto::peer::WireGroup;
use peerchat_proto::Name;

use std::sync::Arc;

use super::sql::{HAS_PENDING, TAKE_BATCH};
use crate::store::{Store, StoreError};

/// A message as the delivery engine hands it to a link. Shared parts are reference-counted: a
/// group message is one allocation for all its recipients.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: i64,
    pub msg_id: Arc<str>,
    pub recipients: Arc<[Name]>,
    pub body: Arc<str>,
    pub created_at_ms: u64,
    /// The group conversation it was sent to, carried on the peer link (protocol.md §4.4).
    pub group: Option<Arc<WireGroup>>,
}

/// One row of `TAKE_BATCH`: seq, id, recipients (JSON), body, created_at_ms, group key.
type BatchRow = (i64, String, String, String, i64, Option<String>);

impl Store {
    /// The next undelivered messages for `recipient` after `after_seq` (at most `limit`, and
    /// bodies of at most `max_bytes` together, but always one). The flag says whether a limit
    /// cut the batch short (more may be waiting). Nothing is written: the link records `sent`
    /// only for messages still unacknowledged after a while ([`Store::mark_sent_soon`]), and an
    /// acknowledgement of a row still `queued` counts its attempt.
    pub async fn take_batch(
        &self,
        recipient: Name,
        after_seq: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Outgoing>, bool), StoreError> {
        self.call(move |conn| {
            let mut bytes = 0;
            let mut cut = false;
            let rows: Vec<BatchRow> = conn
                .prepare_cached(TAKE_BATCH)?
                .query_map(params![recipient.as_str(), after_seq, limit as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .take_while(|row: &Result<BatchRow, _>| {
                    let first = bytes == 0;
                    if let Ok((_, _, _, body, _, _)) = row {
                        bytes += body.len().max(1);
                    }
                    let keep = first || bytes <= max_bytes;
                    cut |= !keep;
                    keep
                })
                .collect::<Result<_, _>>()?;
            let cut = cut || rows.len() == limit;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, msg_id, recipients, body, created, conv) in rows {
                let recipients: Vec<Name> = serde_json::from_str(&recipients).unwrap_or_default();
                out.push(Outgoing {
                    seq,
                    msg_id: Arc::from(msg_id),
                    recipients: Arc::from(recipients),
                    body: Arc::from(body),
                    created_at_ms: created as u64,
                    group: conv.as_deref().and_then(wire_group),
                });
            }
            Ok((out, cut))
        })
        .await
    }

    /// Whether `recipient` has anything left to deliver.
    pub async fn has_pending(&self, recipient: Name) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(HAS_PENDING)?
                .query_row(params![recipient.as_str()], |r| r.get(0))?)
        })
        .await
    }

    /// Recipients with anything left to deliver (to restart their links after a restart).
    pub async fn pending_recipients(&self) -> Result<Vec<String>, StoreError> {
        self.call(|conn| {
            Ok(conn
                .prepare(
                    "SELECT DISTINCT recipient FROM deliveries
                     WHERE state IN ('queued','sent') AND final = 0",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// The peer link's group tag of a stored group conversation key (`@OWNER/NAME`).
pub(crate) fn wire_group(conv: &str) -> Option<Arc<WireGroup>> {
    match ConvKey::parse(conv).ok()? {
        ConvKey::Group {
            owner: Some(owner),
            name,
        } => Some(Arc::new(WireGroup { owner, name })),
        _ => None,
    }
}
