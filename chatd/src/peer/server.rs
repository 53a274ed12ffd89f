//! Accepting peer links: check the preamble and the Hello, then store every message and
//! acknowledge it once committed.
//!
//! Messages that arrive together are stored in one call (one transaction with whatever else the
//! DB thread has queued), then acknowledged together, in order.

use std::net::SocketAddr;
use std::sync::Arc;

use peerchat_daemon::accept::{self, Refused};
use peerchat_proto::conversation::group_of_received;
use peerchat_proto::peer::{self, Frame, WireMessage};
use peerchat_proto::{MsgId, Name, MAX_BODY_BYTES};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::conn::PeerConn;
use super::error::LinkError;
use super::{legacy, noise};
use crate::observe::LinkDirection;
use crate::resolver::ResolveError;
use crate::store::{Arrival, Received, Store};

/// Most messages stored in one call.
const MAX_BATCH: usize = 512;
/// Most peer connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most peer connections from one source address at once, so one host cannot take every slot.
pub const MAX_PER_ADDRESS: usize = 32;

pub struct PeerServer {
    pub name: Name,
    pub store: Store,
    pub legacy: bool,
    pub identity: Arc<crate::identity::Identity>,
    pub resolver: Arc<crate::resolver::Resolver>,
    /// Registry lookups forced by callers whose key is not pinned, per source address.
    pub lookups: peerchat_daemon::limits::RateLimiter,
    /// Called with the name of every caller whose link is up: it is reachable now, so messages
    /// waiting for it should not wait for their backoff.
    pub on_caller: Box<dyn Fn(&Name) + Send + Sync>,
}

/// Registry lookups per minute that callers from one address may cause (new peers, rotations).
pub const CALLER_LOOKUPS_PER_MINUTE: u32 = 60;

pub async fn serve(
    listener: TcpListener,
    server: Arc<PeerServer>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let options = accept::Options {
        max_connections: MAX_CONNECTIONS,
        max_per_address: Some(MAX_PER_ADDRESS),
        accept_backoff: accept::ACCEPT_BACKOFF,
        on_accept_error: |e| warn!(error = %e, "peer accept failed"),
        on_refused: |&(_, peer), why| match why {
            Refused::Address => debug!(%peer, "too many connections from this address; closing"),
            Refused::Connections => warn!(%peer, "peer connection limit reached; closing"),
        },
    };
    accept::serve(
        listener,
        options,
        stop.cancelled(),
        &tasks,
        |(stream, peer)| {
            let server = server.clone();
            let stop = stop.clone();
            async move {
                let _ = stream.set_nodelay(true);
                match link(stream, peer, &server, stop).await {
                    Ok(()) | Err(LinkError::Closed) => debug!(%peer, "peer link closed"),
                    Err(e) => info!(%peer, error = %e, "peer link ended"),
                }
            }
        },
    )
    .await
}

async fn link(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: &PeerServer,
    stop: CancellationToken,
) -> Result<(), LinkError> {
    let mut preamble = [0u8; peer::PREAMBLE.len()];
    let n = read_prefix(&mut stream, &mut preamble).await?;
    if &preamble[..n] != peer::PREAMBLE {
        if server.legacy {
            return legacy::receive(stream, peer, &preamble[..n], &server.store).await;
        }
        return Err(LinkError::Protocol(
            "not a peerchat link (bad preamble)".into(),
        ));
    }
    let secret = server.identity.noise_secret();
    let (mut conn, hello) = noise::respond(stream, &secret).await?;
    drop(secret);
    let caller = admit(&mut conn, peer, server, &hello).await?;
    conn.send(&Frame::Welcome {
        version: peer::VERSION,
        name: server.name.clone(),
        features: vec![peer::feature::PING.to_string()],
    })
    .await?;
    debug!(%peer, from = %caller.from, "peer link up");
    let _open = server.store.observe().link_open(LinkDirection::In);
    (server.on_caller)(&caller.from);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            f = conn.recv_timeout(caller.silence_limit, caller.silence_what) => f?,
        };
        // Take whatever else is already here, so one commit covers the burst.
        let mut frames = vec![first];
        while frames.len() < MAX_BATCH {
            match conn.try_recv_ready() {
                Some(f) => frames.push(f?),
                None => break,
            }
        }
        let (batch, answers) = sort_burst(frames, &caller.from, &server.name)?;
        let Some((answers, ids)) =
            store_burst(&mut conn, server, &caller.from, batch, answers).await?
        else {
            return Ok(());
        };
        for r in &replies(answers, ids, caller.ack_runs) {
            conn.feed(r).await?;
        }
        conn.flush().await?;
    }
}

