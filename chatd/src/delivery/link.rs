//! One established link to a recipient, streaming its queue until the link ends: fill the
//! window, take the acks, record `sent` lazily, ping a silent peer.
//!
//! The link first catches up from the database, then streams what the DB thread hands off
//! ([`Source`]). Wherever a message came from, its `sent` is recorded only if it is still
//! unacknowledged after `SENT_MARK_DELAY` (one lazy update for all of them, [`Unmarked`]); most
//! are acknowledged first and never pay for that row update. Acknowledged messages are recorded
//! `delivered` without waiting for the commit, so the link keeps streaming.

use std::sync::Arc;

use peerchat_proto::peer::{self, Frame, MsgRef};
use peerchat_proto::Name;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ended::{AttemptError, Ended};
use super::mailbox::Mailbox;
use super::source::Source;
use super::window::{Reply, Unmarked, Window};
use crate::peer::{LinkError, PeerConn};
use crate::store::{Outgoing, Store};

pub struct Link<'a> {
    to: &'a Name,
    store: &'a Store,
    mailbox: &'a Arc<Mailbox>,
    stop: &'a CancellationToken,
    conn: PeerConn,
    /// Both sides list `peer::feature::PING`: silence for `DEAD_AFTER` ends the link, with or
    /// without traffic.
    pings: bool,
    source: Source,
    window: Window,
    unmarked: Unmarked,
    /// When the link last moved: an answer arrived, or a write went into an empty window.
    last_progress: Instant,
    /// When we last heard from the peer, and when the next ping is due.
    last_heard: Instant,
    ping_at: Instant,
}

/// What the link waited for.
enum Event {
    /// `sent` is due for the unmarked messages.
    MarkDue,
    PingDue,
    Stop,
    /// A hand-off, or another reason to look again.
    Woken,
    Heard(Frame),
    /// Nothing heard before the deadline (idle, ack or dead-link timeout).
    Silence,
}

