//! `events` (protocol.md §2.9.6): the connection becomes one stream of what happens to this
//! node's conversations. Stored events are read from the database after the stream's cursor,
//! a page at a time, whenever a commit added some (the store's events watch), so chatd holds
//! nothing per stream; presence changes come from the registry watch, unstored.

use peerchat_proto::control::{Event, Response};
use peerchat_proto::envelope::{append_line, Outcome, Reply};
use peerchat_proto::Name;
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::conversations::{presence_state, watch_peers};
use super::follow::HEARTBEAT;
use super::reply::{flush, store_error, write_line};
use crate::node::Node;
use crate::presence::Presence;

const PAGE: u32 = 256;
/// Conversations whose peers a new stream has watched.
const WATCHED_CONVERSATIONS: u32 = 1000;

pub async fn run(
    w: &mut (impl AsyncWrite + Unpin),
    id: u64,
    after: Option<i64>,
    node: &Node,
    stop: &CancellationToken,
    conn_done: &CancellationToken,
) {
    if let Err(e) = stream(w, id, after, node, stop, conn_done).await {
        debug!(error = %e, "events stream ended");
    }
}

fn ok(id: u64, r: Response) -> Reply<Response> {
    Reply {
        id,
        outcome: Outcome::Ok(r),
    }
}

fn presence_line(buf: &mut Vec<u8>, id: u64, name: Name, p: Presence) {
    let event = Event::Presence {
        name,
        presence: presence_state(p),
    };
    append_line(
        buf,
        &ok(
            id,
            Response::Event {
                cursor: None,
                event,
            },
        ),
    );
}

async fn stream(
    w: &mut (impl AsyncWrite + Unpin),
    id: u64,
    after: Option<i64>,
    node: &Node,
    stop: &CancellationToken,
    conn_done: &CancellationToken,
) -> std::io::Result<()> {
    // Subscribe before reading, so nothing committed in between is missed.
    let mut commits = node.store.event_commits();
    let mut presence = node.presence.subscribe();
    let fail = |e| Reply::<Response> {
        id,
        outcome: Outcome::Err(store_error(e)),
    };
    let (newest, gap) = match node.store.events_start(after).await {
        Ok(s) => s,
        Err(e) => return write_line(w, &fail(e)).await,
    };
    if let Ok(all) = node
        .store
        .conversations(WATCHED_CONVERSATIONS, node.name.clone())
        .await
    {
        watch_peers(node, &all);
    }
    // A cursor above every stored event comes from another database (a restored backup, a
    // new state directory): waiting for it would hide every event up to it.
    let (mut cursor, gap) = match after {
        Some(a) if a > newest => (newest, true),
        Some(a) => (a, gap),
        None => (newest, gap),
    };
    write_line(w, &ok(id, Response::EventsFrom { after: cursor, gap })).await?;
    let mut buf = Vec::new();
    for (name, p) in node.presence.snapshot() {
        presence_line(&mut buf, id, name, p);
    }
    flush(w, &mut buf).await?;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        // Catch up from the database, a page (one write) at a time.
        loop {
            let (events, last) = match node
                .store
                .events_after(cursor, PAGE, node.name.clone())
                .await
            {
                Ok(r) => r,
                Err(e) => return write_line(w, &fail(e)).await,
            };
            let more = last > cursor && (last - cursor) as u64 >= u64::from(PAGE);
            for (c, event) in events {
                let r = Response::Event {
                    cursor: Some(c),
                    event,
                };
                append_line(&mut buf, &ok(id, r));
            }
            cursor = cursor.max(last);
            if !buf.is_empty() {
                flush(w, &mut buf).await?;
                heartbeat.reset();
            }
            if !more {
                break;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = conn_done.cancelled() => return Ok(()),
            r = commits.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            p = presence.recv() => {
                match p {
                    Ok((name, state)) => presence_line(&mut buf, id, name, state),
                    // Fell behind: resend the whole view.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for (name, state) in node.presence.snapshot() {
                            presence_line(&mut buf, id, name, state);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {}
                }
                flush(w, &mut buf).await?;
                heartbeat.reset();
            }
            _ = heartbeat.tick() => {
                write_line(w, &ok(id, Response::Heartbeat)).await?;
            }
        }
    }
}
