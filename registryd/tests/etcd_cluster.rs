//! registryd on etcd, with real etcd members (plain processes on loopback ports, in the test's
//! directory) and the real registryd binary: two instances share a 3-member cluster. Each test
//! skips loudly when etcd is not installed outside CI; under CI (`CI=true`) they must run.
//! The last test adds two chatd binaries listing both instances (`--registry r1,r2`): one
//! instance killed, chatd moves to the other and sends keep working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use peerchat_testkit::etcd::EtcdCluster;
use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::{ask, seed};
use peerchat_testkit::{
    bin, chatctl, json_lines, log_field, spawn_logged, tempdir, wait_for, Daemon, Node, Registry,
};
use serde_json::Value;

/// Registrations from 127.0.0.1 are many here: lift the per-address rate limit.
const FAST: &[&str] = &["--register-rate", "1000000"];

fn one(addr: SocketAddr, line: &str) -> Value {
    ask(addr, &[line]).remove(0)
}

fn lookup(addr: SocketAddr, name: &str) -> Value {
    one(
        addr,
        &format!(r#"{{"id":1,"op":"lookup","name":"{name}"}}"#),
    )
}

fn status(addr: SocketAddr) -> Value {
    one(addr, r#"{"id":1,"op":"status"}"#)
}

fn key_of(v: &Value) -> Option<String> {
    v["ok"]["signed"]["key"].as_str().map(str::to_string)
}

/// Polls until `addr` resolves `name` to `key`.
fn resolves(addr: SocketAddr, name: &str, key: &str) {
    wait_for(
        Duration::from_secs(30),
        &format!("{name} resolving to its key at {addr}"),
        || (key_of(&lookup(addr, name)).as_deref() == Some(key)).then_some(()),
    );
}

/// Registers until it is accepted (etcd may be electing a leader), returning the reply.
fn register_eventually(addr: SocketAddr, signer: &Signer, name: &str, seq: &mut u64) -> Value {
    wait_for(
        Duration::from_secs(20),
        &format!("registering {name} at {addr}"),
        || {
            *seq += 1;
            let r = one(addr, &signer.register(name, 7000, *seq));
            r.get("ok").is_some().then_some(r)
        },
    )
}

#[test]
fn two_instances_share_names_race_fairly_and_survive_a_member_loss() {
    let dir = tempdir();
    let Some(mut etcd) = EtcdCluster::start(dir.path(), 3, "etcd_cluster") else {
        return;
    };
    let url = etcd.url("/t1/");
    let a = Registry::start_store(dir.path(), "a.log", &url, FAST);
    let b = Registry::start_store(dir.path(), "b.log", &url, FAST);

    // Registered through one, resolved through the other.
    let alice = Signer::new(1);
    let r = one(a.addr, &alice.register("alice", 7000, 1));
    assert!(r.get("ok").is_some(), "{r}");
    resolves(b.addr, "alice", &alice.public().to_hex());
    assert_eq!(lookup(b.addr, "alice")["ok"]["online"], true);
    let s = status(b.addr);
    assert_eq!(s["ok"]["store"], "etcd", "{s}");
    assert_eq!(s["ok"]["store_ok"], true, "{s}");

    // The race: two keys register one new name through the two instances at once; exactly
    // one wins, the loser hears today's refusal (the sequence number is checked first: replay
    // when not above the winner's, else key_mismatch), and both instances agree on the winner.
    let (x, y) = (Signer::new(2), Signer::new(3));
    for round in 0..25 {
        let name = format!("race{round}");
        let (lx, ly) = (x.register(&name, 7000, 10), y.register(&name, 7001, 11));
        let (ax, bx) = (a.addr, b.addr);
        let tx = std::thread::spawn(move || one(ax, &lx));
        let ty = std::thread::spawn(move || one(bx, &ly));
        let (rx, ry) = (tx.join().unwrap(), ty.join().unwrap());
        let won: Vec<bool> = [&rx, &ry].iter().map(|r| r.get("ok").is_some()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {rx} / {ry}"
        );
        let (winner, loser, code) = if won[0] {
            (&x, &ry, "key_mismatch")
        } else {
            (&y, &rx, "replay")
        };
        assert_eq!(loser["error"]["code"], code, "round {round}: {loser}");
        resolves(a.addr, &name, &winner.public().to_hex());
        resolves(b.addr, &name, &winner.public().to_hex());
    }

    // One member killed: registrations and lookups go on through both instances.
    etcd.kill(0);
    let carol = Signer::new(4);
    let mut seq = 100;
    register_eventually(a.addr, &carol, "carol", &mut seq);
    resolves(b.addr, "carol", &carol.public().to_hex());
    let dave = Signer::new(5);
    register_eventually(b.addr, &dave, "dave", &mut seq);
    resolves(a.addr, "dave", &dave.public().to_hex());
    // Renewals (lease keep-alives) too.
    register_eventually(a.addr, &alice, "alice", &mut seq);
    resolves(a.addr, "alice", &alice.public().to_hex());
}

#[test]
fn etcd_down_lookups_still_answered_writes_refused_then_everything_recovers() {
    let dir = tempdir();
    let Some(mut etcd) = EtcdCluster::start(dir.path(), 3, "etcd_cluster") else {
        return;
    };
    let url = etcd.url("/t2/");
    let a = Registry::start_store(dir.path(), "a.log", &url, FAST);
    let bob = Signer::new(1);
    let mut seq = 0;
    register_eventually(a.addr, &bob, "bob", &mut seq);
    // A node on this registry: its `chatctl doctor` reports the registry's store.
    let node = Node::start(dir.path(), "nina", a.addr);
    wait_for(Duration::from_secs(20), "nina registered", || {
        (lookup(a.addr, "nina")["ok"]["online"] == true).then_some(())
    });
    assert_eq!(doctor_store(&node)["ok"], true);

    etcd.kill_all();
    // Lookups from memory.
    let r = lookup(a.addr, "bob");
    assert_eq!(key_of(&r), Some(bob.public().to_hex()), "{r}");
    // Writes refused with a clear code, a new name and a renewal alike.
    let eve = Signer::new(2);
    let refused = one(a.addr, &eve.register("eve", 7000, 1));
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{refused}"
    );
    seq += 1;
    let renewal = one(a.addr, &bob.register("bob", 7000, seq));
    assert_eq!(renewal["error"]["code"], "unavailable", "{renewal}");
    // Said in status and in the log.
    wait_for(
        Duration::from_secs(30),
        "status saying etcd is down",
        || (status(a.addr)["ok"]["store_ok"] == false).then_some(()),
    );
    assert!(
        a.daemon.log_text().contains("etcd unreachable"),
        "{}",
        a.daemon.log_text()
    );

    etcd.restart_all();
    register_eventually(a.addr, &eve, "eve", &mut seq);
    register_eventually(a.addr, &bob, "bob", &mut seq);
    wait_for(
        Duration::from_secs(30),
        "status saying etcd is back",
        || (status(a.addr)["ok"]["store_ok"] == true).then_some(()),
    );
    assert!(a.daemon.log_text().contains("etcd reachable again"));
    assert_eq!(lookup(a.addr, "bob")["ok"]["online"], true);
}

/// The `store` line of `chatctl --json doctor`.
fn doctor_store(node: &Node) -> Value {
    let out = node.ctl(&["--json", "doctor"]);
    json_lines(&out.stdout)
        .into_iter()
        .find(|c| c["check"] == "store")
        .unwrap_or_else(|| panic!("no store check: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn kill9_of_everything_keeps_every_name_binding_and_seq() {
    let dir = tempdir();
    let Some(mut etcd) = EtcdCluster::start(dir.path(), 3, "etcd_cluster") else {
        return;
    };
    let url = etcd.url("/t3/");
    let mut a = Registry::start_store(dir.path(), "a.log", &url, FAST);
    let mut b = Registry::start_store(dir.path(), "b.log", &url, FAST);
    let signers: Vec<Signer> = (1..=20).map(Signer::new).collect();
    for (i, s) in signers.iter().enumerate() {
        let at = if i % 2 == 0 { a.addr } else { b.addr };
        let r = one(
            at,
            &s.register(&format!("n{i}"), 7000 + i as u16, 1000 + i as u64),
        );
        assert!(r.get("ok").is_some(), "{r}");
    }
    // A name gone offline (its seq is a write), and one unregistered (a tombstone).
    assert!(one(a.addr, &signers[0].owner_op("offline", "n0", 5000))
        .get("ok")
        .is_some());
    assert!(one(b.addr, &signers[1].owner_op("unregister", "n1", 6000))
        .get("ok")
        .is_some());
    // A rotation: n2 moves to a new key.
    let new_key = Signer::new(99);
    let rot = signers[2].rotation_to("n2", &new_key.public(), 7000);
    let r = one(
        a.addr,
        &new_key.register_full("n2", 7002, None, 7001, Some(&rot)),
    );
    assert!(r.get("ok").is_some(), "{r}");

    a.daemon.kill9();
    b.daemon.kill9();
    etcd.kill_all();
    etcd.restart_all();
    let a2 = Registry::start_store(dir.path(), "a2.log", &url, FAST);
    let b2 = Registry::start_store(dir.path(), "b2.log", &url, FAST);
    for at in [a2.addr, b2.addr] {
        for (i, s) in signers.iter().enumerate().skip(3) {
            let r = lookup(at, &format!("n{i}"));
            assert_eq!(key_of(&r), Some(s.public().to_hex()), "n{i}: {r}");
            assert_eq!(r["ok"]["last_seq"], 1000 + i as u64, "n{i}: {r}");
        }
        let n0 = lookup(at, "n0");
        assert_eq!(n0["ok"]["online"], false, "{n0}");
        assert_eq!(n0["ok"]["last_seq"], 5000, "{n0}");
        assert_eq!(lookup(at, "n1")["error"]["code"], "not_found");
        let n2 = lookup(at, "n2");
        assert_eq!(key_of(&n2), Some(new_key.public().to_hex()), "{n2}");
        assert_eq!(
            n2["ok"]["rotations"].as_array().map(Vec::len),
            Some(1),
            "{n2}"
        );
    }
    // The binding holds: another key is refused; the tombstone holds: n1's old key cannot
    // replay a seq from before the unregister.
    let r = one(a2.addr, &Signer::new(50).register("n3", 7000, 99_999));
    assert_eq!(r["error"]["code"], "key_mismatch", "{r}");
    let r = one(b2.addr, &signers[1].register("n1", 7001, 5999));
    assert_eq!(r["error"]["code"], "replay", "{r}");
    // And a seq below the stored one is a replay.
    let r = one(a2.addr, &signers[5].register("n5", 7005, 1000));
    assert_eq!(r["error"]["code"], "replay", "{r}");
    drop((a, b));
}

#[test]
fn migrate_from_sqlite_keeps_every_name_and_release_works_on_etcd() {
    let dir = tempdir();
    // A SQLite registry with signed names, a seed name and a tombstone.
    let sqlite = Registry::start_with(dir.path(), "127.0.0.1:0", FAST);
    let signers: Vec<Signer> = (1..=10).map(Signer::new).collect();
    for (i, s) in signers.iter().enumerate() {
        let r = one(
            sqlite.addr,
            &s.register(&format!("m{i}"), 7000, 100 + i as u64),
        );
        assert!(r.get("ok").is_some(), "{r}");
    }
    assert_eq!(seed(sqlite.addr, "reg oldie 4000"), "127.0.0.1:4000");
    assert!(
        one(sqlite.addr, &signers[9].owner_op("unregister", "m9", 500))
            .get("ok")
            .is_some()
    );
    let before = one(sqlite.addr, r#"{"id":1,"op":"list"}"#)["ok"]["records"].clone();
    let db = sqlite.db.clone();
    drop(sqlite);

    let Some(etcd) = EtcdCluster::start(dir.path(), 1, "etcd_cluster") else {
        return;
    };
    let url = etcd.url("/mig/");
    let migrate = |to: &str| {
        Command::new(bin("registryd"))
            .args([
                "migrate",
                "--from",
                &format!("sqlite:{}", db.display()),
                "--to",
                to,
            ])
            .output()
            .unwrap()
    };
    let out = migrate(&url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("copied 10 names and 1 tombstones"), "{err}");
    // Not into a prefix that holds data.
    let again = migrate(&url);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty prefix"));

    let r = Registry::start_store(dir.path(), "etcd-reg.log", &url, FAST);
    let after = one(r.addr, r#"{"id":1,"op":"list"}"#)["ok"]["records"].clone();
    let strip = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].clone(),
                    r["signed"].clone(),
                    r["last_seq"].clone(),
                    r["legacy"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(after.as_array().unwrap().len(), 10);
    // Bindings and the tombstone came along.
    let x = one(r.addr, &Signer::new(77).register("m0", 7000, 10_000));
    assert_eq!(x["error"]["code"], "key_mismatch", "{x}");
    let x = one(r.addr, &signers[9].register("m9", 7000, 400));
    assert_eq!(x["error"]["code"], "replay", "{x}");
    // The owner renews: online again (a new lease).
    let x = one(r.addr, &signers[0].register("m0", 7000, 10_000));
    assert!(x.get("ok").is_some(), "{x}");
    assert_eq!(lookup(r.addr, "m0")["ok"]["online"], true);

    // registryd release on etcd: the running instance drops the name; its old key cannot
    // replay its way back.
    let out = Command::new(bin("registryd"))
        .args(["release", "m1", "--store", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(30), "m1 released", || {
        (lookup(r.addr, "m1")["error"]["code"] == "not_found").then_some(())
    });
    let x = one(r.addr, &signers[1].register("m1", 7000, 101));
    assert_eq!(x["error"]["code"], "replay", "{x}");
    let x = one(r.addr, &Signer::new(88).register("m1", 7000, 1));
    assert!(x.get("ok").is_some(), "a released name is free: {x}");
    let missing = Command::new(bin("registryd"))
        .args(["release", "nobody", "--store", &url])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

/// A chatd binary listing `registries` in that order (the testkit's `Node` takes one).
struct ChatNode {
    daemon: Daemon,
    socket: PathBuf,
}

fn chatd(dir: &Path, name: &str, registries: &[SocketAddr], log: &str) -> ChatNode {
    let socket = dir.join(format!("{name}.sock"));
    let list: Vec<String> = registries.iter().map(|a| a.to_string()).collect();
    let mut cmd = Command::new(bin("chatd"));
    cmd.args(["--name", name, "--listen", "127.0.0.1:0"])
        .args(["--registry", &list.join(",")])
        .args(["--retry-initial", "0.2", "--retry-max", "1"])
        .arg("--socket")
        .arg(&socket)
        .arg("--db")
        .arg(dir.join(format!("{name}.db")));
    let (daemon, line) = spawn_logged(cmd, &dir.join(log), "chatd ready");
    assert!(log_field(&line, "listen").is_some(), "{line}");
    ChatNode { daemon, socket }
}

fn node_status(node: &ChatNode) -> Value {
    let out = chatctl(&node.socket, &["--json", "status"], None);
    json_lines(&out.stdout).pop().unwrap_or(Value::Null)
}

/// `node`'s address as registered with the registry at `at` (status' `registries`), if it is.
fn registered_with(node: &ChatNode, at: SocketAddr) -> Option<String> {
    let s = node_status(node);
    let r = s["registries"]
        .as_array()?
        .iter()
        .find(|r| r["address"] == at.to_string())?
        .clone();
    r["registered"].as_str().map(str::to_string)
}

#[test]
fn a_registryd_killed_chatd_moves_to_the_other_and_sends_keep_working() {
    let dir = tempdir();
    let Some(etcd) = EtcdCluster::start(dir.path(), 3, "etcd_cluster") else {
        return;
    };
    let url = etcd.url("/t5/");
    // A short TTL: leases are renewed every 2 s, so a dead instance is noticed soon.
    let short: Vec<&str> = FAST.iter().copied().chain(["--ttl", "6"]).collect();
    let mut r1 = Registry::start_store(dir.path(), "r1.log", &url, &short);
    let r2 = Registry::start_store(dir.path(), "r2.log", &url, &short);
    let both = [r1.addr, r2.addr];
    let pa = chatd(dir.path(), "pa", &both, "pa.log");
    let mut pb = chatd(dir.path(), "pb", &both, "pb.log");
    for (n, at) in [
        (&pa, r1.addr),
        (&pa, r2.addr),
        (&pb, r1.addr),
        (&pb, r2.addr),
    ] {
        wait_for(
            Duration::from_secs(30),
            &format!("registered at {at}"),
            || registered_with(n, at),
        );
    }
    assert_eq!(node_status(&pa)["registry"], r1.addr.to_string());
    let out = chatctl(&pa.socket, &["send", "--wait=30", "pb", "before"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // r1 dies: pa moves to r2 by itself (its presence watch and lease keeper notice).
    r1.daemon.kill9();
    let killed = Instant::now();
    wait_for(Duration::from_secs(30), "pa on r2", || {
        let s = node_status(&pa);
        (s["registry"] == r2.addr.to_string() && s["registry_reachable"] == true).then_some(())
    });
    let moved = killed.elapsed();
    // Its renewals (every TTL/3 = 2 s) or presence watch notice; a request times out in 3 s.
    assert!(moved < Duration::from_secs(10), "moved after {moved:?}");
    // pb moves too (a new peer port), so nothing pa knows can reach it: only a registry that
    // answers can say where pb is now.
    pb.daemon.terminate(Duration::from_secs(10));
    pb = chatd(dir.path(), "pb", &both, "pb2.log");
    let pb_now = wait_for(Duration::from_secs(30), "pb registered at r2", || {
        registered_with(&pb, r2.addr)
    });
    let sent = Instant::now();
    let out = chatctl(&pa.socket, &["send", "--wait=30", "pb", "after"], None);
    assert!(
        out.status.success(),
        "the send after r1 died was not delivered: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = sent.elapsed();
    let bodies: Vec<String> = json_lines(&chatctl(&pb.socket, &["--json", "inbox"], None).stdout)
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_string))
        .collect();
    assert_eq!(bodies, ["before", "after"]);
    let s = node_status(&pa);
    assert_eq!(s["registries"][0]["reachable"], false, "{s}");
    eprintln!(
        "etcd failover: pa moved to r2 {:.2} s after r1 was killed; the send to pb (now at {pb_now}) was delivered {:.2} s after it was made",
        moved.as_secs_f64(),
        delivered.as_secs_f64()
    );
    drop((r2, etcd));
}
