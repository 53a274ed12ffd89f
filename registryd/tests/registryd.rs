//! registryd as a process: its JSON protocol, the seed's text protocol, leases, persistence and
//! hostile input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use peerchat_testkit::{tempdir, Registry};

fn conn(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends JSON request lines on one connection (pipelined) and returns the reply lines.
fn ask(addr: SocketAddr, lines: &[&str]) -> Vec<serde_json::Value> {
    let mut s = conn(addr);
    for l in lines {
        s.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    let mut r = BufReader::new(s);
    (0..lines.len())
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
        })
        .collect()
}

/// One seed-style exchange: raw text, no terminator, read the reply until close.
fn seed(addr: SocketAddr, text: &str) -> String {
    let mut s = conn(addr);
    s.write_all(text.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn register_lookup_list_offline_unregister() {
    let dir = tempdir();
    let reg = Registry::start(dir.path());
    let r = ask(
        reg.addr,
        &[
            r#"{"id":1,"op":"register","name":"pa","port":7000}"#,
            r#"{"id":2,"op":"register","name":"p6","port":7001,"host":"::1"}"#,
            r#"{"id":3,"op":"lookup","name":"pa"}"#,
            r#"{"id":4,"op":"list"}"#,
            r#"{"id":5,"op":"offline","name":"pa"}"#,
            r#"{"id":6,"op":"lookup","name":"pa"}"#,
            r#"{"id":7,"op":"unregister","name":"p6"}"#,
            r#"{"id":8,"op":"lookup","name":"p6"}"#,
            r#"{"id":9,"op":"register","name":"bad name","port":1}"#,
            r#"{"id":10,"op":"register","name":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","port":1}"#,
        ],
    );
    assert_eq!(r[0]["ok"]["address"], "127.0.0.1:7000");
    assert_eq!(r[1]["ok"]["address"], "[::1]:7001");
    assert_eq!(r[2]["id"], 3);
    assert_eq!(r[2]["ok"]["online"], true);
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
    ask(
        addr,
        &[r#"{"id":1,"op":"register","name":"pa","port":7000}"#],
    );
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
    ask(
        reg.addr,
        &[r#"{"id":1,"op":"register","name":"pa","port":7000}"#],
    );
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
    ask(
        addr,
        &[r#"{"id":1,"op":"register","name":"pa","port":7000}"#],
    );
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
    let r = ask(addr, &[r#"{"id":7,"op":"register","name":"ok","port":1}"#]);
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
            r#"{"id":1,"op":"register","name":"a","port":1}"#,
            r#"{"id":2,"op":"register","name":"b","port":1}"#,
            r#"{"id":3,"op":"register","name":"c","port":1}"#,
            r#"{"id":4,"op":"register","name":"a","port":2}"#,
            r#"{"id":5,"op":"lookup","name":"a"}"#,
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
