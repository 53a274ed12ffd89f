//! A link's bookkeeping, without I/O: the messages in flight (written, not yet answered) and
//! how the peer's answers settle them ([`Window`]), and the written messages whose `sent` is
//! not recorded yet ([`Unmarked`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use peerchat_proto::peer::Frame;
use tokio::time::Instant;

use crate::peer::LinkError;
use crate::store::Outgoing;

/// Most messages in flight (written, not yet acknowledged) on one link.
pub const WINDOW: usize = 4096;
/// Most body bytes in flight on one link (large messages fill the window by size first).
pub const WINDOW_BYTES: usize = 4 << 20;
/// Messages written to a link (from memory or from the database) are recorded `sent` in one
/// lazy update when the oldest of them has been unacknowledged this long (all still
/// unacknowledged then are marked, even ones written just before); most are acknowledged
/// sooner, saving a row update each. Long enough that a full window (4,096 messages, ≈ 50 ms at
/// full speed) is normally acknowledged first: at 50 ms nearly every message of a sustained
/// stream got the update (≈ 5 % of the sender's database thread). The cost: `status` says
/// `queued` instead of `sent` for up to a second, and a crash within it undercounts
/// `attempts`.
pub const SENT_MARK_DELAY: Duration = Duration::from_secs(1);

/// How much more the window takes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub messages: usize,
    /// Body bytes; more than this is taken only as the last message of a batch.
    pub bytes: usize,
}

/// The messages written to a link and not yet answered, oldest first. The peer answers them in
/// order, so every answer settles the oldest one(s).
#[derive(Default)]
pub struct Window {
    inflight: VecDeque<Outgoing>,
    /// Body bytes in `inflight`.
    bytes: usize,
}

/// What one answer from the peer meant.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Acknowledged: the messages were added to `delivered`.
    Acked,
    /// The answer to a ping.
    Pong,
    /// The peer will never take this message (do not retry it).
    Nacked {
        seq: i64,
        id: Arc<str>,
        code: String,
        message: String,
    },
    /// The peer refused the whole link.
    Refused { code: String, message: String },
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// Body bytes in flight.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Room for more messages, if any: fewer than [`WINDOW`] messages and [`WINDOW_BYTES`]
    /// in flight (an empty window always takes one message, however large).
    pub fn room(&self) -> Option<Room> {
        let full = self.inflight.len() >= WINDOW
            || !self.inflight.is_empty() && self.bytes >= WINDOW_BYTES;
        (!full).then(|| Room {
            messages: WINDOW - self.inflight.len(),
            bytes: WINDOW_BYTES - self.bytes,
        })
    }

    /// `m` was written to the link.
    pub fn push(&mut self, m: Outgoing) {
        self.bytes += m.body.len();
        self.inflight.push_back(m);
    }

    fn pop(&mut self) -> Option<Outgoing> {
        let m = self.inflight.pop_front()?;
        self.bytes -= m.body.len();
        Some(m)
    }

    /// Settles what `frame` answers. Acknowledged messages go to `delivered`, in order.
    /// Answers come in order: one for anything but the oldest message in flight, or a frame the
    /// server never sends, is a protocol violation (the link ends; what is still pending goes
    /// again on the next one).
    pub fn on_reply(
        &mut self,
        frame: Frame,
        delivered: &mut Vec<Outgoing>,
    ) -> Result<Reply, LinkError> {
        let (id, nack) = match frame {
            Frame::Ack { id } => (id, None),
            Frame::Acks { count, last } => {
                // A run of acks: every message but the last is taken on trust of the order, the
                // last is checked by id, like a single ack.
                let count = count as usize;
                if count == 0 || count > self.inflight.len() {
                    return Err(LinkError::Protocol(format!(
                        "acknowledgement of {count} messages with {} in flight",
                        self.inflight.len()
                    )));
                }
                for _ in 1..count {
                    delivered.extend(self.pop());
                }
                (last, None)
            }
            Frame::Nack { id, code, message } => (id, Some((code, message))),
            Frame::Refused { code, message } => return Ok(Reply::Refused { code, message }),
            Frame::Pong => return Ok(Reply::Pong),
            other => {
                return Err(LinkError::Protocol(format!(
                    "unexpected {} frame",
                    other.kind()
                )))
            }
        };
        match self.pop() {
            Some(m) if *m.msg_id == *id => match nack {
                None => {
                    delivered.push(m);
                    Ok(Reply::Acked)
                }
                Some((code, message)) => Ok(Reply::Nacked {
                    seq: m.seq,
                    id: m.msg_id,
                    code,
                    message,
                }),
            },
            _ => Err(LinkError::Protocol(format!(
                "acknowledgement for unexpected message {id}"
            ))),
        }
    }
}

/// Seqs written to the link whose `sent` is not recorded yet, oldest first, and when to record
/// it (see [`SENT_MARK_DELAY`]).
pub struct Unmarked {
    seqs: VecDeque<i64>,
    due: Instant,
}