/// A caller that passed the Hello checks, and how its link is run.
struct Caller {
    /// Proven by the handshake: the sender of every message on the link.
    from: Name,
    /// It asked for `acks` runs.
    ack_runs: bool,
    /// How long the link may be silent, and what the timeout says.
    silence_limit: std::time::Duration,
    silence_what: &'static str,
}

/// The Hello checks (protocol.md 4.2, steps 1-4): version, our name, and the caller's key
/// against the name it claims. A refused caller gets `refused` with the reason first.
async fn admit(
    conn: &mut PeerConn,
    peer: SocketAddr,
    server: &PeerServer,
    hello: &Frame,
) -> Result<Caller, LinkError> {
    let Some((version, from, to, features)) = noise::hello_fields(hello) else {
        return Err(LinkError::Protocol(format!(
            "expected hello, got {}",
            hello.kind()
        )));
    };
    if version != peer::VERSION {
        refuse(
            conn,
            peer::code::BAD_FRAME,
            format!("unsupported peer protocol version {version}"),
        )
        .await;
        return Err(LinkError::Protocol(format!("peer version {version}")));
    }
    if *to != server.name {
        refuse(
            conn,
            peer::code::WRONG_NAME,
            format!("this node is {}, not {to}", server.name),
        )
        .await;
        return Err(LinkError::Protocol(format!("caller expected {to}")));
    }
    check_caller_key(conn, peer, server, from).await?;
    // A client that pings speaks at least every PING_AFTER: silence for DEAD_AFTER means the
    // link is dead (a pulled cable, a suspended laptop), and the socket is not kept for minutes.
    let pings = features.iter().any(|f| f == peer::feature::PING);
    let (silence_limit, silence_what) = if pings {
        (peer::DEAD_AFTER, "waiting for the pinging peer (dead link)")
    } else {
        (peer::SERVER_SILENCE_LIMIT, "idle peer link")
    };
    Ok(Caller {
        from: from.clone(),
        ack_runs: features.iter().any(|f| f == peer::feature::ACKS),
        silence_limit,
        silence_what,
    })
}

/// The sender is the key that authenticated: it must be the one bound to the name it claims.
async fn check_caller_key(
    conn: &mut PeerConn,
    peer: SocketAddr,
    server: &PeerServer,
    from: &Name,
) -> Result<(), LinkError> {
    let remote = *conn.remote_static();
    // A caller we cannot vouch for from the pins costs a registry lookup: limited per address.
    if !server.resolver.caller_matches_pin(from, &remote) && !server.lookups.allow(peer.ip()) {
        refuse(
            conn,
            peer::code::BUSY,
            "too many callers with unknown keys from this address; try again in a minute".into(),
        )
        .await;
        return Err(LinkError::Protocol(
            "unknown-caller lookups over the per-address limit".into(),
        ));
    }
    let Err(e) = server.resolver.check_caller(from, &remote).await else {
        return Ok(());
    };
    // Say what is really wrong: a caller that is not registered yet (it started while the
    // registry was down) or that cannot be checked now is told to come back, not accused of
    // holding the wrong key.
    let (code, message) = match &e {
        ResolveError::Unknown(_) => (
            peer::code::NOT_REGISTERED,
            format!("{from} is not registered yet (the registry has no record of it); try again once it has registered"),
        ),
        ResolveError::Unavailable { .. } => (
            peer::code::UNVERIFIED,
            format!("cannot check the key of {from} now: the registry is unreachable and the name is not pinned here"),
        ),
        ResolveError::AmbiguousOnLan { .. } => (
            peer::code::UNVERIFIED,
            format!("cannot check the key of {from}: several keys announce it on the LAN and none is pinned here"),
        ),
        ResolveError::KeyChanged { .. }
        | ResolveError::NotTheCaller { .. }
        | ResolveError::BadRecord(_) => (
            peer::code::WRONG_KEY,
            format!("your key is not the one bound to {from}"),
        ),
    };
    warn!(%peer, claimed = %from, code, error = %e, "refused a caller");
    refuse(conn, code, message).await;
    Err(LinkError::WrongKey)
}

