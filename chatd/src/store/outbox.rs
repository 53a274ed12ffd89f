//! Outgoing messages: one `outbox` row per message, one `deliveries` row per recipient with its
//! own state. A recipient's rows are delivered in `out_seq` order (the order they were accepted).
//!
//! A recipient's pending (`queued` or `sent`, not final) rows all lie above its `pending_floor`
//! (schema 7): every query for one recipient's pending rows scans the primary key from there,
//! and every change that can end a row's pending state calls [`advance_floor`]. Queries over
//! every recipient (`pending_recipients`, `outbox_pending`) read the whole table; they run at
//! start and for `chatctl outbox`, not per message.

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::{Counts, DeliveryState, RecipientState};
use peerchat_proto::Name;

use std::sync::Arc;

use super::{Store, StoreError};

/// A message as the delivery engine hands it to a link. Shared parts are reference-counted: a
/// group message is one allocation for all its recipients.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: i64,
    pub msg_id: Arc<str>,
    pub recipients: Arc<[Name]>,
    pub body: Arc<str>,
    pub created_at_ms: u64,
}

/// The recipient's (`?1`) floor, 0 without a row.
macro_rules! floor_of {
    () => {
        "COALESCE((SELECT seq FROM pending_floor WHERE recipient = ?1), 0)"
    };
}

/// The condition every query for one recipient's (`?1`) pending rows starts with: above its
/// floor, so that SQLite scans the primary key from there (see the module docs).
macro_rules! above_floor {
    () => {
        concat!("out_seq > ", floor_of!())
    };
}

/// A recipient's next pending messages after `?2` (and above its floor), oldest first.
pub(super) const TAKE_BATCH: &str = concat!(
    "SELECT o.seq, o.msg_id, o.recipients, o.body, o.created_at_ms
     FROM deliveries d JOIN outbox o ON o.seq = d.out_seq
     WHERE d.recipient = ?1
       AND d.out_seq > MAX(?2, ",
    floor_of!(),
    ")
       AND d.state IN ('queued','sent') AND d.final = 0
     ORDER BY d.out_seq LIMIT ?3"
);

/// Whether recipient `?1` has a pending row (above its floor).
pub(super) const HAS_PENDING: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE recipient = ?1 AND ",
    above_floor!(),
    " AND state IN ('queued','sent') AND final = 0)"
);

/// A new outgoing message. `?5`: the seq floor (see `SeqFloor`), normally 0: the next rowid.
/// (The statements marked public are timed by schema-bench.)
pub static INSERT_OUTBOX: &str = "INSERT INTO outbox (seq, msg_id, recipients, body, created_at_ms)
     VALUES (CASE WHEN ?5 > 0 THEN MAX(?5, (SELECT COALESCE(MAX(seq), 0) FROM outbox)) + 1 END,
             ?1, ?2, ?3, ?4)";

/// One recipient's delivery row of a new message.
pub static INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (out_seq, recipient, state, last_error, updated_at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)";

#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub msg_id: String,
    pub recipients: Vec<RecipientState>,
    /// False when this was a repeat of an earlier send with the same id.
    pub created: bool,
    /// The new message, for the in-memory hand-off (`None` for a repeat).
    pub outgoing: Option<Outgoing>,
}

