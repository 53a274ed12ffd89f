//! Delivery state transitions: `sent`, `delivered`, `failed`, `cancelled`, back to `queued`
//! after a link failure, and the pending floor that each of them that ends a pending state
//! moves up ([`advance_floor`]).

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::DeliveryState;
use peerchat_proto::Name;

use super::sql::{
    ADVANCE_FLOOR, ADVANCE_FLOOR_PAST, DELIVERED_RANGE, EXPIRE_PENDING, REQUEUE_PENDING,
};
use crate::store::{Batch, Store, StoreError};

impl Store {
    /// Marks messages written to a link `sent` (one more attempt each) without waiting. The link
    /// calls it only for messages still unacknowledged after its delay; the state filter keeps
    /// it from overwriting `delivered` or `failed`, and a crash before it commits only means the
    /// state still says `queued`.
    pub fn mark_sent_soon(&self, recipient: Name, seqs: Vec<i64>) -> Result<(), StoreError> {
        let list = serde_json::to_string(&seqs).unwrap_or_default();
        let rx = self.submit_lazy(move |conn| {
            let now = peerchat_db::now_ms() as i64;
            conn.prepare_cached(
                "UPDATE deliveries SET state = 'sent', attempts = attempts + 1, updated_at_ms = ?3
                 WHERE recipient = ?1 AND out_seq IN (SELECT value FROM json_each(?2))
                   AND state IN ('queued','sent') AND final = 0",
            )?
            .execute(params![recipient.as_str(), list, now])?;
            Ok(())
        })?;
        tokio::spawn(async move {
            if let Ok(Err(e)) = rx.await {
                tracing::warn!(error = %e, "could not record messages as sent");
            }
        });
        Ok(())
    }

    /// Sent to a peer that never acknowledges (a seed peer): `sent` is the final state.
    pub async fn mark_sent_final(&self, recipient: Name, seq: i64) -> Result<(), StoreError> {
        let this = self.clone();
        let r = self
            .call(move |conn| {
                let now = peerchat_db::now_ms() as i64;
                conn.prepare_cached(
                    "UPDATE deliveries SET state = 'sent', final = 1, attempts = attempts + 1,
                        updated_at_ms = ?3
                 WHERE out_seq = ?1 AND recipient = ?2",
                )?
                .execute(params![seq, recipient.as_str(), now])?;
                advance_floor(conn, recipient.as_str())
            })
            .await;
        this.bump_deliveries();
        r
    }

    pub async fn mark_failed(
        &self,
        recipient: Name,
        seq: i64,
        error: String,
    ) -> Result<(), StoreError> {
        self.set_state(recipient, vec![seq], DeliveryState::Failed, Some(error))
            .await
    }

    async fn set_state(
        &self,
        recipient: Name,
        seqs: Vec<i64>,
        state: DeliveryState,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let r = self
            .submit_state(recipient, seqs, state, error, false)?
            .await;
        self.bump_deliveries();
        r.map_err(|_| StoreError::Closed)?
    }

