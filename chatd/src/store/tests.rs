//! Schemas 6 to 8 on a real SQLite file: upgrades keep every row, a seq is never handed out
//! twice, and a recipient's pending floor never passes a pending row.

use std::time::Duration;

use peerchat_db::rusqlite::params;
use peerchat_proto::peer::WireMessage;
use peerchat_proto::Name;

use tokio_util::sync::CancellationToken;

use super::{schema, InboxQuery, Received, Retention, Store};

fn name(s: &str) -> Name {
    Name::new(s.to_string()).expect("valid name")
}

/// Sends "hi" to `to` with the caller-chosen id `id`; returns the committed outcome.
async fn send(store: &Store, id: &str, to: Vec<Name>) -> super::SendOutcome {
    store
        .submit_send(id.into(), true, to, vec![], "hi".into())
        .expect("submit")
        .await
        .expect("reply")
        .expect("send")
}

/// The first ten inbox rows.
async fn inbox_rows(store: &Store) -> Vec<super::InboxRow> {
    store
        .inbox(InboxQuery {
            from: None,
            after: Some(0),
            limit: 10,
        })
        .await
        .expect("inbox")
}

/// The msg_ids of the first ten inbox rows.
async fn inbox_ids(store: &Store) -> Vec<String> {
    inbox_rows(store)
        .await
        .into_iter()
        .map(|r| r.msg_id)
        .collect()
}

/// Retention by count 0: everything due but the newest rows.
async fn keep_only_the_newest(store: &Store) -> super::retention::Pruned {
    store
        .prune(
            Retention {
                max_age: None,
                max_count: Some(0),
            },
            &CancellationToken::new(),
        )
        .await
        .expect("prune")
}

