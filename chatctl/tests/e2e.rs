//! End-to-end: real registryd and chatd processes on loopback, driven through the real chatctl.
//! What is tested here is what needs the binaries: chatctl's output, exit codes, pipes and
//! cursor files, kill -9, signals and the daemons' command lines. chatd's delivery behaviour
//! (ordering, dedup, retries, cancels, groups, retention, backlogs) is in `chatd/tests/it/`,
//! mostly with the daemons in-process.

use std::time::{Duration, Instant};

use peerchat_testkit::{json_lines, wait_for, Net, Registry};

const T: Duration = Duration::from_secs(10);

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_nodes_chat_both_ways() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let out = pa.ctl(&["send", "pb", "hello", "there"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = pb.ctl(&["send", "pa", "hi back"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(pb.wait_inbox(1, T), vec!["hello there"]);
    assert_eq!(pa.wait_inbox(1, T), vec!["hi back"]);
    let m = &pb.inbox()[0];
    assert_eq!(m["from"], "pa");
    assert_eq!(m["to"], "pb");
    assert_eq!(m["seq"], 1);
    for k in ["id", "sent_at", "received_at"] {
        assert!(m[k].is_string(), "{k} missing in {m}");
    }
    assert!(m["received_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn send_json_result_and_stdin_message() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let out = pa.ctl_stdin(&["--json", "send", "pb"], b"line one\nline two\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json_lines(&out.stdout);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["to"], "pb");
    assert_eq!(r[0]["state"], "queued");
    assert!(r[0]["id"].is_string());
    assert!(r[0]["error"].is_null());
    assert_eq!(pb.wait_inbox(1, T), vec!["line one\nline two"]);
    // An empty message is a usage error.
    let out = pa.ctl_stdin(&["send", "pb", "-"], b"");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn follow_shows_a_new_message() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let mut follow = std::process::Command::new(peerchat_testkit::bin("chatctl"))
        .arg("--socket")
        .arg(&pb.socket)
        .args(["--json", "inbox", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    // The follower is connected once chatd has it; sending before that is fine too (no gap),
    // but then it arrives as backlog. Either way it must show up within 5 s.
    let out = pa.ctl(&["send", "pb", "live message"]);
    assert_eq!(code(&out), 0);
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("follow printed nothing within 5 s");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["body"], "live message");
    // A second message arrives on the same stream.
    pa.ctl(&["send", "pb", "second"]);
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("second message");
    assert!(line.contains("second"));
    let _ = follow.kill();
    let _ = follow.wait();
}

/// A burst is printed in batches (one write per burst, see `inbox.rs`): every message still
/// comes out, in order, byte for byte what serde_json makes of it, and a SIGTERM right after
/// the burst loses none of the printed lines.
#[test]
fn follow_prints_a_whole_burst_in_order_and_exact() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let mut follow = std::process::Command::new(peerchat_testkit::bin("chatctl"))
        .arg("--socket")
        .arg(&pb.socket)
        .args(["--json", "inbox", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    // Bodies that need escaping, long enough to fill several writes of chatctl's batch.
    let bodies: Vec<String> = (0..400)
        .map(|i| format!("{i:04} \"quoted\" back\\slash \u{1}\t{}", "é".repeat(i)))
        .collect();
    let mut input = bodies.join("\n");
    input.push('\n');
    let out = pa.ctl_stdin(&["send", "-l", "pb"], input.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut got = Vec::new();
    while got.len() < bodies.len() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("follow printed {} of {} lines", got.len(), bodies.len()));
        let m: peerchat_proto::control::InboxMessage = serde_json::from_str(&line).unwrap();
        // Exactly the bytes serde_json writes for the same message (field order, escapes).
        assert_eq!(serde_json::to_string(&m).unwrap(), line);
        got.push(m.body);
    }
    assert_eq!(got, bodies);
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    let status = follow.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
    assert!(rx.try_recv().is_err(), "nothing beyond the burst");
}

#[test]
fn follow_exits_when_stdout_closes() {
    let net = Net::new();
    let pa = net.node("pa");
    pa.ctl(&["send", "pa", "to myself"]);
    pa.wait_inbox(1, T);
    // `chatctl inbox --follow | head -1`: head exits after one line; chatctl must follow quickly.
    let start = Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --socket '{}' inbox --follow | head -1",
            peerchat_testkit::bin("chatctl").display(),
            pa.socket.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("to myself"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn thousand_piped_lines_arrive_in_order() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let input: String = (1..=1000).map(|i| format!("message {i}\n\n")).collect();
    let out = pa.ctl_stdin(&["--json", "send", "-l", "pb"], input.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        json_lines(&out.stdout).len(),
        1000,
        "one result per non-blank line"
    );
    let bodies = pb.wait_inbox(1000, Duration::from_secs(30));
    let want: Vec<String> = (1..=1000).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, want);
}

#[test]
fn unknown_name_and_no_daemon_exit_codes() {
    let net = Net::new();
    let pa = net.node("pa");
    let out = pa.ctl(&["send", "nobody", "hi"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody"));
    let out = pa.ctl(&["--json", "send", "nobody", "hi"]);
    assert_eq!(code(&out), 4);
    assert_eq!(json_lines(&out.stdout)[0]["error"]["code"], "unknown_name");
    let out = pa.ctl(&["send", "bad name!", "hi"]);
    assert_eq!(code(&out), 2);
    // Usage errors in --json mode are JSON too, with the same exit code.
    let out = pa.ctl(&["--json", "send"]);
    assert_eq!(code(&out), 2);
    assert_eq!(json_lines(&out.stdout)[0]["error"]["code"], "usage");

    let missing = net.dir.path().join("missing.sock");
    let out = peerchat_testkit::chatctl(&missing, &["send", "pa", "hi"], None);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "lists the path tried"
    );
    let out = peerchat_testkit::chatctl(&missing, &["--json", "status"], None);
    assert_eq!(code(&out), 3);
    assert_eq!(json_lines(&out.stdout)[0]["error"]["code"], "not_running");
}

#[test]
fn registry_kill9_then_restart_keeps_every_name() {
    let net = Net::new();
    let mut pa = net.node("pa");
    let mut pb = net.node("pb");
    pa.daemon.terminate(T);
    pb.daemon.terminate(T);
    let dir = net.dir.path().to_path_buf();
    let addr = net.registry.addr;
    let mut net = net;
    net.registry.daemon.kill9();
    let reg = Registry::start_on(&dir, &addr.to_string());
    // Ask the restarted registry directly, in its own protocol.
    for name in ["pa", "pb"] {
        let reply = registry_request(
            reg.addr,
            &format!(r#"{{"id":1,"op":"lookup","name":"{name}"}}"#),
        );
        assert!(reply.contains(r#""type":"record""#), "{name}: {reply}");
        assert!(
            reply.contains(r#""online":false"#),
            "stopped nodes show offline: {reply}"
        );
    }
    // And the nodes come back and chat through it.
    pa.restart();
    pb.restart();
    assert_eq!(code(&pa.ctl(&["send", "pb", "after restart"])), 0);
    assert_eq!(pb.wait_inbox(1, T), vec!["after restart"]);
}

fn registry_request(addr: std::net::SocketAddr, line: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut out = String::new();
    r.read_line(&mut out).unwrap();
    out
}

#[test]
fn chatd_kill9_and_restart_keeps_its_inbox() {
    let net = Net::new();
    let pa = net.node("pa");
    let mut pb = net.node("pb");
    for i in 0..20 {
        assert_eq!(code(&pa.ctl(&["send", "pb", &format!("m{i}")])), 0);
    }
    pb.wait_inbox(20, T);
    pb.daemon.kill9();
    assert!(pb.socket.exists(), "a crash leaves the socket behind");
    pb.restart(); // the stale socket must not block the restart
    let bodies = pb.bodies();
    assert_eq!(bodies, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[test]
fn sigterm_stops_quickly_and_removes_the_socket() {
    let net = Net::new();
    let mut pa = net.node("pa");
    let took = pa.daemon.terminate(Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(!pa.socket.exists());
    assert!(
        pa.daemon
            .log_text()
            .contains("told the registry we are offline"),
        "{}",
        pa.daemon.log_text()
    );
}

#[test]
fn second_chatd_on_the_same_database_is_refused() {
    let net = Net::new();
    let pa = net.node("pa");
    let out = std::process::Command::new(peerchat_testkit::bin("chatd"))
        .args([
            "--name",
            "pa2",
            "--listen",
            "127.0.0.1:0",
            "--registry",
            &net.registry.addr.to_string(),
        ])
        .arg("--socket")
        .arg(net.dir.path().join("other.sock"))
        .arg("--db")
        .arg(&pa.db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another chatd"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "daemons print nothing on stdout");
}

#[test]
fn too_long_socket_path_is_a_clear_error() {
    let net = Net::new();
    let long = net.dir.path().join("x".repeat(120));
    let out = std::process::Command::new(peerchat_testkit::bin("chatd"))
        .args([
            "--name",
            "pz",
            "--listen",
            "127.0.0.1:0",
            "--registry",
            &net.registry.addr.to_string(),
        ])
        .arg("--socket")
        .arg(&long)
        .arg("--db")
        .arg(net.dir.path().join("pz.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Unix sockets allow at most"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn peers_and_status_report_the_network() {
    let net = Net::new();
    let pa = net.node("pa");
    let _pb = net.node("pb");
    let out = pa.ctl(&["--json", "peers"]);
    let peers = json_lines(&out.stdout);
    let names: Vec<&str> = peers.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["pa", "pb"]);
    assert!(peers.iter().all(|p| p["online"] == true));
    let out = pa.ctl(&["--json", "status"]);
    let s = &json_lines(&out.stdout)[0];
    assert_eq!(s["name"], "pa");
    assert_eq!(s["registry_reachable"], true);
    assert_eq!(s["address"], pa.listen.to_string());
    wait_for(T, "human peers table", || {
        let out = pa.ctl(&["peers"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("NAME")
            .then_some(())
    });
}

#[test]
fn head_closing_the_pipe_exits_quietly() {
    let net = Net::new();
    let pa = net.node("pa");
    // Far more output than a pipe buffer holds, so chatctl really meets the closed pipe.
    let input: String = (0..3000).map(|i| format!("{i:0>60}\n")).collect();
    pa.ctl_stdin(&["send", "-l", "pa"], input.as_bytes());
    pa.wait_inbox(3000, Duration::from_secs(30));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --socket '{}' inbox --limit 3000 | head -1",
            peerchat_testkit::bin("chatctl").display(),
            pa.socket.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn groups_lifecycle_and_group_send() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let pc = net.node("pc");
    assert_eq!(code(&pa.ctl(&["group", "create", "ops", "pb"])), 0);
    let out = pa.ctl(&["group", "create", "ops"]);
    assert_eq!(
        code(&out),
        7,
        "a second create is a conflict: {}",
        stderr(&out)
    );
    assert_eq!(code(&pa.ctl(&["group", "add", "ops", "pc", "ghost"])), 0);
    assert_eq!(code(&pa.ctl(&["group", "remove", "ops", "ghost"])), 0);
    let out = pa.ctl(&["--json", "group", "show", "ops"]);
    assert_eq!(
        json_lines(&out.stdout)[0]["members"],
        serde_json::json!(["pb", "pc"])
    );
    assert_eq!(code(&pa.ctl(&["group", "show", "nope"])), 4);
    assert_eq!(code(&pa.ctl(&["group", "add", "nope", "pb"])), 4);

    // One message id, one result per recipient; pb also named directly is sent once.
    let out = pa.ctl(&["--json", "send", "pb,@ops", "to the team"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json_lines(&out.stdout);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["id"], r[1]["id"]);
    let to: Vec<&str> = r.iter().map(|x| x["to"].as_str().unwrap()).collect();
    assert_eq!(to, vec!["pb", "pc"]);
    assert_eq!(pb.wait_inbox(1, T), vec!["to the team"]);
    assert_eq!(pc.wait_inbox(1, T), vec!["to the team"]);
    let m = &pc.inbox()[0];
    assert_eq!(m["recipients"], serde_json::json!(["pb", "pc"]));

    let out = pa.ctl(&["--json", "group", "list"]);
    assert_eq!(json_lines(&out.stdout).len(), 1);
    assert_eq!(code(&pa.ctl(&["group", "delete", "ops"])), 0);
    assert_eq!(code(&pa.ctl(&["send", "@ops", "gone"])), 4);
}

#[test]
fn wait_reports_delivered_expired_and_failed() {
    let net = Net::new();
    let pa = net.node_with(
        "pa",
        &[
            "--retry-initial",
            "0.1",
            "--retry-max",
            "0.2",
            "--message-lifetime",
            "3",
        ],
    );
    let mut pb = net.node("pb");
    let out = pa.ctl(&["--json", "send", "--wait", "pb", "waited"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The accepted result first (before the wait), then the final state.
    let r = json_lines(&out.stdout);
    assert_eq!((r.len(), &r[0]["state"]), (2, &"queued".into()));
    assert_eq!(
        (&r[1]["state"], &r[1]["id"]),
        (&"delivered".into(), &r[0]["id"])
    );

    pb.daemon.terminate(T);
    let start = Instant::now();
    let out = pa.ctl(&["--json", "send", "--wait=0.5", "pb", "nobody home"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(5));
    let id = json_lines(&out.stdout)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Still undelivered: in the outbox, with the reason it waits (pb told the registry it is
    // offline, so no attempt is made until it is back).
    let out = pa.ctl(&["--json", "outbox"]);
    let entries = json_lines(&out.stdout);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], id.as_str());
    wait_for(T, "the reason it waits", || {
        let out = pa.ctl(&["--json", "status", &id]);
        let info = &json_lines(&out.stdout)[0];
        let r = &info["recipients"][0];
        r["error"].as_str()?.contains("offline").then_some(())
    });

    // Past its lifetime the message fails, and --wait says so.
    let out = pa.ctl(&["send", "--wait=20", "pb", "will expire"]);
    assert_eq!(code(&out), 6, "{}", String::from_utf8_lossy(&out.stdout));
    let out = pa.ctl(&["--json", "status", &id]);
    assert_eq!(
        json_lines(&out.stdout)[0]["recipients"][0]["state"],
        "failed"
    );
    assert_eq!(code(&pa.ctl(&["status", "no-such-id"])), 4);
}

/// A `chatctl --json inbox --follow` process whose printed lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Follower {
    fn start(node: &peerchat_testkit::Node, extra: &[&str]) -> Follower {
        let mut child = std::process::Command::new(peerchat_testkit::bin("chatctl"))
            .arg("--socket")
            .arg(&node.socket)
            .args(["--json", "inbox", "--follow"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(serde_json::from_str(&line).unwrap());
            }
        });
        Follower { child, lines }
    }

    /// The next `n` bodies printed (panics after 10 s without one).
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let v = self
                    .lines
                    .recv_timeout(T)
                    .expect("follower printed nothing");
                v["body"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// A clean stop (SIGTERM, like Ctrl-C): chatctl finishes the message in hand first.
    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "a follow stopped by SIGTERM exits 0: {status:?}"
        );
    }
}

#[test]
fn cursor_file_follow_survives_chatd_restart_and_resumes() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--retry-initial", "0.1", "--retry-max", "0.3"]);
    let mut pb = net.node("pb");
    let cursor = net.dir.path().join("cursor");
    let cursor_arg = cursor.to_str().unwrap();
    let f = Follower::start(&pb, &["--cursor-file", cursor_arg]);
    let batch =
        |range: std::ops::Range<u32>| -> Vec<String> { range.map(|i| format!("m{i}")).collect() };
    let send = |range: std::ops::Range<u32>| {
        let input: String = range.map(|i| format!("m{i}\n")).collect();
        assert_eq!(
            code(&pa.ctl_stdin(&["send", "-l", "pb"], input.as_bytes())),
            0
        );
    };
    // The follower may connect after the first messages; they then come as its backlog.
    send(0..10);
    assert_eq!(f.take(10), batch(0..10));
    // The cursor is written right after each message is printed.
    wait_for(T, "cursor file at seq 10", || {
        (std::fs::read_to_string(&cursor).unwrap_or_default().trim() == "10").then_some(())
    });

    // chatd goes away and comes back: the follower reconnects by itself, without a gap.
    pb.daemon.terminate(T);
    send(10..20);
    pb.restart();
    assert_eq!(f.take(10), batch(10..20));
    f.stop();

    // A new chatctl with the same cursor file starts right after the last printed message.
    send(20..25);
    pb.wait_inbox(25, T);
    let f = Follower::start(&pb, &["--cursor-file", cursor_arg]);
    assert_eq!(f.take(5), batch(20..25));
    assert!(
        f.lines.recv_timeout(Duration::from_millis(300)).is_err(),
        "no repeats"
    );
    f.stop();

    // --after does the same by hand; a plain inbox honours the cursor file too.
    let out = pb.ctl(&["--json", "inbox", "--after", "23"]);
    let bodies: Vec<_> = json_lines(&out.stdout)
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies, batch(23..25));
}

/// A small tmpfs mounted for one test; unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(path))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_refuses_sends_and_recovers() {
    let net = Net::new();
    let Some(disk) = SmallDisk::mount(net.dir.path().join("small"), "4m") else {
        eprintln!(
            "SKIPPED full_disk_refuses_sends_and_recovers: cannot mount a tmpfs here (needs root)"
        );
        return;
    };
    let pb = net.node("pb");
    let db = disk.0.join("pa.db");
    let mut pa =
        peerchat_testkit::Node::start_at(net.dir.path(), "pa", net.registry.addr, &db, &[]);
    // Fill what is left of the disk.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Sends fail with a storage error at some point (WAL pages already on disk may still take
    // a few), and nothing is accepted by mistake.
    let body = "x".repeat(60_000);
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let out = pa.ctl(&["--json", "send", "pb", &body]);
        if code(&out) == 0 {
            accepted.push(
                json_lines(&out.stdout)[0]["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        } else {
            refused = Some(out);
            break;
        }
    }
    let out = refused.expect("a full disk must refuse sends");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = &json_lines(&out.stdout)[0]["error"];
    assert_eq!(err["code"], "storage", "{err}");
    assert!(err["message"].as_str().unwrap().contains("full"), "{err}");
    assert!(pa.daemon.is_running(), "chatd stays up");
    // Space comes back: chatd recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for(T, "sends to work again", || {
        (code(&pa.ctl(&["send", "pb", "after the disk was freed"])) == 0).then_some(())
    });
    let bodies = pb.wait_inbox(accepted.len() + 1, Duration::from_secs(30));
    assert_eq!(bodies.last().unwrap(), "after the disk was freed");
    assert_eq!(
        bodies.len(),
        accepted.len() + 1,
        "every accepted message arrived, nothing else"
    );
    pa.daemon.terminate(T);
}

#[test]
fn another_user_is_refused_by_chatd_itself() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("SKIPPED another_user_is_refused_by_chatd_itself: needs root and setpriv");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let net = Net::new();
    let pa = net.node("pa");
    // A misconfigured, world-accessible socket: the file mode lets `nobody` connect, so it is
    // chatd's credential check (SO_PEERCRED) that must refuse.
    std::fs::set_permissions(net.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&pa.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let chatctl = peerchat_testkit::bin("chatctl");
    let mut dir = chatctl.parent();
    while let Some(d) = dir {
        // The binary must be reachable by nobody as well.
        let mode = std::fs::metadata(d)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o001 == 0 {
            eprintln!(
                "SKIPPED another_user_is_refused_by_chatd_itself: {} is not reachable by nobody",
                d.display()
            );
            return;
        }
        dir = d.parent();
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&chatctl)
        .arg("--socket")
        .arg(&pa.socket)
        .args(["send", "pa", "let me in"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied: uid"),
        "chatd's own refusal: {}",
        stderr(&out)
    );
    assert!(pa.bodies().is_empty());
    assert_eq!(code(&pa.ctl(&["status"])), 0, "the owner still gets in");
}