impl<'a> Link<'a> {
    pub fn new(
        to: &'a Name,
        store: &'a Store,
        mailbox: &'a Arc<Mailbox>,
        stop: &'a CancellationToken,
        conn: PeerConn,
        pings: bool,
    ) -> Link<'a> {
        let now = Instant::now();
        Link {
            to,
            store,
            mailbox,
            stop,
            conn,
            pings,
            source: Source::new(),
            window: Window::default(),
            unmarked: Unmarked::new(),
            last_progress: now,
            last_heard: now,
            ping_at: now + peer::PING_AFTER,
        }
    }

    /// Streams until the link ends, and says why it did.
    pub async fn run(mut self) -> Ended {
        loop {
            match self.step().await {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(reason) => {
                    return Ended::Failed {
                        reason,
                        link_was_up: true,
                    }
                }
            }
        }
    }

    /// Fills the window, then waits for one thing to happen and acts on it; `Some` when the
    /// link ends normally.
    async fn step(&mut self) -> Result<Option<Ended>, AttemptError> {
        if self.mailbox.take_resync() {
            return Err(AttemptError::Refused(
                "recording deliveries failed; starting over from the database".into(),
            ));
        }
        self.fill().await?;
        let event = self.next_event().await?;
        self.on_event(event).await
    }

    /// Writes new messages while the window has room and there are any.
    async fn fill(&mut self) -> Result<(), AttemptError> {
        while let Some(room) = self.window.room() {
            let batch = self
                .source
                .next(self.store, self.to, self.mailbox, room)
                .await?;
            if batch.is_empty() {
                break;
            }
            self.write(batch).await?;
        }
        Ok(())
    }

    async fn write(&mut self, batch: Vec<Outgoing>) -> Result<(), AttemptError> {
        if self.window.is_empty() {
            self.last_progress = Instant::now();
        }
        // Usually acknowledged before this matters: `sent` is recorded only for messages still
        // unacknowledged after SENT_MARK_DELAY.
        self.unmarked.wrote(batch.iter().map(|m| m.seq));
        for m in batch {
            let frame = MsgRef {
                id: &m.msg_id,
                to: &m.recipients,
                sent_at_ms: m.created_at_ms,
                body: &m.body,
                group: None,
            };
            marking_while(
                self.store,
                self.to,
                &mut self.unmarked,
                self.conn.feed(&frame),
            )
            .await?;
            self.window.push(m);
        }
        marking_while(self.store, self.to, &mut self.unmarked, self.conn.flush()).await
    }

    async fn next_event(&mut self) -> Result<Event, LinkError> {
        // Measured from the last progress (an answer, or the first write into an empty window),
        // not from this wake-up: hand-offs and timers wake the link often, and must not keep a
        // peer that stopped answering alive.
        let deadline = self.last_progress
            + if self.window.is_empty() {
                peer::CLIENT_IDLE_CLOSE
            } else {
                peer::ACK_TIMEOUT
            };
        let until = if self.pings {
            deadline.min(self.last_heard + peer::DEAD_AFTER)
        } else {
            deadline
        };
        let waiting = !self.window.is_empty();
        tokio::select! {
            _ = tokio::time::sleep_until(self.unmarked.due()), if !self.unmarked.is_empty() => Ok(Event::MarkDue),
            _ = tokio::time::sleep_until(self.ping_at), if self.pings => Ok(Event::PingDue),
            _ = self.stop.cancelled(), if !waiting => Ok(Event::Stop),
            _ = self.mailbox.woken() => Ok(Event::Woken),
            frame = tokio::time::timeout_at(until, self.conn.recv()) => match frame {
                Ok(f) => Ok(Event::Heard(f?)),
                Err(_) => Ok(Event::Silence),
            },
        }
    }

    /// Acts on `event`; `Some` when the link ends normally.
    async fn on_event(&mut self, event: Event) -> Result<Option<Ended>, AttemptError> {
        match event {
            Event::MarkDue => mark_sent(self.store, self.to, &mut self.unmarked)?,
            Event::PingDue => self.ping().await?,
            Event::Stop => return Ok(Some(Ended::Shutdown)),
            Event::Woken => {}
            Event::Silence => return self.on_silence().map(Some),
            Event::Heard(frame) => self.take_replies(frame).await?,
        }
        Ok(None)
    }

    async fn ping(&mut self) -> Result<(), AttemptError> {
        self.ping_at = Instant::now() + peer::PING_AFTER;
        marking_while(
            self.store,
            self.to,
            &mut self.unmarked,
            self.conn.send(&Frame::Ping),
        )
        .await
    }

    /// Nothing heard until the deadline: a dead link (with pings), an idle one, or a peer that
    /// stopped acknowledging.
    fn on_silence(&self) -> Result<Ended, AttemptError> {
        if self.pings && Instant::now() >= self.last_heard + peer::DEAD_AFTER {
            warn!(to = %self.to, silent_secs = peer::DEAD_AFTER.as_secs(), "the peer stopped answering pings; the link is dead");
            return Err(LinkError::Timeout("for the peer: no answer to pings (dead link)").into());
        }
        if self.window.is_empty() {
            return Ok(Ended::Idle);
        }
        Err(LinkError::Timeout("waiting for acknowledgements").into())
    }

    /// Settles `first` and every answer already readable, then records what was delivered.
    async fn take_replies(&mut self, first: Frame) -> Result<(), AttemptError> {
        let now = Instant::now();
        self.last_progress = now;
        self.last_heard = now;
        self.ping_at = now + peer::PING_AFTER;
        let mut delivered = Vec::new();
        let mut next = Some(Ok(first));
        while let Some(frame) = next {
            match self.window.on_reply(frame?, &mut delivered)? {
                Reply::Acked | Reply::Pong => {}
                Reply::Nacked {
                    seq,
                    id,
                    code,
                    message,
                } => {
                    let err = format!("refused by {}: {message} ({code})", self.to);
                    warn!(to = %self.to, id = %id, error = %err, "message refused by the recipient");
                    self.store.mark_failed(self.to.clone(), seq, err).await?;
                }
                Reply::Refused { code, message } => {
                    return Err(AttemptError::Refused(format!(
                        "{} refused the link: {message} ({code})",
                        self.to
                    )))
                }
            }
            next = self.conn.try_recv_ready();
        }
        self.record_delivered(delivered)
    }

    fn record_delivered(&mut self, delivered: Vec<i64>) -> Result<(), AttemptError> {
        let Some(&last) = delivered.last() else {
            return Ok(());
        };
        self.unmarked.acked_through(last);
        debug!(to = %self.to, messages = delivered.len(), "delivered");
        let mailbox = self.mailbox.clone();
        self.store
            .mark_delivered_soon(self.to.clone(), delivered, move || mailbox.needs_resync())?;
        Ok(())
    }
}

