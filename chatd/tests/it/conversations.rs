//! Conversations (protocol.md §2.9) between nodes in this process: history both ways with
//! paging, one group conversation seen the same by every member, search over sent and received
//! bodies (CJK included), read positions across a restart, and the events stream (queued →
//! delivered, resumed by cursor).

use std::time::Duration;

use peerchat_client::Client;
use peerchat_proto::control::{
    code, ConvKey, DeliveryState, Direction, Entry, Event, Request, Response,
};
use peerchat_proto::Name;
use peerchat_testkit::inproc::{accepted_id, name, InProcNet, InProcNode};
use peerchat_testkit::wait_for;

const T: Duration = Duration::from_secs(20);

fn key(s: &str) -> ConvKey {
    ConvKey::parse(s).unwrap()
}

fn history(
    node: &InProcNode,
    with: &str,
    before: Option<i64>,
    after: Option<i64>,
    limit: u32,
) -> (Vec<Entry>, Option<i64>, Option<i64>) {
    match node.call(Request::History {
        with: key(with),
        before,
        after,
        limit: Some(limit),
    }) {
        Ok(Response::History {
            entries,
            older,
            newer,
            ..
        }) => (entries, older, newer),
        other => panic!("history: {other:?}"),
    }
}

fn bodies(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.body.as_str()).collect()
}

fn send_into(node: &InProcNode, conv: &str, body: &str) -> String {
    accepted_id(node.call(Request::Send {
        to: Vec::new(),
        groups: Vec::new(),
        broadcast: false,
        body: body.into(),
        msg_id: None,
        conversation: Some(key(conv)),
    }))
}

/// Waits until `node`'s history with `with` holds `n` entries.
fn wait_history(node: &InProcNode, with: &str, n: usize) -> Vec<Entry> {
    wait_for(
        T,
        &format!("{} to hold {n} entries with {with}", node.name),
        || {
            let (e, _, _) = history(node, with, None, None, 1000);
            (e.len() >= n).then_some(e)
        },
    )
}