/// One answer per frame of a burst, in order: an ack (the message's place in the batch to store)
/// or another frame (a nack, a pong).
type Answers = Vec<Result<usize, Frame>>;

/// Splits a burst into the messages to store and the answers, in frame order. A frame a client
/// may not send ends the link.
fn sort_burst(
    frames: Vec<Frame>,
    from: &Name,
    me: &Name,
) -> Result<(Vec<Received>, Answers), LinkError> {
    let mut batch = Vec::with_capacity(frames.len());
    let mut answers: Answers = Vec::with_capacity(frames.len());
    for f in frames {
        match f {
            Frame::Msg(m) => match check(&m) {
                Ok(()) => {
                    answers.push(Ok(batch.len()));
                    let conv = group_of_received(from, me, &m).map(|k| k.to_string());
                    batch.push(Received {
                        sender: from.to_string(),
                        msg: m,
                        authenticated: true,
                        conv,
                    });
                }
                Err((code, message)) => answers.push(Err(Frame::Nack {
                    id: m.id,
                    code: code.into(),
                    message,
                })),
            },
            // Answered in order with the acks, so a Pong also says everything before the
            // Ping was answered.
            Frame::Ping => answers.push(Err(Frame::Pong)),
            other => {
                return Err(LinkError::Protocol(format!(
                    "unexpected {} frame",
                    other.kind()
                )))
            }
        }
    }
    Ok((batch, answers))
}

/// Stores a burst's messages in one call (one commit with whatever else the DB thread has
/// queued) and turns the answers of messages whose id the sender already used for another body
/// into nacks. Returns the answers and the stored ids, or `None` when storing failed: the
/// caller was told (`refused` with `storage`), nothing is acknowledged, and the sender retries.
async fn store_burst(
    conn: &mut PeerConn,
    server: &PeerServer,
    from: &Name,
    batch: Vec<Received>,
    mut answers: Answers,
) -> Result<Option<(Answers, Vec<MsgId>)>, LinkError> {
    if batch.is_empty() {
        return Ok(Some((answers, Vec::new())));
    }
    let stored = batch.len();
    let arrivals = match server.store.receive(batch).await {
        // One answer per message, in batch order (acks are built from these ids).
        Ok(a) if a.len() != stored => {
            return Err(LinkError::Protocol(format!(
                "internal error: {} answers for {stored} messages",
                a.len()
            )))
        }
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, from = %from, "could not store incoming messages");
            refuse(
                conn,
                peer::code::STORAGE,
                "receiver cannot store messages right now".into(),
            )
            .await;
            return Ok(None);
        }
    };
    for a in answers.iter_mut() {
        if let Ok(i) = *a {
            if arrivals
                .get(i)
                .is_some_and(|(a, _)| *a == Arrival::Conflict)
            {
                let id = arrivals[i].1.clone();
                warn!(from = %from, id = %id, "refused a message whose id the sender already used for another one");
                *a = Err(Frame::Nack {
                    message: format!(
                        "message id {id} was already used by {from} for a different message"
                    ),
                    id,
                    code: peer::code::ID_CONFLICT.into(),
                });
            }
        }
    }
    debug!(from = %from, messages = stored, "stored incoming messages");
    let observe = server.store.observe();
    for (arrival, id) in &arrivals {
        if *arrival != Arrival::Conflict {
            observe.received(id.as_str(), from.as_str(), *arrival == Arrival::Repeat);
        }
    }
    Ok(Some((
        answers,
        arrivals.into_iter().map(|(_, id)| id).collect(),
    )))
}

