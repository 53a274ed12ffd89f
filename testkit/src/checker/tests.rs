//! The verification and the sender's queue, without daemons.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use peerchat_proto::control::{InboxMessage, Response};
use peerchat_proto::envelope::{Outcome, Reply};
use peerchat_proto::Name;

use super::sender::{MsgState, Sender};
use super::verify::{check, out_of_order, parse_body};
use super::{Config, Report};

#[test]
fn out_of_order_counts_the_fewest_moved() {
    let r = |v: &[u64]| out_of_order(&v.iter().map(|&x| (x, x)).collect::<Vec<_>>()).0;
    assert_eq!(r(&[]), 0);
    assert_eq!(r(&[0, 1, 2, 3]), 0);
    assert_eq!(r(&[0, 1, 9, 2, 3, 4, 5, 6, 7, 8]), 1);
    assert_eq!(r(&[3, 2, 1, 0]), 3);
    assert_eq!(r(&[1, 0, 3, 2]), 2);
}

fn inbox_of(sender: &Sender, from: &str, nums: &[u64]) -> Vec<InboxMessage> {
    nums.iter()
        .enumerate()
        .map(|(i, &k)| InboxMessage {
            seq: i as i64 + 1,
            id: sender.msg_id(k),
            from: from.into(),
            to: "chk-b".into(),
            recipients: Vec::new(),
            body: sender.body(k),
            sent_at: String::new(),
            received_at: String::new(),
            authenticated: false,
        })
        .collect()
}

/// A sender that had messages 0..n accepted in number order.
fn accepted(n: u64) -> Sender {
    let config = Config::new(n, 0);
    let mut s = Sender::new(
        &config,
        "t".into(),
        Name::new("chk-b").unwrap(),
        PathBuf::new(),
        Arc::new(AtomicU64::new(0)),
    );
    for (k, st) in s.state.iter_mut().enumerate() {
        st.rank = Some(k as u64);
    }
    s.accepted = n;
    s
}

fn checked(sender: &Sender, inbox: &[InboxMessage]) -> Report {
    let mut r = Report::default();
    check(sender, "chk-a", inbox, &mut r);
    r
}

#[test]
fn check_finds_lost_duplicated_reordered_unexpected() {
    let s = accepted(6);
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2, 3, 4, 5]));
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (0, 0, 0, 0)
    );
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 4, 5]));
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (1, 0, 0, 0)
    );
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2, 2, 3, 4, 5, 0]));
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (0, 2, 0, 0)
    );
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 2, 1, 3, 5, 4]));
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (0, 0, 2, 0)
    );
    // Another sender, a number out of range, an id that does not match the body.
    let mut inbox = inbox_of(&s, "chk-a", &[0, 1, 2, 3, 4, 5]);
    inbox.extend(inbox_of(&s, "someone", &[1]));
    inbox.extend(inbox_of(&s, "chk-a", &[6]));
    let mut wrong_id = inbox_of(&s, "chk-a", &[1]);
    wrong_id[0].id = "other".into();
    inbox.extend(wrong_id);
    let r = checked(&s, &inbox);
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (0, 0, 0, 3)
    );
    assert_eq!(r.examples.len(), 3, "{:?}", r.examples);
}

#[test]
fn check_uses_acceptance_ranks_and_allows_indeterminate() {
    let mut s = accepted(4);
    // 2 was rejected once and accepted last: 0, 1, 3, 2 is the right order.
    s.state[3].rank = Some(2);
    s.state[2].rank = Some(3);
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 2]));
    assert_eq!((r.lost, r.reordered), (0, 0));
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2, 3]));
    assert_eq!(r.reordered, 1);
    // Never accepted: unexpected if it shows up, unless it was indeterminate.
    s.state[3].rank = None;
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 2]));
    assert_eq!((r.lost, r.unexpected), (0, 1));
    s.state[3].indeterminate = true;
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 2]));
    assert_eq!((r.lost, r.unexpected), (0, 0));
    let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2]));
    assert_eq!((r.lost, r.unexpected), (0, 0));
}

#[test]
fn a_crash_requeues_in_flight_first_in_write_order() {
    let mut s = accepted(0);
    s.total = 10;
    s.state = vec![MsgState::default(); 10];
    s.window = 3;
    s.fill();
    assert_eq!(
        s.inflight.iter().map(|x| x.1).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    s.connection_lost();
    assert_eq!(s.retry, [0, 1, 2]);
    assert!(s.state[..3].iter().all(|m| m.indeterminate));
    s.window = 5;
    s.fill();
    assert_eq!(
        s.inflight.iter().map(|x| x.1).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let reply = |id, outcome| Reply { id, outcome };
    let ok = |k: u64, s: &Sender| {
        Outcome::Ok(Response::Accepted {
            id: s.msg_id(k),
            recipients: Vec::new(),
            conversation: None,
            pos: None,
        })
    };
    let (id0, _) = s.inflight[0];
    s.on_reply(reply(id0, ok(0, &s))).unwrap();
    // An error reply to the resend of an indeterminate message: its place is unknown.
    let (id1, _) = s.inflight[0];
    let err = Outcome::Err(peerchat_proto::ErrorBody::new("storage", "x"));
    s.on_reply(reply(id1, err)).unwrap();
    assert!(s.state[1].order_unknown);
    assert_eq!(s.retry, [1]);
    assert_eq!(s.state[0].rank, Some(0));
    let (id2, _) = s.inflight[0];
    assert!(s.on_reply(reply(id2, ok(3, &s))).is_err(), "wrong id");
}

#[test]
fn bodies_parse() {
    assert_eq!(parse_body("chk-000123"), Some(123));
    assert_eq!(parse_body("chk-"), None);
    assert_eq!(parse_body("chk-12a"), None);
    assert_eq!(parse_body("hello"), None);
}
