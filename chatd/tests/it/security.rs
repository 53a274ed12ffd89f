//! Identities and encrypted links, end to end with real daemons: keys pinned on first use, key
//! changes and rotations, impostors on the peer port, a wrong key from the registry, and what
//! a man in the middle sees or can change.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::Duration;

use peerchat_proto::peer::{self, Frame};
use peerchat_proto::{MsgId, Name};
use peerchat_testkit::identity::Signer;
use peerchat_testkit::proxy::Proxy;
use peerchat_testkit::{json_lines, wait_for, Net, Node};
use serde_json::Value;

const T: Duration = Duration::from_secs(15);
const FAST: [&str; 4] = ["--retry-initial", "0.2", "--retry-max", "0.5"];

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sent(from: &Node, to: &str, body: &str) -> String {
    let out = from.ctl(&["--json", "send", to, body]);
    assert_eq!(code(&out), 0, "send failed: {}", stderr(&out));
    json_lines(&out.stdout)[0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The first recipient's state of message `id`, once `pred` holds for it.
fn wait_recipient(node: &Node, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(T, what, || {
        let out = node.ctl(&["--json", "status", id]);
        json_lines(&out.stdout)
            .first()
            .map(|m| m["recipients"][0].clone())
            .filter(|r| pred(r))
    })
}

fn fingerprint(node: &Node) -> String {
    let out = node.ctl(&["--json", "whoami"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json_lines(&out.stdout)[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn whoami_and_peers_show_fingerprints_and_the_key_file_is_private() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let fa = fingerprint(&pa);
    assert_eq!(fa.len(), 39, "{fa}");
    assert_ne!(fa, fingerprint(&pb));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(pa.db.with_extension("key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    sent(&pa, "pb", "hi");
    pb.wait_inbox(1, T);
    let out = pa.ctl(&["--json", "peers"]);
    let peers = json_lines(&out.stdout);
    let b = peers.iter().find(|p| p["name"] == "pb").unwrap();
    assert_eq!(b["fingerprint"], fingerprint(&pb));
    assert_eq!(b["key"], "pinned");
    let me = peers.iter().find(|p| p["name"] == "pa").unwrap();
    assert_eq!(me["key"], "self");
    assert_eq!(pb.inbox()[0]["authenticated"], true);
    // The same identity after a restart.
    let mut pa = pa;
    pa.daemon.terminate(T);
    pa.restart();
    assert_eq!(fingerprint(&pa), fa);
}

#[test]
fn the_link_carries_no_plaintext() {
    let net = Net::new();
    let proxy = Proxy::start();
    let pb = net.node_with("pb", &["--advertise", &proxy.addr.to_string()]);
    proxy.set_target(pb.listen);
    let pa = net.node("pa");
    let secret = "attack at dawn, the password is swordfish";
    sent(&pa, "pb", secret);
    assert_eq!(pb.wait_inbox(1, T), [secret]);
    let seen = proxy.captured();
    assert!(
        seen.len() > 200,
        "the proxy saw the link ({} bytes)",
        seen.len()
    );
    assert!(seen.starts_with(peer::PREAMBLE));
    for needle in [&b"swordfish"[..], b"attack", b"\"msg\"", b"\"pa\""] {
        assert!(
            !seen.windows(needle.len()).any(|w| w == needle),
            "{:?} crossed the wire in clear",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn a_flipped_ciphertext_byte_closes_the_link_and_delivers_nothing() {
    let net = Net::new();
    let proxy = Proxy::start();
    proxy.flip.store(true, Ordering::SeqCst);
    let pb = net.node_with("pb", &["--advertise", &proxy.addr.to_string()]);
    proxy.set_target(pb.listen);
    let pa = net.node_with("pa", &FAST);
    let id = sent(&pa, "pb", "do not corrupt me");
    let r = wait_recipient(
        &pa,
        &id,
        "failed attempts through the tampering proxy",
        |r| r["attempts"].as_u64().unwrap_or(0) >= 2 && r["error"].is_string(),
    );
    assert_ne!(r["state"], "delivered", "{r}");
    assert!(pb.bodies().is_empty(), "nothing may be delivered");
    assert!(
        pb.daemon.log_text().contains("tampered"),
        "the receiver logs why it closed the link"
    );
    // Without tampering, the same message arrives once, intact.
    proxy.flip.store(false, Ordering::SeqCst);
    wait_recipient(&pa, &id, "delivery once the proxy is honest", |r| {
        r["state"] == "delivered"
    });
    assert_eq!(pb.bodies(), ["do not corrupt me"]);
}

/// Speaks our peer protocol as `signer`, claiming to be `from`; returns the server's first frame.
fn claim(target: SocketAddr, signer: &Signer, from: &str, to: &str) -> Frame {
    RawLink::open(target, signer, from, to, vec![]).recv()
}

/// A hand-made client side of a peer link: preamble, Noise XX as `signer`, a Hello claiming
/// `from` with `features`; then whole frames (a large one cut into several records).
struct RawLink {
    s: TcpStream,
    transport: snow::TransportState,
    /// Decrypted bytes not yet taken as frames.
    plain: Vec<u8>,
}

impl RawLink {
    fn open(
        target: SocketAddr,
        signer: &Signer,
        from: &str,
        to: &str,
        features: Vec<String>,
    ) -> RawLink {
        let mut s = TcpStream::connect(target).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut hs = handshake(signer, true);
        let mut buf = vec![0u8; 65_535];
        s.write_all(peer::PREAMBLE).unwrap();
        let n = hs.write_message(&[], &mut buf).unwrap();
        write_record(&mut s, &buf[..n]);
        let m = read_record(&mut s);
        hs.read_message(&m, &mut buf).unwrap();
        let hello = Frame::Hello {
            version: peer::VERSION,
            from: Name::new(from).unwrap(),
            to: Name::new(to).unwrap(),
            features,
        };
        let n = hs.write_message(&peer::encode(&hello), &mut buf).unwrap();
        write_record(&mut s, &buf[..n]);
        RawLink {
            s,
            transport: hs.into_transport_mode().unwrap(),
            plain: Vec::new(),
        }
    }

    fn send(&mut self, frame: &Frame) {
        let mut buf = vec![0u8; 65_535];
        for chunk in peer::frame_bytes(frame).chunks(65_535 - 16) {
            let n = self.transport.write_message(chunk, &mut buf).unwrap();
            write_record(&mut self.s, &buf[..n]);
        }
    }

    fn recv(&mut self) -> Frame {
        let mut buf = vec![0u8; 65_535];
        loop {
            if self.plain.len() >= 4 {
                let len = u32::from_be_bytes(self.plain[..4].try_into().unwrap()) as usize;
                if self.plain.len() >= 4 + len {
                    let frame = peer::decode(&self.plain[4..4 + len]).unwrap();
                    self.plain.drain(..4 + len);
                    return frame;
                }
            }
            let m = read_record(&mut self.s);
            let n = self.transport.read_message(&m, &mut buf).unwrap();
            self.plain.extend_from_slice(&buf[..n]);
        }
    }
}

/// Our Noise handshake as `signer`, on the client side (`initiator`) or the server side.
fn handshake(signer: &Signer, initiator: bool) -> snow::HandshakeState {
    let params: snow::params::NoiseParams = peer::NOISE_PARAMS.parse().unwrap();
    let secret = signer.noise_secret();
    let builder = snow::Builder::new(params)
        .local_private_key(&secret)
        .unwrap()
        .prologue(peer::PREAMBLE)
        .unwrap();
    if initiator {
        builder.build_initiator().unwrap()
    } else {
        builder.build_responder().unwrap()
    }
}

fn write_record(s: &mut TcpStream, m: &[u8]) {
    s.write_all(&(m.len() as u16).to_be_bytes()).unwrap();
    s.write_all(m).unwrap();
}

fn read_record(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut m).unwrap();
    m
}

/// Registers `name` at `port` for `signer` at the registry (seq 1), as a node would.
fn register(registry: SocketAddr, signer: &Signer, name: &str, port: u16) {
    let mut s = TcpStream::connect(registry).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("{}\n", signer.register(name, port, 1)).as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("\"registered\""), "registration: {line}");
}

/// A caller that lists the `acks` feature gets runs of acknowledgements as one `acks` frame
/// ending at the right id, with a `nack` in between kept in place; a caller that does not (every
/// earlier chatd) gets one `ack` per message, as before.
#[test]
fn acks_come_in_runs_only_for_callers_that_ask() {
    let net = Net::new();
    let pb = net.node("pb");
    let raw = Signer::new(7);
    register(net.registry.addr, &raw, "raw", 9);
    let msg = |id: &str, body: String| {
        Frame::Msg(peer::WireMessage {
            id: mid(id),
            to: vec![Name::new("pb").unwrap()],
            sent_at_ms: 1,
            body,
            group: None,
        })
    };
    let too_large = "x".repeat(peerchat_proto::MAX_BODY_BYTES + 1);

    let mut old = RawLink::open(pb.listen, &raw, "raw", "pb", vec![]);
    assert!(matches!(old.recv(), Frame::Welcome { .. }));
    for id in ["o1", "o2", "o3"] {
        old.send(&msg(id, format!("body {id}")));
    }
    for id in ["o1", "o2", "o3"] {
        assert_eq!(old.recv(), Frame::Ack { id: mid(id) });
    }

    let mut new = RawLink::open(
        pb.listen,
        &raw,
        "raw",
        "pb",
        vec!["something-else".into(), peer::feature::ACKS.into()],
    );
    assert!(matches!(new.recv(), Frame::Welcome { .. }));
    // Sent as fast as possible: however the server cuts them into bursts, the answers must add
    // up to acks for n1, n2, a nack for n3 (too large, refused before storing), a nack for o1
    // (an id already used for another body, refused by the store), acks for n4, n5, n6, in
    // order.
    let sent = [
        ("n1", "a".to_string()),
        ("n2", "b".into()),
        ("n3", too_large),
        ("o1", "not body o1".into()),
        ("n4", "c".into()),
        ("n5", "d".into()),
        ("n6", "e".into()),
    ];
    for (id, body) in &sent {
        new.send(&msg(id, body.clone()));
    }
    let mut answered: Vec<&str> = Vec::new();
    while answered.len() < sent.len() {
        match new.recv() {
            Frame::Acks { count, last } => {
                assert!(count >= 1);
                let start = answered.len();
                answered.extend((1..=count).map(|_| "ack"));
                let i = start + count as usize - 1;
                assert_eq!(&*last, sent[i].0, "the run ends at the right message");
            }
            Frame::Nack { id, code, .. } => {
                assert_eq!(&*id, sent[answered.len()].0, "the nack is in its place");
                answered.push(match (id.as_str(), code.as_str()) {
                    ("n3", peer::code::TOO_LARGE) => "too large",
                    ("o1", peer::code::ID_CONFLICT) => "conflict",
                    other => panic!("unexpected nack {other:?}"),
                });
            }
            other => panic!("a caller that asked for acks got {other:?}"),
        }
    }
    assert_eq!(
        answered,
        ["ack", "ack", "too large", "conflict", "ack", "ack", "ack"]
    );
    assert_eq!(pb.wait_inbox(8, T).len(), 8);
}

#[test]
fn a_peer_claiming_another_name_is_refused() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let mallory = Signer::new(66);
    match claim(pb.listen, &mallory, "mallory", "someone-else") {
        Frame::Refused { code, .. } => assert_eq!(code, peer::code::WRONG_NAME),
        other => panic!("a hello for another node got {other:?}"),
    }
    // A registered name with another key is a wrong key; a name nobody registered is told so
    // (not accused of a wrong key: it may be a node that has not registered yet).
    for (claimed, want) in [
        ("pa", peer::code::WRONG_KEY),
        ("ghost", peer::code::NOT_REGISTERED),
    ] {
        match claim(pb.listen, &mallory, claimed, "pb") {
            Frame::Refused { code, .. } => assert_eq!(code, want, "claiming {claimed}"),
            other => panic!("an impostor claiming {claimed} got {other:?}"),
        }
    }
    assert!(pb
        .daemon
        .log_text()
        .contains("proved another key than the one pa is registered with"));
    // The real pa still gets through.
    sent(&pa, "pb", "the real pa");
    assert_eq!(pb.wait_inbox(1, T), ["the real pa"]);
}

/// A registry that answers every lookup of `victim` with a record signed by another key (the
/// victim's real address, though) and accepts every registration.
fn lying_registry(victim: &'static str, address: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let liar = Signer::new(99);
        let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
        for conn in listener.incoming().flatten() {
            let mut w = conn.try_clone().unwrap();
            let mut lines = BufReader::new(conn);
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                let req: Value = serde_json::from_str(&line).unwrap_or_default();
                let id = req["id"].clone();
                let reply = match req["op"].as_str() {
                    Some("register") => serde_json::json!({"id": id, "ok": {
                        "type": "registered", "address": "127.0.0.1:1", "ttl_secs": 90}}),
                    Some("lookup") if req["name"] == victim => {
                        let signed: Value =
                            serde_json::from_str(&liar.register(victim, port, 5)).unwrap();
                        serde_json::json!({"id": id, "ok": {"type": "record", "name": victim,
                            "address": address, "online": true, "last_seen_ms": 1,
                            "signed": {"key": signed["key"], "port": port, "seq": 5,
                                       "sig": signed["sig"]}}})
                    }
                    Some("lookup") => serde_json::json!({"id": id, "error": {
                        "code": "not_found", "message": "no"}}),
                    _ => serde_json::json!({"id": id, "ok": {"type": "done"}}),
                };
                if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        }
    });
    addr
}

#[test]
fn a_registry_serving_a_wrong_key_gets_no_message_through() {
    let net = Net::new();
    let pb = net.node("pb");
    let liar = lying_registry("pb", pb.listen.to_string());
    let pa = Node::start_with(net.dir.path(), "pa", liar, &FAST);
    let id = sent(&pa, "pb", "for pb only");
    let r = wait_recipient(&pa, &id, "a visible key error", |r| {
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not prove the key"))
    });
    assert_ne!(r["state"], "delivered");
    let out = pa.ctl(&["outbox"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("did not prove the key"));
    assert!(pb.bodies().is_empty());
}

#[test]
fn a_changed_key_stops_sends_until_trust() {
    let net = Net::new();
    let pa = net.node_with("pa", &FAST);
    let mut pb = net.node("pb");
    sent(&pa, "pb", "one");
    pb.wait_inbox(1, T);
    let old_fp = fingerprint(&pb);

    // pb loses its key (a reinstall); the operator frees the name; pb comes back with a new key.
    pb.daemon.terminate(T);
    std::fs::remove_file(pb.db.with_extension("key")).unwrap();
    let out = std::process::Command::new(peerchat_testkit::bin("registryd"))
        .args(["release", "pb", "--db"])
        .arg(&net.registry.db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(T, "the registry to drop pb", || {
        let out = pa.ctl(&["--json", "peers"]);
        (!String::from_utf8_lossy(&out.stdout).contains("\"pb\"")).then_some(())
    });
    pb.restart();
    let new_fp = fingerprint(&pb);
    assert_ne!(old_fp, new_fp);

    let out = pa.ctl(&["--json", "send", "pb", "two"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("key_changed") && text.contains("chatctl trust pb"),
        "{text}"
    );
    let out = pa.ctl(&["send", "pb", "two"]);
    assert_eq!(code(&out), 7);
    assert!(stderr(&out).contains(&old_fp), "{}", stderr(&out));
    let peers = pa.ctl(&["--json", "peers"]);
    assert!(String::from_utf8_lossy(&peers.stdout).contains("\"changed\""));

    let out = pa.ctl(&["trust", "pb"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&new_fp));
    sent(&pa, "pb", "three");
    assert_eq!(pb.wait_inbox(2, T), ["one", "three"]);
}

#[test]
fn a_rotated_key_is_followed_without_trust() {
    let net = Net::new();
    let pa = net.node_with("pa", &FAST);
    let mut pb = net.node_with("pb", &FAST);
    sent(&pa, "pb", "before");
    sent(&pb, "pa", "before");
    pb.wait_inbox(1, T);
    pa.wait_inbox(1, T);
    let old_fp = fingerprint(&pb);
    let out = pb.ctl(&["--json", "rotate-key"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = &json_lines(&out.stdout)[0];
    assert_eq!(r["published"], true, "{r}");
    assert_eq!(r["previous"], old_fp.as_str());
    let new_fp = fingerprint(&pb);
    assert_ne!(new_fp, old_fp);
    // Both directions keep working, and the new key survives a restart.
    sent(&pa, "pb", "after");
    sent(&pb, "pa", "after");
    assert_eq!(pb.wait_inbox(2, T), ["before", "after"]);
    assert_eq!(pa.wait_inbox(2, T), ["before", "after"]);
    pb.daemon.terminate(T);
    pb.restart();
    assert_eq!(fingerprint(&pb), new_fp);
    sent(&pb, "pa", "restarted");
    assert_eq!(pa.wait_inbox(3, T).len(), 3);
    let out = pa.ctl(&["--json", "peers"]);
    let peers = json_lines(&out.stdout);
    let b = peers.iter().find(|p| p["name"] == "pb").unwrap();
    assert_eq!(b["fingerprint"], new_fp.as_str());
    assert_eq!(b["key"], "pinned");
}

#[test]
fn unknown_callers_cannot_make_a_node_flood_the_registry() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    // pa is pinned at pb by its first link, so pa never needs a lookup again.
    sent(&pa, "pb", "before");
    pb.wait_inbox(1, T);
    // Each caller with a key pb cannot vouch for costs pb one registry lookup; from one address
    // at most 60 a minute. 130 claims must meet the limit whatever the minute boundary.
    let mallory = Signer::new(77);
    let mut busy = 0;
    for i in 0..130 {
        match claim(pb.listen, &mallory, &format!("ghost{i}"), "pb") {
            Frame::Refused { code, .. } if code == peer::code::BUSY => busy += 1,
            Frame::Refused { code, .. } => assert_eq!(code, peer::code::NOT_REGISTERED),
            other => panic!("an unknown caller got {other:?}"),
        }
    }
    assert!(
        busy >= 5,
        "only {busy} of 130 unknown callers were turned away"
    );
    // A known peer from the same address is not affected.
    sent(&pa, "pb", "after");
    assert_eq!(pb.wait_inbox(2, T), ["before", "after"]);
}

/// The server side of a peer link, by hand: accepts one connection on `listener` as `signer`,
/// answers the Hello with a welcome from `name`, reads one `msg` and answers it with
/// `answer(id)`. Returns the id it received and the link.
fn fake_server_once(
    listener: &TcpListener,
    signer: &Signer,
    name: &str,
    answer: impl Fn(&str) -> Frame,
) -> (String, RawLink) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut preamble = [0u8; 11];
    s.read_exact(&mut preamble).unwrap();
    assert_eq!(&preamble[..], peer::PREAMBLE);
    let mut hs = handshake(signer, false);
    let mut buf = vec![0u8; 65_535];
    hs.read_message(&read_record(&mut s), &mut buf).unwrap();
    let n = hs.write_message(&[], &mut buf).unwrap();
    write_record(&mut s, &buf[..n]);
    let n = hs.read_message(&read_record(&mut s), &mut buf).unwrap();
    assert!(matches!(
        peer::decode(&buf[..n]).unwrap(),
        Frame::Hello { .. }
    ));
    let mut link = RawLink {
        s,
        transport: hs.into_transport_mode().unwrap(),
        plain: Vec::new(),
    };
    link.send(&Frame::Welcome {
        version: peer::VERSION,
        name: Name::new(name).unwrap(),
        features: vec![],
    });
    let Frame::Msg(m) = link.recv() else {
        panic!("expected a msg frame")
    };
    link.send(&answer(&m.id));
    (m.id.into_string(), link)
}

/// Waits until the caller closed the link (it does at once after a protocol error).
fn wait_closed(mut link: RawLink) {
    let mut rest = Vec::new();
    link.s.read_to_end(&mut rest).unwrap();
}

/// The sender checks a run of acks like a single ack: a count larger than what is in flight,
/// or a run that ends at another message, ends the link and the message stays undelivered
/// (with the reason); a correct run marks it delivered.
#[test]
fn a_wrong_run_of_acks_ends_the_link_and_delivers_nothing() {
    let net = Net::new();
    let pa = net.node_with("pa", &FAST);
    let fake = Signer::new(8);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    register(
        net.registry.addr,
        &fake,
        "fake",
        listener.local_addr().unwrap().port(),
    );
    let id = sent(&pa, "fake", "count me once");

    let (got, link) = fake_server_once(&listener, &fake, "fake", |id| Frame::Acks {
        count: 2,
        last: mid(id),
    });
    assert_eq!(got, id);
    wait_closed(link);
    wait_recipient(&pa, &id, "the bad count to be reported", |r| {
        r["state"] != "delivered"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("acknowledgement of 2 messages with 1 in flight"))
    });

    let (got, link) = fake_server_once(&listener, &fake, "fake", |_| Frame::Acks {
        count: 1,
        last: mid("another-message"),
    });
    assert_eq!(got, id, "the same message is sent again");
    wait_closed(link);
    wait_recipient(&pa, &id, "the wrong last id to be reported", |r| {
        r["state"] != "delivered"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("unexpected message another-message"))
    });

    let (got, _link) = fake_server_once(&listener, &fake, "fake", |id| Frame::Acks {
        count: 1,
        last: mid(id),
    });
    assert_eq!(got, id);
    wait_recipient(&pa, &id, "a correct run to deliver it", |r| {
        r["state"] == "delivered"
    });
}

/// A sender that reuses a message id for another body (e.g. after its own retention forgot the
/// first message) gets a `nack` `id_conflict` for it, not an `ack` that would mark it delivered
/// while the recipient dropped it; the same body again is still a repeat, acknowledged.
#[test]
fn a_reused_id_with_another_body_is_refused_not_dropped() {
    let net = Net::new();
    let pb = net.node("pb");
    let raw = Signer::new(9);
    register(net.registry.addr, &raw, "raw", 9);
    let msg = |body: &str| {
        Frame::Msg(peer::WireMessage {
            id: mid("r1"),
            to: vec![Name::new("pb").unwrap()],
            sent_at_ms: 1,
            body: body.into(),
            group: None,
        })
    };
    let mut link = RawLink::open(pb.listen, &raw, "raw", "pb", vec![]);
    assert!(matches!(link.recv(), Frame::Welcome { .. }));
    link.send(&msg("one"));
    assert_eq!(link.recv(), Frame::Ack { id: mid("r1") });
    link.send(&msg("two"));
    match link.recv() {
        Frame::Nack { id, code, message } => {
            assert_eq!(
                (id.as_str(), code.as_str()),
                ("r1", peer::code::ID_CONFLICT)
            );
            assert!(message.contains("already used by raw"), "{message}");
        }
        other => panic!("a reused id got {other:?}"),
    }
    link.send(&msg("one"));
    assert_eq!(link.recv(), Frame::Ack { id: mid("r1") });
    assert_eq!(pb.wait_inbox(1, T), ["one"]);
    assert!(pb
        .daemon
        .log_text()
        .contains("already used for another one"));
}

/// A second node started under a name bound to another key stays unregistered, and says why in
/// `status` (text and JSON) instead of "(not registered yet)" forever.
#[test]
fn a_name_bound_to_another_key_is_reported_by_status() {
    let net = Net::new();
    let _pa = net.node("pa");
    let dir = net.dir.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let impostor = Node::start(&dir, "pa", net.registry.addr);
    let status = wait_for(T, "the registration error in status", || {
        let out = impostor.ctl(&["--json", "status"]);
        let v = json_lines(&out.stdout).into_iter().next()?;
        v["registration_error"].as_str().map(str::to_string)
    });
    assert!(status.contains("bound to another key"), "{status}");
    let out = impostor.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not registered: ") && text.contains("bound to another key"),
        "{text}"
    );
}

fn mid(s: &str) -> MsgId {
    MsgId::new(s).unwrap()
}
