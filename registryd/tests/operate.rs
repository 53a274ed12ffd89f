//! What operators rely on (issue 21): `--metrics` scraped over HTTP, `registryd backup` beside
//! a running registryd (and a registryd started from the copy).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::{ask, seed};
use peerchat_testkit::{bin, log_field, tempdir, Registry};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_count_names_lookups_registrations_and_refusals_by_code() {
    let dir = tempdir();
    let reg = Registry::start_with(dir.path(), "127.0.0.1:0", &["--metrics", "127.0.0.1:0"]);
    let ready = reg.daemon.log_text();
    let line = ready
        .lines()
        .find(|l| l.contains("registryd ready"))
        .unwrap();
    let addr: SocketAddr = log_field(line, "metrics").unwrap().parse().unwrap();

    let (a, b) = (Signer::new(1), Signer::new(2));
    let r = ask(
        reg.addr,
        &[
            a.register("pa", 7000, 1),
            a.register("pa", 7000, 2),
            // Another key for a bound name: key_mismatch; a replayed seq: replay.
            b.register("pa", 7001, 3),
            a.register("pa", 7000, 2),
            r#"{"id":1,"op":"lookup","name":"pa"}"#.to_string(),
            r#"{"id":1,"op":"lookup","name":"nobody"}"#.to_string(),
            r#"{"id":1,"op":"no_such_op"}"#.to_string(),
        ],
    );
    assert!(r[0].get("ok").is_some(), "{r:?}");
    assert_eq!(seed(reg.addr, "reg legacy1 7002"), "127.0.0.1:7002");
    assert_eq!(seed(reg.addr, "get pa"), "127.0.0.1:7000");

    let text = scrape(addr);
    assert_eq!(sample(&text, "registryd_names"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "registryd_registrations_total{protocol=\"json\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "registryd_registrations_total{protocol=\"seed\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "registryd_lookups_total{result=\"found\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "registryd_lookups_total{result=\"not_found\"}"),
        Some(1.0),
        "{text}"
    );
    for (code, n) in [("key_mismatch", 1.0), ("replay", 1.0), ("bad_request", 1.0)] {
        let name = format!("registryd_refusals_total{{code=\"{code}\"}}");
        assert_eq!(sample(&text, &name), Some(n), "{name} in {text}");
    }
}

#[test]
fn backup_copies_a_running_registry_and_a_registryd_starts_from_the_copy() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let a = Signer::new(1);
    let lines: Vec<String> = (0..50)
        .map(|i| a.register(&format!("n{i}"), 7000 + i as u16, 1))
        .collect();
    let r = ask(reg.addr, &lines);
    assert!(r.iter().all(|r| r.get("ok").is_some()), "{r:?}");
    let out_dir = tempdir();
    let copy = out_dir.path().join("registry-copy.db");
    let backup = |force: bool| {
        let mut cmd = Command::new(bin("registryd"));
        cmd.args(["backup", "--db"])
            .arg(&reg.db)
            .arg(&copy)
            .env_remove("REGISTRYD_DB")
            .env_remove("REGISTRYD_CONFIG");
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let out = backup(false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("backed up to"), "{}", stderr(&out));
    // The daemon kept serving meanwhile, and an existing copy is kept unless --force.
    let r = ask(reg.addr, &[r#"{"id":1,"op":"lookup","name":"n7"}"#]);
    assert!(r[0].get("ok").is_some(), "{r:?}");
    let out = backup(false);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(backup(true).status.success());

    // A registryd on the copy knows every name (with its key binding).
    let restored_dir = out_dir.path().join("restored");
    std::fs::create_dir_all(&restored_dir).unwrap();
    std::fs::rename(&copy, restored_dir.join("registry.db")).unwrap();
    let restored = Registry::start(&restored_dir);
    let r = ask(restored.addr, &[r#"{"id":1,"op":"list"}"#]);
    let records = r[0]["ok"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(records.len(), 50, "{r:?}");
    let b = Signer::new(2);
    let r = ask(restored.addr, &[b.register("n7", 7100, 5)]);
    assert_eq!(r[0]["error"]["code"], "key_mismatch", "{r:?}");
}
