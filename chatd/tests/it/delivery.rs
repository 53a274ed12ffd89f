//! Delivery, ordering, dedup, retries, cancels, groups, broadcast and retention between nodes
//! in this process (`chatd::run` and `registryd::run` through `testkit::inproc`), driven over
//! their real control sockets and peer ports. Moved from `chatctl/tests/e2e.rs`, where the CLI's
//! own behaviour (output, exit codes, pipes, cursor files) is still tested against the binaries;
//! a chatctl exit code 0 is an `accepted` reply here, 4 `unknown_name`, 7 `conflict`.

use std::time::Duration;

use peerchat_proto::control::{code, DeliveryState, Request, Response};
use peerchat_testkit::inproc::{
    accepted_id, fast_retry, name, send_request, InProcNet, InProcNode,
};
use peerchat_testkit::wait_for;

const T: Duration = Duration::from_secs(10);

/// `chatctl send --wait[=SECS]` with exit code 0: sent, and delivered to every recipient.
fn delivered(node: &InProcNode, request: Request, within: Duration) -> String {
    let id = accepted_id(node.call(request));
    let reply = node.call(Request::Wait {
        msg_id: id.clone(),
        timeout_ms: Some(within.as_millis() as u64),
    });
    let Ok(Response::MessageInfo(info)) = reply else {
        panic!("wait {id}: {reply:?}");
    };
    assert!(
        info.recipients
            .iter()
            .all(|r| r.state == DeliveryState::Delivered),
        "{info:?}"
    );
    id
}

fn outbox_is_empty(node: &InProcNode) -> bool {
    match node.call(Request::Outbox {
        limit: None,
        after: None,
    }) {
        Ok(Response::Outbox { entries, .. }) => entries.is_empty(),
        other => panic!("outbox: {other:?}"),
    }
}

#[test]
fn messages_to_a_stopped_peer_arrive_after_it_returns() {
    let net = InProcNet::new();
    let pa = net.node_with("pa", fast_retry(0.1, 0.5));
    let mut pb = net.node("pb");
    pb.stop();
    for i in 0..5 {
        pa.sent("pb", &format!("while down {i}"));
    }
    pb.restart();
    let want: Vec<String> = (0..5).map(|i| format!("while down {i}")).collect();
    assert_eq!(pb.wait_inbox(5, T), want);
}

/// Stopping the registry (here `run` returns and drops every connection; the binaries' kill -9
/// of registryd is in `chatctl/tests/e2e.rs`) leaves known peers reachable.
#[test]
fn registry_down_keeps_known_peers_reachable() {
    let mut net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    pa.sent("pb", "before");
    pb.wait_inbox(1, T);
    net.registry.stop();
    pa.sent("pb", "during outage");
    assert_eq!(pb.wait_inbox(2, T), vec!["before", "during outage"]);
    // A name never seen cannot be resolved now: accepted and queued, with a note that says
    // so (it is resolved when the registry answers), never a hang.
    let reply = pa.send("stranger", "hi");
    let Ok(Response::Accepted { recipients, .. }) = &reply else {
        panic!("send stranger: {reply:?}");
    };
    assert_eq!(recipients[0].state, DeliveryState::Queued, "{reply:?}");
    let note = recipients[0].error.as_deref().unwrap_or_default();
    assert!(note.contains("resolving"), "{reply:?}");
    let Ok(Response::Status(s)) = pa.call(Request::Status) else {
        panic!("status");
    };
    assert!(!s.registry_reachable);
    let Ok(Response::Peers { peers, .. }) = pa.call(Request::Peers) else {
        panic!("peers");
    };
    assert!(peers.iter().any(|p| p.name.as_str() == "pb"), "{peers:?}");
}

#[test]
fn a_failing_group_member_does_not_block_the_others() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    pa.call(Request::GroupCreate {
        group: name("g"),
        members: vec![name("pb"), name("never-registered")],
    })
    .expect("group create");
    let reply = pa.send("@g", "hello group");
    let Ok(Response::Accepted { recipients, .. }) = reply else {
        panic!("send @g: {reply:?}");
    };
    // A recipient failed at once (chatctl's exit code 6).
    let ghost = recipients
        .iter()
        .find(|x| x.to.as_str() == "never-registered")
        .unwrap();
    assert_eq!(ghost.state, DeliveryState::Failed);
    assert!(ghost.error.as_deref().unwrap().contains("unknown name"));
    assert_eq!(pb.wait_inbox(1, T), vec!["hello group"]);
    // Typed by name, an unknown recipient refuses the whole send instead.
    let err = pa.send("pb,never-registered", "typo").unwrap_err();
    assert_eq!(err.code, code::UNKNOWN_NAME, "{err:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pb.bodies(), vec!["hello group"], "nothing half-sent");
}

/// A broadcast goes to the names online now (broadcast.rs has the seed names and the limits).
#[test]
fn broadcast_reaches_every_other_name_online() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let mut pc = net.node("pc");
    pc.stop();
    let to = wait_for(T, "pc to show offline", || {
        let reply = pa.call(Request::Send {
            to: Vec::new(),
            groups: Vec::new(),
            broadcast: true,
            body: "all hands".into(),
            msg_id: None,
            conversation: None,
        });
        let Ok(Response::Accepted { recipients, .. }) = reply else {
            panic!("broadcast: {reply:?}");
        };
        let to: Vec<String> = recipients.iter().map(|r| r.to.to_string()).collect();
        (to == ["pb"]).then_some(to)
    });
    assert_eq!(to, ["pb"], "everyone online but ourselves");
    assert_eq!(pb.wait_inbox(1, T)[0], "all hands");
    assert!(pa.bodies().is_empty());
}