/// What `receive` made of each message of `batch` (ids left out).
async fn arrivals(store: &Store, batch: Vec<Received>) -> Vec<super::Arrival> {
    store
        .receive(batch)
        .await
        .expect("receive")
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

fn received(id: &str) -> Received {
    Received {
        sender: "pa".into(),
        msg: WireMessage {
            id: peerchat_proto::MsgId::new(id).unwrap(),
            to: vec![name("me")],
            sent_at_ms: 1,
            body: format!("body {id}"),
            group: None,
        },
        authenticated: true,
        conv: None,
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
        .prune(
            Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_count: None,
            },
            &CancellationToken::new(),
        )
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
    let seqs: Vec<i64> = inbox_rows(&store).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [2, 4, 5]);
    let mut out = Vec::new();
    for id in ["s1", "s2"] {
        let o = send(&store, id, vec![name("pb")]).await;
        out.push(o.outgoing.expect("new message").seq);
    }
    assert_eq!(out, [4, 5]);
    drop(store);
    thread.join();

    // After a restart the mark is behind the largest seq: plain rowids from here on.
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

/// A database at schema 6: messages 1–3 to `pb` (1 delivered, 2 and 3 pending) and to `pc`
/// (all delivered).
fn schema6_with_pending(path: &std::path::Path) {
    let conn = peerchat_db::open(path, &schema::MIGRATIONS[..6]).expect("schema 6");
    for seq in 1..=3i64 {
        conn.execute(
            "INSERT INTO outbox (seq, msg_id, recipients, body, created_at_ms)
             VALUES (?1, ?2, '[\"pb\",\"pc\"]', 'old', 1000)",
            params![seq, format!("out{seq}")],
        )
        .expect("outbox row");
        let pb = if seq == 1 { "delivered" } else { "queued" };
        conn.execute(
            "INSERT INTO deliveries (out_seq, recipient, state, updated_at_ms) VALUES (?1, 'pb', ?2, 1000)",
            params![seq, pb],
        )
        .expect("delivery row pb");
        conn.execute(
            "INSERT INTO deliveries (out_seq, recipient, state, updated_at_ms) VALUES (?1, 'pc', 'delivered', 1000)",
            params![seq],
        )
        .expect("delivery row pc");
    }
}

fn floor(path: &std::path::Path, recipient: &str) -> Option<i64> {
    let conn = peerchat_db::rusqlite::Connection::open(path).expect("open");
    conn.query_row(
        "SELECT seq FROM pending_floor WHERE recipient = ?1",
        [recipient],
        |r| r.get(0),
    )
    .ok()
}

async fn pending_seqs(store: &Store, recipient: &str) -> Vec<i64> {
    let (batch, _) = store
        .take_batch(name(recipient), 0, 100, 1 << 20)
        .await
        .expect("take_batch");
    batch.iter().map(|m| m.seq).collect()
}

/// Schema 7: the pending floor starts right below each recipient's first pending row, moves up
/// only past rows that stopped being pending (delivered, cancelled, failed), never past a
/// pending one, and every query for pending rows finds exactly what the old index found.
#[tokio::test]
async fn pending_floor_never_passes_a_pending_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    schema6_with_pending(&path);
    let (store, _thread) = Store::open(&path).expect("open at schema 7");
    assert_eq!((floor(&path, "pb"), floor(&path, "pc")), (Some(1), Some(3)));
    assert!(store.has_pending(name("pb")).await.expect("has_pending"));
    assert!(!store.has_pending(name("pc")).await.expect("has_pending"));
    assert_eq!(
        store.pending_recipients().await.expect("pending"),
        ["pb".to_string()]
    );
    assert_eq!(pending_seqs(&store, "pb").await, [2, 3]);
    let c = store.counts().await.expect("counts");
    assert_eq!((c.queued, c.delivered), (2, 4));

    // A new message to both; a message to a new name.
    for (id, to) in [
        ("m4", vec![name("pb"), name("pc")]),
        ("m5", vec![name("pd")]),
    ] {
        send(&store, id, to).await;
    }
    assert_eq!(pending_seqs(&store, "pb").await, [2, 3, 4]);
    assert_eq!(pending_seqs(&store, "pc").await, [4]);
    assert_eq!(pending_seqs(&store, "pd").await, [5]);
    // A new name gets its floor with its first message, right below it.
    assert_eq!(floor(&path, "pd"), Some(4));
    let mut names = store.pending_recipients().await.expect("pending");
    names.sort();
    assert_eq!(names, ["pb", "pc", "pd"]);

    // Delivering 3 (out of order) must not move pb's floor past 2, which is still pending.
    store
        .mark_delivered_soon(name("pb"), vec![3], || ())
        .expect("delivered");
    wait_for_commit(&store).await;
    assert_eq!(floor(&path, "pb"), Some(1));
    assert_eq!(pending_seqs(&store, "pb").await, [2, 4]);

    // Cancelling 2 ends it: the floor moves to just below 4.
    let (_, cancelled) = store
        .cancel("out2".into())
        .await
        .expect("cancel")
        .expect("a message");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(floor(&path, "pb"), Some(3));
    assert_eq!(pending_seqs(&store, "pb").await, [4]);

    // A failure of 4 leaves nothing pending: the floor is the newest row of all (pd's 5).
    store
        .mark_failed(name("pb"), 4, "refused".into())
        .await
        .expect("failed");
    assert_eq!(floor(&path, "pb"), Some(5));
    assert!(!store.has_pending(name("pb")).await.expect("has_pending"));
    assert_eq!(pending_seqs(&store, "pb").await, Vec::<i64>::new());

    // The next message to pb is above the floor and found.
    send(&store, "m6", vec![name("pb")]).await;
    assert_eq!(pending_seqs(&store, "pb").await, [6]);
    let pending: Vec<(String, String)> = store
        .outbox_pending(10, None)
        .await
        .expect("outbox_pending")
        .0
        .into_iter()
        .map(|r| (r.msg_id, r.to.to_string()))
        .collect();
    assert_eq!(
        pending,
        [
            ("m4".to_string(), "pc".to_string()),
            ("m5".to_string(), "pd".to_string()),
            ("m6".to_string(), "pb".to_string())
        ]
    );
    let detail = store
        .message_detail("m4".into())
        .await
        .expect("detail")
        .expect("known message");
    assert_eq!(
        detail
            .iter()
            .map(|r| (r.to.to_string(), r.state.as_str()))
            .collect::<Vec<_>>(),
        [("pb".to_string(), "failed"), ("pc".to_string(), "queued")]
    );
}

/// Waits until the lazy `delivered` job has committed (it rides along with the next batch, or
/// commits on its own within 20 ms): a job submitted after it commits after it.
async fn wait_for_commit(store: &Store) {
    store.call(|_| Ok(())).await.expect("a later job");
}

