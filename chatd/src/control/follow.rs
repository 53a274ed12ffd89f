//! `follow`: the connection becomes a stream of `message` replies (and a `heartbeat` every
//! [`HEARTBEAT`]). The stream reads from the database in pages after a cursor, so a follower
//! that falls behind catches up from SQLite and never makes chatd buffer messages for it.

use std::time::Duration;

use peerchat_proto::control::Response;
use peerchat_proto::envelope::{Outcome, Reply};
use peerchat_proto::Name;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{flush, store_error, write_line};
use crate::node::Node;
use crate::store::InboxQuery;
use peerchat_proto::envelope::to_line;

pub const HEARTBEAT: Duration = Duration::from_secs(30);
const PAGE: u32 = 256;

pub struct FollowParams {
    pub from: Option<Name>,
    pub backlog: u32,
    pub after: Option<i64>,
}

pub async fn run(
    w: &mut (impl AsyncWrite + Unpin),
    id: u64,
    p: FollowParams,
    node: &Node,
    stop: &CancellationToken,
    conn_done: &CancellationToken,
) {
    if let Err(e) = stream(w, id, p, node, stop, conn_done).await {
        debug!(error = %e, "follow stream ended");
    }
}

async fn stream(
    w: &mut (impl AsyncWrite + Unpin),
    id: u64,
    p: FollowParams,
    node: &Node,
    stop: &CancellationToken,
    conn_done: &CancellationToken,
) -> std::io::Result<()> {
    let from = p.from.map(String::from);
    // Subscribe before reading, so a message committed in between still wakes us.
    let mut seq = node.store.inbox_seq();
    seq.borrow_and_update();
    let start = match p.after {
        Some(a) => Ok((Vec::new(), a)),
        None => {
            node.store
                .follow_start(from.clone(), p.backlog.min(super::inbox::MAX_LIMIT))
                .await
        }
    };
    let (backlog, mut cursor) = match start {
        Ok(s) => s,
        Err(e) => {
            return write_error(w, id, e).await;
        }
    };
    write_line(w, &ok(id, Response::Following { after: cursor })).await?;
    let mut buf = Vec::new();
    for r in backlog {
        buf.extend_from_slice(&to_line(&ok(
            id,
            Response::Message(super::inbox::to_wire(node, r)),
        )));
    }
    flush(w, &mut buf).await?;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        seq.borrow_and_update();
        let q = InboxQuery {
            from: from.clone(),
            after: Some(cursor),
            limit: PAGE,
        };
        let rows = match node.store.inbox(q).await {
            Ok(r) => r,
            Err(e) => {
                return write_error(w, id, e).await;
            }
        };
        let full = rows.len() as u32 == PAGE;
        // One write per page.
        for r in rows {
            cursor = r.seq;
            buf.extend_from_slice(&to_line(&ok(
                id,
                Response::Message(super::inbox::to_wire(node, r)),
            )));
        }
        flush(w, &mut buf).await?;
        if full {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = conn_done.cancelled() => return Ok(()),
            r = seq.changed() => if r.is_err() { return Ok(()) },
            _ = heartbeat.tick() => write_line(w, &ok(id, Response::Heartbeat)).await?,
        }
    }
}

/// Ends the stream with the store's error as the reply to the follow.
async fn write_error(
    w: &mut (impl AsyncWrite + Unpin),
    id: u64,
    e: crate::store::StoreError,
) -> std::io::Result<()> {
    let reply: Reply<Response> = Reply {
        id,
        outcome: Outcome::Err(store_error(e)),
    };
    write_line(w, &reply).await
}

fn ok(id: u64, r: Response) -> Reply<Response> {
    Reply {
        id,
        outcome: Outcome::Ok(r),
    }
}
