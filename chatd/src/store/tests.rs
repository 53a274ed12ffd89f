//! Schema 6 on a real SQLite file: the upgrade keeps every row, and a seq is never handed out
//! twice, even where retention before schema 6 had removed the newest rows.

use std::time::Duration;

use peerchat_db::rusqlite::params;
use peerchat_proto::peer::WireMessage;
use peerchat_proto::Name;

use super::{schema, InboxQuery, Received, Retention, Store};

fn name(s: &str) -> Name {
    Name::new(s.to_string()).expect("valid name")
}

fn received(id: &str) -> Received {
    Received {
        sender: "pa".into(),
        msg: WireMessage {
            id: id.into(),
            to: vec![name("me")],
            sent_at_ms: 1,
            body: format!("body {id}"),
        },
        authenticated: true,
    }
}

/// A database at schema 5 with three messages each way, whose newest rows retention removed
/// (as it could before schema 6): `sqlite_sequence` says 3, the largest seq is 2.
fn schema5_with_a_gap(path: &std::path::Path) {
    let conn = peerchat_db::open(path, &schema::MIGRATIONS[..5]).expect("schema 5");
    let old = 1_000i64; // long ago
    for seq in 1..=3i64 {
        conn.execute(
            "INSERT INTO inbox (sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated)
             VALUES ('pa', ?1, '[\"me\"]', 'old', 1, ?2, 1)",
            params![format!("in{seq}"), old],
        )
        .expect("inbox row");
        conn.execute(
            "INSERT INTO outbox (msg_id, recipients, body, created_at_ms) VALUES (?1, '[\"pb\"]', 'old', ?2)",
            params![format!("out{seq}"), old],
        )
        .expect("outbox row");
        conn.execute(
            "INSERT INTO deliveries (out_seq, recipient, state, updated_at_ms) VALUES (?1, 'pb', 'delivered', ?2)",
            params![seq, old],
        )
        .expect("delivery row");
    }
    conn.execute("DELETE FROM inbox WHERE seq = 3", [])
        .expect("remove newest inbox row");
    conn.execute("DELETE FROM outbox WHERE seq = 3", [])
        .expect("remove newest outbox row (cascades)");
}

#[tokio::test]
async fn upgrade_keeps_rows_and_never_reuses_a_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    schema5_with_a_gap(&path);
    let (store, thread) = Store::open(&path).expect("open at schema 6");

    // Every row survived the table rebuilds (dropping `outbox` did not cascade).
    let c = store.counts().await.expect("counts");
    assert_eq!((c.inbox, c.outbox, c.delivered), (2, 2, 2));

    // Retention keeps the newest row even when it is old, and removes delivery rows with
    // their message.
    let pruned = store
        .prune(Retention {
            max_age: Some(Duration::from_secs(3600)),
            max_count: None,
        })
        .await
        .expect("prune");
    assert_eq!((pruned.inbox, pruned.outbox), (1, 1));
    let c = store.counts().await.expect("counts");
    assert_eq!((c.inbox, c.outbox, c.delivered), (1, 1, 1));

    // New rows go above the old high-water mark (3), then continue from there.
    store
        .receive(vec![received("new1")])
        .await
        .expect("receive");
    store
        .receive(vec![received("new2")])
        .await
        .expect("receive");
    let seqs: Vec<i64> = store
        .inbox(InboxQuery {
            from: None,
            after: Some(0),
            limit: 10,
        })
        .await
        .expect("inbox")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [2, 4, 5]);
    let mut out = Vec::new();
    for id in ["s1", "s2"] {
        let o = store
            .submit_send(id.into(), true, vec![name("pb")], vec![], "hi".into())
            .expect("submit")
            .await
            .expect("reply")
            .expect("send");
        out.push(o.outgoing.expect("new message").seq);
    }
    assert_eq!(out, [4, 5]);
    drop(store);
    thread.join();

    // After a restart the floor is behind the largest seq: plain rowids from here on.
    let (store, _thread) = Store::open(&path).expect("reopen");
    store
        .receive(vec![received("new3")])
        .await
        .expect("receive");
    let last = store
        .inbox(InboxQuery {
            from: None,
            after: Some(5),
            limit: 10,
        })
        .await
        .expect("inbox");
    assert_eq!(last.iter().map(|r| r.seq).collect::<Vec<_>>(), [6]);
}