/// When recording `delivered` fails (here a trigger in the sender's real database refuses it),
/// the acknowledgement is lost with the transaction, so the link starts over from the database:
/// the message goes out again, the recipient answers it as a repeat, and once the database
/// takes writes again it is `delivered`. It is stored once, and what follows keeps its order.
#[test]
fn a_failed_delivered_update_resends_from_the_database() {
    let net = InProcNet::new();
    let mut pa = net.node_with("pa", fast_retry(0.1, 0.5));
    let pb = net.node("pb");
    delivered(
        &pa,
        send_request("pb", "one", None),
        Duration::from_secs(60),
    );

    let db = rusqlite::Connection::open(&pa.db).unwrap();
    db.busy_timeout(T).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_delivered BEFORE UPDATE OF state ON deliveries
         WHEN NEW.state = 'delivered'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    let id = pa.sent("pb", "two");
    pb.wait_inbox(2, T);
    wait_for(T, "the link to start over from the database", || {
        pa.log_text()
            .contains("recording deliveries failed; starting over from the database")
            .then_some(())
    });
    // Read from the database itself: a `status` call could share the failing transaction.
    let state = |db: &rusqlite::Connection| -> String {
        db.query_row(
            "SELECT d.state FROM deliveries d JOIN outbox o ON o.seq = d.out_seq
             WHERE o.msg_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_ne!(state(&db), "delivered", "the trigger held the update back");

    db.execute_batch("DROP TRIGGER no_delivered").unwrap();
    wait_for(Duration::from_secs(30), "two to be delivered", || {
        (state(&db) == "delivered").then_some(())
    });
    delivered(
        &pa,
        send_request("pb", "three", None),
        Duration::from_secs(60),
    );
    assert_eq!(pb.wait_inbox(3, T), ["one", "two", "three"]);
    pa.stop();
}

#[test]
fn order_holds_per_recipient_with_mixed_sends() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let pc = net.node("pc");
    pa.call(Request::GroupCreate {
        group: name("both"),
        members: vec![name("pb"), name("pc")],
    })
    .expect("group create");
    // Pipelined on one connection, as `chatctl send -l @both` sends its lines.
    let requests = (0..300)
        .map(|i| send_request("@both", &format!("m{i}"), None))
        .collect();
    for reply in pa.control().pipeline(requests) {
        accepted_id(reply);
    }
    let want: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    assert_eq!(pb.wait_inbox(300, T), want);
    assert_eq!(pc.wait_inbox(300, T), want);
}

#[test]
fn cancel_stops_retries() {
    let net = InProcNet::new();
    let pa = net.node_with("pa", fast_retry(0.1, 0.2));
    let mut pb = net.node("pb");
    pb.stop();
    let id = pa.sent("pb", "never mind");
    pa.sent("pb", "this one counts");
    let reply = pa.call(Request::Cancel { msg_id: id });
    let Ok(Response::MessageInfo(info)) = reply else {
        panic!("cancel: {reply:?}");
    };
    assert_eq!(info.recipients[0].state, DeliveryState::Cancelled);
    pb.restart();
    assert_eq!(pb.wait_inbox(1, T), vec!["this one counts"]);
    assert!(outbox_is_empty(&pa), "nothing left pending");
    assert_eq!(
        pb.bodies(),
        vec!["this one counts"],
        "the cancelled message never arrived"
    );
}

#[test]
fn send_with_id_is_idempotent() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    for _ in 0..3 {
        accepted_id(pa.call(send_request("pb", "exactly once", Some("job-42"))));
    }
    let err = pa
        .call(send_request("pb", "a different body", Some("job-42")))
        .unwrap_err();
    assert_eq!(err.code, code::CONFLICT, "same id, other body: {err:?}");
    assert_eq!(pb.wait_inbox(1, T), vec!["exactly once"]);
    delivered(
        &pa,
        send_request("pb", "later", Some("job-43")),
        Duration::from_secs(10),
    );
    assert_eq!(pb.bodies(), vec!["exactly once", "later"]);
}

#[test]
fn retention_by_count_keeps_the_newest() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let mut pb = net.node("pb");
    let requests = (0..10)
        .map(|i| send_request("pb", &format!("r{i}"), None))
        .collect();
    for reply in pa.control().pipeline(requests) {
        accepted_id(reply);
    }
    pb.wait_inbox(10, T);
    let old_id = delivered(
        &pb,
        send_request("pa", "from pb", None),
        Duration::from_secs(10),
    );
    pb.stop();
    pb.configure = std::sync::Arc::new(|c: &mut chatd::Config| c.retention.max_count = Some(5));
    pb.restart(); // retention runs at start
    wait_for(T, "retention to run", || {
        (pb.bodies().len() == 5).then_some(())
    });
    let inbox = pb.inbox();
    let bodies: Vec<&str> = inbox.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["r5", "r6", "r7", "r8", "r9"]);
    assert_eq!(inbox[0].seq, 6, "sequence numbers are never reused");
    // The one delivered outgoing message is within the count and stays.
    assert!(pb.call(Request::MessageStatus { msg_id: old_id }).is_ok());
}