/// Records the unmarked messages `sent` (one lazy update).
fn mark_sent(store: &Store, to: &Name, unmarked: &mut Unmarked) -> Result<(), AttemptError> {
    store.mark_sent_soon(to.clone(), unmarked.take())?;
    Ok(())
}

/// Runs a write to the link; if it blocks past the unmarked messages' due time (the peer
/// stopped reading), they are recorded `sent` meanwhile, so that `status` never shows a message
/// stuck in a blocked write as `queued` with no attempt.
async fn marking_while<T>(
    store: &Store,
    to: &Name,
    unmarked: &mut Unmarked,
    write: impl std::future::Future<Output = Result<T, LinkError>>,
) -> Result<T, AttemptError> {
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return Ok(r?),
            _ = tokio::time::sleep_until(unmarked.due()), if !unmarked.is_empty() => {
                mark_sent(store, to, unmarked)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use peerchat_proto::control::DeliveryState;
    use tokio::net::{TcpListener, TcpStream};

    use super::super::testing::{mid, name, open_store, send};
    use std::time::Duration;

    use super::*;
    use crate::identity::Identity;
    use crate::peer::noise;

    /// Both ends of a real Noise link on loopback: ours (the dialing side) and the peer's.
    async fn pair(dir: &tempfile::TempDir) -> (PeerConn, PeerConn) {
        let ours = Identity::load_or_create(&dir.path().join("a.key")).unwrap();
        let theirs = Identity::load_or_create(&dir.path().join("b.key")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = Frame::Hello {
            version: peer::VERSION,
            from: name("pa"),
            to: name("pb"),
            features: vec![peer::feature::ACKS.into()],
        };
        let expected = theirs.public().to_x25519().unwrap();
        let dial = async {
            let stream = TcpStream::connect(addr).await.unwrap();
            noise::initiate(stream, &ours.noise_secret(), &expected, &hello)
                .await
                .unwrap()
        };
        let accept = async {
            let (stream, _) = listener.accept().await.unwrap();
            noise::respond(stream, &theirs.noise_secret())
                .await
                .unwrap()
                .0
        };
        tokio::join!(dial, accept)
    }

    /// The ids of the next `n` messages the peer reads.
    async fn read_msgs(peer: &mut PeerConn, n: usize) -> Vec<String> {
        let mut ids = vec![];
        while ids.len() < n {
            match peer.recv().await.unwrap() {
                Frame::Msg(m) => ids.push(m.id.into_string()),
                other => panic!("expected a message, got {}", other.kind()),
            }
        }
        ids
    }

    async fn state(store: &Store, id: &str) -> DeliveryState {
        store.message_detail(id.into()).await.unwrap().unwrap()[0].state
    }

    #[tokio::test]
    async fn a_link_streams_in_order_records_acks_and_ends_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = Arc::new(Mailbox::new());
        let store = open_store(&dir, {
            let mb = mailbox.clone();
            move |m| mb.hand_off(m)
        });
        let early = send(&store, "one").await;
        let (ours, mut theirs) = pair(&dir).await;
        let (to, stop) = (name("pb"), CancellationToken::new());
        let link = Link::new(&to, &store, &mailbox, &stop, ours, false);
        let peer = async {
            // The database first, then what is handed off while the link is up.
            let mut ids = read_msgs(&mut theirs, 1).await;
            let later = [send(&store, "two").await, send(&store, "three").await];
            ids.extend(read_msgs(&mut theirs, 2).await);
            let want: Vec<String> = [&early, &later[0], &later[1]]
                .iter()
                .map(|m| m.msg_id.to_string())
                .collect();
            assert_eq!(ids, want);
            // One ack, then a run of two, with a pong between.
            theirs.feed(&Frame::Ack { id: mid(&ids[0]) }).await.unwrap();
            theirs.feed(&Frame::Pong).await.unwrap();
            let run = Frame::Acks {
                count: 2,
                last: mid(&ids[2]),
            };
            theirs.send(&run).await.unwrap();
            for id in &ids {
                while state(&store, id).await != DeliveryState::Delivered {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // Nothing in flight: a shutdown ends the link at once.
            stop.cancel();
            theirs
        };
        let (end, _theirs) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(link.run(), peer)
        })
        .await
        .unwrap();
        assert!(matches!(end, Ended::Shutdown), "{end:?}");
    }

    #[tokio::test]
    async fn a_nack_fails_its_message_and_an_answer_out_of_order_ends_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = Arc::new(Mailbox::new());
        let store = open_store(&dir, {
            let mb = mailbox.clone();
            move |m| mb.hand_off(m)
        });
        let first = send(&store, "one").await;
        let second = send(&store, "two").await;
        let (ours, mut theirs) = pair(&dir).await;
        let (to, stop) = (name("pb"), CancellationToken::new());
        let link = Link::new(&to, &store, &mailbox, &stop, ours, false);
        let peer = async {
            let ids = read_msgs(&mut theirs, 2).await;
            let nack = Frame::Nack {
                id: mid(&ids[0]),
                code: peer::code::TOO_LARGE.into(),
                message: "too large".into(),
            };
            theirs.feed(&nack).await.unwrap();
            theirs.send(&Frame::Ack { id: mid("nope") }).await.unwrap();
            theirs
        };
        let (end, _theirs) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(link.run(), peer)
        })
        .await
        .unwrap();
        match end {
            Ended::Failed {
                reason: AttemptError::Link(LinkError::Protocol(e)),
                link_was_up: true,
            } => assert_eq!(e, "acknowledgement for unexpected message nope"),
            other => panic!("expected a protocol failure, got {other:?}"),
        }
        assert_eq!(state(&store, &first.msg_id).await, DeliveryState::Failed);
        let detail = store
            .message_detail(first.msg_id.to_string())
            .await
            .unwrap();
        let error = detail.unwrap()[0].error.clone().unwrap();
        assert_eq!(error, "refused by pb: too large (too_large)");
        // Still pending: it goes again on the next link.
        assert_eq!(state(&store, &second.msg_id).await, DeliveryState::Queued);
    }

    #[tokio::test]
    async fn a_refused_link_fails_with_the_peers_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = Arc::new(Mailbox::new());
        let store = open_store(&dir, {
            let mb = mailbox.clone();
            move |m| mb.hand_off(m)
        });
        send(&store, "one").await;
        let (ours, mut theirs) = pair(&dir).await;
        let (to, stop) = (name("pb"), CancellationToken::new());
        let link = Link::new(&to, &store, &mailbox, &stop, ours, false);
        let peer = async {
            read_msgs(&mut theirs, 1).await;
            let refused = Frame::Refused {
                code: peer::code::STORAGE.into(),
                message: "receiver cannot store messages right now".into(),
            };
            theirs.send(&refused).await.unwrap();
            theirs
        };
        let (end, _theirs) = tokio::join!(link.run(), peer);
        match end {
            Ended::Failed {
                reason: AttemptError::Refused(e),
                ..
            } => assert_eq!(
                e,
                "pb refused the link: receiver cannot store messages right now (storage)"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
