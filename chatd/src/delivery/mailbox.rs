//! A recipient's mailbox: the messages handed to its task in memory, and the signals that wake
//! it.
//!
//! The DB thread pushes every message committed for the recipient ([`Mailbox::hand_off`]), in
//! commit order, so in `seq` order. A streaming link takes them from here instead of reading
//! them back from SQLite. The queue is bounded: once it is full, pushing stops (`overflowed`);
//! the link drains what is queued, then reads what came after it from the database. Nothing is
//! ever lost by the hand-off: the database stays the truth (see `Source` in `source.rs` for the
//! reading side and why no message is skipped or sent twice).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::window::{WINDOW, WINDOW_BYTES};
use crate::store::Outgoing;

/// Most messages waiting in one recipient's hand-off queue, and most body bytes.
pub const HANDOFF_MAX: usize = 2 * WINDOW;
pub const HANDOFF_MAX_BYTES: usize = 2 * WINDOW_BYTES;

pub struct Mailbox {
    /// New messages, or another reason for the task to look again.
    work: Notify,
    /// Ends a wait between attempts at once.
    retry: Notify,
    /// The registry's view of the recipient changed: a wait between attempts is recomputed.
    presence: Notify,
    /// The task is waiting between attempts (after a failure).
    waiting: AtomicBool,
    /// While waiting: the last attempt's error, for messages queued since (which no attempt
    /// has touched yet) to show in `status` and `outbox`.
    last_error: Mutex<Option<String>>,
    /// Set when recording acknowledged messages failed: they are no longer in flight but still
    /// pending in the database, so the link must start over from the database.
    resync: AtomicBool,
    handed: Mutex<Handed>,
    max: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Handed {
    queue: VecDeque<Outgoing>,
    /// Body bytes in `queue`.
    bytes: usize,
    overflowed: bool,
}

/// What a link took from the mailbox.
#[derive(Debug, Default)]
pub struct Taken {
    /// Oldest first.
    pub messages: Vec<Outgoing>,
    /// The queue had overflowed and is drained now: whatever came after it is read from the
    /// database.
    pub overflow_drained: bool,
}

impl Mailbox {
    pub fn new() -> Mailbox {
        Mailbox::with_capacity(HANDOFF_MAX, HANDOFF_MAX_BYTES)
    }

    /// A mailbox whose queue holds at most `max` messages and `max_bytes` body bytes.
    pub fn with_capacity(max: usize, max_bytes: usize) -> Mailbox {
        Mailbox {
            work: Notify::new(),
            retry: Notify::new(),
            presence: Notify::new(),
            waiting: AtomicBool::new(false),
            last_error: Mutex::new(None),
            resync: AtomicBool::new(false),
            handed: Mutex::new(Handed::default()),
            max,
            max_bytes,
        }
    }

    fn handed(&self) -> MutexGuard<'_, Handed> {
        self.handed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message was just committed for this recipient (on the DB thread, in commit order).
    /// Cheap and never blocks for long: a short lock and a wake-up.
    pub fn hand_off(&self, m: &Outgoing) {
        let mut h = self.handed();
        if h.queue.len() >= self.max || h.bytes + m.body.len() > self.max_bytes {
            // Keep what is queued (the link drains it, in order) and stop here: the link reads
            // everything after the queue's last message from the database.
            h.overflowed = true;
        } else if !h.overflowed {
            h.bytes += m.body.len();
            h.queue.push_back(m.clone());
        }
        drop(h);
        self.work.notify_one();
    }

    /// Message `seq` was cancelled: drop it from the queue, so that a link that has not taken it
    /// yet never writes it.
    pub fn forget(&self, seq: i64) {
        let mut h = self.handed();
        if let Some(i) = h.queue.iter().position(|m| m.seq == seq) {
            if let Some(m) = h.queue.remove(i) {
                h.bytes = h.bytes.saturating_sub(m.body.len());
            }
        }
    }

    /// Empties the queue, right before a read from the database (which returns everything the
    /// queue held, and more).
    pub fn reset(&self) {
        let mut h = self.handed();
        h.queue.clear();
        h.bytes = 0;
        h.overflowed = false;
    }

    /// Takes queued messages newer than `after_seq`, oldest first: at most `max` of them, and
    /// more only while their bodies stay under `max_bytes` (so the last one may go over it).
    /// Older ones (already read from the database) are dropped.
    pub fn take(&self, after_seq: i64, max: usize, max_bytes: usize) -> Taken {
        let mut h = self.handed();
        let mut taken = Taken::default();
        let mut bytes = 0;
        while taken.messages.len() < max && bytes < max_bytes {
            let Some(m) = h.queue.pop_front() else { break };
            h.bytes = h.bytes.saturating_sub(m.body.len());
            if m.seq > after_seq {
                bytes += m.body.len();
                taken.messages.push(m);
            }
        }
        taken.overflow_drained = h.overflowed && h.queue.is_empty();
        taken
    }

    /// Wakes the task (new work, or a reason to look again).
    pub fn wake(&self) {
        self.work.notify_one();
    }

    /// Resolves at the next [`Mailbox::wake`] (or at once if one came since the last wait).
    pub fn woken(&self) -> Notified<'_> {
        self.work.notified()
    }

    /// Ends a wait between attempts now (and wakes the task if it is not waiting).
    pub fn retry_now(&self) {
        self.retry.notify_one();
        self.work.notify_one();
    }