impl Store {
    /// Records a message for `to` (already deduplicated). With a caller-chosen id that exists,
    /// the same recipients and body make this a no-op; anything else is a conflict. Ids chatd
    /// generated itself (`caller_chose_id` false) are fresh UUIDv7s and are not looked up.
    pub fn submit_send(
        &self,
        msg_id: String,
        caller_chose_id: bool,
        to: Vec<Name>,
        failed: Vec<(Name, String)>,
        body: String,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<SendOutcome, StoreError>>, StoreError> {
        let sink = self.sink.clone();
        let floor = self.outbox_floor.clone();
        let committed = self.outbox_floor.clone();
        let known = self.floors.clone();
        let known_now = self.floors.clone();
        let hand_off = move |o: &SendOutcome| {
            if let Some(out) = &o.outgoing {
                committed.committed(out.seq);
                // Committed: every recipient has its floor row now.
                let mut k = known_now.lock().unwrap_or_else(|p| p.into_inner());
                for r in &o.recipients {
                    if !k.contains(&r.to) {
                        k.insert(r.to.clone());
                    }
                }
            }
            if let (Some(sink), Some(out)) = (sink.get(), &o.outgoing) {
                for r in o
                    .recipients
                    .iter()
                    .filter(|r| r.state == DeliveryState::Queued)
                {
                    sink(&r.to, out);
                }
            }
        };
        self.submit_then(
            move |conn| {
                let recipients_json = serde_json::to_string(&to).unwrap_or_else(|_| "[]".into());
                let existing: Option<(i64, String, String)> = if caller_chose_id {
                    conn.prepare_cached(
                        "SELECT seq, recipients, body FROM outbox WHERE msg_id = ?1",
                    )?
                    .query_row(params![msg_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
                } else {
                    None
                };
                if let Some((seq, recipients, old_body)) = existing {
                    let mut old: Vec<Name> = serde_json::from_str(&recipients).unwrap_or_default();
                    let mut new = to.clone();
                    old.sort();
                    new.sort();
                    if old != new || old_body != body {
                        return Err(StoreError::IdConflict(msg_id));
                    }
                    let mut recipients = states(conn, seq)?;
                    recipients.sort_by_key(|r| to.iter().position(|t| *t == r.to));
                    return Ok(SendOutcome {
                        recipients,
                        msg_id,
                        created: false,
                        outgoing: None,
                    });
                }
                let now = peerchat_db::now_ms() as i64;
                conn.kept(INSERT_OUTBOX)?.execute(params![
                    msg_id,
                    recipients_json,
                    body,
                    now,
                    floor.get()
                ])?;
                let seq = conn.last_insert_rowid();
                let mut ins = conn.kept(INSERT_DELIVERY)?;
                let mut states = Vec::with_capacity(to.len());
                for r in &to {
                    let error = failed.iter().find(|(n, _)| n == r).map(|(_, e)| e.clone());
                    let state = if error.is_some() {
                        DeliveryState::Failed
                    } else {
                        DeliveryState::Queued
                    };
                    ins.execute(params![seq, r.as_str(), state.as_str(), error, now])?;
                    // A recipient's first message gives it a floor right below it, so that its
                    // scans never start at 0 (that would read every other recipient's history).
                    // Safe: a recipient without a floor row has no rows at all (migration 7 gave
                    // every existing one a floor, this gives every new one, and floor rows are
                    // never removed). Skipped for names whose row is known to be committed.
                    if !known.lock().unwrap_or_else(|p| p.into_inner()).contains(r) {
                        conn.prepare_cached(
                            "INSERT INTO pending_floor (recipient, seq) VALUES (?1, ?2 - 1)
                             ON CONFLICT (recipient) DO NOTHING",
                        )?
                        .execute(params![r.as_str(), seq])?;
                    }
                    if error.is_some() {
                        // Never pending: keep the floor above it.
                        advance_floor(conn, r.as_str())?;
                    }
                    states.push(RecipientState {
                        to: r.clone(),
                        state,
                        error,
                    });
                }
                let outgoing = Outgoing {
                    seq,
                    msg_id: Arc::from(msg_id.as_str()),
                    recipients: Arc::from(to),
                    body: Arc::from(body),
                    created_at_ms: now as u64,
                };
                Ok(SendOutcome {
                    recipients: states,
                    msg_id,
                    created: true,
                    outgoing: Some(outgoing),
                })
            },
            hand_off,
        )
    }

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
            let rows: Vec<(i64, String, String, String, i64)> = conn
                .prepare_cached(TAKE_BATCH)?
                .query_map(params![recipient.as_str(), after_seq, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .take_while(|row: &Result<(i64, String, String, String, i64), _>| {
                    let first = bytes == 0;
                    if let Ok((_, _, _, body, _)) = row {
                        bytes += body.len().max(1);
                    }
                    let keep = first || bytes <= max_bytes;
                    cut |= !keep;
                    keep
                })
                .collect::<Result<_, _>>()?;
            let cut = cut || rows.len() == limit;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, msg_id, recipients, body, created) in rows {
                let recipients: Vec<Name> = serde_json::from_str(&recipients).unwrap_or_default();
                out.push(Outgoing {
                    seq,
                    msg_id: Arc::from(msg_id),
                    recipients: Arc::from(recipients),
                    body: Arc::from(body),
                    created_at_ms: created as u64,
                });
            }
            Ok((out, cut))
        })
        .await
    }

    /// Marks messages written to a link `sent` (one more attempt each) without waiting. The link calls it only for messages still unacknowledged after its delay; the
    /// state filter keeps it from overwriting `delivered` or `failed`, and a crash before it
    /// commits only means the state still says `queued`.
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
        let job = move |conn: &super::Batch| {
            let now = peerchat_db::now_ms() as i64;
            // An acknowledgement is the truth: a message cancelled while it was already on the
            // link and then acknowledged did arrive, so `delivered` overrides `cancelled`.
            // A row still `queued` when it is acknowledged went out without its `sent` being
            // recorded (see delivery.rs): the acknowledgement counts that attempt.
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
            conn.prepare_cached(concat!(
                "UPDATE deliveries SET attempts = attempts + (state = 'queued'), state = 'queued',
                            last_error = ?2, updated_at_ms = ?3
                     WHERE recipient = ?1 AND ",
                above_floor!(),
                " AND state IN ('queued','sent') AND final = 0"
            ))?
            .execute(params![recipient.as_str(), error, now])?;
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
                let n = conn
                    .prepare_cached(concat!(
                        "UPDATE deliveries SET state = 'failed', last_error = ?3, updated_at_ms = ?4
                         WHERE recipient = ?1 AND ",
                        above_floor!(),
                        " AND state IN ('queued','sent') AND final = 0
                           AND out_seq IN (SELECT seq FROM outbox WHERE created_at_ms < ?2)"
                    ))?
                    .execute(params![recipient.as_str(), cutoff_ms as i64, why, now])?;
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

    /// Whether `recipient` has anything left to deliver.
    pub async fn has_pending(&self, recipient: Name) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(HAS_PENDING)?
                .query_row(params![recipient.as_str()], |r| r.get(0))?)
        })
        .await
    }

    /// Whether an outgoing message with this id was already accepted (for idempotent sends).
    pub async fn outgoing_exists(&self, msg_id: String) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE msg_id = ?1)")?
                .query_row(params![msg_id], |r| r.get(0))?)
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