#[test]
fn history_interleaves_both_directions_and_pages_both_ways() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    // a1, b1, a2, b2, ... each waiting for the previous one to arrive, so both sides agree on
    // the order.
    for i in 0..3 {
        pa.sent("pb", &format!("a{i}"));
        wait_history(&pb, "pa", 2 * i + 1);
        pb.sent("pa", &format!("b{i}"));
        wait_history(&pa, "pb", 2 * i + 2);
    }
    let all = wait_history(&pa, "pb", 6);
    assert_eq!(bodies(&all), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    assert_eq!(all[0].direction, Direction::Out);
    assert_eq!(all[1].direction, Direction::In);
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
    // The sent ones end up delivered.
    wait_for(T, "a0 to show delivered", || {
        let (e, _, _) = history(&pa, "pb", None, None, 1);
        let (first, _, _) = history(&pa, "pb", Some(e[0].pos), None, 1000);
        (first[0].delivery[0].state == DeliveryState::Delivered).then_some(())
    });

    // Backwards from the newest, two at a time.
    let (p1, older, newer) = history(&pa, "pb", None, None, 2);
    assert_eq!((bodies(&p1), newer), (vec!["a2", "b2"], None));
    let (p2, older2, _) = history(&pa, "pb", older, None, 2);
    assert_eq!(bodies(&p2), ["a1", "b1"]);
    let (p3, older3, newer3) = history(&pa, "pb", older2, None, 2);
    assert_eq!((bodies(&p3), older3), (vec!["a0", "b0"], None));
    // And forwards again from the oldest page.
    let (f2, _, newer4) = history(&pa, "pb", None, newer3, 2);
    assert_eq!(bodies(&f2), ["a1", "b1"]);
    let (f3, _, newer5) = history(&pa, "pb", None, newer4, 2);
    assert_eq!((bodies(&f3), newer5), (vec!["a2", "b2"], None));
    // The other side sees the same interleaving, mirrored.
    let theirs = wait_history(&pb, "pa", 6);
    assert_eq!(bodies(&theirs), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    assert_eq!(theirs[0].direction, Direction::In);
    // Wrong input.
    let both = pa.call(Request::History {
        with: key("pb"),
        before: Some(1),
        after: Some(1),
        limit: None,
    });
    assert_eq!(both.unwrap_err().code, code::BAD_REQUEST);
}

#[test]
fn a_group_conversation_is_the_same_for_every_member() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let pc = net.node("pc");
    pa.call(Request::GroupCreate {
        group: name("ops"),
        members: vec![name("pb"), name("pc")],
    })
    .unwrap();
    accepted_id(pa.call(Request::Send {
        to: Vec::new(),
        groups: vec![name("ops")],
        broadcast: false,
        body: "from pa".into(),
        msg_id: None,
        conversation: None,
    }));
    wait_history(&pb, "@pa/ops", 1);
    // pb answers everyone through the shorthand (its only "ops" conversation is pa's).
    send_into(&pb, "@ops", "from pb");
    wait_history(&pc, "@pa/ops", 2);
    send_into(&pc, "@pa/ops", "from pc");
    for node in [&pa, &pb, &pc] {
        let e = wait_history(node, "@pa/ops", 3);
        assert_eq!(
            bodies(&e),
            ["from pa", "from pb", "from pc"],
            "{}",
            node.name
        );
        let Ok(Response::Conversations { conversations }) =
            node.call(Request::Conversations { limit: None })
        else {
            panic!("conversations");
        };
        let ops = conversations
            .iter()
            .find(|c| c.with == key("@pa/ops"))
            .unwrap_or_else(|| panic!("{} lists @pa/ops: {conversations:?}", node.name));
        let members: Vec<&str> = ops.members.iter().map(Name::as_str).collect();
        assert_eq!(members, ["pa", "pb", "pc"], "{}", node.name);
        // Nothing of it leaked into the peer conversations.
        assert!(
            conversations.iter().all(|c| c.with.is_group()),
            "{conversations:?}"
        );
    }
    // Another "ops" (pb's own) is a different conversation; the shorthand then means pb's.
    pb.call(Request::GroupCreate {
        group: name("ops"),
        members: vec![name("pc")],
    })
    .unwrap();
    send_into(&pb, "@ops", "pb's own ops");
    let own = wait_history(&pc, "@pb/ops", 1);
    assert_eq!(bodies(&own), ["pb's own ops"]);
    assert_eq!(wait_history(&pc, "@pa/ops", 3).len(), 3);
    // On pc both exist: the shorthand is ambiguous.
    let amb = pc.call(Request::History {
        with: key("@ops"),
        before: None,
        after: None,
        limit: None,
    });
    assert_eq!(amb.unwrap_err().code, code::BAD_REQUEST);
}

#[test]
fn search_finds_sent_and_received_bodies_cjk_included() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    pa.sent("pb", "今天我们说你好世界吧");
    pb.sent("pa", "Deploy DONE at noon");
    pb.sent("pa", "nothing to see");
    wait_history(&pa, "pb", 3);
    let search = |text: &str, from: Option<&str>| -> Vec<String> {
        match pa.call(Request::Search {
            text: text.into(),
            with: None,
            from: from.map(name),
            before: None,
            after: None,
            limit: None,
        }) {
            Ok(Response::SearchResults { hits, .. }) => hits
                .into_iter()
                .map(|h| {
                    assert_eq!(h.with, key("pb"));
                    h.entry.body
                })
                .collect(),
            other => panic!("search: {other:?}"),
        }
    };
    // Two characters (under a trigram) and three, inside a longer Chinese sentence; sent.
    assert_eq!(search("你好", None), ["今天我们说你好世界吧"]);
    assert_eq!(search("你好世", None), ["今天我们说你好世界吧"]);
    // Received, case-insensitive.
    assert_eq!(search("deploy done", None), ["Deploy DONE at noon"]);
    assert_eq!(
        search("o", Some("pb")),
        ["nothing to see", "Deploy DONE at noon"]
    );
    assert!(search("o", Some("pa")).is_empty());
    assert!(search("absent", None).is_empty());
    // The received side finds it too.
    let Ok(Response::SearchResults { hits, .. }) = pb.call(Request::Search {
        text: "你好".into(),
        with: Some(key("pa")),
        from: None,
        before: None,
        after: None,
        limit: None,
    }) else {
        panic!("search on pb");
    };
    assert_eq!(hits.len(), 1);
}

