//! Seed (text protocol) registrations cannot crowd out keyed nodes: a cap per source address,
//! `--seed-protocol off`, and `registryd release --legacy-offline`.

use std::net::SocketAddr;
use std::time::Duration;

use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::{ask, seed};
use peerchat_testkit::{tempdir, wait_for, Registry};
use serde_json::Value;

fn lookup(addr: SocketAddr, name: &str) -> Value {
    let line = format!(r#"{{"id":1,"op":"lookup","name":"{name}"}}"#);
    ask(addr, &[line]).remove(0)
}

fn names(addr: SocketAddr) -> Vec<String> {
    let r = ask(addr, &[r#"{"id":1,"op":"list"}"#]).remove(0);
    r["ok"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_address_holds_at_most_8_seed_names() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let addr = reg.addr;
    for i in 0..8 {
        assert_eq!(
            seed(addr, &format!("reg junk{i} {}", 5000 + i)),
            format!("127.0.0.1:{}", 5000 + i)
        );
    }
    // The 9th name from the same address is refused (empty reply), and logged with its source.
    assert_eq!(seed(addr, "reg junk8 5008"), "");
    assert_eq!(lookup(addr, "junk8")["error"]["code"], "not_found");
    wait_for(Duration::from_secs(5), "the refusal in the log", || {
        reg.daemon.log_text().lines().find_map(|l| {
            (l.contains("legacy registration refused")
                && l.contains("source=127.0.0.1")
                && l.contains("junk8"))
            .then_some(())
        })
    });
    // Renewing one of its 8 names (even at a new port) is still fine.
    assert_eq!(seed(addr, "reg junk0 6000"), "127.0.0.1:6000");
    // Keyed nodes are not affected: a new name and a seed name taken over by a key.
    let r = ask(
        addr,
        &[
            Signer::new(1).register("pa", 7000, 1),
            Signer::new(2).register("junk1", 7001, 1),
        ],
    );
    assert!(r[0]["ok"].is_object(), "{}", r[0]);
    assert!(r[1]["ok"].is_object(), "{}", r[1]);
    // ... which freed a place for this address.
    assert_eq!(seed(addr, "reg junk8 5008"), "127.0.0.1:5008");
    assert_eq!(seed(addr, "reg junk9 5009"), "");
}

#[test]
fn seed_protocol_off_answers_json_only() {
    let dir = tempdir();
    let reg = Registry::start_with(dir.path(), "127.0.0.1:0", &["--seed-protocol", "off"]);
    let addr = reg.addr;
    assert_eq!(seed(addr, "reg oldpeer 1234"), "");
    assert_eq!(seed(addr, "get oldpeer"), "");
    let r = ask(
        addr,
        &[
            Signer::new(1).register("pa", 7000, 1),
            r#"{"id":2,"op":"lookup","name":"pa"}"#.into(),
            r#"{"id":3,"op":"lookup","name":"oldpeer"}"#.into(),
        ],
    );
    assert!(r[0]["ok"].is_object(), "{}", r[0]);
    assert_eq!(r[1]["ok"]["address"], "127.0.0.1:7000");
    assert_eq!(r[2]["error"]["code"], "not_found");
    // `get` of a keyed name is refused too: no text at all.
    assert_eq!(seed(addr, "get pa"), "");
}

#[test]
fn release_legacy_offline_clears_offline_seed_names_only() {
    let dir = tempdir();
    let reg = Registry::start_with(dir.path(), "127.0.0.1:0", &["--ttl", "3"]);
    let addr = reg.addr;
    assert_eq!(seed(addr, "reg old1 5001"), "127.0.0.1:5001");
    assert_eq!(seed(addr, "reg old2 5002"), "127.0.0.1:5002");
    let r = ask(addr, &[Signer::new(1).register("pk", 7000, 1)]);
    assert!(r[0]["ok"].is_object(), "{}", r[0]);
    wait_for(Duration::from_secs(15), "the leases to run out", || {
        ["old1", "old2", "pk"]
            .iter()
            .all(|n| lookup(addr, n)["ok"]["online"] == false)
            .then_some(())
    });
    assert_eq!(seed(addr, "reg fresh 5003"), "127.0.0.1:5003");

    let release = |args: &[&str]| {
        std::process::Command::new(peerchat_testkit::bin("registryd"))
            .arg("release")
            .args(args)
            .arg("--db")
            .arg(&reg.db)
            .env_remove("REGISTRYD_TTL")
            .output()
            .unwrap()
    };
    // Exactly one of NAME and --legacy-offline.
    assert_eq!(release(&[]).status.code(), Some(2));
    assert_eq!(
        release(&["old1", "--legacy-offline"]).status.code(),
        Some(2)
    );
    let out = release(&["--legacy-offline", "--ttl", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("released 2 offline seed registrations"),
        "{stderr}"
    );
    // The running registryd notices; the offline keyed name and the online seed name stay.
    wait_for(Duration::from_secs(10), "the release to be seen", || {
        let n = names(addr);
        (n == ["fresh", "pk"]).then_some(())
    });
}