const DELIVERY_COLUMNS: &str =
    "o.msg_id, d.recipient, d.state, d.attempts, d.last_error, o.created_at_ms,
     d.updated_at_ms, d.final, d.out_seq";

fn delivery_row(
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

fn states(conn: &Connection, seq: i64) -> Result<Vec<RecipientState>, StoreError> {
    let rows: Vec<(String, String, Option<String>)> = conn
        .prepare_cached("SELECT recipient, state, last_error FROM deliveries WHERE out_seq = ?1")?
        .query_map(params![seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(to, state, error)| {
            Some(RecipientState {
                to: Name::new(to).ok()?,
                state: DeliveryState::parse(&state)?,
                error: if state == "failed" { error } else { None },
            })
        })
        .collect())
}

/// The statement that moves recipient `?1`'s floor to just below its first pending row with
/// `out_seq > $start`, or to the newest row of any recipient when it has none.
macro_rules! advance_floor_sql {
    ($start:expr) => {
        concat!(
            "INSERT INTO pending_floor (recipient, seq)
             SELECT ?1, COALESCE(
                 (SELECT out_seq - 1 FROM deliveries WHERE recipient = ?1 AND out_seq > ",
            $start,
            " AND state IN ('queued','sent') AND final = 0
                  ORDER BY out_seq LIMIT 1),
                 (SELECT MAX(out_seq) FROM deliveries),
                 0)
             WHERE true
             ON CONFLICT (recipient) DO UPDATE SET seq = MAX(seq, excluded.seq)"
        )
    };
}

/// `advance_floor`'s statement (`?1`: the recipient).
pub(super) const ADVANCE_FLOOR: &str = advance_floor_sql!(floor_of!());

/// A window of acks (`?1` the recipient, seqs `?2` to `?3`, `?4` now): every pending row of the
/// recipient in the range becomes `delivered`.
pub const DELIVERED_RANGE: &str = "UPDATE deliveries SET state = 'delivered', updated_at_ms = ?4,
            attempts = attempts + (state = 'queued')
     WHERE recipient = ?1 AND out_seq BETWEEN ?2 AND ?3
       AND state IN ('queued','sent') AND final = 0";

/// [`ADVANCE_FLOOR`] right after [`DELIVERED_RANGE`] (seqs `?2` to `?3`), in the same job: that
/// update ended every pending row of the recipient in the range; valid only then. If nothing
/// was pending below `?2` either (the floor is at `?2 - 1` or above), nothing is pending up to
/// `?3`, and the scan starts there instead of rereading the rows just updated (≈ 1,000
/// instructions per message). Otherwise it is [`ADVANCE_FLOOR`].
pub const ADVANCE_FLOOR_PAST: &str = advance_floor_sql!(concat!(
    "(SELECT CASE WHEN f >= ?2 - 1 THEN MAX(f, ?3) ELSE f END FROM (SELECT ",
    floor_of!(),
    " AS f))"
));

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
