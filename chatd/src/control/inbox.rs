//! `inbox`: the newest N received messages (oldest first), or those after a sequence number.

use std::sync::Arc;

use peerchat_proto::control::{InboxMessage, Response, MAX_MESSAGES_BYTES};
use peerchat_proto::Name;

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;
use crate::store::{InboxQuery, InboxRow};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 10_000;

pub fn handle(
    node: &Arc<Node>,
    from: Option<Name>,
    limit: Option<u32>,
    after: Option<i64>,
) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let q = InboxQuery {
            from: from.map(String::from),
            after,
            limit: limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT),
        };
        let newest_first = q.after.is_none();
        let mut rows = node.store.inbox(q).await.map_err(store_error)?;
        let truncated = fit(&mut rows, newest_first);
        Ok(Response::Messages {
            messages: rows.into_iter().map(|r| to_wire(&node, r)).collect(),
            truncated,
        })
    })
}

/// Cuts `rows` (oldest first) to at most MAX_MESSAGES_BYTES of bodies, keeping the newest when
/// the caller asked for the newest, the oldest when paging forward. Returns whether it cut.
fn fit(rows: &mut Vec<InboxRow>, keep_newest: bool) -> bool {
    let mut total = 0usize;
    let mut fits = |r: &&InboxRow| {
        total += r.body.len();
        total <= MAX_MESSAGES_BYTES
    };
    let keep = if keep_newest {
        rows.iter().rev().take_while(&mut fits).count()
    } else {
        rows.iter().take_while(&mut fits).count()
    };
    let cut = keep < rows.len();
    if keep_newest {
        rows.drain(..rows.len() - keep);
    } else {
        rows.truncate(keep);
    }
    cut
}

/// An inbox row as the control protocol shows it (followers get the same JSON from
/// `follow::MessageLines`, without the copies).
pub fn to_wire(node: &Node, mut r: InboxRow) -> InboxMessage {
    let recipients = if r.shown_recipients().is_empty() {
        Vec::new()
    } else {
        std::mem::take(&mut r.recipients)
    };
    InboxMessage {
        recipients,
        seq: r.seq,
        id: r.msg_id,
        from: r.sender,
        to: node.name.to_string(),
        body: r.body,
        sent_at: crate::time::rfc3339(r.sent_at_ms),
        received_at: crate::time::rfc3339(r.received_at_ms),
        authenticated: r.authenticated,
    }
}
