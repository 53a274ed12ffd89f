//! registryd's `watch` (protocol.md 3.3.6): a connection that streams the presence of a set of
//! names, driven by registrations, offline, unregister, release, seed registrations and leases
//! running out.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::{ask, seed};
use peerchat_testkit::{tempdir, Registry};
use serde_json::{json, Value};

fn ok(r: &[Value]) {
    for v in r {
        assert!(v["ok"].is_object(), "{v}");
    }
}

/// A watching connection.
struct Watcher {
    write: TcpStream,
    read: BufReader<TcpStream>,
}

impl Watcher {
    fn new(addr: SocketAddr) -> Watcher {
        let s = TcpStream::connect(addr).unwrap();
        Watcher {
            write: s.try_clone().unwrap(),
            read: BufReader::new(s),
        }
    }

    fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn watch(&mut self, id: u64, names: &[&str]) {
        self.send(&json!({"id": id, "op": "watch", "names": names}).to_string());
    }

    /// The next line within `within`, or `None` if nothing came (`Some(Value::Null)` at EOF).
    fn next_within(&mut self, within: Duration) -> Option<Value> {
        self.read.get_ref().set_read_timeout(Some(within)).unwrap();
        let mut line = String::new();
        match self.read.read_line(&mut line) {
            Ok(0) => Some(Value::Null),
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(line.is_empty(), "partial line {line:?}");
                None
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10))
            .expect("a line within 10 s")
    }

    /// The next line, which must be the presence of `name`; returns its `ok` body.
    fn presence(&mut self, id: u64, name: &str) -> Value {
        let v = self.next();
        assert_eq!(v["id"], id, "{v}");
        assert_eq!(v["ok"]["type"], "presence", "{v}");
        assert_eq!(v["ok"]["name"], name, "{v}");
        v["ok"].clone()
    }

    /// Nothing arrives for `quiet`.
    fn silent(&mut self, quiet: Duration) {
        if let Some(v) = self.next_within(quiet) {
            panic!("unexpected line {v}");
        }
    }
}

