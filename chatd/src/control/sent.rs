//! `sent`: pages of sent messages with each recipient's state (for `chatctl export`).

use std::sync::Arc;

use peerchat_proto::control::{RecipientDetail, Response, SentMessage, MAX_MESSAGES_BYTES};
use peerchat_proto::Name;

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 10_000;

pub fn handle(
    node: &Arc<Node>,
    to: Option<Name>,
    after: Option<i64>,
    limit: Option<u32>,
) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        // One more than asked: whether more follow.
        let (mut rows, cut) = node
            .store
            .sent_page(to, after.unwrap_or(0), limit + 1, MAX_MESSAGES_BYTES)
            .await
            .map_err(store_error)?;
        let more = cut || rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let messages = rows
            .into_iter()
            .map(|r| SentMessage {
                seq: r.seq,
                id: r.msg_id,
                body: r.body,
                sent_at: crate::time::rfc3339(r.created_at_ms),
                recipients: r
                    .recipients
                    .into_iter()
                    .map(|d| RecipientDetail {
                        to: d.to,
                        state: d.state,
                        attempts: d.attempts,
                        error: d.error,
                        updated_at: crate::time::rfc3339(d.updated_at_ms),
                        done: d.done,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::SentMessages { messages, more })
    })
}
