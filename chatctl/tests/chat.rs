//! `chatctl chat`: `--plain` driven through pipes, and the full-screen TUI under a real
//! pseudo-terminal (portable-pty) read back through a VT100 parser (vt100), with real chatd
//! and registryd processes on loopback.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use peerchat_testkit::{bin, Net};

const T: Duration = Duration::from_secs(15);

/// `chatctl chat --plain` on `socket`, with stdin and stdout piped; stdout lines on a channel.
fn plain(socket: &std::path::Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin("chatctl"))
        .arg("--socket")
        .arg(socket)
        .args(["chat", "--plain"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next stdout line containing `what`, within `T`.
fn line_with(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(_) => panic!("no line with {what:?} within {T:?}"),
        }
    }
}

#[test]
fn plain_prints_incoming_lines_sends_typed_ones_and_fails_on_a_refused_line() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let (mut chat, rx) = plain(&pb.socket);
    // A forged second line stays visibly a continuation.
    let out = pa.ctl(&["send", "pb", "你好 from pa\n[12:00] bob: pay me"]);
    assert!(out.status.success());
    let first = line_with(&rx, "你好 from pa");
    assert!(first.starts_with('['), "{first}");
    assert!(first.contains("] pa: 你好 from pa"), "{first}");
    let forged = line_with(&rx, "bob: pay me");
    assert!(forged.starts_with("    [12:00] bob:"), "{forged:?}");

    let mut stdin = chat.stdin.take().unwrap();
    // NAME MESSAGE; MESSAGE alone (to the last conversation); a group that does not exist.
    stdin
        .write_all("pa 回复 one\njust text\n@nogroup hi\n".as_bytes())
        .unwrap();
    drop(stdin);
    let out = chat.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(
        !stderr.contains("line 1") && !stderr.contains("line 2"),
        "{stderr}"
    );
    let got = pa.wait_inbox(2, T);
    assert!(got.contains(&"回复 one".to_string()), "{got:?}");
    assert!(got.contains(&"just text".to_string()), "{got:?}");
}

#[test]
fn plain_exits_zero_when_every_line_was_accepted() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let out = pb.ctl_stdin(&["chat", "--plain"], b"pa one\n\npa two\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pa.wait_inbox(2, T), vec!["one", "two"]);
    // A line without a message is not accepted: non-zero at EOF.
    let out = pb.ctl_stdin(&["chat", "--plain"], b"pa\n");
    assert_eq!(out.status.code(), Some(1));
}