#[test]
fn read_positions_survive_a_restart() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let mut pb = net.node("pb");
    for i in 0..3 {
        pa.sent("pb", &format!("m{i}"));
    }
    let e = wait_history(&pb, "pa", 3);
    let r = pb.call(Request::Read {
        with: key("pa"),
        up_to: e[1].pos,
    });
    assert!(
        matches!(r, Ok(Response::ReadPosition { unread: 1, .. })),
        "{r:?}"
    );
    // Never back.
    let r = pb.call(Request::Read {
        with: key("pa"),
        up_to: e[0].pos,
    });
    assert!(
        matches!(r, Ok(Response::ReadPosition { up_to, .. }) if up_to == e[1].pos),
        "{r:?}"
    );
    pb.restart();
    let Ok(Response::Conversations { conversations }) =
        pb.call(Request::Conversations { limit: None })
    else {
        panic!("conversations");
    };
    assert_eq!(conversations.len(), 1);
    assert_eq!(
        (conversations[0].read_up_to, conversations[0].unread),
        (e[1].pos, 1)
    );
}

/// Reads one event-stream line; `None` on a heartbeat.
fn next_event(c: &mut Client) -> Option<(Option<i64>, Event)> {
    match c.recv().expect("an events line").outcome.into_result() {
        Ok(Response::Event { cursor, event }) => Some((cursor, event)),
        Ok(Response::Heartbeat) => None,
        other => panic!("events: {other:?}"),
    }
}

fn open_events(node: &InProcNode, after: Option<i64>) -> (Client, i64) {
    let mut c = Client::connect(Some(&node.socket)).expect("connect");
    c.set_read_timeout(Some(T)).unwrap();
    c.send(&Request::Events { after }).unwrap();
    match c.recv().unwrap().outcome.into_result() {
        Ok(Response::EventsFrom { after, gap }) => {
            assert!(!gap);
            (c, after)
        }
        other => panic!("events: {other:?}"),
    }
}

#[test]
fn events_show_queued_then_delivered_and_resume_by_cursor() {
    let net = InProcNet::new();
    let mut pa = net.node("pa");
    let pb = net.node("pb");
    let (mut events, start) = open_events(&pa, None);
    let id = pa.sent("pb", "watch me");
    let mut states = Vec::new();
    let mut last = start;
    wait_for(T, "delivered event", || {
        let (cursor, e) = next_event(&mut events)?;
        if let Some(c) = cursor {
            assert!(c > last, "cursors increase");
            last = c;
        }
        match e {
            Event::Message { with, entry } => {
                assert_eq!((with, entry.id.as_str()), (key("pb"), id.as_str()));
                states.push(entry.delivery[0].state);
            }
            Event::Delivery { id: i, state, .. } if i == id => states.push(state),
            _ => {}
        }
        states.contains(&DeliveryState::Delivered).then_some(())
    });
    assert_eq!(states.first(), Some(&DeliveryState::Queued));
    assert_eq!(states.last(), Some(&DeliveryState::Delivered));
    drop(events);
    // Across a restart: what happened meanwhile comes first, from the cursor on.
    pa.stop();
    pb.sent("pa", "while you were away");
    pa.restart();
    wait_history(&pa, "pb", 2);
    let r = pa.call(Request::Read {
        with: key("pb"),
        up_to: last + 1000,
    });
    assert!(r.is_ok());
    let (mut events, from) = open_events(&pa, Some(last));
    assert_eq!(from, last);
    let mut seen = Vec::new();
    wait_for(T, "the missed events", || {
        if let Some((Some(c), e)) = next_event(&mut events) {
            assert!(c > last, "nothing twice");
            last = c;
            seen.push(e);
        }
        seen.iter()
            .any(|e| matches!(e, Event::Read { .. }))
            .then_some(())
    });
    assert!(
        matches!(&seen[0], Event::Message { entry, .. } if entry.body == "while you were away"),
        "{seen:?}"
    );
}