/// The queries for a recipient's pending rows search the primary key from the floor; neither
/// reads the whole table.
#[test]
fn pending_queries_search_from_the_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let conn = peerchat_db::open(&path, schema::MIGRATIONS).expect("open");
    for sql in [
        super::outbox::TAKE_BATCH,
        super::outbox::HAS_PENDING,
        super::outbox::ADVANCE_FLOOR,
        super::outbox::ADVANCE_FLOOR_PAST,
    ] {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let args: Vec<&dyn peerchat_db::rusqlite::ToSql> = vec![&"pb", &0, &10];
        let n = stmt.parameter_count();
        let plan: Vec<String> = stmt
            .query_map(&args[..n], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("\n");
        assert!(
            plan.contains("SEARCH d USING PRIMARY KEY (out_seq>?)")
                || plan.contains("SEARCH deliveries USING PRIMARY KEY (out_seq>?)"),
            "{sql}\n{plan}"
        );
        assert!(
            !plan.contains("SCAN d") && !plan.contains("SCAN deliveries"),
            "{sql}\n{plan}"
        );
    }
}

/// `sent` rows are pending too (the floor stays below them), a final `sent` (seed peer) and an
/// expiry end them, and a window of acks (the range update) moves the floor like single acks.
#[tokio::test]
async fn floor_stays_below_sent_rows_and_passes_final_and_expired_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let (store, _thread) = Store::open(&path).expect("open");
    for id in ["m1", "m2", "m3"] {
        send(&store, id, vec![name("pb")]).await;
    }
    assert_eq!(floor(&path, "pb"), Some(0));
    store.mark_sent_soon(name("pb"), vec![1]).expect("sent");
    store
        .mark_delivered_soon(name("pb"), vec![2, 3], || ())
        .expect("delivered");
    wait_for_commit(&store).await;
    let c = store.counts().await.expect("counts");
    assert_eq!((c.sent, c.delivered), (1, 2));
    // 1 is `sent`, still pending: the floor must not pass it.
    assert_eq!(floor(&path, "pb"), Some(0));
    assert_eq!(pending_seqs(&store, "pb").await, [1]);

    // A seed peer's final `sent` ends it: nothing is pending, the floor is the newest row.
    store.mark_sent_final(name("pb"), 1).await.expect("final");
    assert_eq!(floor(&path, "pb"), Some(3));
    assert!(!store.has_pending(name("pb")).await.expect("has_pending"));

    // An expired message ends too.
    send(&store, "m4", vec![name("pb")]).await;
    assert_eq!(pending_seqs(&store, "pb").await, [4]);
    let cutoff = peerchat_db::now_ms() + 60_000;
    assert_eq!(
        store
            .expire(name("pb"), cutoff, "too old".into())
            .await
            .expect("expire"),
        1
    );
    assert_eq!(floor(&path, "pb"), Some(4));
    assert_eq!(pending_seqs(&store, "pb").await, Vec::<i64>::new());
}

/// After a window of acks the floor's scan starts past the window only if nothing was pending
/// below it: with an unacknowledged message below the window, the floor stays below that one.
#[tokio::test]
async fn a_window_of_acks_moves_the_floor_past_it_only_if_nothing_below_is_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let (store, _thread) = Store::open(&path).expect("open");
    for i in 1..=4 {
        send(&store, &format!("m{i}"), vec![name("pb")]).await;
    }
    // 1 is still pending below the window 2..4: the floor stays below it.
    store
        .mark_delivered_soon(name("pb"), vec![2, 3, 4], || ())
        .expect("delivered");
    wait_for_commit(&store).await;
    assert_eq!(floor(&path, "pb"), Some(0));
    assert_eq!(pending_seqs(&store, "pb").await, [1]);
    store
        .mark_delivered_soon(name("pb"), vec![1], || ())
        .expect("delivered");
    wait_for_commit(&store).await;
    assert_eq!(floor(&path, "pb"), Some(4));

    // Floor at 4, window 5..7 with 8 still in flight: the floor goes to 7, right below 8.
    for i in 5..=8 {
        send(&store, &format!("m{i}"), vec![name("pb")]).await;
    }
    send(&store, "other", vec![name("pc")]).await; // seq 9, another recipient
    store
        .mark_delivered_soon(name("pb"), vec![5, 6, 7], || ())
        .expect("delivered");
    wait_for_commit(&store).await;
    assert_eq!(floor(&path, "pb"), Some(7));
    assert_eq!(pending_seqs(&store, "pb").await, [8]);
    // The last one: nothing pending, the floor is the newest row of any recipient.
    store
        .mark_delivered_soon(name("pb"), vec![8], || ())
        .expect("delivered");
    wait_for_commit(&store).await;
    assert_eq!(floor(&path, "pb"), Some(9));
    assert_eq!(pending_seqs(&store, "pb").await, Vec::<i64>::new());
    assert_eq!(pending_seqs(&store, "pc").await, [9]);
}

