//! What chatctl shows is safe: bodies from peers cannot act on the terminal or forge lines.
//! Real registryd and chatd processes on loopback, driven through the real chatctl.

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use peerchat_testkit::{bin, Net};

const T: Duration = Duration::from_secs(15);

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A body a hostile peer might send: clear screen, set the window title, ring the bell, go back
/// to column 0 and print a fake message line from someone else, a newline followed by another
/// fake line, a right-to-left override, the 8-bit CSI and DEL.
const HOSTILE: &str = "hi\x1b[2J\x1b]0;pwned\x07\r[99] 2025-01-01T00:00:00.000Z alice: forged\n\
                       [98] 2025-01-01T00:00:00.000Z bob: also forged\u{202e}desrever\u{9b}31m\x7f\
                       \x1b[1A\x08 你好 👨‍👩‍👧";

/// Panics if `out` (what chatctl printed for the message(s)) holds anything that acts on a
/// terminal, or a line that starts like a message without being one of `real` (their seqs).
fn assert_terminal_safe(out: &[u8], real: &[i64]) {
    for (i, b) in out.iter().enumerate() {
        assert!(
            (*b >= 0x20 || *b == b'\n') && *b != 0x7f,
            "raw control byte {b:#04x} at {i} in {:?}",
            String::from_utf8_lossy(out)
        );
    }
    let text = std::str::from_utf8(out).expect("UTF-8 output");
    for c in text.chars() {
        assert!(
            !matches!(c, '\u{80}'..='\u{9f}'
                | '\u{061c}' | '\u{200e}' | '\u{200f}'
                | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'),
            "raw {c:?} in {text:?}"
        );
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let seq: Option<i64> = rest.split(']').next().and_then(|s| s.parse().ok());
            assert!(
                seq.is_some_and(|s| real.contains(&s)),
                "a line that is not a message starts like one: {line:?}"
            );
        } else {
            assert!(
                line.starts_with("    "),
                "a continuation line is not indented: {line:?}"
            );
        }
        assert!(!line.starts_with("[99]") && !line.starts_with("[98]"));
    }
    // The visible text is still there, CJK and emoji intact.
    assert!(text.contains("alice: forged"), "{text}");
    assert!(text.contains("你好 👨‍👩‍👧"), "{text}");
    assert!(text.contains("\\x1b[2J"), "{text}");
    assert!(text.contains("\\u{202e}"), "{text}");
}

#[test]
fn hostile_bodies_are_shown_escaped_in_inbox_and_follow() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");

    // A text follower on pb, its raw output lines on a channel.
    let mut follow = Command::new(bin("chatctl"))
        .arg("--socket")
        .arg(&pb.socket)
        .args(["inbox", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn follower");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let out = pa.ctl(&["send", "pb", HOSTILE]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = pa.ctl(&["send", "pb", "plain"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pb.wait_inbox(2, T);

    // --json keeps the exact body.
    let msgs = pb.inbox();
    assert_eq!(msgs[0]["body"], HOSTILE);
    assert_eq!(msgs[1]["body"], "plain");

    // `inbox`: every control made visible, the continuation indented.
    let out = pb.ctl(&["inbox"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_terminal_safe(&out.stdout, &[1, 2]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().next().unwrap_or("").starts_with("[1] "));
    assert!(text.lines().nth(2).unwrap_or("").starts_with("[2] "));

    // `inbox --follow`: the same. Its lines up to and including the second message.
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(": plain") {
        let line = lines
            .recv_timeout(T)
            .expect("the follower printed the messages");
        got.extend_from_slice(&line);
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_terminal_safe(&got, &[1, 2]);
    assert_eq!(got, out.stdout, "follow prints messages as inbox does");
}
