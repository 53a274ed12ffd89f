//! What the delivery engine's unit tests share: messages, and a real store whose commits are
//! handed off, as chatd wires them to a mailbox.

use std::sync::Arc;

use peerchat_proto::{MsgId, Name};

use crate::store::{Outgoing, Store};

pub fn name(s: &str) -> Name {
    Name::new(s.to_string()).unwrap()
}

pub fn mid(s: &str) -> MsgId {
    MsgId::new(s).unwrap()
}

/// A message with seq `seq` (id `m{seq}`) and a body of `len` bytes, never stored.
pub fn msg(seq: i64, len: usize) -> Outgoing {
    Outgoing {
        seq,
        msg_id: Arc::from(format!("m{seq}")),
        recipients: Arc::from(vec![]),
        body: Arc::from("x".repeat(len)),
        created_at_ms: 1,
        group: None,
    }
}

/// A store in `dir` whose commits for any recipient are handed to `hand_off` (a mailbox's, in
/// the tests: this module stays below the modules it helps test).
pub fn open_store(
    dir: &tempfile::TempDir,
    hand_off: impl Fn(&Outgoing) + Send + Sync + 'static,
) -> Store {
    let (store, _thread) = Store::open(&dir.path().join("t.db")).unwrap();
    store.set_outgoing_sink(Box::new(move |_, m| hand_off(m)));
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
