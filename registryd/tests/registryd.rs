//! registryd as a process: its JSON protocol, the seed's text protocol, leases, persistence and
//! hostile input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::{ask, seed};
use peerchat_testkit::{tempdir, Registry};

fn conn(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn register_lookup_list_offline_unregister() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let (a, b) = (Signer::new(1), Signer::new(2));
    let sig = "00".repeat(64);
    let key = a.public();
    let r = ask(
        reg.addr,
        &[
            a.register("pa", 7000, 1),
            b.register_full("p6", 7001, Some("::1"), 1, None),
            r#"{"id":3,"op":"lookup","name":"pa"}"#.into(),
            r#"{"id":4,"op":"list"}"#.into(),
            a.owner_op("offline", "pa", 2),
            r#"{"id":6,"op":"lookup","name":"pa"}"#.into(),
            b.owner_op("unregister", "p6", 2),
            r#"{"id":8,"op":"lookup","name":"p6"}"#.into(),
            format!(
                r#"{{"id":9,"op":"register","name":"bad name","port":1,"key":"{key}","seq":1,"sig":"{sig}"}}"#
            ),
            format!(
                r#"{{"id":10,"op":"register","name":"{}","port":1,"key":"{key}","seq":1,"sig":"{sig}"}}"#,
                "x".repeat(65)
            ),
        ],
    );
    assert_eq!(r[0]["ok"]["address"], "127.0.0.1:7000");
    assert_eq!(r[1]["ok"]["address"], "[::1]:7001");
    assert_eq!(r[2]["id"], 3);
    assert_eq!(r[2]["ok"]["online"], true);
    assert_eq!(r[2]["ok"]["signed"]["key"], a.public().to_hex());
    assert_eq!(r[3]["ok"]["records"].as_array().unwrap().len(), 2);
    assert_eq!(r[5]["ok"]["online"], false);
    assert_eq!(
        r[5]["ok"]["address"], "127.0.0.1:7000",
        "offline keeps the last address"
    );
    assert_eq!(r[7]["error"]["code"], "not_found");
    assert_eq!(r[8]["error"]["code"], "bad_request");
    assert!(r[8]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("names may only use"));
    assert!(r[9]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit is 64"));
}

#[test]
fn leases_expire_to_offline() {
    let dir = tempdir();
    let reg = Registry::start_with(dir.path(), "127.0.0.1:0", &["--ttl", "1"]);
    let addr = reg.addr;
    ask(addr, &[Signer::new(1).register("pa", 7000, 1)]);
    peerchat_testkit::wait_for(Duration::from_secs(10), "lease to lapse", || {
        let r = ask(addr, &[r#"{"id":1,"op":"lookup","name":"pa"}"#]);
        (r[0]["ok"]["online"] == false).then_some(())
    });
}

#[test]
fn seed_protocol_reg_and_get() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    assert_eq!(seed(reg.addr, "reg oldpeer 1234"), "127.0.0.1:1234");
    assert_eq!(seed(reg.addr, "get oldpeer"), "127.0.0.1:1234");
    assert_eq!(seed(reg.addr, "get oldpeer\r\n"), "127.0.0.1:1234");
    assert_eq!(seed(reg.addr, "get nobody"), "");
    assert_eq!(seed(reg.addr, "nonsense"), "");
    let r = ask(reg.addr, &[r#"{"id":1,"op":"lookup","name":"oldpeer"}"#]);
    assert_eq!(r[0]["ok"]["legacy"], true);
    // A name held by one of our nodes cannot be taken by a legacy registration.
    ask(reg.addr, &[Signer::new(1).register("pa", 7000, 1)]);
    assert_eq!(seed(reg.addr, "reg pa 9999"), "");
    let r = ask(reg.addr, &[r#"{"id":1,"op":"lookup","name":"pa"}"#]);
    assert_eq!(r[0]["ok"]["address"], "127.0.0.1:7000");
    assert_eq!(r[0]["ok"]["legacy"], false);
}

#[test]
fn names_survive_kill9() {
    let dir = tempdir();
    let mut reg = Registry::start(dir.path());
    let addr = reg.addr;
    ask(addr, &[Signer::new(1).register("pa", 7000, 1)]);
    seed(addr, "reg pl 1234");
    reg.daemon.kill9();
    let reg = Registry::start_on(dir.path(), &addr.to_string());
    let r = ask(
        reg.addr,
        &[
            r#"{"id":1,"op":"lookup","name":"pa"}"#,
            r#"{"id":2,"op":"lookup","name":"pl"}"#,
        ],
    );
    assert_eq!(r[0]["ok"]["address"], "127.0.0.1:7000");
    assert_eq!(r[1]["ok"]["legacy"], true);
}

#[test]
fn hostile_input_leaves_it_serving() {
    let dir = tempdir();
    let mut reg = Registry::start(dir.path());
    let addr = reg.addr;
    let _silent = conn(addr);
    let _silent_json = {
        let mut s = conn(addr);
        s.write_all(b"{\"id\":1,").unwrap();
        s
    };
    // Malformed JSON gets an error and the connection keeps working.
    let r = ask(addr, &[r#"{"id":1,"op":"#, r#"{"id":2,"op":"list"}"#]);
    assert_eq!(r[0]["error"]["code"], "bad_request");
    assert_eq!(r[1]["id"], 2);
    // Random bytes (legacy path) and a 10 MB JSON line.
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut s = conn(addr);
    let _ = s.write_all(&noise);
    let mut big = b"{".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 << 20));
    big.push(b'\n');
    let mut s = conn(addr);
    let _ = s.write_all(&big);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.contains("longer than"), "{out}");
    assert!(reg.daemon.is_running());
    let r = ask(addr, &[Signer::new(1).register("ok", 1, 1)]);
    assert_eq!(r[0]["ok"]["type"], "registered");
}

#[test]
fn registration_rate_and_name_count_are_limited() {
    let dir = tempdir();
    let reg = Registry::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--register-rate", "3", "--max-names", "2"],
    );
    let addr = reg.addr;
    let r = ask(
        addr,
        &[
            Signer::new(1).register("a", 1, 1),
            Signer::new(2).register("b", 1, 1),
            Signer::new(3).register("c", 1, 1),
            Signer::new(1).register("a", 2, 2),
            r#"{"id":5,"op":"lookup","name":"a"}"#.into(),
        ],
    );
    assert_eq!(r[0]["ok"]["type"], "registered");
    assert_eq!(r[1]["ok"]["type"], "registered");
    assert_eq!(r[2]["error"]["code"], "limited", "a third name: {}", r[2]);
    assert!(r[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--max-names"));
    assert_eq!(
        r[3]["error"]["code"], "limited",
        "a fourth registration this minute: {}",
        r[3]
    );
    assert!(r[3]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("per minute"));
    assert_eq!(
        r[4]["ok"]["address"], "127.0.0.1:1",
        "lookups are not limited"
    );
}

#[test]
fn a_taken_name_needs_its_key_and_a_fresh_sequence() {
    let dir = tempdir();
    let mut reg = Registry::start(dir.path());
    let (owner, thief) = (Signer::new(1), Signer::new(2));
    let code = |r: &serde_json::Value| r["error"]["code"].as_str().unwrap_or("ok").to_string();
    let first = owner.register("pa", 7000, 10);
    let r = ask(reg.addr, std::slice::from_ref(&first));
    assert_eq!(code(&r[0]), "ok", "{}", r[0]);

    // Another key can neither register, update, mark offline nor unregister the name.
    let r = ask(
        reg.addr,
        &[
            thief.register("pa", 6666, 11),
            thief.register("pa", 6666, 99),
            thief.owner_op("offline", "pa", 12),
            thief.owner_op("unregister", "pa", 13),
        ],
    );
    for reply in &r {
        assert_eq!(code(reply), "key_mismatch", "{reply}");
    }
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&owner.public().fingerprint()));
    // A replayed record (the same line again) and an old sequence number are refused.
    let r = ask(
        reg.addr,
        &[
            first.clone(),
            owner.register("pa", 7000, 9),
            owner.owner_op("offline", "pa", 10),
        ],
    );
    for reply in &r {
        assert_eq!(code(reply), "replay", "{reply}");
    }
    // A signature that does not cover the request (port changed after signing).
    let forged = owner.register("pa", 7000, 50).replace("7000", "6666");
    assert_eq!(code(&ask(reg.addr, &[forged])[0]), "bad_signature");
    // The owner itself goes on with higher numbers; the binding survives a restart.
    assert_eq!(
        code(&ask(reg.addr, &[owner.register("pa", 7001, 20)])[0]),
        "ok"
    );
    let addr = reg.addr;
    reg.daemon.kill9();
    let reg = Registry::start_on(dir.path(), &addr.to_string());
    let r = ask(
        reg.addr,
        &[
            thief.register("pa", 6666, 100),
            r#"{"id":2,"op":"lookup","name":"pa"}"#.into(),
        ],
    );
    assert_eq!(code(&r[0]), "key_mismatch");
    assert_eq!(r[1]["ok"]["address"], "127.0.0.1:7001");
    assert_eq!(r[1]["ok"]["last_seq"], 20);
}

#[test]
fn rotation_moves_a_name_and_release_frees_it() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let (old, new, other) = (Signer::new(1), Signer::new(2), Signer::new(3));
    let code = |r: &serde_json::Value| r["error"]["code"].as_str().unwrap_or("ok").to_string();
    assert_eq!(
        code(&ask(reg.addr, &[old.register("pa", 7000, 1)])[0]),
        "ok"
    );
    // A rotation must be signed by the bound key: one signed by the new key itself is refused.
    let self_signed = new.rotation_to("pa", &new.public(), 2);
    let r = ask(
        reg.addr,
        &[new.register_full("pa", 7000, None, 2, Some(&self_signed))],
    );
    assert_ne!(code(&r[0]), "ok", "{}", r[0]);
    let rotation = old.rotation_to("pa", &new.public(), 2);
    let r = ask(
        reg.addr,
        &[
            new.register_full("pa", 7000, None, 3, Some(&rotation)),
            r#"{"id":2,"op":"lookup","name":"pa"}"#.into(),
            old.register("pa", 7000, 4),
        ],
    );
    assert_eq!(code(&r[0]), "ok", "{}", r[0]);
    assert_eq!(r[1]["ok"]["signed"]["key"], new.public().to_hex());
    assert_eq!(r[1]["ok"]["rotations"][0]["from"], old.public().to_hex());
    assert_eq!(code(&r[2]), "key_mismatch", "the old key lost the name");

    // The operator releases the name while registryd runs; another key may then take it.
    let out = std::process::Command::new(peerchat_testkit::bin("registryd"))
        .args(["release", "pa", "--db"])
        .arg(&reg.db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("released pa"));
    // The released key's old signed records cannot be replayed to take the name back.
    let replayed = new.register_full("pa", 7000, None, 3, Some(&rotation));
    peerchat_testkit::wait_for(Duration::from_secs(10), "the release to be seen", || {
        let r = ask(reg.addr, std::slice::from_ref(&replayed));
        (code(&r[0]) == "replay").then_some(())
    });
    let r = ask(reg.addr, &[other.register("pa", 7100, 1)]);
    assert_eq!(code(&r[0]), "ok", "{}", r[0]);
    // A sequence number far in the future (which would lock the owner out) is refused.
    let r = ask(reg.addr, &[other.register("pa", 7100, u64::MAX)]);
    assert_eq!(code(&r[0]), "bad_request", "{}", r[0]);
    let out = std::process::Command::new(peerchat_testkit::bin("registryd"))
        .args(["release", "nobody", "--db"])
        .arg(&reg.db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
}

/// `registryd release` finds the database where the daemon's config file puts it, and refuses a
/// config file the daemon would refuse.
#[test]
fn release_reads_the_database_from_the_config_file() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let r = ask(reg.addr, &[Signer::new(1).register("pc", 7000, 1)]);
    assert!(r[0]["ok"].is_object(), "{}", r[0]);
    let config = dir.path().join("registryd.toml");
    std::fs::write(
        &config,
        format!("db = {:?}\nttl = 60\n", reg.db.display().to_string()),
    )
    .unwrap();
    let release = |config: &std::path::Path| {
        std::process::Command::new(peerchat_testkit::bin("registryd"))
            .args(["release", "pc", "--config"])
            .arg(config)
            .env_remove("REGISTRYD_DB")
            .output()
            .unwrap()
    };
    let out = release(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("released pc"), "{stderr}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no_such_option = 1\n").unwrap();
    let out = release(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}
