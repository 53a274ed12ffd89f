//! Broadcast and group size: a broadcast reaches the names online now (legacy ones only with
//! `--legacy`), and nothing larger than the recipient limit (1,024) is made or sent silently.

use std::net::SocketAddr;
use std::time::Duration;

use peerchat_testkit::identity::Signer;
use peerchat_testkit::registry_wire::{ask, seed};
use peerchat_testkit::{json_lines, tempdir, wait_for, Net, Node, Registry};

const T: Duration = Duration::from_secs(10);

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn online(addr: SocketAddr, name: &str) -> bool {
    let r = ask(
        addr,
        &[format!(r#"{{"id":1,"op":"lookup","name":"{name}"}}"#)],
    );
    r[0]["ok"]["online"] == true
}

fn recipients(out: &std::process::Output) -> Vec<(String, String)> {
    json_lines(&out.stdout)
        .iter()
        .map(|x| {
            (
                x["to"].as_str().unwrap().to_string(),
                x["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn broadcast_reaches_the_online_keyed_nodes_only() {
    let net = Net::new();
    let reg = net.registry.addr;
    let pa = net.node("pa");
    let pb = net.node("pb");
    let pc = net.node("pc");
    let mut pd = net.node("pd");
    pd.daemon.terminate(T);
    wait_for(T, "pd to show offline", || {
        (!online(reg, "pd")).then_some(())
    });
    // Seed junk from this address (the registry's cap per address is 8).
    for i in 0..6 {
        assert_eq!(
            seed(reg, &format!("reg junk{i} {}", 40000 + i)),
            format!("127.0.0.1:{}", 40000 + i)
        );
    }
    let out = pa.ctl(&["--json", "broadcast", "all", "hands"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        recipients(&out),
        [
            ("pb".into(), "queued".into()),
            ("pc".into(), "queued".into())
        ],
        "online keyed nodes but ourselves; no offline node, no seed junk, no failure"
    );
    assert_eq!(pb.wait_inbox(1, T), ["all hands"]);
    assert_eq!(pc.wait_inbox(1, T), ["all hands"]);

    // A chatd with --legacy includes the online seed names too.
    let pe = net.node_with("pe", &["--legacy"]);
    let out = pe.ctl(&["--json", "broadcast", "hi"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let to: Vec<String> = recipients(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        to,
        ["junk0", "junk1", "junk2", "junk3", "junk4", "junk5", "pa", "pb", "pc"]
    );
}

#[test]
fn a_broadcast_over_the_limit_is_refused_and_says_why() {
    let dir = tempdir();
    let registry = Registry::start_with(dir.path(), "127.0.0.1:0", &["--register-rate", "5000"]);
    // 1,025 online keyed names (one key may hold many names).
    let signer = Signer::new(9);
    let lines: Vec<String> = (0..1025)
        .map(|i| signer.register(&format!("n{i:04}"), 40000, 1))
        .collect();
    for chunk in lines.chunks(256) {
        for r in ask(registry.addr, chunk) {
            assert!(r["ok"].is_object(), "{r}");
        }
    }
    let pa = Node::start(dir.path(), "pa", registry.addr);
    let out = pa.ctl(&["broadcast", "to", "everyone"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("1025 recipients") && err.contains("limit is 1024"),
        "{err}"
    );
    let outbox = pa.ctl(&["--json", "outbox"]);
    assert_eq!(code(&outbox), 0, "{}", stderr(&outbox));
    assert!(json_lines(&outbox.stdout).is_empty(), "nothing was sent");
}

#[test]
fn a_group_larger_than_the_recipient_limit_is_refused_when_made() {
    let net = Net::new();
    let pa = net.node("pa");
    let members: Vec<String> = (0..1025).map(|i| format!("m{i:04}")).collect();
    let args = |cmd: &str, group: &str, m: &[String]| -> Vec<String> {
        let mut a = vec!["group".to_string(), cmd.into(), group.into()];
        a.extend(m.iter().cloned());
        a
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        pa.ctl(&refs)
    };
    let out = run(args("create", "big", &members));
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("limit is 1024"), "{}", stderr(&out));
    assert_ne!(code(&pa.ctl(&["group", "show", "big"])), 0, "not created");
    // 1,024 is fine; one more member is refused, a member already in it is not.
    let out = run(args("create", "big", &members[..1024]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(args("add", "big", &members[1024..]));
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("1025 members"), "{}", stderr(&out));
    let out = run(args("add", "big", &members[..1]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
