//! Legacy interop: the seed's text protocol on registryd's port, and chatd's `--legacy` raw-text
//! peer messages in both directions. A `std::net::TcpListener` stands in for a seed peer; real
//! registryd, chatd and chatctl processes run on loopback with OS-chosen ports.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::time::Duration;

use peerchat_testkit::identity::Signer;
use peerchat_testkit::{json_lines, wait_for, Net, Node};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One exchange in the seed's registry protocol: the request in one write with no terminator
/// (as the seed sends it, without closing its side), then everything until registryd closes.
fn seed_request(registry: SocketAddr, text: &str) -> String {
    let mut s = TcpStream::connect(registry).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        panic!("registryd did not close the connection after replying to {text:?}: {e}");
    }
    String::from_utf8(out).expect("reply is UTF-8")
}

/// One JSON-lines request to registryd; returns the reply object.
fn registry_json(registry: SocketAddr, line: &str) -> Value {
    let mut s = TcpStream::connect(registry).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    json_lines(&out).remove(0)
}

fn lookup(registry: SocketAddr, name: &str) -> Value {
    registry_json(
        registry,
        &format!(r#"{{"id":1,"op":"lookup","name":"{name}"}}"#),
    )
}

/// The entry for `name` in `chatctl --json peers`.
fn peer_entry(node: &Node, name: &str) -> Option<Value> {
    let out = node.ctl(&["--json", "peers"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json_lines(&out.stdout)
        .into_iter()
        .find(|p| p["name"] == name)
}

/// `counts` from `chatctl --json status`.
fn counts(node: &Node) -> Value {
    let out = node.ctl(&["--json", "status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json_lines(&out.stdout).remove(0)["counts"].clone()
}

fn wait_counts(node: &Node, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    wait_for(T, what, || {
        let c = counts(node);
        want(&c).then_some(c)
    })
}

/// (state, final) of every delivery row, read from chatd's database: `status` counts a final
/// `sent` (written to a seed peer) and an in-flight `sent` alike.
fn delivery_rows(node: &Node) -> Vec<(String, bool)> {
    let db =
        rusqlite::Connection::open_with_flags(&node.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = db
        .prepare("SELECT state, final FROM deliveries ORDER BY out_seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Waits until `node` has registered itself (its lease is in the registry).
fn wait_registered(node: &Node) -> String {
    wait_for(T, &format!("{} to register", node.name), || {
        let r = lookup(node.registry, &node.name);
        r["ok"]["address"].as_str().map(str::to_string)
    })
}

/// A stand-in for the seed's peer: a listener whose every connection carries one raw message.
struct SeedPeer {
    listener: TcpListener,
}

impl SeedPeer {
    fn new() -> SeedPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        SeedPeer { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Registers `name` for this listener the seed's way (from 127.0.0.1, so 127.0.0.1:PORT).
    fn register(&self, registry: SocketAddr, name: &str) {
        let reply = seed_request(registry, &format!("reg {name} {}", self.port()));
        assert_eq!(reply, format!("127.0.0.1:{}", self.port()));
    }

    /// Waits for the next connection and returns everything it carried; the sender must close
    /// its side (EOF) within the timeout.
    fn receive(&self) -> Vec<u8> {
        let (mut s, _) = wait_for(T, "a connection to the seed peer", || {
            match self.listener.accept() {
                Ok(c) => Some(c),
                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                Err(e) => panic!("accept: {e}"),
            }
        });
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut out = Vec::new();
        if let Err(e) = s.read_to_end(&mut out) {
            panic!(
                "no EOF from chatd after {:?}: {e}",
                String::from_utf8_lossy(&out)
            );
        }
        out
    }

    /// True when no connection is waiting to be accepted right now.
    fn idle(&self) -> bool {
        matches!(self.listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }
}

/// Connects to a chatd peer port like the seed does: write the text, close. Returns the local
/// address (the expected `legacy:IP:PORT` sender) and what chatd wrote back before closing.
fn seed_send(to: SocketAddr, text: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let local = s.local_addr().unwrap();
    // chatd may stop reading (and close) before all of an oversized text is written.
    let _ = s.write_all(text);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("chatd did not close the seed connection: {e}"),
    }
    (local, back)
}

// ---------------------------------------------------------------------------------------------
// 1. registryd: the seed's `reg` / `get` on the same port.

#[test]
fn registry_answers_seed_reg_and_get_and_marks_them_legacy() {
    let net = Net::new();
    let reg = net.registry.addr;
    let pa = net.node("pa");
    let pa_addr = wait_registered(&pa);
    assert_eq!(pa_addr, format!("127.0.0.1:{}", pa.listen.port()));

    // Bare IP:PORT replies, connection closed after each (seed_request checks the EOF).
    assert_eq!(seed_request(reg, "reg oldpeer 4321"), "127.0.0.1:4321");
    assert_eq!(seed_request(reg, "get oldpeer"), "127.0.0.1:4321");
    assert_eq!(seed_request(reg, "get pa"), pa_addr, "get sees chatd nodes");
    assert_eq!(seed_request(reg, "get nobody"), "", "unknown name: empty");

    // Marked legacy in the JSON protocol and in chatctl's peer list.
    let r = lookup(reg, "oldpeer");
    assert_eq!(r["ok"]["address"], "127.0.0.1:4321");
    assert_eq!(r["ok"]["legacy"], true, "{r}");
    assert_eq!(lookup(reg, "pa")["ok"]["legacy"], false);
    let p = peer_entry(&pa, "oldpeer").expect("oldpeer in chatctl peers");
    assert_eq!(p["legacy"], true, "{p}");
    assert_eq!(p["address"], "127.0.0.1:4321");
    assert_eq!(peer_entry(&pa, "pa").expect("pa in peers")["legacy"], false);

    // A legacy registration may be renewed or moved by another one.
    assert_eq!(seed_request(reg, "reg oldpeer 4322"), "127.0.0.1:4322");
    assert_eq!(seed_request(reg, "get oldpeer"), "127.0.0.1:4322");

    // A name held by a chatd node cannot be taken: empty reply, chatd's address kept.
    assert_eq!(seed_request(reg, "reg pa 9999"), "");
    assert_eq!(seed_request(reg, "get pa"), pa_addr);
    let r = lookup(reg, "pa");
    assert_eq!(r["ok"]["address"], pa_addr.as_str());
    assert_eq!(r["ok"]["legacy"], false);
    assert_eq!(peer_entry(&pa, "pa").unwrap()["legacy"], false);
}

#[test]
fn chatd_names_stay_protected_offline_and_can_take_over_legacy_names() {
    let net = Net::new();
    let reg = net.registry.addr;
    let mut pa = net.node("pa");
    let pa_addr = wait_registered(&pa);
    // Stopped (marked offline), the name still belongs to the chatd node.
    pa.daemon.terminate(T);
    wait_for(T, "pa to show offline", || {
        (lookup(reg, "pa")["ok"]["online"] == false).then_some(())
    });
    assert_eq!(seed_request(reg, "reg pa 9999"), "");
    assert_eq!(seed_request(reg, "get pa"), pa_addr);
    assert_eq!(lookup(reg, "pa")["ok"]["legacy"], false);

    // A chatd node starting under a seed peer's name replaces the legacy record.
    assert_eq!(seed_request(reg, "reg pc 1111"), "127.0.0.1:1111");
    let pc = net.node("pc");
    let pc_addr = format!("127.0.0.1:{}", pc.listen.port());
    wait_for(T, "pc to replace the legacy record", || {
        (lookup(reg, "pc")["ok"]["address"] == pc_addr.as_str()).then_some(())
    });
    assert_eq!(lookup(reg, "pc")["ok"]["legacy"], false);
    assert_eq!(
        seed_request(reg, "reg pc 1111"),
        "",
        "and now it is protected"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. chatd --legacy receives a seed message on its peer port.

#[test]
fn legacy_chatd_stores_seed_messages() {
    let net = Net::new();
    let pb = net.node_with("pb", &["--legacy"]);

    let (from, back) = seed_send(pb.listen, b"hello from the seed");
    assert!(
        back.is_empty(),
        "chatd must not answer a seed peer: {back:?}"
    );
    let inbox = wait_for(T, "the seed message in pb's inbox", || {
        let m = pb.inbox();
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let m = &inbox[0];
    assert_eq!(m["body"], "hello from the seed");
    assert_eq!(m["from"], format!("legacy:{from}"));
    assert_eq!(m["authenticated"], false);
    assert!(m["id"].is_string() && m["received_at"].is_string(), "{m}");

    // Text that starts like the preamble is still a seed message, prefix included.
    let (from2, _) = seed_send(pb.listen, b"PEERCHAT rocks");
    // Over 1024 bytes: the first 1024 are kept.
    let long: String = (0..1500).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    seed_send(pb.listen, long.as_bytes());
    let inbox = wait_for(T, "three seed messages", || {
        let m = pb.inbox();
        (m.len() >= 3).then_some(m)
    });
    assert_eq!(inbox.len(), 3);
    let by_body = |b: &str| inbox.iter().find(|m| m["body"] == b).cloned();
    let m = by_body("PEERCHAT rocks").expect("preamble-like text stored whole");
    assert_eq!(m["from"], format!("legacy:{from2}"));
    assert!(
        by_body(&long[..1024]).is_some(),
        "expected the first 1024 bytes; bodies: {:?}",
        inbox
            .iter()
            .map(|m| m["body"].as_str().unwrap_or("").len())
            .collect::<Vec<_>>()
    );
    assert!(inbox.iter().all(|m| m["authenticated"] == false));

    // The node still speaks its own protocol.
    let pa = net.node("pa");
    let out = pa.ctl(&["send", "pb", "framed"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let bodies = pb.wait_inbox(4, T);
    assert_eq!(bodies.last().unwrap(), "framed");
    assert_eq!(pb.inbox().last().unwrap()["from"], "pa");
}

#[test]
fn chatd_without_legacy_drops_seed_messages() {
    let net = Net::new();
    let mut pb = net.node("pb");
    let pa = net.node("pa");

    // seed_send returns once chatd has closed the connection, i.e. after it judged it.
    let (_, back) = seed_send(pb.listen, b"hello from the seed");
    assert!(back.is_empty(), "{back:?}");
    seed_send(pb.listen, b"PEERCHAT rocks");
    assert!(pb.daemon.is_running());

    // A framed message afterwards arrives, and is the only thing stored.
    let out = pa.ctl(&["send", "pb", "framed"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pb.wait_inbox(1, T);
    let inbox = pb.inbox();
    assert_eq!(inbox.len(), 1, "seed text must not be stored: {inbox:?}");
    assert_eq!(inbox[0]["body"], "framed");
    assert_eq!(inbox[0]["from"], "pa");
}

// ---------------------------------------------------------------------------------------------
// 3.–5. chatd sending to a seed peer.

#[test]
fn legacy_chatd_sends_raw_text_to_a_seed_peer() {
    let net = Net::new();
    let seed = SeedPeer::new();
    seed.register(net.registry.addr, "oldpeer");
    let pa = net.node_with("pa", &["--legacy"]);

    let out = pa.ctl(&["--json", "send", "oldpeer", "hi seed"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout)[0]["state"], "queued");
    assert_eq!(seed.receive(), b"hi seed", "exactly the body, then EOF");

    let c = wait_counts(&pa, "sent 1, queued 0", |c| {
        c["sent"] == 1 && c["queued"] == 0
    });
    assert_eq!(c["delivered"], 0, "{c}");
    assert_eq!(c["failed"], 0, "{c}");
    wait_for(T, "the delivery to be final", || {
        (delivery_rows(&pa) == [("sent".to_string(), true)]).then_some(())
    });

    // Each message is its own short connection, in order.
    for body in ["second one", "third"] {
        let out = pa.ctl(&["send", "oldpeer", body]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(seed.receive(), b"second one");
    assert_eq!(seed.receive(), b"third");
    wait_counts(&pa, "sent 3, queued 0", |c| {
        c["sent"] == 3 && c["queued"] == 0
    });
    wait_for(T, "all deliveries final", || {
        delivery_rows(&pa)
            .iter()
            .all(|(s, f)| s == "sent" && *f)
            .then_some(())
    });
    assert!(seed.idle(), "nothing is sent twice");
}

#[test]
fn legacy_bodies_are_limited_to_1024_bytes() {
    let net = Net::new();
    let seed = SeedPeer::new();
    seed.register(net.registry.addr, "oldpeer");
    let pa = net.node_with("pa", &["--legacy"]);

    let too_long = "x".repeat(1025);
    let out = pa.ctl(&["send", "oldpeer", &too_long]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("1024"), "{}", stderr(&out));
    let out = pa.ctl(&["--json", "send", "oldpeer", &too_long]);
    assert_eq!(code(&out), 7);
    assert_eq!(json_lines(&out.stdout)[0]["error"]["code"], "too_large");
    // Multi-byte: 342 × "é€" is 342 × 5 = 1710 bytes but only 684 characters.
    let wide = "é€".repeat(342);
    assert_eq!(code(&pa.ctl(&["send", "oldpeer", &wide])), 7);
    // Not even part of a multi-recipient message is accepted.
    let _pb = net.node("pb");
    assert_eq!(code(&pa.ctl(&["send", "pb,oldpeer", &too_long])), 7);
    assert_eq!(counts(&pa)["outbox"], 0, "refused sends are not recorded");

    // Exactly 1024 bytes is fine and arrives whole.
    let max = "y".repeat(1024);
    let out = pa.ctl(&["send", "oldpeer", &max]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(seed.receive(), max.as_bytes());
    wait_counts(&pa, "sent 1", |c| c["sent"] == 1 && c["queued"] == 0);
}

#[test]
fn chatd_without_legacy_refuses_to_send_to_a_seed_peer() {
    let net = Net::new();
    let seed = SeedPeer::new();
    seed.register(net.registry.addr, "oldpeer");
    let pa = net.node("pa");

    let out = pa.ctl(&["send", "oldpeer", "hi seed"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains("--legacy"),
        "message should mention --legacy: {msg}"
    );
    assert!(msg.contains("oldpeer"), "{msg}");
    let out = pa.ctl(&["--json", "send", "oldpeer", "hi seed"]);
    assert_eq!(code(&out), 7);
    let e = &json_lines(&out.stdout)[0]["error"];
    assert_eq!(e["code"], "refused", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--legacy"), "{e}");
    // Refused outright: nothing recorded, nothing sent.
    let c = counts(&pa);
    assert_eq!(c["outbox"], 0, "{c}");
    assert!(seed.idle());
    // The node itself still works.
    let out = pa.ctl(&["send", "pa", "to myself"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pa.wait_inbox(1, T);
}

#[test]
fn queued_messages_follow_a_name_that_turns_legacy() {
    let net = Net::new();
    let reg = net.registry.addr;
    // Bound first, so that the closed port below cannot be the seed peer's.
    let seed = SeedPeer::new();
    // "mover" starts as a chatd-style record pointing at a closed port.
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let owner = Signer::new(7);
    let r = registry_json(reg, &owner.register("mover", dead_port, 1));
    assert!(r["ok"].is_object(), "{r}");
    let fast = ["--retry-initial", "0.2", "--retry-max", "0.5"];
    let old = net.node_with("old", &fast);
    let new = net.node_with("new", &[&fast[..], &["--legacy"]].concat());
    for (node, body) in [(&old, "from old"), (&new, "from new")] {
        let out = node.ctl(&["send", "--id", "m1", "mover", body]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    // The name now belongs to a seed peer.
    let r = registry_json(reg, &owner.owner_op("unregister", "mover", 2));
    assert!(r["ok"].is_object(), "{r}");
    seed.register(reg, "mover");

    // Both nodes pinned mover's key when they accepted the message: a legacy record for a
    // pinned name is a key change, never a reason to send plaintext.
    for node in [&old, &new] {
        let out = node.ctl(&["--json", "send", "mover", "plaintext?"]);
        assert_eq!(code(&out), 7, "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("key_changed"));
        wait_for(T, "the key change recorded on the queued message", || {
            let out = node.ctl(&["--json", "status", "m1"]);
            let v = json_lines(&out.stdout);
            v.first()
                .filter(|r| {
                    r["recipients"][0]["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("trust")
                })
                .cloned()
        });
    }
    assert!(seed.idle(), "nothing may reach the seed peer before trust");
    // The user accepts the change: the pin goes, and the queued messages continue.
    for node in [&old, &new] {
        let out = node.ctl(&["trust", "mover"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    // With --legacy the queued message goes out raw; without, it fails with a reason.
    assert_eq!(seed.receive(), b"from new");
    wait_counts(&new, "new: sent 1", |c| c["sent"] == 1 && c["queued"] == 0);
    wait_counts(&old, "old: failed 1", |c| {
        c["failed"] == 1 && c["queued"] == 0 && c["sent"] == 0
    });
    // Repeating the send (same id) reports the recorded outcome and its reason.
    // (chatctl exits 6, "delivery failed", when it reports a failed recipient; 0 before that.)
    let out = old.ctl(&["--json", "send", "--id", "m1", "mover", "from old"]);
    assert!(matches!(code(&out), 0 | 6), "{}", stderr(&out));
    let r = &json_lines(&out.stdout)[0];
    assert_eq!(r["state"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("--legacy"),
        "{r}"
    );
    // New messages are refused up front.
    let out = old.ctl(&["send", "mover", "again"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(seed.idle(), "old must not have reached the seed peer");
}