    /// Ends a wait between attempts, if the task is in one; otherwise does nothing, so that no
    /// stale wake-up cuts a later wait short. Returns whether it was waiting.
    pub fn retry_if_waiting(&self) -> bool {
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting {
            self.retry.notify_one();
        }
        waiting
    }

    /// The registry's view of the recipient changed.
    pub fn presence_changed(&self) {
        self.presence.notify_one();
    }

    /// The last attempt failed with `error`.
    pub fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The last attempt's error, while the task waits to retry.
    pub fn error_while_waiting(&self) -> Option<String> {
        if !self.waiting.load(Ordering::SeqCst) {
            return None;
        }
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the task as waiting between attempts until the guard is dropped.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.store(true, Ordering::SeqCst);
        Waiting(self)
    }

    pub fn retry_requested(&self) -> Notified<'_> {
        self.retry.notified()
    }

    pub fn presence_notified(&self) -> Notified<'_> {
        self.presence.notified()
    }

    /// Recording deliveries failed: the link must start over from the database.
    pub fn needs_resync(&self) {
        self.resync.store(true, Ordering::SeqCst);
        self.work.notify_one();
    }

    /// Whether [`Mailbox::needs_resync`] was called since the last look (and clears it).
    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::SeqCst)
    }
}

/// While it lives, the task counts as waiting between attempts.
pub struct Waiting<'a>(&'a Mailbox);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::msg;
    use super::*;

    fn seqs(t: &Taken) -> Vec<i64> {
        t.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn messages_come_out_in_hand_off_order_within_the_limits() {
        let mb = Mailbox::new();
        for seq in 1..=5 {
            mb.hand_off(&msg(seq, 10));
        }
        let t = mb.take(0, 2, usize::MAX);
        assert_eq!(seqs(&t), [1, 2]);
        assert!(!t.overflow_drained);
        // By bytes: taken while under the limit, so the last one may cross it.
        assert_eq!(seqs(&mb.take(0, 10, 15)), [3, 4]);
        assert_eq!(seqs(&mb.take(0, 10, 1000)), [5]);
        assert!(mb.take(0, 10, 1000).messages.is_empty());
    }

    #[test]
    fn messages_already_read_from_the_database_are_dropped() {
        let mb = Mailbox::new();
        for seq in 1..=4 {
            mb.hand_off(&msg(seq, 1));
        }
        // A read from the database got as far as seq 2: only 3 and 4 are new, and the older
        // ones do not count against the room.
        assert_eq!(seqs(&mb.take(2, 2, usize::MAX)), [3, 4]);
    }

    #[test]
    fn a_full_queue_keeps_its_head_and_says_when_it_is_drained() {
        let mb = Mailbox::with_capacity(3, usize::MAX);
        for seq in 1..=5 {
            mb.hand_off(&msg(seq, 1));
        }
        // Once it overflowed, it takes nothing more, even with room again: what follows the
        // queue must come from the database, in order.
        let t = mb.take(0, 2, usize::MAX);
        assert_eq!(seqs(&t), [1, 2]);
        assert!(!t.overflow_drained);
        mb.hand_off(&msg(6, 1));
        let t = mb.take(0, 10, usize::MAX);
        assert_eq!(seqs(&t), [3]);
        assert!(t.overflow_drained);
        // A reset (before the database read) starts queueing again.
        mb.reset();
        mb.hand_off(&msg(7, 1));
        let t = mb.take(6, 10, usize::MAX);
        assert_eq!(seqs(&t), [7]);
        assert!(!t.overflow_drained);
    }

    #[test]
    fn the_byte_limit_overflows_the_queue_too() {
        let mb = Mailbox::with_capacity(100, 25);
        mb.hand_off(&msg(1, 10));
        mb.hand_off(&msg(2, 10));
        mb.hand_off(&msg(3, 10));
        // Forgetting gives the bytes back, but the overflow stands until a reset.
        mb.forget(1);
        mb.hand_off(&msg(4, 1));
        let t = mb.take(0, 10, usize::MAX);
        assert_eq!(seqs(&t), [2]);
        assert!(t.overflow_drained);
    }

    #[test]
    fn a_forgotten_message_is_never_taken() {
        let mb = Mailbox::with_capacity(3, 30);
        for seq in 1..=3 {
            mb.hand_off(&msg(seq, 10));
        }
        mb.forget(2);
        mb.forget(9); // not queued: nothing happens
                      // Its place and its bytes are free again.
        mb.hand_off(&msg(4, 10));
        let t = mb.take(0, 10, usize::MAX);
        assert_eq!(seqs(&t), [1, 3, 4]);
        assert!(!t.overflow_drained);
    }

    #[tokio::test]
    async fn a_hand_off_wakes_the_task_even_before_it_waits() {
        let mb = Mailbox::new();
        mb.hand_off(&msg(1, 1));
        tokio::time::timeout(std::time::Duration::from_secs(1), mb.woken())
            .await
            .expect("the hand-off left a wake-up");
    }

    #[test]
    fn only_a_waiting_task_is_told_to_retry() {
        let mb = Mailbox::new();
        assert!(!mb.retry_if_waiting());
        mb.set_last_error("refused".into());
        assert_eq!(mb.error_while_waiting(), None);
        let w = mb.waiting();
        assert!(mb.retry_if_waiting());
        assert_eq!(mb.error_while_waiting().as_deref(), Some("refused"));
        drop(w);
        assert!(!mb.retry_if_waiting());
        assert_eq!(mb.error_while_waiting(), None);
        assert!(!mb.take_resync());
        mb.needs_resync();
        assert!(mb.take_resync());
        assert!(!mb.take_resync());
    }
}
