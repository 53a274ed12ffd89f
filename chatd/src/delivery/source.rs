//! Where a link's next messages come from: the database until the link has caught up, then the
//! recipient's [`Mailbox`] (no database round trip between acceptance and the wire).
//!
//! Why nothing is skipped or sent twice: the mailbox is emptied right before every database
//! read. A message committed before that read is in what it returns (or in a later read, while
//! a limit cut it short); one committed after the read is handed off after it, so it is in the
//! queue; one in both is dropped by its seq (`take` skips seqs the link already passed).
//! Everything is in `seq` order: the database by its index, the queue by commit order. When
//! the queue overflowed, it is drained first, then the reads resume after the last message
//! taken.

use peerchat_proto::Name;

use super::mailbox::Mailbox;
use super::window::Room;
use crate::store::{Outgoing, Store, StoreError};

pub struct Source {
    from_db: bool,
    /// The last seq taken (the link writes everything it takes, in order).
    last_seq: i64,
}

impl Source {
    /// A new link starts from the oldest pending message, in the database.
    pub fn new() -> Source {
        Source {
            from_db: true,
            last_seq: 0,
        }
    }

    /// The next messages for `to` that fit in `room`, oldest first; empty when there is nothing
    /// more for now (a hand-off wakes the link).
    pub async fn next(
        &mut self,
        store: &Store,
        to: &Name,
        mailbox: &Mailbox,
        room: Room,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let batch = if self.from_db {
            self.read(store, to, mailbox, room).await?
        } else {
            let taken = mailbox.take(self.last_seq, room.messages, room.bytes);
            // The queue stopped taking messages when it was full: once it is drained, the rest
            // is read from the database (which resets the queue).
            self.from_db = taken.overflow_drained;
            if taken.messages.is_empty() && self.from_db {
                self.read(store, to, mailbox, room).await?
            } else {
                taken.messages
            }
        };
        if let Some(m) = batch.last() {
            self.last_seq = m.seq;
        }
        Ok(batch)
    }

    async fn read(
        &mut self,
        store: &Store,
        to: &Name,
        mailbox: &Mailbox,
        room: Room,
    ) -> Result<Vec<Outgoing>, StoreError> {
        mailbox.reset();
        let (batch, more_in_db) = store
            .take_batch(to.clone(), self.last_seq, room.messages, room.bytes)
            .await?;
        // Caught up: from now on the mailbox has everything newer.
        self.from_db = more_in_db;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::{name, open_store, send};
    use super::*;

    fn room(messages: usize) -> Room {
        Room {
            messages,
            bytes: usize::MAX,
        }
    }

    async fn take(source: &mut Source, store: &Store, mb: &Mailbox, n: usize) -> Vec<i64> {
        let batch = source.next(store, &name("pb"), mb, room(n)).await.unwrap();
        batch.iter().map(|m| m.seq).collect()
    }

    #[tokio::test]
    async fn a_link_catches_up_from_the_database_then_streams_hand_offs() {
        let dir = tempfile::tempdir().unwrap();
        let mb = Arc::new(Mailbox::new());
        let store = open_store(&dir, {
            let mb = mb.clone();
            move |m| mb.hand_off(m)
        });
        let mut earlier = vec![];
        for i in 0..5 {
            earlier.push(send(&store, &format!("early {i}")).await.seq);
        }
        let mut source = Source::new();
        // The database, in limited reads; what was handed off meanwhile is not sent twice.
        assert_eq!(take(&mut source, &store, &mb, 3).await, earlier[..3]);
        assert_eq!(take(&mut source, &store, &mb, 3).await, earlier[3..]);
        assert!(take(&mut source, &store, &mb, 3).await.is_empty());
        // Caught up: new messages come from the mailbox.
        let later = [send(&store, "a").await.seq, send(&store, "b").await.seq];
        let mut batch = source
            .next(&store, &name("pb"), &mb, room(10))
            .await
            .unwrap();
        assert_eq!(batch.iter().map(|m| m.seq).collect::<Vec<_>>(), later);
        assert_eq!(&*batch.remove(1).body, "b");
    }

    #[tokio::test]
    async fn after_an_overflow_the_rest_is_read_from_the_database_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mb = Arc::new(Mailbox::with_capacity(4, usize::MAX));
        let store = open_store(&dir, {
            let mb = mb.clone();
            move |m| mb.hand_off(m)
        });
        let mut source = Source::new();
        assert!(take(&mut source, &store, &mb, 10).await.is_empty());
        let mut sent = vec![];
        for i in 0..11 {
            sent.push(send(&store, &format!("m{i}")).await);
        }
        // A message cancelled before the link took it never goes (as `cancel` does it).
        let cancelled: Outgoing = sent.remove(1);
        store.cancel(cancelled.msg_id.to_string()).await.unwrap();
        mb.forget(cancelled.seq);
        let sent: Vec<i64> = sent.iter().map(|m| m.seq).collect();
        let mut got = vec![];
        loop {
            let batch = take(&mut source, &store, &mb, 2).await;
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 2);
            got.extend(batch);
        }
        assert_eq!(got, sent, "in order, each once, nothing lost");
    }
}
