//! A sender's backlog while its recipient is frozen (SIGSTOP: the process and its sockets stay,
//! nothing is read or answered). The sender and the registry run in this process; the frozen
//! recipient is the chatd binary (a signal needs a process; `cargo test -p chatd` builds it
//! afresh). Moved from `chatctl/tests/e2e.rs`; a pipelined control connection stands in for
//! `chatctl send -l`.

use std::time::Duration;

use peerchat_proto::control::{DeliveryState, InboxMessage, Request, Response};
use peerchat_testkit::checker::read_inbox;
use peerchat_testkit::inproc::{accepted_id, send_request, InProcNet};
use peerchat_testkit::{wait_for, Node};

/// Polls the binary node's inbox until `done` holds.
fn wait_inbox_until(
    node: &Node,
    what: &str,
    done: impl Fn(&[InboxMessage]) -> bool,
) -> Vec<InboxMessage> {
    wait_for(Duration::from_secs(60), what, || {
        let m = read_inbox(&node.socket).ok()?;
        done(&m).then_some(m)
    })
}

/// While the recipient is frozen, the sender keeps accepting: past the link's window and the
/// in-memory hand-off queue (4,096 + 8,192 messages). After the thaw the link drains the queue
/// and reads the rest back from the database; every message arrives once, in order.
#[test]
fn a_backlog_past_the_handoff_queue_arrives_once_in_order() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = Node::start(net.dir.path(), "pb", net.registry.addr);
    // The link is up and streaming new messages from memory.
    pa.sent("pb", "first");
    wait_inbox_until(&pb, "first in pb's inbox", |m| !m.is_empty());
    let n = 15_000;
    let requests = (0..n)
        .map(|i| send_request("pb", &format!("m{i}"), None))
        .collect();
    pb.daemon.freeze();
    let replies = pa.control().pipeline(requests);
    pb.daemon.thaw();
    for reply in replies {
        accepted_id(reply);
    }
    let got = wait_inbox_until(&pb, "every message in pb's inbox", |m| m.len() > n);
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    let want: Vec<String> = std::iter::once("first".to_string())
        .chain((0..n).map(|i| format!("m{i}")))
        .collect();
    assert_eq!(bodies.len(), want.len(), "no message twice");
    assert!(bodies.iter().zip(&want).all(|(b, w)| b == w), "in order");
}

/// A message cancelled while it waits in the link's in-memory hand-off queue (the window is
/// full because the recipient is frozen) never goes out; everything after it still arrives, in
/// order, so its absence is certain once the last one is in.
#[test]
fn a_message_cancelled_in_the_handoff_queue_is_not_sent() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = Node::start(net.dir.path(), "pb", net.registry.addr);
    pa.sent("pb", "first");
    wait_inbox_until(&pb, "first in pb's inbox", |m| !m.is_empty());
    // 4,096 messages fill the link's window; the rest wait in the hand-off queue.
    let n = 4_300;
    let victim = 4_200;
    let requests = (0..n)
        .map(|i| send_request("pb", &format!("m{i}"), None))
        .collect();
    pb.daemon.freeze();
    let ids: Vec<String> = pa
        .control()
        .pipeline(requests)
        .into_iter()
        .map(accepted_id)
        .collect();
    let id = ids[victim].clone();
    let cancelled = pa.call(Request::Cancel { msg_id: id.clone() });
    pb.daemon.thaw();
    assert!(cancelled.is_ok(), "{cancelled:?}");
    let last = format!("m{}", n - 1);
    let got = wait_inbox_until(&pb, "the last message in pb's inbox", |m| {
        m.iter().any(|m| m.body == last)
    });
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    let want: Vec<String> = std::iter::once("first".to_string())
        .chain((0..n).filter(|i| *i != victim).map(|i| format!("m{i}")))
        .collect();
    let cancelled = format!("m{victim}");
    assert!(
        !bodies.contains(&cancelled.as_str()),
        "the cancelled {cancelled} was delivered"
    );
    assert_eq!(bodies.len(), want.len(), "no message lost or twice");
    assert!(bodies.iter().zip(&want).all(|(b, w)| b == w), "in order");
    let Ok(Response::MessageInfo(info)) = pa.call(Request::MessageStatus { msg_id: id }) else {
        panic!("status");
    };
    assert_eq!(info.recipients[0].state, DeliveryState::Cancelled);
}
