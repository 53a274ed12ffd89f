//! What the delivery engine's unit tests share: messages, and a real store whose commits are
//! handed off to a mailbox, as chatd wires them.

use std::sync::Arc;

use peerchat_proto::Name;

use super::mailbox::Mailbox;
use crate::store::{Outgoing, Store};

pub fn name(s: &str) -> Name {
    Name::new(s.to_string()).unwrap()
}

/// A message with seq `seq` (id `m{seq}`) and a body of `len` bytes, never stored.
pub fn msg(seq: i64, len: usize) -> Outgoing {
    Outgoing {
        seq,
        msg_id: Arc::from(format!("m{seq}")),
        recipients: Arc::from(vec![]),
        body: Arc::from("x".repeat(len)),
        created_at_ms: 1,
    }
}

/// A store in `dir` whose commits for any recipient are handed off to `mailbox`.
pub fn open_store(dir: &tempfile::TempDir, mailbox: &Arc<Mailbox>) -> Store {
    let (store, _thread) = Store::open(&dir.path().join("t.db")).unwrap();
    let mb = mailbox.clone();
    store.set_outgoing_sink(Box::new(move |_, m| mb.hand_off(m)));
    store
}

/// Queues `body` for "pb"; returns the committed message.
pub async fn send(store: &Store, body: &str) -> Outgoing {
    store
        .submit_send(
            uuid::Uuid::now_v7().to_string(),
            false,
            vec![name("pb")],
            vec![],
            body.into(),
        )
        .unwrap()
        .await
        .unwrap()
        .unwrap()
        .outgoing
        .unwrap()
}