/// A key already in the inbox with another body is a different message under a reused id: it
/// is reported as a conflict (to be refused), not as a repeat (which would be acknowledged and
/// lost). The same body again is a repeat.
#[tokio::test]
async fn a_reused_id_with_another_body_is_a_conflict_not_a_repeat() {
    use super::Arrival;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _thread) = Store::open(&dir.path().join("node.db")).expect("open");
    let with_body = |body: &str| {
        let mut r = received("m1");
        r.msg.body = body.into();
        r
    };
    let first = arrivals(&store, vec![with_body("one")]).await;
    assert_eq!(first, [Arrival::New]);
    let again = arrivals(
        &store,
        vec![with_body("two"), with_body("one"), received("m2")],
    )
    .await;
    assert_eq!(again, [Arrival::Conflict, Arrival::Repeat, Arrival::New]);
    let bodies: Vec<String> = inbox_rows(&store)
        .await
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies, ["one", "body m2"]);
}

/// After retention removed a message, its key and body digest stay in `inbox_seen`: the same
/// body again is a repeat, another body under that id is a conflict. A key kept before schema 8
/// has no digest and stays a repeat.
#[tokio::test]
async fn a_reused_id_is_a_conflict_even_after_retention_removed_the_message() {
    use super::Arrival;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    {
        let conn = peerchat_db::open(&path, &schema::MIGRATIONS[..7]).expect("schema 7");
        conn.execute(
            "INSERT INTO inbox_seen (sender, msg_id, received_at_ms) VALUES ('pa', 'm0', ?1)",
            params![peerchat_db::now_ms() as i64],
        )
        .expect("old key");
    }
    let (store, _thread) = Store::open(&path).expect("open");
    let with_body = |id: &str, body: &str| {
        let mut r = received(id);
        r.msg.body = body.into();
        r
    };
    let first = arrivals(
        &store,
        vec![with_body("m1", "one"), with_body("m2", "newest")],
    )
    .await;
    assert_eq!(first, [Arrival::New, Arrival::New]);
    // Count 0 removes everything but the newest row (m2).
    let pruned = keep_only_the_newest(&store).await;
    assert_eq!(pruned.inbox, 1);
    let again = arrivals(
        &store,
        vec![
            with_body("m1", "two"),
            with_body("m1", "one"),
            with_body("m0", "anything"),
        ],
    )
    .await;
    assert_eq!(again, [Arrival::Conflict, Arrival::Repeat, Arrival::Repeat]);
    let ids = inbox_ids(&store).await;
    assert_eq!(ids, ["m2"]);
}

/// In a database whose `inbox_seen` started empty (so received messages skip the lookup there),
/// the first prune turns the lookup on: a resend of a removed message is still a repeat.
#[tokio::test]
async fn a_resend_of_a_removed_message_is_a_repeat_after_the_first_prune() {
    use super::Arrival;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _thread) = Store::open(&dir.path().join("node.db")).expect("open");
    let first = arrivals(&store, vec![received("m1"), received("m2")]).await;
    assert_eq!(first, [Arrival::New, Arrival::New]);
    let pruned = keep_only_the_newest(&store).await;
    assert_eq!(pruned.inbox, 1);
    assert_eq!(
        arrivals(&store, vec![received("m1")]).await,
        [Arrival::Repeat]
    );
    let ids = inbox_ids(&store).await;
    assert_eq!(ids, ["m2"]);
}

