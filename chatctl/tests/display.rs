//! What chatctl shows is safe and the whole truth: bodies from peers cannot act on the terminal
//! or forge lines, a delivered message shows no stale error, and `outbox` never cuts its list
//! silently. Real registryd and chatd processes on loopback, driven through the real chatctl.

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use peerchat_testkit::{bin, json_lines, wait_for, Net};

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

/// `send --wait` and `status ID` show the last error while the recipient is pending, and none
/// once the message was delivered.
#[test]
fn a_delivered_message_shows_no_stale_error() {
    let net = Net::new();
    let pa = net.node_with("pa", &["--retry-initial", "0.1", "--retry-max", "0.3"]);
    let mut pb = net.node("pb");
    pb.daemon.terminate(T);

    let out = pa.ctl(&["send", "--id", "m1", "pb", "while down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A second message, waited for by a chatctl that outlives pb's absence.
    let waiter = Command::new(bin("chatctl"))
        .arg("--socket")
        .arg(&pa.socket)
        .args(["--json", "send", "--wait=30", "--id", "m2", "pb", "waited"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send --wait");

    // Both fail an attempt (pb is down): the error shows while they are pending.
    for id in ["m1", "m2"] {
        wait_for(T, "a failed attempt recorded", || {
            let out = pa.ctl(&["--json", "status", id]);
            let info = json_lines(&out.stdout).into_iter().next()?;
            let r = &info["recipients"][0];
            (r["state"] == "queued" && r["error"].is_string()).then_some(())
        });
    }
    let out = pa.ctl(&["status", "m1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("last error: "),
        "pending: the error is shown: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    pb.restart();
    let out = waiter.wait_with_output().expect("send --wait");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // `--wait` prints the accepted state first, then the final one.
    let lines = json_lines(&out.stdout);
    let r = lines.last().expect("a final line");
    assert_eq!(r["state"], "delivered");
    assert!(r["error"].is_null(), "send --wait: stale error in {r}");

    for id in ["m1", "m2"] {
        let out = pa.ctl(&["--json", "status", id]);
        let info = &json_lines(&out.stdout)[0];
        let r = &info["recipients"][0];
        assert_eq!(r["state"], "delivered", "{info}");
        assert!(r["attempts"].as_u64().unwrap_or(0) >= 1, "{info}");
        assert!(r["error"].is_null(), "status {id}: stale error in {info}");
        let out = pa.ctl(&["status", id]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("delivered"), "{text}");
        assert!(
            !text.contains("error"),
            "status {id}: stale error in {text}"
        );
    }
}

/// The cursor in `… and N more; continue with --after CURSOR` on stderr.
fn continuation(out: &Output) -> Option<(u64, String)> {
    let e = stderr(out);
    let rest = e.split("… and ").nth(1)?;
    let (n, rest) = rest.split_once(" more; continue with --after ")?;
    Some((n.parse().ok()?, rest.trim().to_string()))
}

fn ids_and_recipients(out: &Output) -> Vec<(String, String)> {
    json_lines(&out.stdout)
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default().to_string(),
                e["to"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn outbox_lists_everything_or_says_how_much_more() {
    let net = Net::new();
    let pa = net.node("pa");
    let mut pb = net.node("pb");
    let mut pc = net.node("pc");
    pb.daemon.terminate(T);
    pc.daemon.terminate(T);

    // 501 messages to two recipients: 1,002 pending rows, more than one default page (1,000).
    let lines: String = (0..501).map(|i| format!("m{i}\n")).collect();
    let out = pa.ctl_stdin(&["--json", "send", "-l", "pb,pc"], lines.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let sent: Vec<String> = json_lines(&out.stdout)
        .iter()
        .filter(|r| r["to"] == "pb")
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(sent.len(), 501);
    let want: Vec<(String, String)> = sent
        .iter()
        .flat_map(|id| [(id.clone(), "pb".into()), (id.clone(), "pc".into())])
        .collect();

    // The default lists every row, oldest message first, then by recipient.
    let out = pa.ctl(&["--json", "outbox"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(ids_and_recipients(&out), want, "the whole outbox, in order");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let out = pa.ctl(&["outbox"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1002);

    // With --limit: pages of 333 (the first ends in the middle of a message), each saying how
    // many more there are and where to continue; together exactly the whole list.
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["--json", "outbox", "--limit", "333"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let out = pa.ctl(&args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let page = ids_and_recipients(&out);
        pages += 1;
        got.extend(page.iter().cloned());
        match continuation(&out) {
            Some((more, cursor)) => {
                assert_eq!(page.len(), 333);
                assert_eq!(more as usize, want.len() - got.len(), "{}", stderr(&out));
                after = Some(cursor);
            }
            None => {
                assert!(stderr(&out).is_empty(), "{}", stderr(&out));
                break;
            }
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(got, want, "the pages add up to the whole outbox");

    // A bad cursor is a usage error of the request, not an empty list.
    let out = pa.ctl(&["outbox", "--after", "nonsense"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("cursor"), "{}", stderr(&out));
}
