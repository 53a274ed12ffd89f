//! What operators rely on (issue 21): `chatctl backup` while chatd serves, `chatctl export`,
//! `--metrics` scraped over HTTP, and the per-message debug log lines. Real registryd and chatd
//! processes on loopback, driven through the real chatctl.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use peerchat_testkit::{json_lines, log_field, wait_for, Net, Node};

const T: Duration = Duration::from_secs(20);

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every message in the inbox of the chatd on `socket`, oldest first.
fn all_bodies(socket: &Path) -> Vec<String> {
    let out = peerchat_testkit::chatctl(
        socket,
        &["--json", "inbox", "--after", "0", "--limit", "100000"],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json_lines(&out.stdout)
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_backup_taken_while_messages_flow_starts_a_chatd_with_a_consistent_prefix() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    const N: usize = 3000;
    let input: String = (1..=N).map(|i| format!("{i}\n")).collect();
    let sender = {
        let socket = pa.socket.clone();
        std::thread::spawn(move || {
            peerchat_testkit::chatctl(&socket, &["send", "-l", "pb"], Some(input.as_bytes()))
        })
    };
    // Wait until the stream is flowing, then copy pb's database (twice: the second replaces
    // the first with --force) while it keeps receiving.
    wait_for(T, "the first messages at pb", || {
        (!all_bodies(&pb.socket).is_empty()).then_some(())
    });
    let copy = net.dir.path().join("copies").join("pb-copy.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let copy_arg = copy.to_str().unwrap();
    let out = pb.ctl(&["backup", copy_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = pb.ctl(&["--json", "backup", "--force", copy_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let reply = &json_lines(&out.stdout)[0];
    assert_eq!(reply["type"], "backed_up");
    assert_eq!(reply["path"], copy_arg);
    // Without --force an existing file is refused, and left alone.
    let before = std::fs::read(&copy).unwrap();
    let out = pb.ctl(&["backup", copy_arg]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the copy is owner-only");
    }

    // The sender was never held up: everything arrives.
    let sent = sender.join().unwrap();
    assert_eq!(code(&sent), 0, "{}", stderr(&sent));
    wait_for(T, "every message at pb", || {
        (all_bodies(&pb.socket).len() == N).then_some(())
    });

    // A chatd started on the copy serves a prefix of the stream: in order, no gap.
    let pc = Node::start_at(net.dir.path(), "pc", net.registry.addr, &copy, &[]);
    let copied = all_bodies(&pc.socket);
    eprintln!("the copy holds {} of {N} messages", copied.len());
    assert!(!copied.is_empty(), "the copy has the first messages");
    let expected: Vec<String> = (1..=copied.len()).map(|i| i.to_string()).collect();
    assert_eq!(
        copied, expected,
        "a consistent snapshot: a prefix of the stream"
    );
}

/// GET `path` from `addr` (HTTP/1.0, read to the end); the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn metrics_addr(node: &Node) -> SocketAddr {
    let log = node.daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("chatd ready"))
        .expect("ready line");
    log_field(line, "metrics")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line}"))
}

/// The value of the sample `name` (with its labels, as printed) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_are_scraped_over_http_on_loopback() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--metrics", "127.0.0.1:0"]);
    let pb = net.node_with("pb", &["--metrics", "127.0.0.1:0"]);
    let pc = net.node("pc");
    for i in 0..3 {
        let out = pa.ctl(&["send", "pb", &format!("m{i}")]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    pb.wait_inbox(3, T);
    // pc is known (pinned) but stopped: messages for it stay queued.
    let out = pa.ctl(&["send", "pc", "first"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pc.wait_inbox(1, T);
    drop(pc);
    for i in 0..4 {
        let out = pa.ctl(&["send", "pc", &format!("later {i}")]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    let a = metrics_addr(&pa);
    assert!(a.ip().is_loopback());
    let text = wait_for(T, "pa's delivered counter", || {
        let (status, text) = http_get(a, "/metrics");
        assert!(status.contains("200"), "{status}");
        (sample(&text, "chatd_messages_delivered_total") == Some(4.0)).then_some(text)
    });
    assert_eq!(
        sample(&text, "chatd_messages_accepted_total"),
        Some(8.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "chatd_queued_messages{recipient=\"pc\"}"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "chatd_queued_messages_total"),
        Some(4.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE chatd_delivery_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "chatd_delivery_seconds_count"),
        Some(4.0),
        "{text}"
    );
    assert!(
        sample(&text, "chatd_commit_seconds_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );

    let (_, text) = http_get(metrics_addr(&pb), "/metrics");
    assert_eq!(
        sample(&text, "chatd_messages_received_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "chatd_links_open{direction=\"in\"}"),
        Some(1.0),
        "{text}"
    );

    let (status, _) = http_get(a, "/other");
    assert!(status.contains("404"), "{status}");
}

#[test]
fn a_bad_metrics_address_is_a_clear_startup_error() {
    let dir = peerchat_testkit::tempdir();
    let chatd = |metrics: &str| {
        std::process::Command::new(peerchat_testkit::bin("chatd"))
            .args([
                "--name",
                "px",
                "--listen",
                "127.0.0.1:0",
                "--registry",
                "127.0.0.1:1",
            ])
            .arg("--socket")
            .arg(dir.path().join("px.sock"))
            .arg("--db")
            .arg(dir.path().join("px.db"))
            .args(["--metrics", metrics])
            .output()
            .unwrap()
    };
    let out = chatd("0.0.0.0:9464");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a loopback address"),
        "{}",
        stderr(&out)
    );
    // A port in use: start-up fails, saying which option.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = chatd(&taken.local_addr().unwrap().to_string());
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("--metrics"), "{}", stderr(&out));
}

#[test]
fn each_message_gets_a_debug_line_with_ids_and_names_but_never_the_body() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--log-level", "chatd=debug"]);
    let pb = net.node_with("pb", &["--log-level", "chatd=debug"]);
    let quiet = net.node("pq");
    let body = "TOP-SECRET-BODY-7f3a";
    let out = pa.ctl(&["--json", "send", "pb,pq", body]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let id = json_lines(&out.stdout)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    pb.wait_inbox(1, T);
    quiet.wait_inbox(1, T);
    let line_with = |node: &Node, what: &str| {
        wait_for(T, what, || {
            node.daemon
                .log_text()
                .lines()
                .find(|l| l.contains(what) && l.contains(&id))
                .map(str::to_string)
        })
    };
    let accepted = line_with(&pa, "message accepted");
    assert!(accepted.contains("DEBUG"), "{accepted}");
    assert_eq!(
        log_field(&accepted, "to").as_deref(),
        Some("pb,pq"),
        "{accepted}"
    );
    let delivered = line_with(&pa, "message delivered");
    assert!(
        ["pb", "pq"].contains(&log_field(&delivered, "to").unwrap_or_default().as_str()),
        "{delivered}"
    );
    let received = line_with(&pb, "message received");
    assert_eq!(
        log_field(&received, "from").as_deref(),
        Some("pa"),
        "{received}"
    );
    for node in [&pa, &pb, &quiet] {
        assert!(
            !node.daemon.log_text().contains(body),
            "the body is in {}'s log",
            node.name
        );
    }
    // At the default level (info) the per-message lines are not logged.
    assert!(
        !quiet.daemon.log_text().contains("message received"),
        "{}",
        quiet.daemon.log_text()
    );
}

fn export(node: &Node, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["export"];
    all.extend(args);
    let out = node.ctl(&all);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json_lines(&out.stdout)
}

#[test]
fn export_prints_messages_in_and_out_in_time_order_paged_and_filtered() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let pc = net.node("pc");
    // 1,500 to pb (more than one page of 1,000), then one each way.
    let input: String = (1..=1500).map(|i| format!("to-pb {i}\n")).collect();
    let out = pa.ctl_stdin(&["send", "-l", "pb"], input.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = pa.ctl(&["send", "pc", "to-pc"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    wait_for(T, "pb's messages", || {
        (all_bodies(&pb.socket).len() == 1500).then_some(())
    });
    let out = pb.ctl(&["send", "pa", "from-pb"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pa.wait_inbox(1, T);
    pc.wait_inbox(1, T);

    let lines = export(&pa, &[]);
    assert_eq!(lines.len(), 1502);
    let ats: Vec<&str> = lines.iter().map(|l| l["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "time order");
    let first = &lines[0];
    assert_eq!(first["dir"], "out");
    assert_eq!(first["body"], "to-pb 1");
    assert_eq!(first["to"], serde_json::json!(["pb"]));
    assert!(first["recipients"][0]["state"].is_string(), "{first}");
    let last = lines.last().unwrap();
    assert_eq!(last["dir"], "in", "{last}");
    assert_eq!(last["from"], "pb");
    assert_eq!(last["body"], "from-pb");
    let bodies: Vec<&str> = lines
        .iter()
        .filter(|l| l["dir"] == "out" && l["to"][0] == "pb")
        .map(|l| l["body"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=1500).map(|i| format!("to-pb {i}")).collect();
    assert_eq!(bodies, expected, "every page, in order, no repeat");

    // --with: only the conversation with pc; --since: only what is that recent.
    let with_pc = export(&pa, &["--with", "pc"]);
    assert_eq!(with_pc.len(), 1);
    assert_eq!(with_pc[0]["body"], "to-pc");
    assert_eq!(export(&pa, &["--since", "2999-01-01T00:00:00Z"]).len(), 0);
    assert_eq!(export(&pa, &["--since", "1h"]).len(), 1502);
    let out = pa.ctl(&["export", "--since", "yesterday-ish"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // `| head -1`: quiet, status 0.
    let mut child = std::process::Command::new(peerchat_testkit::bin("chatctl"))
        .arg("--socket")
        .arg(&pa.socket)
        .arg("export")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}