/// Retention works in rounds of at most `chunk` rows per table (other jobs run in between), and
/// an undelivered message at the start does not hold up the finished ones after it.
#[tokio::test]
async fn retention_removes_in_rounds_and_skips_undelivered_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _thread) = Store::open(&dir.path().join("node.db")).expect("open");
    let batch: Vec<Received> = (1..=25).map(|i| received(&format!("in{i}"))).collect();
    assert_eq!(arrivals(&store, batch).await.len(), 25);
    for i in 1..=25 {
        send(&store, &format!("out{i}"), vec![name("pb")]).await;
    }
    // out1 stays queued; the others are finished (cancelled).
    for i in 2..=25 {
        store.cancel(format!("out{i}")).await.expect("cancel");
    }
    let pruned = store
        .prune_in_rounds(
            Retention {
                max_age: None,
                max_count: Some(0),
            },
            10,
            &CancellationToken::new(),
        )
        .await
        .expect("prune");
    assert_eq!(
        (pruned.inbox, pruned.outbox, pruned.rounds),
        (24, 23, 3),
        "everything but the newest rows and the undelivered message, 10 per round"
    );
    let ids = inbox_ids(&store).await;
    assert_eq!(ids, ["in25"]);
    for (id, kept) in [
        ("out1", true),
        ("out2", false),
        ("out24", false),
        ("out25", true),
    ] {
        let found = store.message_detail(id.into()).await.expect("detail");
        assert_eq!(found.is_some(), kept, "{id}");
    }
}

/// The same by age: only rows older than the limit go, oldest first, in rounds, never an
/// undelivered message; and nothing at all once chatd is stopping.
#[tokio::test]
async fn retention_by_age_removes_in_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let (store, _thread) = Store::open(&path).expect("open");
    let batch: Vec<Received> = (1..=25).map(|i| received(&format!("in{i}"))).collect();
    assert_eq!(arrivals(&store, batch).await.len(), 25);
    for i in 1..=25 {
        send(&store, &format!("out{i}"), vec![name("pb")]).await;
        if i > 1 {
            store.cancel(format!("out{i}")).await.expect("cancel");
        }
    }
    // The first 20 of each are two hours old.
    let conn = peerchat_db::open(&path, schema::MIGRATIONS).expect("second connection");
    conn.execute_batch(
        "UPDATE inbox SET received_at_ms = 1 WHERE seq <= 20;
         UPDATE outbox SET created_at_ms = 1 WHERE seq <= 20;",
    )
    .expect("age rows");
    drop(conn);
    let age = Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_count: None,
    };
    let stopping = CancellationToken::new();
    stopping.cancel();
    let none = store
        .prune_in_rounds(age.clone(), 10, &stopping)
        .await
        .expect("prune");
    assert_eq!((none.inbox, none.outbox, none.rounds), (0, 0, 0));
    let pruned = store
        .prune_in_rounds(
            Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_count: None,
            },
            10,
            &CancellationToken::new(),
        )
        .await
        .expect("prune");
    assert_eq!((pruned.inbox, pruned.outbox, pruned.rounds), (20, 19, 3));
    let ids = inbox_ids(&store).await;
    assert_eq!(ids, ["in21", "in22", "in23", "in24", "in25"]);
    for (id, kept) in [
        ("out1", true),
        ("out2", false),
        ("out20", false),
        ("out21", true),
    ] {
        let found = store.message_detail(id.into()).await.expect("detail");
        assert_eq!(found.is_some(), kept, "{id}");
    }
}