fn released(reg: &Registry, name: &str) {
    let out = std::process::Command::new(peerchat_testkit::bin("registryd"))
        .args(["release", name, "--db"])
        .arg(&reg.db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn watch_reports_the_set_then_every_change() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let addr = reg.addr;
    let (a, b, c) = (Signer::new(1), Signer::new(2), Signer::new(3));
    ok(&ask(addr, &[a.register("pa", 7000, 1)]));

    let mut w = Watcher::new(addr);
    // Duplicates are ignored: one line per distinct name, in request order.
    w.watch(5, &["pa", "pb", "pa", "pl"]);
    assert_eq!(
        w.presence(5, "pa"),
        json!({"type": "presence", "name": "pa", "online": true, "address": "127.0.0.1:7000"})
    );
    assert_eq!(
        w.presence(5, "pb"),
        json!({"type": "presence", "name": "pb", "online": false})
    );
    assert_eq!(w.presence(5, "pl")["online"], false);

    // A new name comes online.
    ok(&ask(addr, &[b.register("pb", 7100, 1)]));
    assert_eq!(w.presence(5, "pb")["address"], "127.0.0.1:7100");
    // A renewal that changes nothing says nothing; a new address does.
    ok(&ask(
        addr,
        &[b.register("pb", 7100, 2), b.register("pb", 7101, 3)],
    ));
    let p = w.presence(5, "pb");
    assert_eq!(
        (&p["online"], &p["address"]),
        (&json!(true), &json!("127.0.0.1:7101"))
    );
    // Offline keeps the address.
    ok(&ask(addr, &[a.owner_op("offline", "pa", 2)]));
    assert_eq!(
        w.presence(5, "pa"),
        json!({"type": "presence", "name": "pa", "online": false, "address": "127.0.0.1:7000"})
    );
    ok(&ask(addr, &[a.register("pa", 7000, 3)]));
    assert_eq!(w.presence(5, "pa")["online"], true);
    // Unregistered: no address.
    ok(&ask(addr, &[b.owner_op("unregister", "pb", 4)]));
    assert_eq!(
        w.presence(5, "pb"),
        json!({"type": "presence", "name": "pb", "online": false})
    );
    // A seed registration, then the operator's release (seen through the database).
    assert_eq!(seed(addr, "reg pl 5555"), "127.0.0.1:5555");
    assert_eq!(w.presence(5, "pl")["address"], "127.0.0.1:5555");
    released(&reg, "pa");
    assert_eq!(
        w.presence(5, "pa"),
        json!({"type": "presence", "name": "pa", "online": false})
    );

    // A new watch replaces the set: its own id, its names' state first, then only its names.
    w.watch(9, &["pc", "pl"]);
    assert_eq!(w.presence(9, "pc")["online"], false);
    assert_eq!(w.presence(9, "pl")["online"], true);
    ok(&ask(
        addr,
        &[a.register("pa", 7000, 10), c.register("pc", 7200, 1)],
    ));
    assert_eq!(
        w.presence(9, "pc")["online"],
        true,
        "pa is no longer watched"
    );

    // Anything but `watch` on a watching connection is refused, and the connection closed.
    w.send(r#"{"id":11,"op":"lookup","name":"pa"}"#);
    let v = w.next();
    assert_eq!(v["id"], 11, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert_eq!(w.next(), Value::Null, "closed");
}

#[test]
fn leases_running_out_are_reported_and_renewals_are_not() {
    let dir = tempdir();
    let reg = Registry::start_with(dir.path(), "127.0.0.1:0", &["--ttl", "1"]);
    let addr = reg.addr;
    let (a, b) = (Signer::new(1), Signer::new(2));
    ok(&ask(
        addr,
        &[a.register("pa", 7000, 1), b.register("pb", 7100, 1)],
    ));
    let registered = Instant::now();
    let mut w = Watcher::new(addr);
    w.watch(1, &["pa", "pb"]);
    assert_eq!(w.presence(1, "pa")["online"], true);
    assert_eq!(w.presence(1, "pb")["online"], true);

    // pa renews well within its 1 s lease for 3 s; pb does not renew.
    let renewing = std::thread::spawn(move || {
        for seq in 2..14 {
            ok(&ask(addr, &[a.register("pa", 7000, seq)]));
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let v = w.presence(1, "pb");
    assert_eq!(v["online"], false, "{v}");
    assert_eq!(v["address"], "127.0.0.1:7100", "{v}");
    let took = registered.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "expiry seen after {took:?}"
    );
    // Nothing about pa while it renews in time.
    while !renewing.is_finished() {
        w.silent(Duration::from_millis(200));
    }
    renewing.join().unwrap();
    // Then its lease runs out too.
    let v = w.presence(1, "pa");
    assert_eq!(v["online"], false, "{v}");
}

#[test]
fn a_watch_is_bounded_by_1024_names() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    // The longest names, so the line is as long as a watch can be.
    let names: Vec<String> = (0..1025).map(|i| format!("{i:064}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut w = Watcher::new(reg.addr);
    w.watch(3, &refs);
    let v = w.next();
    assert_eq!(v["id"], 3, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("1024"),
        "{v}"
    );
    // Still a normal connection; 1024 names (one repeated) are accepted.
    let mut ok_set = refs[..1024].to_vec();
    ok_set.push(refs[0]);
    w.watch(4, &ok_set);
    for name in &refs[..1024] {
        assert_eq!(w.presence(4, name)["online"], false);
    }
    // Other requests keep their 4 KiB limit.
    let long = format!(
        r#"{{"id":5,"op":"lookup","name":"pa","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let r = ask(reg.addr, &[long]);
    assert_eq!(r[0]["error"]["code"], "bad_request", "{}", r[0]);
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("longer than 4096"));
}

#[test]
fn a_watching_connection_hears_a_heartbeat() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let mut w = Watcher::new(reg.addr);
    w.watch(7, &["pa"]);
    assert_eq!(w.presence(7, "pa")["online"], false);
    let started = Instant::now();
    let v = w.next_within(Duration::from_secs(25)).expect("a heartbeat");
    assert_eq!(v, json!({"id": 7, "ok": {"type": "heartbeat"}}));
    // Every 15 s (registry::WATCH_HEARTBEAT); not before.
    assert!(
        started.elapsed() > Duration::from_secs(13),
        "{:?}",
        started.elapsed()
    );
}
