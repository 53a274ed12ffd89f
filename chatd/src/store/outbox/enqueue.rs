//! Accepting a message: the outbox row, one delivery row per recipient, and the hand-off of the
//! committed message to the delivery engine.

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::ConvKey;
use peerchat_proto::control::{DeliveryState, RecipientState};
use peerchat_proto::peer::WireGroup;
use peerchat_proto::Name;

use std::sync::Arc;

use super::delivery_reads::Outgoing;
use super::sql::{FIRST_FLOOR, INSERT_DELIVERY, INSERT_OUTBOX};
use super::transitions::advance_floor;
use crate::store::{Batch, KnownFloors, SeqHighWater, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub msg_id: String,
    pub recipients: Vec<RecipientState>,
    /// The new message, for the in-memory hand-off (`None` for a repeat).
    pub outgoing: Option<Outgoing>,
    /// The message's first timeline position (`None` for a repeat).
    pub pos: Option<i64>,
}

/// What one send stores: the message and who gets it (`failed`: recipients refused up front,
/// with their error; their rows start `failed`).
struct NewMessage {
    msg_id: String,
    to: Vec<Name>,
    failed: Vec<(Name, String)>,
    body: String,
    /// Sent into this group conversation (protocol.md §2.9.1).
    group: Option<WireGroup>,
}

impl Store {
    /// Records a message for `to` (already deduplicated). With a caller-chosen id that exists,
    /// the same recipients and body make this a no-op; anything else is a conflict. Ids chatd
    /// generated itself (`caller_chose_id` false) are fresh UUIDv7s and are not looked up.
    #[cfg(test)]
    pub fn submit_send(
        &self,
        msg_id: String,
        caller_chose_id: bool,
        to: Vec<Name>,
        failed: Vec<(Name, String)>,
        body: String,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<SendOutcome, StoreError>>, StoreError> {
        self.submit_send_in(msg_id, caller_chose_id, to, failed, body, None)
    }

    /// [`Store::submit_send`] into a group conversation (`group`), or a direct one (`None`).
    pub fn submit_send_in(
        &self,
        msg_id: String,
        caller_chose_id: bool,
        to: Vec<Name>,
        failed: Vec<(Name, String)>,
        body: String,
        group: Option<WireGroup>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<SendOutcome, StoreError>>, StoreError> {
        let seq_mark = self.outbox_seq_mark.clone();
        let known = self.floors.clone();
        let hand_off = self.send_hand_off();
        let new = NewMessage {
            msg_id,
            to,
            failed,
            body,
            group,
        };
        self.submit_then(
            move |conn| {
                if caller_chose_id {
                    if let Some(repeat) = repeat_of(conn, &new)? {
                        return Ok(repeat);
                    }
                }
                insert_message(conn, new, &seq_mark, &known)
            },
            hand_off,
        )
    }

    /// What runs on the DB thread right after a send commits: the seq high-water mark and the
    /// known pending floors learn about the commit, and the queued recipients' delivery tasks
    /// get the message in memory (in commit order).
    fn send_hand_off(&self) -> impl FnOnce(&SendOutcome) + Send + 'static {
        let sink = self.sink.clone();
        let committed = self.outbox_seq_mark.clone();
        let known_now = self.floors.clone();
        let observer = self.observer.clone();
        move |o: &SendOutcome| {
            let observe = crate::store::observed(&observer);
            match &o.outgoing {
                Some(_) => observe.accepted(&o.msg_id, &o.recipients),
                None => observe.repeated(&o.msg_id),
            }
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
        }
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
}

/// A send whose caller-chosen id exists: the earlier outcome if it is the same message (same
/// recipients, in any order, and body), a conflict otherwise; `None` for a new id.
fn repeat_of(conn: &Batch, new: &NewMessage) -> Result<Option<SendOutcome>, StoreError> {
    let existing: Option<(i64, String, String)> = conn
        .prepare_cached("SELECT seq, recipients, body FROM outbox WHERE msg_id = ?1")?
        .query_row(params![new.msg_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((seq, recipients, old_body)) = existing else {
        return Ok(None);
    };
    let mut old: Vec<Name> = serde_json::from_str(&recipients).unwrap_or_default();
    let mut sorted = new.to.clone();
    old.sort();
    sorted.sort();
    if old != sorted || old_body != new.body {
        return Err(StoreError::IdConflict(new.msg_id.clone()));
    }
    let mut recipients = states(conn, seq)?;
    recipients.sort_by_key(|r| new.to.iter().position(|t| *t == r.to));
    Ok(Some(SendOutcome {
        recipients,
        msg_id: new.msg_id.clone(),
        outgoing: None,
        pos: None,
    }))
}

/// Stores a new message: its outbox row (with an explicit seq while `seq_mark` says plain
/// rowids could reuse one), then its delivery rows.
fn insert_message(
    conn: &Batch,
    new: NewMessage,
    seq_mark: &SeqHighWater,
    known: &KnownFloors,
) -> Result<SendOutcome, StoreError> {
    let recipients_json = serde_json::to_string(&new.to).unwrap_or_else(|_| "[]".into());
    let now = peerchat_db::now_ms() as i64;
    conn.kept(INSERT_OUTBOX)?.execute(params![
        new.msg_id,
        recipients_json,
        new.body,
        now,
        seq_mark.get()
    ])?;
    let seq = conn.last_insert_rowid();
    let states = insert_deliveries(conn, seq, &new, now, known)?;
    let group_key = new
        .group
        .as_ref()
        .map(|g| ConvKey::group(g.owner.clone(), g.name.clone()).to_string());
    let pos =
        crate::store::timeline::record_out(conn, group_key.as_deref(), &new.to, seq, &new.body)?;
    let outgoing = Outgoing {
        seq,
        msg_id: Arc::from(new.msg_id.as_str()),
        recipients: Arc::from(new.to),
        body: Arc::from(new.body),
        created_at_ms: now as u64,
        group: new.group.map(Arc::new),
    };
    Ok(SendOutcome {
        recipients: states,
        msg_id: new.msg_id,
        outgoing: Some(outgoing),
        pos: Some(pos),
    })
}

/// One delivery row per recipient of message `seq`: `queued`, or `failed` for those refused up
/// front. Returns their states, in the order of `new.to`.
fn insert_deliveries(
    conn: &Batch,
    seq: i64,
    new: &NewMessage,
    now: i64,
    known: &KnownFloors,
) -> Result<Vec<RecipientState>, StoreError> {
    let mut ins = conn.kept(INSERT_DELIVERY)?;
    let mut states = Vec::with_capacity(new.to.len());
    for r in &new.to {
        let error = new
            .failed
            .iter()
            .find(|(n, _)| n == r)
            .map(|(_, e)| e.clone());
        let state = if error.is_some() {
            DeliveryState::Failed
        } else {
            DeliveryState::Queued
        };
        ins.execute(params![seq, r.as_str(), state.as_str(), error, now])?;
        // A recipient's first message gives it a floor right below it, so that its scans never
        // start at 0 (that would read every other recipient's history). Safe: a recipient
        // without a floor row has no rows at all (migration 7 gave every existing one a floor,
        // this gives every new one, and floor rows are never removed). Skipped for names whose
        // row is known to be committed.
        if !known.lock().unwrap_or_else(|p| p.into_inner()).contains(r) {
            conn.prepare_cached(FIRST_FLOOR)?
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
    Ok(states)
}

/// The recipients' states of message `seq` (the error only of `failed` ones).
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
