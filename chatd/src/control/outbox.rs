//! `outbox`, `message_status`, `wait` and `cancel`: what happened to messages we sent.

use std::sync::Arc;
use std::time::Duration;

use peerchat_proto::control::{
    code, MessageInfo, OutboxCursor, OutboxEntry, RecipientDetail, Response,
};
use peerchat_proto::ErrorBody;

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;
use crate::store::DeliveryRow;
use crate::time::rfc3339;

pub const DEFAULT_LIMIT: u32 = 1000;

/// One page of the outbox: at most `limit` entries after the cursor `after`; the reply says
/// where the next page starts (`next`) and how many entries follow (`more`), so no client cuts
/// the list without knowing it.
pub fn list(node: &Arc<Node>, limit: Option<u32>, after: Option<String>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let after = match after {
            None => None,
            Some(a) => {
                let c = OutboxCursor::parse(&a).ok_or_else(|| {
                    ErrorBody::new(
                        code::BAD_REQUEST,
                        format!(
                            "after {a:?} is not an outbox cursor (OUT_SEQ:RECIPIENT, as in `next`)"
                        ),
                    )
                })?;
                Some((c.seq, c.to))
            }
        };
        let limit = limit
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, super::inbox::MAX_LIMIT);
        let (rows, more) = node
            .store
            .outbox_pending(limit, after)
            .await
            .map_err(store_error)?;
        let next = match rows.last() {
            Some(last) if more > 0 => Some(
                OutboxCursor {
                    seq: last.out_seq,
                    to: last.to.to_string(),
                }
                .to_string(),
            ),
            _ => None,
        };
        let entries = rows
            .into_iter()
            .map(|r| OutboxEntry {
                error: r.error.or_else(|| waiting_note(&node, &r.to, r.done)),
                id: r.msg_id,
                to: r.to,
                state: r.state,
                attempts: r.attempts,
                created_at: rfc3339(r.created_at_ms),
                updated_at: rfc3339(r.updated_at_ms),
            })
            .collect();
        Ok(Response::Outbox {
            entries,
            next,
            more,
        })
    })
}

async fn info(node: &Node, msg_id: &str) -> Result<MessageInfo, ErrorBody> {
    let rows = node
        .store
        .message_detail(msg_id.to_string())
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ErrorBody::new(
                code::NOT_FOUND,
                format!("no outgoing message with id {msg_id}"),
            )
        })?;
    Ok(to_info(node, msg_id, rows))
}

/// For a pending row with no error of its own (queued while its recipient's task waits to
/// retry, so no attempt touched it yet): why it is not moving.
fn waiting_note(node: &Node, to: &peerchat_proto::Name, done: bool) -> Option<String> {
    if done {
        return None;
    }
    node.delivery.why_waiting(to)
}

fn to_info(node: &Node, msg_id: &str, rows: Vec<DeliveryRow>) -> MessageInfo {
    MessageInfo {
        id: msg_id.to_string(),
        created_at: rows
            .first()
            .map(|r| rfc3339(r.created_at_ms))
            .unwrap_or_default(),
        recipients: rows
            .into_iter()
            .map(|r| RecipientDetail {
                error: r.error.or_else(|| waiting_note(node, &r.to, r.done)),
                to: r.to,
                state: r.state,
                attempts: r.attempts,
                updated_at: rfc3339(r.updated_at_ms),
                done: r.done,
            })
            .collect(),
    }
}

pub fn status(node: &Arc<Node>, msg_id: String) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move { Ok(Response::MessageInfo(info(&node, &msg_id).await?)) })
}

pub fn cancel(node: &Arc<Node>, msg_id: String) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        match node
            .store
            .cancel(msg_id.clone())
            .await
            .map_err(store_error)?
        {
            None => Err(ErrorBody::new(
                code::NOT_FOUND,
                format!("no outgoing message with id {msg_id}"),
            )),
            Some((seq, recipients)) => {
                // Not yet on the wire? Then it must not go out from the in-memory hand-off.
                for r in &recipients {
                    node.delivery.forget(r, seq);
                }
                tracing::info!(id = %msg_id, recipients = recipients.len(), "message cancelled");
                Ok(Response::MessageInfo(info(&node, &msg_id).await?))
            }
        }
    })
}

/// Replies when every recipient is final, or when the timeout passes (the reply then shows
/// who is still pending; the client turns that into its exit code).
pub fn wait(node: &Arc<Node>, msg_id: String, timeout_ms: Option<u64>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut changes = node.store.delivery_changes();
        loop {
            changes.borrow_and_update();
            let info = info(&node, &msg_id).await?;
            if info.recipients.iter().all(|r| r.done) {
                return Ok(Response::MessageInfo(info));
            }
            let until =
                deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Ok(Response::MessageInfo(info)) },
                _ = tokio::time::sleep_until(until) => {
                    if deadline.is_some() {
                        return Ok(Response::MessageInfo(info));
                    }
                }
            }
        }
    })
}