/// Messages retention removed leave `history` and `search` at once, and an events stream that
/// resumes from a cursor before them is told it has a gap (a cursor from another database too).
#[test]
fn retention_removes_history_and_search_entries_and_a_stale_cursor_gets_gap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let net = InProcNet::new();
    let prune = Arc::new(AtomicBool::new(false));
    let switch = prune.clone();
    let mut pa = net.node_with("pa", move |c: &mut chatd::Config| {
        if switch.load(Ordering::SeqCst) {
            c.retention = chatd::Retention {
                max_age: None,
                max_count: Some(1),
            };
        }
    });
    let pb = net.node("pb");
    for i in 1..=3 {
        pb.sent("pa", &format!("old news {i}"));
    }
    wait_history(&pa, "pb", 3);
    let (events, start) = open_events(&pa, None);
    drop(events);
    prune.store(true, Ordering::SeqCst);
    pa.stop();
    pa.restart();
    // Retention runs at start-up: only the newest message stays.
    let kept = wait_for(T, "retention to remove the older messages", || {
        let (e, _, _) = history(&pa, "pb", None, None, 100);
        (e.len() == 1).then_some(e)
    });
    assert_eq!(bodies(&kept), ["old news 3"]);
    let Ok(Response::SearchResults { hits, .. }) = pa.call(Request::Search {
        text: "old news".into(),
        with: None,
        from: None,
        before: None,
        after: None,
        limit: None,
    }) else {
        panic!("search");
    };
    let found: Vec<_> = hits.iter().map(|h| h.entry.body.as_str()).collect();
    assert_eq!(found, ["old news 3"]);
    let gap = |after: i64| {
        let mut c = Client::connect(Some(&pa.socket)).expect("connect");
        c.set_read_timeout(Some(T)).unwrap();
        c.send(&Request::Events { after: Some(after) }).unwrap();
        match c.recv().unwrap().outcome.into_result() {
            Ok(Response::EventsFrom { after, gap }) => (after, gap),
            other => panic!("events: {other:?}"),
        }
    };
    assert_eq!(gap(0), (0, true), "resuming from before the pruned events");
    assert!(!gap(start).1, "nothing after {start} was pruned");
    assert_eq!(
        gap(start + 1_000_000),
        (start, true),
        "a cursor from another database"
    );
}

/// A send into a conversation is answered with its resolved key and its position (the `pos` of
/// its entry); a plain send and a repeat carry neither. A peer never written to has an empty
/// history, not `not_found`.
#[test]
fn accepted_carries_the_position_of_a_send_into_a_conversation() {
    let net = InProcNet::new();
    let pa = net.node("pa");
    let _pb = net.node("pb");
    let (entries, _, _) = history(&pa, "pb", None, None, 10);
    assert!(entries.is_empty(), "a peer never written to");
    let send = |conversation: Option<&str>, to: Vec<Name>, id: &str| match pa.call(Request::Send {
        to,
        groups: Vec::new(),
        broadcast: false,
        body: "placed".into(),
        msg_id: Some(peerchat_proto::MsgId::new(id).unwrap()),
        conversation: conversation.map(key),
    }) {
        Ok(Response::Accepted {
            conversation, pos, ..
        }) => (conversation, pos),
        other => panic!("send: {other:?}"),
    };
    let (conv, pos) = send(Some("pb"), Vec::new(), "m1");
    assert_eq!(conv, Some(key("pb")));
    let entries = wait_history(&pa, "pb", 1);
    assert_eq!(pos, Some(entries[0].pos));
    assert_eq!(
        send(Some("pb"), Vec::new(), "m1"),
        (Some(key("pb")), None),
        "a repeat"
    );
    assert_eq!(
        send(None, vec![name("pb")], "m2"),
        (None, None),
        "a plain send"
    );
}