    /// Queues the acknowledged messages' `delivered` without waiting for the commit (lazily: it
    /// rides along with the next batch, within 20 ms), so the link keeps streaming; a failure is logged (the messages stay `sent` and go again on the next
    /// link, where the receiver's dedup absorbs them).
    /// `on_failure` runs if the commit fails (the link then starts over from the database).
    pub fn mark_delivered_soon(
        &self,
        recipient: Name,
        seqs: Vec<i64>,
        on_failure: impl FnOnce() + Send + 'static,
    ) -> Result<(), StoreError> {
        let rx = self.submit_state(
            recipient.clone(),
            seqs,
            DeliveryState::Delivered,
            None,
            true,
        )?;
        let this = self.clone();
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(to = %recipient, error = %e, "could not record deliveries; they will be resent");
                    on_failure();
                }
                Err(_) => {}
            }
            this.bump_deliveries();
        });
        Ok(())
    }

    fn submit_state(
        &self,
        recipient: Name,
        seqs: Vec<i64>,
        state: DeliveryState,
        error: Option<String>,
        lazy: bool,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let job = move |conn: &Batch| {
            let now = peerchat_db::now_ms() as i64;
            // An acknowledgement is the truth: a message cancelled while it was already on the
            // link and then acknowledged did arrive, so `delivered` overrides `cancelled`.
            // A row still `queued` when it is acknowledged went out without its `sent` being
            // recorded (the lazy `sent` marks, `delivery/window.rs`): the acknowledgement counts
            // that attempt.
            let sql = if state == DeliveryState::Delivered {
                "UPDATE deliveries SET state = ?3, last_error = COALESCE(?4, last_error), updated_at_ms = ?5,
                        attempts = attempts + (state = 'queued')
                 WHERE out_seq = ?1 AND recipient = ?2 AND state IN ('queued','sent','cancelled') AND final = 0"
            } else {
                "UPDATE deliveries SET state = ?3, last_error = COALESCE(?4, last_error), updated_at_ms = ?5
                 WHERE out_seq = ?1 AND recipient = ?2 AND state IN ('queued','sent') AND final = 0"
            };
            if seqs.len() == 1 {
                conn.prepare_cached(sql)?.execute(params![
                    seqs[0],
                    recipient.as_str(),
                    state.as_str(),
                    error,
                    now
                ])?;
                return advance_floor(conn, recipient.as_str());
            }
            if state == DeliveryState::Delivered {
                // A window of acks from one link, in order: every pending row of the recipient
                // between the first and the last acked seq was on that link and acknowledged
                // (a nacked one is `failed` already), so one range update over the primary key
                // covers them. Only if it matched fewer rows than were acked (some were
                // cancelled meanwhile; an ack beats a cancel) does the exact list go further.
                let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
                let n: usize = conn.prepare_cached(DELIVERED_RANGE)?.execute(params![
                    recipient.as_str(),
                    first,
                    last,
                    now
                ])?;
                if n == seqs.len() {
                    conn.prepare_cached(ADVANCE_FLOOR_PAST)?.execute(params![
                        recipient.as_str(),
                        first,
                        last
                    ])?;
                    return Ok(());
                }
            }
            // Many at once: one statement over a JSON array of seqs.
            let list = serde_json::to_string(&seqs).unwrap_or_default();
            let many = sql.replace(
                "out_seq = ?1",
                "out_seq IN (SELECT value FROM json_each(?1))",
            );
            conn.prepare_cached(&many)?.execute(params![
                list,
                recipient.as_str(),
                state.as_str(),
                error,
                now
            ])?;
            advance_floor(conn, recipient.as_str())
        };
        if lazy {
            self.submit_lazy(job)
        } else {
            self.submit(job)
        }
    }

    /// A link to `recipient` failed: whatever was `sent` is back to `queued` (it may or may not
    /// have arrived; the receiver's dedup makes the retry safe) and the error is kept. Rows still
    /// `queued` (never written, or written but not yet marked `sent`, see `mark_sent_soon`)
    /// count the failed attempt here; `sent` ones were counted when they were marked.
    pub async fn note_link_failure(
        &self,
        recipient: Name,
        error: String,
    ) -> Result<(), StoreError> {
        self.call(move |conn| {
            let now = peerchat_db::now_ms() as i64;
            conn.prepare_cached(REQUEUE_PENDING)?.execute(params![
                recipient.as_str(),
                error,
                now
            ])?;
            Ok(())
        })
        .await
    }

    /// Gives up on `recipient`'s messages accepted before `cutoff_ms`. Returns how many.
    pub async fn expire(
        &self,
        recipient: Name,
        cutoff_ms: u64,
        why: String,
    ) -> Result<usize, StoreError> {
        let this = self.clone();
        let r = self
            .call(move |conn| {
                let now = peerchat_db::now_ms() as i64;
                let n = conn.prepare_cached(EXPIRE_PENDING)?.execute(params![
                    recipient.as_str(),
                    cutoff_ms as i64,
                    why,
                    now
                ])?;
                if n > 0 {
                    advance_floor(conn, recipient.as_str())?;
                }
                Ok(n)
            })
            .await;
        if matches!(r, Ok(n) if n > 0) {
            this.bump_deliveries();
        }
        r
    }

    /// Cancels every pending delivery of `msg_id`; returns its seq and the recipients whose
    /// delivery was cancelled (`None`: no such message).
    pub async fn cancel(&self, msg_id: String) -> Result<Option<(i64, Vec<Name>)>, StoreError> {
        let this = self.clone();
        let r = self
            .call(move |conn| {
                let seq: Option<i64> = conn
                    .prepare_cached("SELECT seq FROM outbox WHERE msg_id = ?1")?
                    .query_row(params![msg_id], |r| r.get(0))
                    .optional()?;
                let Some(seq) = seq else { return Ok(None) };
                let n = conn
                    .prepare_cached(
                        "UPDATE deliveries SET state = 'cancelled', updated_at_ms = ?2
                         WHERE out_seq = ?1 AND state IN ('queued','sent') AND final = 0
                         RETURNING recipient",
                    )?
                    .query_map(params![seq, peerchat_db::now_ms() as i64], |r| {
                        r.get::<_, String>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                for r in &n {
                    advance_floor(conn, r)?;
                }
                Ok(Some((
                    seq,
                    n.into_iter().filter_map(|r| Name::new(r).ok()).collect(),
                )))
            })
            .await;
        this.bump_deliveries();
        r
    }
}

/// Moves `recipient`'s pending floor up past the rows that are no longer pending: to just
/// below its first pending row, or, when it has none, to the newest row of any recipient (a
/// later message gets a higher seq). Never down, and never past a pending row: the scan starts
/// at the old floor, below which nothing is pending. Called, in the same transaction, after
/// anything that can end a row's pending state. Reads only the rows above the old floor.
pub(super) fn advance_floor(conn: &Connection, recipient: &str) -> Result<(), StoreError> {
    conn.prepare_cached(ADVANCE_FLOOR)?
        .execute(params![recipient])?;
    Ok(())
}