/// Right after a window's range update, `ADVANCE_FLOOR_PAST` sets the same floor as the full
/// scan (`ADVANCE_FLOOR`), and never one past a pending row: on many random outboxes (states,
/// final flags, another recipient's rows in between, every floor the invariant allows) and
/// windows.
#[test]
fn the_floor_after_a_window_is_the_same_with_either_scan() {
    use super::outbox::{ADVANCE_FLOOR, ADVANCE_FLOOR_PAST, DELIVERED_RANGE};
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = peerchat_db::open(&dir.path().join("node.db"), schema::MIGRATIONS).expect("open");
    // A scratch database: no fsync per statement.
    conn.pragma_update(None, "synchronous", "OFF")
        .expect("synchronous");
    let mut seed: u64 = 7;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let states = ["queued", "sent", "delivered", "failed", "cancelled"];
    let pending_below = |after: i64| -> Option<i64> {
        conn.query_row(
            "SELECT MIN(out_seq) FROM deliveries WHERE recipient = 'pb' AND out_seq > ?1
               AND state IN ('queued','sent') AND final = 0",
            [after],
            |r| r.get(0),
        )
        .expect("first pending")
    };
    for case in 0..500 {
        let rows: Vec<(&str, &str, i64)> = (1..=10)
            .map(|_| {
                let to = if next(3) == 0 { "pc" } else { "pb" };
                let state = states[next(5) as usize];
                (to, state, (state == "sent" && next(2) == 0) as i64)
            })
            .collect();
        let (first, last) = {
            let first = 1 + next(10) as i64;
            (first, first + next((11 - first) as u64) as i64)
        };
        let mut floors = Vec::new();
        let mut floor_max = None;
        for past in [false, true] {
            conn.execute_batch("DELETE FROM deliveries; DELETE FROM pending_floor;")
                .expect("reset");
            for (seq, (to, state, fin)) in rows.iter().enumerate() {
                conn.execute(
                    "INSERT INTO deliveries (out_seq, recipient, state, final, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 0)",
                    params![seq as i64 + 1, to, state, fin],
                )
                .expect("row");
            }
            // Any floor the invariant allows: below pb's first pending row.
            let max = *floor_max.get_or_insert_with(|| pending_below(0).map_or(10, |p| p - 1));
            let f = (case as i64 * 7919) % (max + 1);
            conn.execute("INSERT INTO pending_floor VALUES ('pb', ?1)", [f])
                .expect("floor");
            conn.execute(DELIVERED_RANGE, params!["pb", first, last, 0])
                .expect("range");
            if past {
                conn.execute(ADVANCE_FLOOR_PAST, params!["pb", first, last])
            } else {
                conn.execute(ADVANCE_FLOOR, params!["pb"])
            }
            .expect("advance");
            let floor: i64 = conn
                .query_row(
                    "SELECT seq FROM pending_floor WHERE recipient = 'pb'",
                    [],
                    |r| r.get(0),
                )
                .expect("floor");
            if let Some(p) = pending_below(0) {
                assert!(floor < p, "case {case}: floor {floor} passed pending {p}");
            }
            floors.push(floor);
        }
        assert_eq!(
            floors[0], floors[1],
            "case {case}: rows {rows:?}, window {first}..={last}"
        );
    }
}

/// Schema 9 gives the messages of a schema-8 database their timeline entries, in local time
/// order, and indexes their bodies: history interleaves them and search finds them (CJK too).
#[tokio::test]
async fn messages_from_schema_8_get_a_timeline_and_an_index() {
    use peerchat_proto::control::{ConvKey, Direction};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    {
        let conn = peerchat_db::open(&path, &schema::MIGRATIONS[..8]).expect("schema 8");
        conn.execute_batch(
            "INSERT INTO inbox (seq, sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated)
                VALUES (1, 'pb', 'i1', '[\"me\"]', 'hello 你好吗朋友', 1, 2000, 1);
             INSERT INTO outbox (seq, msg_id, recipients, body, created_at_ms)
                VALUES (1, 'o1', '[\"pb\",\"pc\"]', 'first out', 1000),
                       (2, 'o2', '[\"pb\"]', 'second out', 3000);
             INSERT INTO deliveries (out_seq, recipient, state, updated_at_ms)
                VALUES (1, 'pb', 'delivered', 1000), (1, 'pc', 'queued', 1000),
                       (2, 'pb', 'queued', 3000);",
        )
        .expect("old rows");
    }
    let (store, _thread) = Store::open(&path).expect("open");
    let me = name("me");
    let page = store
        .history(
            ConvKey::Peer(name("pb")),
            super::Page::Newest,
            50,
            me.clone(),
        )
        .await
        .expect("history");
    let got: Vec<(&str, Direction)> = page
        .entries
        .iter()
        .map(|e| (e.body.as_str(), e.direction))
        .collect();
    assert_eq!(
        got,
        [
            ("first out", Direction::Out),
            ("hello 你好吗朋友", Direction::In),
            ("second out", Direction::Out)
        ]
    );
    let pc = store
        .history(
            ConvKey::Peer(name("pc")),
            super::Page::Newest,
            50,
            me.clone(),
        )
        .await
        .expect("history");
    assert_eq!(pc.entries.len(), 1);
    for text in ["你好", "你好吗", "OUT"] {
        let (hits, _) = store
            .search(
                super::SearchQuery {
                    text: text.into(),
                    with: None,
                    from: None,
                    before: None,
                    after: None,
                    limit: 10,
                },
                me.clone(),
            )
            .await
            .expect("search");
        let want = if text == "OUT" { 2 } else { 1 };
        assert_eq!(hits.len(), want, "{text}");
    }
}

