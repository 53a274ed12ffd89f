//! chatctl in pipelines, against real daemons: `send -l` across chatd restarts (every line
//! exactly once, in order), lines that are not UTF-8, a reader that goes away (`| head`), and
//! `send --wait` across a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_testkit::{json_lines, wait_for, Net, Node};

const T: Duration = Duration::from_secs(10);

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn numbered(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

/// A chatctl process fed through a pipe: its stdout lines arrive on a channel, its stderr is
/// collected.
struct Ctl {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Ctl {
    fn start(node: &Node, args: &[&str]) -> Ctl {
        Ctl::start_at(&node.socket, args)
    }

    fn start_at(socket: &Path, args: &[&str]) -> Ctl {
        let mut child = Command::new(peerchat_testkit::bin("chatctl"))
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chatctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ctl {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    fn write_lines(&mut self, lines: &[String]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        for l in lines {
            stdin.write_all(format!("{l}\n").as_bytes()).unwrap();
        }
        stdin.flush().unwrap();
    }

    /// The next `n` stdout lines (panics if one takes longer than `T`).
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines.recv_timeout(T).unwrap_or_else(|_| {
                    panic!("chatctl printed only {i} of {n} lines within {T:?}")
                })
            })
            .collect()
    }

    /// Closes stdin and waits up to `timeout` for the exit: (status, stderr, the stdout lines
    /// not taken yet).
    fn finish(mut self, timeout: Duration) -> (i32, String, Vec<String>) {
        drop(self.stdin.take());
        let status = wait_for(timeout, "chatctl to exit", || {
            self.child.try_wait().unwrap()
        });
        let stderr = self.stderr.take().unwrap().join().unwrap();
        let rest = self.lines.try_iter().collect();
        (status.code().unwrap_or(-1), stderr, rest)
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tail -f app.log | chatctl send -l pb` while pa's chatd restarts between two lines: the
/// lines after the restart are sent too (they used to be dropped, with exit 0).
#[test]
fn send_lines_carries_on_after_a_chatd_restart() {
    let net = Net::new();
    let mut pa = net.node("pa");
    let pb = net.node("pb");
    let mut ctl = Ctl::start(&pa, &["--json", "send", "-l", "pb"]);
    ctl.write_lines(&numbered(1..=20));
    ctl.take(20);
    pa.daemon.terminate(T);
    pa.restart();
    ctl.write_lines(&numbered(21..=40));
    let (status, err, rest) = ctl.finish(Duration::from_secs(30));
    assert_eq!(status, 0, "stderr: {err}");
    assert!(err.contains("reconnecting"), "stderr: {err}");
    assert_eq!(
        rest.len(),
        20,
        "one result per line after the restart: {rest:?}"
    );
    assert_eq!(pb.wait_inbox(40, T), numbered(1..=40));
}

/// chatd killed (-9) while lines stream in: the requests in flight, answered or not, are sent
/// again under the same message ids, so every line arrives exactly once and in order.
#[test]
fn send_lines_in_flight_survive_a_chatd_kill9() {
    const N: u32 = 3000;
    let net = Net::new();
    let mut pa = net.node("pa");
    let pb = net.node("pb");
    let mut ctl = Ctl::start(&pa, &["--json", "send", "-l", "pb"]);
    let mut stdin = ctl.stdin.take().unwrap();
    // About one line per millisecond, so that requests are in flight when chatd dies.
    let feeder = std::thread::spawn(move || {
        for chunk in numbered(1..=N).chunks(5) {
            for l in chunk {
                stdin.write_all(format!("{l}\n").as_bytes()).unwrap();
            }
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut results = ctl.take(500);
    pa.daemon.kill9();
    pa.restart();
    feeder.join().unwrap();
    let (status, err, rest) = ctl.finish(Duration::from_secs(60));
    assert_eq!(status, 0, "stderr: {err}");
    assert!(err.contains("reconnecting"), "chatd was really lost: {err}");
    results.extend(rest);
    let results: Vec<serde_json::Value> = json_lines(results.join("\n").as_bytes());
    assert_eq!(results.len(), N as usize, "one result per line");
    let mut ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N as usize, "every line its own message");
    let bodies = pb.wait_inbox(N as usize, Duration::from_secs(60));
    assert_eq!(bodies, numbered(1..=N), "each line once, in order");
    // Nothing more trickles in later (a duplicate would come after the others).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pb.bodies().len(), N as usize);
}

/// A proxy in front of chatd's control socket that can swallow chatd's replies and then cut the
/// connection: chatd has recorded the requests, and chatctl never heard so.
struct ControlProxy {
    path: std::path::PathBuf,
    swallow: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

impl ControlProxy {
    fn start(target: &Path, path: std::path::PathBuf) -> ControlProxy {
        let listener = UnixListener::bind(&path).unwrap();
        let swallow = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (target, sw, cs) = (target.to_path_buf(), swallow.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = UnixStream::connect(&target) else {
                    continue;
                };
                cs.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let no = Arc::new(AtomicBool::new(false));
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), no);
                pump(server, client, sw.clone());
            }
        });
        ControlProxy {
            path,
            swallow,
            conns,
        }
    }

    /// Replies from chatd are dropped from now on.
    fn swallow_replies(&self) {
        self.swallow.store(true, Ordering::SeqCst);
    }

    /// Closes every connection (both ways); new ones work normally.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.swallow.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: UnixStream, mut to: UnixStream, swallow: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !swallow.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The connection drops after chatd recorded lines whose replies never reached chatctl: they
/// are sent again under the same message ids, so chatd answers them as repeats and nothing is
/// stored twice.
#[test]
fn send_lines_resends_unanswered_lines_without_duplicating_them() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let proxy = ControlProxy::start(&pa.socket, net.dir.path().join("proxy.sock"));
    let mut ctl = Ctl::start_at(&proxy.path, &["--json", "send", "-l", "pb"]);
    ctl.write_lines(&numbered(1..=10));
    let mut results = ctl.take(10);
    proxy.swallow_replies();
    ctl.write_lines(&numbered(11..=30));
    // Recorded (and even delivered), but chatctl has no answer for them.
    pb.wait_inbox(30, T);
    assert!(ctl.lines.try_recv().is_err(), "no reply got through");
    proxy.cut();
    results.extend(ctl.take(20));
    ctl.write_lines(&numbered(31..=40));
    let (status, err, rest) = ctl.finish(T);
    assert_eq!(status, 0, "stderr: {err}");
    assert!(err.contains("reconnecting"), "stderr: {err}");
    results.extend(rest);
    assert_eq!(results.len(), 40, "one result per line: {results:?}");
    assert_eq!(pb.wait_inbox(40, T), numbered(1..=40));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pb.bodies().len(), 40, "nothing stored twice");
}

/// Like the above, to a group whose members changed meanwhile: chatd refuses the resend as a
/// `conflict` (same id, other recipients), which for a line sent again means it was accepted
/// before. chatctl says so and does not count it as a failure.
#[test]
fn a_resent_line_whose_group_changed_counts_as_accepted() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let pc = net.node("pc");
    assert_eq!(code(&pa.ctl(&["group", "create", "ops", "pb"])), 0);
    let proxy = ControlProxy::start(&pa.socket, net.dir.path().join("proxy.sock"));
    let mut ctl = Ctl::start_at(&proxy.path, &["send", "-l", "@ops"]);
    ctl.write_lines(&numbered(1..=1));
    ctl.take(1);
    proxy.swallow_replies();
    ctl.write_lines(&numbered(2..=4));
    pb.wait_inbox(4, T);
    assert_eq!(code(&pa.ctl(&["group", "add", "ops", "pc"])), 0);
    proxy.cut();
    ctl.write_lines(&numbered(5..=5));
    let (status, err, rest) = ctl.finish(T);
    assert_eq!(status, 0, "stderr: {err}");
    for n in 2..=4 {
        assert!(
            err.contains(&format!("line {n}: accepted as ")),
            "line {n}: {err}"
        );
    }
    assert_eq!(rest.len(), 2, "line 5 for pb and pc: {rest:?}");
    assert_eq!(pb.wait_inbox(5, T), numbered(1..=5));
    assert_eq!(pc.wait_inbox(1, T), numbered(5..=5));
}

/// chatd stops and does not come back within --reconnect-timeout: exit 1, naming the first line
/// that was not accepted.
#[test]
fn send_lines_names_the_first_line_lost_when_chatd_stays_away() {
    let net = Net::new();
    let mut pa = net.node("pa");
    let pb = net.node("pb");
    let mut ctl = Ctl::start(&pa, &["send", "-l", "--reconnect-timeout", "1", "pb"]);
    ctl.write_lines(&numbered(1..=5));
    ctl.take(5);
    pa.daemon.terminate(T);
    ctl.write_lines(&numbered(6..=7));
    let start = Instant::now();
    let (status, err, _) = ctl.finish(T);
    assert_eq!(status, 1, "stderr: {err}");
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(
        err.contains("chatctl: line 6: not accepted") && err.contains("within 1 s"),
        "stderr: {err}"
    );
    // Lines 1-5 were accepted (and are delivered once chatd runs again); 6 and 7 were not.
    pa.restart();
    wait_for(T, "pa's outbox to empty", || {
        let out = pa.ctl(&["--json", "outbox"]);
        json_lines(&out.stdout).is_empty().then_some(())
    });
    assert_eq!(pb.wait_inbox(5, T), numbered(1..=5));
    assert_eq!(pb.bodies().len(), 5);
}

/// A line that is not UTF-8 is reported with its number and skipped; the others are sent, and
/// the exit status is 1. A whole stdin message that is not UTF-8 is refused.
#[test]
fn send_lines_skips_a_line_that_is_not_utf8() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let out = pa.ctl_stdin(&["send", "-l", "pb"], b"one\n\xff\xfe bad\nthree\n");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 2: not valid UTF-8"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pb.wait_inbox(2, T), ["one", "three"]);

    // --json: the skipped line is a JSON object with its number; the last line has no newline.
    let out = pa.ctl_stdin(&["--json", "send", "-l", "pb"], b"\xc3\nfour\nbad \xe2\x82");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = json_lines(&out.stdout);
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(
        (&r[0]["line"], &r[0]["error"]["code"]),
        (&1.into(), &"bad_input".into())
    );
    assert_eq!(r[1]["state"], "queued");
    assert_eq!(r[2]["line"], 3);

    // One message from stdin: refused as a whole, nothing sent.
    let out = pa.ctl_stdin(&["send", "pb"], b"fine\nnot \xff fine\n");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("stdin is not valid UTF-8 (byte 5 of line 2)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&pa.ctl(&["send", "pb", "last"])), 0);
    assert_eq!(pb.wait_inbox(4, T), ["one", "three", "four", "last"]);
}

/// `chatctl send -l pb | head -1`: the reader going away stops the printing, not the sending,
/// and the exit status is that of the sends.
#[test]
fn send_lines_goes_on_when_stdout_closes() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let mut child = Command::new(peerchat_testkit::bin("chatctl"))
        .arg("--socket")
        .arg(&pa.socket)
        .args(["send", "-l", "pb"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(numbered(1..=10).join("\n").as_bytes())
        .unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    assert!(first.ends_with(" pb queued\n"), "{first:?}");
    drop(out); // like `head -1` exiting
               // Slowly, so that chatctl prints (and meets the closed pipe) between two lines. A chatctl
               // that stopped there makes these writes fail: the inbox check below then says so.
    for chunk in numbered(11..=300).chunks(10) {
        let _ = stdin.write_all(format!("{}\n", chunk.join("\n")).as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "quiet: {}", stderr(&out));
    assert_eq!(pb.wait_inbox(300, T), numbered(1..=300));
}

/// `send --wait` prints the accepted result first, then waits; chatd restarting meanwhile is
/// not a failure: chatctl reconnects and waits on until the message is delivered.
#[test]
fn send_wait_prints_the_id_first_and_waits_across_a_chatd_restart() {
    let net = Net::new();
    let mut pa = net.node_with("pa", &["--retry-initial", "0.1", "--retry-max", "0.3"]);
    let mut pb = net.node("pb");
    pb.daemon.terminate(T);
    let ctl = Ctl::start(&pa, &["--json", "send", "--wait", "pb", "across"]);
    let first: serde_json::Value = serde_json::from_str(&ctl.take(1)[0]).unwrap();
    assert_eq!(
        (&first["to"], &first["state"]),
        (&"pb".into(), &"queued".into())
    );
    let id = first["id"].as_str().unwrap().to_string();
    pa.daemon.terminate(T);
    pa.restart();
    pb.restart();
    let (status, err, rest) = ctl.finish(Duration::from_secs(30));
    assert_eq!(status, 0, "stderr: {err}");
    assert!(
        err.contains(&format!("waiting for {id}; reconnecting")),
        "stderr: {err}"
    );
    let last = json_lines(rest.join("\n").as_bytes());
    assert_eq!(last.len(), 1, "{rest:?}");
    assert_eq!(
        (&last[0]["id"], &last[0]["state"]),
        (&id.as_str().into(), &"delivered".into())
    );
    assert_eq!(pb.wait_inbox(1, T), ["across"]);
}

/// chatd does not come back within --reconnect-timeout during `send --wait`: exit 1 (not 6:
/// nothing failed), saying the message is accepted and still in the outbox.
#[test]
fn send_wait_gives_up_when_chatd_stays_away() {
    let net = Net::new();
    let mut pa = net.node("pa");
    let mut pb = net.node("pb");
    pb.daemon.terminate(T);
    let ctl = Ctl::start(
        &pa,
        &[
            "send",
            "--wait",
            "--reconnect-timeout",
            "1",
            "pb",
            "stranded",
        ],
    );
    let first = ctl.take(1).remove(0);
    assert!(first.ends_with(" pb queued"), "{first:?}");
    let id = first.split(' ').next().unwrap().to_string();
    pa.daemon.terminate(T);
    let start = Instant::now();
    let (status, err, rest) = ctl.finish(T);
    assert_eq!(status, 1, "stderr: {err}");
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        err.contains(&format!(
            "message {id} is accepted and stays in chatd's outbox"
        )),
        "stderr: {err}"
    );
    pa.restart();
    let out = pa.ctl(&["--json", "status", &id]);
    assert_eq!(
        json_lines(&out.stdout)[0]["recipients"][0]["state"],
        "queued"
    );
}