/// The frames that answer a burst, in order: with `ack_runs` (the client asked for
/// `peer::feature::ACKS`), each run of acknowledged messages becomes one `Acks` frame.
/// `ids`: the stored messages' ids, by their place in the batch (moved, not copied; the places
/// in `answers` rise, so each is taken from the iterator in turn. The store answers every
/// message, so an id is never missing; if one were, its answer would be left out).
fn replies(answers: Vec<Result<usize, Frame>>, ids: Vec<MsgId>, ack_runs: bool) -> Vec<Frame> {
    let mut ids = ids.into_iter().enumerate();
    let mut id = |i: usize| ids.find(|(j, _)| *j == i).map(|(_, id)| id);
    if !ack_runs {
        return answers
            .into_iter()
            .filter_map(|a| match a {
                Ok(i) => id(i).map(|id| Frame::Ack { id }),
                Err(nack) => Some(nack),
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut run: Option<(u32, usize)> = None;
    for a in answers {
        match a {
            Ok(i) => {
                let count = run.map_or(0, |(c, _)| c);
                run = Some((count + 1, i));
            }
            Err(nack) => {
                if let Some((count, last)) = run.take().and_then(|(c, l)| Some((c, id(l)?))) {
                    out.push(Frame::Acks { count, last });
                }
                out.push(nack);
            }
        }
    }
    if let Some((count, last)) = run.and_then(|(c, l)| Some((c, id(l)?))) {
        out.push(Frame::Acks { count, last });
    }
    out
}

fn check(m: &WireMessage) -> Result<(), (&'static str, String)> {
    if m.body.len() > MAX_BODY_BYTES {
        return Err((
            peer::code::TOO_LARGE,
            format!("body over {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn refuse(conn: &mut PeerConn, code: &str, message: String) {
    let _ = conn
        .send(&Frame::Refused {
            code: code.into(),
            message,
        })
        .await;
}

/// Reads up to `buf.len()` bytes, stopping early at EOF; bounded by the handshake timeout.
async fn read_prefix(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, LinkError> {
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            match stream.read(&mut buf[n..]).await? {
                0 => break,
                k => n += k,
            }
            // A legacy sender writes its text and closes; don't wait for more than it sent.
            if !peer::PREAMBLE.starts_with(&buf[..n]) {
                break;
            }
        }
        Ok::<_, std::io::Error>(n)
    };
    Ok(tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| LinkError::Timeout("waiting for the preamble"))??)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(s: &str) -> MsgId {
        MsgId::new(s).unwrap()
    }

    fn nack(id: &str) -> Frame {
        Frame::Nack {
            id: mid(id),
            code: peer::code::TOO_LARGE.into(),
            message: "too large".into(),
        }
    }

    /// A burst of five stored messages with a refused one in the middle: one `acks` frame per
    /// run, the nack in its place; one `ack` each for a caller that did not ask for runs.
    #[test]
    fn a_burst_is_answered_with_one_acks_frame_per_run() {
        let ids = || -> Vec<MsgId> { ["m1", "m2", "m4", "m5", "m6"].map(mid).into() };
        let answers = || vec![Ok(0), Ok(1), Err(nack("m3")), Ok(2), Ok(3), Ok(4)];
        assert_eq!(
            replies(answers(), ids(), true),
            [
                Frame::Acks {
                    count: 2,
                    last: mid("m2")
                },
                nack("m3"),
                Frame::Acks {
                    count: 3,
                    last: mid("m6")
                },
            ]
        );
        let one_each: Vec<Frame> = ["m1", "m2"]
            .into_iter()
            .map(|id| Frame::Ack { id: mid(id) })
            .chain([nack("m3")])
            .chain(
                ["m4", "m5", "m6"]
                    .into_iter()
                    .map(|id| Frame::Ack { id: mid(id) }),
            )
            .collect();
        assert_eq!(replies(answers(), ids(), false), one_each);
        assert_eq!(replies(vec![Err(nack("x"))], vec![], true), [nack("x")]);
    }
}