impl Unmarked {
    pub fn new() -> Unmarked {
        Unmarked {
            seqs: VecDeque::new(),
            due: Instant::now(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// When the `sent` update is due (meaningful only while not empty).
    pub fn due(&self) -> Instant {
        self.due
    }

    /// These messages go out now. The update is due [`SENT_MARK_DELAY`] after the oldest
    /// unmarked one went out.
    pub fn wrote(&mut self, seqs: impl IntoIterator<Item = i64>) {
        if self.seqs.is_empty() {
            self.due = Instant::now() + SENT_MARK_DELAY;
        }
        self.seqs.extend(seqs);
    }

    /// Messages up to `seq` were acknowledged before their `sent` was recorded: the `delivered`
    /// update counts the attempt (a row still `queued` gets attempts + 1).
    pub fn acked_through(&mut self, seq: i64) {
        while self.seqs.front().is_some_and(|s| *s <= seq) {
            self.seqs.pop_front();
        }
    }

    /// Everything to record as `sent` now.
    pub fn take(&mut self) -> Vec<i64> {
        self.seqs.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{mid, msg};
    use super::*;

    fn window(seqs: impl IntoIterator<Item = i64>) -> Window {
        let mut w = Window::default();
        for s in seqs {
            w.push(msg(s, 10));
        }
        w
    }

    fn ack(seq: i64) -> Frame {
        Frame::Ack {
            id: mid(&format!("m{seq}")),
        }
    }

    #[test]
    fn the_window_fills_by_count_and_by_bytes() {
        let mut w = Window::default();
        assert_eq!(
            w.room(),
            Some(Room {
                messages: WINDOW,
                bytes: WINDOW_BYTES
            })
        );
        // An empty window takes a message larger than its byte limit; then it is full.
        w.push(msg(1, WINDOW_BYTES + 1));
        assert_eq!(w.room(), None);
        let mut delivered = vec![];
        assert_eq!(w.on_reply(ack(1), &mut delivered).unwrap(), Reply::Acked);
        assert_eq!((w.len(), w.bytes()), (0, 0));
        // By count.
        for s in 1..=WINDOW as i64 {
            assert!(w.room().is_some());
            w.push(msg(s, 1));
        }
        assert_eq!(w.room(), None);
        assert_eq!(w.bytes(), WINDOW);
        w.on_reply(ack(1), &mut delivered).unwrap();
        assert_eq!(
            w.room(),
            Some(Room {
                messages: 1,
                bytes: WINDOW_BYTES - (WINDOW - 1)
            })
        );
    }

    #[test]
    fn acks_settle_the_oldest_messages_in_order() {
        let mut w = window(1..=6);
        let mut delivered = vec![];
        assert_eq!(w.on_reply(ack(1), &mut delivered).unwrap(), Reply::Acked);
        let run = Frame::Acks {
            count: 3,
            last: mid("m4"),
        };
        assert_eq!(w.on_reply(run, &mut delivered).unwrap(), Reply::Acked);
        assert_eq!(
            delivered.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!((w.len(), w.bytes()), (2, 20));
        // A pong settles nothing.
        assert_eq!(
            w.on_reply(Frame::Pong, &mut delivered).unwrap(),
            Reply::Pong
        );
        let nack = Frame::Nack {
            id: mid("m5"),
            code: "too_large".into(),
            message: "no".into(),
        };
        assert_eq!(
            w.on_reply(nack, &mut delivered).unwrap(),
            Reply::Nacked {
                seq: 5,
                id: Arc::from("m5"),
                code: "too_large".into(),
                message: "no".into()
            }
        );
        assert_eq!(
            delivered.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!((w.len(), w.bytes()), (1, 10));
        let refused = Frame::Refused {
            code: "storage".into(),
            message: "full".into(),
        };
        assert!(matches!(
            w.on_reply(refused, &mut delivered).unwrap(),
            Reply::Refused { code, .. } if code == "storage"
        ));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn answers_out_of_order_or_out_of_place_are_protocol_violations() {
        let violation = |w: &mut Window, f: Frame| match w.on_reply(f, &mut vec![]) {
            Err(LinkError::Protocol(e)) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        let mut w = window(1..=2);
        assert_eq!(
            violation(&mut w, ack(2)),
            "acknowledgement for unexpected message m2"
        );
        let mut w = window(1..=2);
        let e = violation(
            &mut w,
            Frame::Acks {
                count: 3,
                last: mid("m3"),
            },
        );
        assert_eq!(e, "acknowledgement of 3 messages with 2 in flight");
        let e = violation(
            &mut w,
            Frame::Acks {
                count: 0,
                last: mid("m1"),
            },
        );
        assert_eq!(e, "acknowledgement of 0 messages with 2 in flight");
        assert_eq!(
            violation(&mut Window::default(), ack(1)),
            "acknowledgement for unexpected message m1"
        );
        assert_eq!(violation(&mut w, Frame::Ping), "unexpected ping frame");
    }

    #[tokio::test]
    async fn sent_is_due_a_delay_after_the_oldest_unmarked_write() {
        let mut u = Unmarked::new();
        assert!(u.is_empty());
        let before = Instant::now();
        u.wrote([1, 2]);
        let due = u.due();
        assert!(due >= before + SENT_MARK_DELAY);
        // Later writes join the same update.
        u.wrote([3, 4]);
        assert_eq!(u.due(), due);
        // Acknowledged first: no `sent` update for those.
        u.acked_through(2);
        assert_eq!(u.take(), [3, 4]);
        assert!(u.is_empty());
        u.wrote([5]);
        assert!(u.due() >= due);
        u.acked_through(9);
        assert!(u.is_empty());
    }
}