/// The feed's large rows live while the newest `LARGE_ROWS_BYTES` of them do: a follower that
/// keeps up takes them from memory, one that falls further behind reads the database.
#[test]
fn large_feed_rows_are_held_within_their_byte_budget() {
    let mut large = super::LargeRows::default();
    let body_len = 1 << 20;
    let rows: Vec<_> = (1..=12)
        .map(|seq| {
            large.keep(super::InboxRow {
                seq,
                sender: "pa".into(),
                msg_id: format!("m{seq}"),
                recipients: Vec::new(),
                body: "b".repeat(body_len),
                sent_at_ms: 0,
                received_at_ms: 0,
                authenticated: true,
            })
        })
        .collect();
    let alive: Vec<i64> = rows
        .iter()
        .filter_map(|item| match item {
            super::FeedItem::Large { seq, row } => row.upgrade().map(|r| {
                assert_eq!(r.seq, *seq);
                *seq
            }),
            super::FeedItem::Row(_) => panic!("a large row must be a weak reference"),
        })
        .collect();
    let kept = super::LARGE_ROWS_BYTES / body_len;
    assert_eq!(alive, ((12 - kept as i64 + 1)..=12).collect::<Vec<_>>());
}

/// Retention takes a removed message's timeline rows, index entry and delivery events with it
/// (same transaction), and an `events` stream resuming from before them is told of the gap.
#[tokio::test]
async fn retention_removes_timeline_rows_index_entries_and_marks_the_gap() {
    use super::{Page, SearchQuery};
    use peerchat_proto::control::ConvKey;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _thread) = Store::open(&dir.path().join("node.db")).expect("open");
    let me = name("me");
    let batch: Vec<Received> = (1..=5).map(|i| received(&format!("in{i}"))).collect();
    assert_eq!(arrivals(&store, batch).await.len(), 5);
    for i in 1..=5 {
        send(&store, &format!("out{i}"), vec![name("pb")]).await;
        store.cancel(format!("out{i}")).await.expect("cancel");
    }
    let (newest_before, gap) = store.events_start(Some(0)).await.expect("start");
    assert!(!gap, "nothing pruned yet");
    let rows = |table: &'static str| {
        let store = store.clone();
        async move {
            store
                .call(move |c| {
                    Ok(
                        c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                            r.get::<_, i64>(0)
                        })?,
                    )
                })
                .await
                .expect("count")
        }
    };
    assert_eq!(rows("bodies").await, 10);
    let pruned = keep_only_the_newest(&store).await;
    assert_eq!((pruned.inbox, pruned.outbox), (4, 4));
    // in5 and out5 stay: one index entry each; the events rows of the other eight are gone
    // (out5's delivery event is the newest and stays anyway).
    assert_eq!(rows("bodies").await, 2, "index entries of removed messages");
    let timeline: i64 = store
        .call(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM events e
                 WHERE (e.kind = 1 AND e.ref NOT IN (SELECT seq FROM inbox))
                    OR (e.kind IN (2, 3) AND e.ref NOT IN (SELECT seq FROM outbox))",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("count");
    assert_eq!(timeline, 0, "events rows of removed messages");
    let page = |conv: &str| {
        let store = store.clone();
        let conv = ConvKey::parse(conv).expect("key");
        let me = me.clone();
        async move {
            store
                .history(conv, Page::Newest, 50, me)
                .await
                .expect("history")
                .entries
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("pa").await, ["in5"]);
    assert_eq!(page("pb").await, ["out5"]);
    let (hits, _) = store
        .search(
            SearchQuery {
                text: "body in".into(),
                with: None,
                from: None,
                before: None,
                after: None,
                limit: 50,
            },
            me.clone(),
        )
        .await
        .expect("search");
    let ids: Vec<_> = hits.into_iter().map(|h| h.entry.id).collect();
    assert_eq!(ids, ["in5"]);
    let (newest, gap) = store.events_start(Some(0)).await.expect("start");
    assert_eq!(
        newest, newest_before,
        "the newest event stays: cursors are never reused"
    );
    assert!(gap, "resuming from before pruned events");
    let (_, gap) = store.events_start(Some(newest)).await.expect("start");
    assert!(!gap, "resuming from the newest cursor");
    let (_, gap) = store.events_start(None).await.expect("start");
    assert!(!gap, "a fresh stream");
}
