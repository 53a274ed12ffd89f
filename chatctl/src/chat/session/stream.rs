//! The `events` stream (protocol.md §2.9.6) on a connection of its own, read by a thread that
//! forwards each event to the app. It resumes after the last cursor seen.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use peerchat_client::{Client, Error};
use peerchat_proto::control::{Event, PresenceState, Request, Response};

use super::super::events::FromChatd;
use super::translate::{self, Deliveries};

/// What the reader and the request side share.
pub struct Shared {
    /// The last event cursor seen (`NO_CURSOR`: none yet, start from now).
    pub cursor: AtomicI64,
    pub deliveries: Mutex<Deliveries>,
}

pub const NO_CURSOR: i64 = i64::MIN;

/// Starts the stream on `client`; the thread ends when the connection does (setting `lost`)
/// or once `current` is false (a newer connection took over).
pub fn start(
    mut client: Client,
    shared: Arc<Shared>,
    out: Sender<FromChatd>,
    current: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
) -> Result<(), Error> {
    client.set_streaming()?;
    let after = Some(shared.cursor.load(Ordering::Relaxed)).filter(|c| *c != NO_CURSOR);
    client.send(&Request::Events { after })?;
    let spawned = std::thread::Builder::new()
        .name("chat-events".into())
        .spawn(move || {
            loop {
                let reply = match client.recv() {
                    Ok(r) => r,
                    Err(Error::Timeout) => continue,
                    Err(_) => break,
                };
                if !current.load(Ordering::Relaxed) {
                    return;
                }
                match reply.outcome.into_result() {
                    Ok(r) => forward(r, &shared, &out),
                    Err(e) => {
                        let _ = out.send(FromChatd::Error(format!("events: {}", e.message)));
                        break;
                    }
                }
            }
            lost.store(true, Ordering::Relaxed);
        });
    spawned
        .map(|_| ())
        .map_err(|e| Error::Io("starting a thread", e))
}

fn forward(r: Response, shared: &Shared, out: &Sender<FromChatd>) {
    let ev = match r {
        Response::EventsFrom { after, .. } => {
            if shared.cursor.load(Ordering::Relaxed) == NO_CURSOR {
                shared.cursor.store(after, Ordering::Relaxed);
            }
            return;
        }
        Response::Event { cursor, event } => {
            if let Some(c) = cursor {
                shared.cursor.store(c, Ordering::Relaxed);
            }
            event
        }
        _ => return,
    };
    let Ok(mut deliveries) = shared.deliveries.lock() else {
        return;
    };
    let msg = match ev {
        Event::Message { with, entry } => FromChatd::Message {
            conv: translate::conv(&with),
            msg: translate::entry(entry, &mut deliveries),
        },
        Event::Delivery {
            id,
            to,
            state,
            error,
            ..
        } => {
            deliveries.set(&id, to.as_ref(), state, error);
            FromChatd::Delivery {
                tick: deliveries.tick(&id),
                msg_id: id,
            }
        }
        Event::Read { with, unread, .. } => FromChatd::Read {
            conv: translate::conv(&with),
            unread: u32::try_from(unread).unwrap_or(u32::MAX),
        },
        Event::Presence { name, presence } => match presence {
            PresenceState::Unknown => return,
            p => FromChatd::Presence {
                name: name.to_string(),
                online: p == PresenceState::Online,
            },
        },
    };
    let _ = out.send(msg);
}
