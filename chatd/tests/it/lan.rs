//! `--lan` (issue 20): two chatd binaries in network namespaces of their own, joined by a veth
//! pair, with no registryd at all, find each other by DNS-SD over multicast and chat by name
//! both ways; an impostor announcing a pinned name is refused both ways. Needs root (network
//! namespaces) and `ip`; without them the test says so and passes without running.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use peerchat_testkit::{bin, chatctl, json_lines, spawn_logged, tempdir, wait_for, Daemon};

const T: Duration = Duration::from_secs(30);

/// Two network namespaces joined by a veth pair on 10.232.N.0/24, deleted on drop (also when
/// the test fails).
struct Lan {
    namespaces: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lan {
    fn new() -> Result<Lan, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let id = std::process::id();
        let lan = Lan {
            namespaces: [format!("pclan-a-{id}"), format!("pclan-b-{id}")],
        };
        for ns in &lan.namespaces {
            ip(&["netns", "add", ns])?;
        }
        let (va, vb) = (format!("pcva{id}"), format!("pcvb{id}"));
        let [a, b] = &lan.namespaces;
        ip(&[
            "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ])?;
        let subnet = id % 250;
        for (ns, dev, host) in [(a, &va, 1), (b, &vb, 2)] {
            let addr = format!("10.232.{subnet}.{host}/24");
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

struct LanNode {
    daemon: Daemon,
    socket: std::path::PathBuf,
}

/// chatd NAME with `--lan --registry none` inside namespace `ns`, its files in `dir` under
/// `file` (so an impostor can use the same name with other files).
fn start(dir: &Path, ns: &str, name: &str, file: &str) -> LanNode {
    let socket = dir.join(format!("{file}.sock"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(bin("chatd"))
        .args(["--name", name, "--lan", "--registry", "none"])
        .args([
            "--listen",
            "0.0.0.0:0",
            "--retry-initial",
            "0.2",
            "--retry-max",
            "1",
        ])
        .arg("--socket")
        .arg(&socket)
        .arg("--db")
        .arg(dir.join(format!("{file}.db")));
    let (daemon, _) = spawn_logged(cmd, &dir.join(format!("{file}.log")), "chatd ready");
    LanNode { daemon, socket }
}

fn json(node: &LanNode, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend(args);
    json_lines(&chatctl(&node.socket, &a, None).stdout)
}

/// `peers`' entry for `name`, once it is there.
fn wait_peer(node: &LanNode, name: &str, key: &str) -> serde_json::Value {
    wait_for(T, &format!("{name} heard on the LAN ({key})"), || {
        json(node, &["peers"])
            .into_iter()
            .find(|p| p["name"] == name && p["key"] == key)
    })
}

fn bodies(node: &LanNode) -> Vec<String> {
    json(node, &["inbox"])
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_string))
        .collect()
}

fn wait_body(node: &LanNode, body: &str) {
    wait_for(T, &format!("{body:?} received"), || {
        bodies(node).iter().any(|b| b == body).then_some(())
    });
}

/// Sends; returns the message id, or `None` if chatd refused the send (with its stderr).
fn send(from: &LanNode, to: &str, body: &str) -> Result<String, String> {
    let out = chatctl(&from.socket, &["--json", "send", to, body], None);
    if out.status.success() {
        Ok(json_lines(&out.stdout)[0]["id"]
            .as_str()
            .expect("id")
            .to_string())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The error recorded for message `id`'s recipient, once it contains `what` (the first
/// attempt may fail otherwise: the last address it had for the name is gone).
fn wait_error(from: &LanNode, id: &str, what: &str) -> String {
    wait_for(T, &format!("an attempt to fail with {what:?}"), || {
        let v = json(from, &["status", id]);
        let r = &v.first()?["recipients"][0];
        r["error"]
            .as_str()
            .filter(|e| e.contains(what))
            .map(str::to_string)
    })
}

#[test]
fn two_nodes_without_a_registry_chat_by_name_on_the_lan_and_refuse_an_impostor() {
    let lan = match Lan::new() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("SKIPPED: the LAN test needs root and `ip` to make network namespaces ({e})");
            return;
        }
    };
    let dir = tempdir();
    let [a, b] = &lan.namespaces;
    let pa = start(dir.path(), a, "pa", "pa");
    let mut pb = start(dir.path(), b, "pb", "pb");

    // Each hears the other (a new key, from the LAN), and they chat by name both ways.
    let heard = wait_peer(&pa, "pb", "new");
    assert_eq!(heard["source"], "lan", "{heard}");
    wait_peer(&pb, "pa", "new");
    send(&pa, "pb", "hello pb").expect("send");
    wait_body(&pb, "hello pb");
    send(&pb, "pa", "hello pa").expect("send");
    wait_body(&pa, "hello pa");
    let pinned = wait_peer(&pa, "pb", "pinned");

    // pb goes; an impostor takes the name pb (another key) at the same place on the LAN.
    pb.daemon.terminate(Duration::from_secs(10));
    let impostor = start(dir.path(), b, "pb", "impostor");
    let changed = wait_peer(&pa, "pb", "changed");
    assert_ne!(changed["fingerprint"], pinned["fingerprint"]);

    // pa never sends to it: the send is refused, or its attempts fail, as a key change.
    match send(&pa, "pb", "for pb only") {
        Err(refusal) => assert!(refusal.contains("key_changed"), "{refusal}"),
        Ok(id) => {
            wait_error(&pa, &id, "key of pb changed");
        }
    }
    // And pa refuses the impostor's messages as pb's.
    let id = send(&impostor, "pa", "I am pb").expect("the impostor's send is accepted locally");
    wait_error(&impostor, &id, "your key is not the one bound to pb");
    assert_eq!(
        bodies(&pa),
        ["hello pa"],
        "pa took nothing from the impostor"
    );
    assert!(
        !bodies(&impostor).iter().any(|b| b == "for pb only"),
        "the impostor got pb's message"
    );
    drop(impostor);
    drop(pa);
    drop(lan);
}
