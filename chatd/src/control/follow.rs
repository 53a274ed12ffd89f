//! `follow`: the connection becomes a stream of `message` replies (and a `heartbeat` every
//! [`HEARTBEAT`]). A caught-up follower takes new rows from the store's inbox feed (sent right
//! after each commit, bounded and shared by all followers); one that falls behind the feed
//! catches up from SQLite in pages after its cursor, so chatd never buffers messages for it.

use std::time::Duration;

use peerchat_proto::control::{MessageRef, Response};
use peerchat_proto::envelope::{append_line, Outcome, Reply};
use peerchat_proto::Name;
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::reply::{flush, store_error, write_line};
use crate::node::Node;
use crate::store::{FeedItem, InboxQuery, InboxRow};

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
    // Subscribe before reading, so a message committed in between is in the feed (or, if the
    // feed overflows, in the next database read).
    let mut feed = node.store.inbox_feed();
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
    let mut lines = MessageLines::default();
    for r in &backlog {
        lines.append(&mut buf, id, node, r);
    }
    flush(w, &mut buf).await?;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        // Catch up from the database, a page at a time.
        loop {
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
            for r in &rows {
                cursor = r.seq;
                lines.append(&mut buf, id, node, r);
            }
            flush(w, &mut buf).await?;
            if !full {
                break;
            }
        }
        // Live: rows straight from the commit, in seq order; whatever the database read above
        // already printed is skipped by its seq.
        let mut large = false;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = conn_done.cancelled() => return Ok(()),
                r = feed.recv() => r,
                _ = heartbeat.tick() => {
                    write_line(w, &ok(id, Response::Heartbeat)).await?;
                    continue;
                }
            };
            let mut next = Some(first);
            let mut lagged = false;
            while let Some(r) = next.take() {
                // A large row still held by the store is as good as one in the feed.
                let r = match r {
                    Ok(FeedItem::Large { seq, row }) => Ok(match row.upgrade() {
                        Some(row) => FeedItem::Row(row),
                        None => FeedItem::Large { seq, row },
                    }),
                    other => other,
                };
                match r {
                    Ok(FeedItem::Row(row)) => {
                        let wanted = from.as_deref().is_none_or(|f| f == row.sender);
                        if row.seq > cursor && wanted {
                            cursor = row.seq;
                            lines.append(&mut buf, id, node, &row);
                        }
                    }
                    // A large row the store no longer holds: read it (and what follows) from
                    // the database, like after a lag, but without losing our place in the feed.
                    Ok(FeedItem::Large { seq, .. }) if seq > cursor => {
                        large = true;
                        break;
                    }
                    Ok(FeedItem::Large { .. }) => {}
                    // Fell behind the feed: read the rest from the database.
                    Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
                if !lagged && buf.len() < 64 * 1024 {
                    // A lag is reported once: it must not be mistaken for "nothing more".
                    next = match feed.try_recv() {
                        Ok(item) => Some(Ok(item)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Some(Err(broadcast::error::RecvError::Lagged(n)))
                        }
                        Err(broadcast::error::TryRecvError::Closed) => {
                            Some(Err(broadcast::error::RecvError::Closed))
                        }
                        Err(broadcast::error::TryRecvError::Empty) => None,
                    };
                }
            }
            flush(w, &mut buf).await?;
            if lagged {
                feed = feed.resubscribe();
                break;
            }
            if large {
                break;
            }
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

/// Encodes inbox rows as `message` lines: the JSON of `Response::Message(inbox::to_wire(row))`,
/// written straight from the row (`MessageRef`), with the timestamps formatted into buffers
/// reused from line to line. A follower gets one line per message, so this is a hot path.
#[derive(Default)]
struct MessageLines {
    sent_at: Timestamp,
    received_at: Timestamp,
}

/// One formatted timestamp, kept while the next rows carry the same millisecond (a stream's
/// rows mostly do: one batch is received in one millisecond, and many were sent in one).
#[derive(Default)]
struct Timestamp {
    ms: Option<u64>,
    text: String,
}

impl Timestamp {
    fn of(&mut self, ms: u64) -> &str {
        if self.ms != Some(ms) {
            crate::time::rfc3339_into(&mut self.text, ms);
            self.ms = Some(ms);
        }
        &self.text
    }
}

impl MessageLines {
    fn append(&mut self, buf: &mut Vec<u8>, id: u64, node: &Node, r: &InboxRow) {
        let message = MessageRef {
            seq: r.seq,
            id: &r.msg_id,
            from: &r.sender,
            to: node.name.as_str(),
            recipients: r.shown_recipients(),
            body: &r.body,
            sent_at: self.sent_at.of(r.sent_at_ms),
            received_at: self.received_at.of(r.received_at_ms),
            authenticated: r.authenticated,
        };
        append_line(
            buf,
            &Reply {
                id,
                outcome: Outcome::Ok(message),
            },
        );
    }
}

fn ok(id: u64, r: Response) -> Reply<Response> {
    Reply {
        id,
        outcome: Outcome::Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn a_timestamp_is_formatted_again_only_for_another_millisecond() {
        let mut t = Timestamp::default();
        assert_eq!(t.of(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t.of(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t.of(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(t.of(0), "1970-01-01T00:00:00.000Z");
    }
}
