//! `chatctl history`, `search` and `inbox --unread` (protocol.md §2.9) as a newcomer and a
//! script use them: text and `--json`, wrong input with the documented exit statuses, a hostile
//! body shown safely, and `| head` quiet. Real registryd and chatd processes on loopback.

use std::process::Output;
use std::time::Duration;

use peerchat_testkit::{bin, json_lines, Net};

const T: Duration = Duration::from_secs(15);

/// Clears the screen, then a newline and a line that looks like another message from bob.
const HOSTILE: &str = "evil\x1b[2J\x1b]0;pwned\x07\n[12] 2025-01-01T00:00:00.000Z bob: forged";

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No byte that acts on a terminal, and every line either a real entry (its `[POS]` one of
/// `real`) or an indented continuation.
fn assert_safe(out: &Output, real: &[i64]) {
    for b in &out.stdout {
        assert!(
            (*b >= 0x20 || *b == b'\n') && *b != 0x7f,
            "raw control byte {b:#04x} in {:?}",
            stdout(out)
        );
    }
    for line in stdout(out).lines() {
        match line.strip_prefix('[') {
            Some(rest) => {
                let pos: Option<i64> = rest.split(']').next().and_then(|s| s.parse().ok());
                assert!(pos.is_some_and(|p| real.contains(&p)), "forged: {line:?}");
            }
            None => assert!(line.starts_with("    "), "not indented: {line:?}"),
        }
    }
}

#[test]
fn history_search_and_unread_in_text_and_json() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    for body in ["hello one", HOSTILE, "hello three"] {
        let out = pa.ctl(&["send", "pb", body]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    pb.wait_inbox(3, T);
    assert_eq!(code(&pb.ctl(&["send", "pa", "reply"])), 0);

    // --json: every entry, both directions, oldest first, the exact bodies.
    let out = pb.ctl(&["--json", "history", "pa"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let entries = json_lines(&out.stdout);
    let bodies: Vec<_> = entries
        .iter()
        .map(|e| e["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello one", HOSTILE, "hello three", "reply"]);
    assert_eq!(entries[3]["direction"], "out");
    let pos: Vec<i64> = entries.iter().map(|e| e["pos"].as_i64().unwrap()).collect();

    // Text: the hostile body escaped, its fake line indented, nothing said on stderr.
    let out = pb.ctl(&["history", "pa"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_safe(&out, &pos);
    assert_eq!(stdout(&out).lines().count(), 5, "{}", stdout(&out));
    assert!(stdout(&out).contains("\\x1b[2J"), "{}", stdout(&out));
    assert_eq!(stderr(&out), "");

    // Paging: the hint on stderr is a command that works.
    let out = pb.ctl(&["history", "pa", "--limit", "2"]);
    assert_eq!(code(&out), 0);
    let hint = format!("chatctl history pa --before {}", pos[2]);
    assert!(stderr(&out).contains(&hint), "{}", stderr(&out));
    let out = pb.ctl(&["--json", "history", "pa", "--before", &pos[2].to_string()]);
    let older: Vec<_> = json_lines(&out.stdout)
        .iter()
        .map(|e| e["pos"].as_i64().unwrap())
        .collect();
    assert_eq!(older, &pos[..2]);

    // A peer never written to: an empty conversation, not an error.
    let out = pb.ctl(&["history", "pz"]);
    assert_eq!(
        (code(&out), stdout(&out)),
        (0, String::new()),
        "{}",
        stderr(&out)
    );

    // search: text (with the conversation) and --json, the hostile hit safe.
    let out = pb.ctl(&["search", "hello"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_safe(&out, &pos);
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    assert!(
        stdout(&out).lines().all(|l| l.contains(" pa ")),
        "{}",
        stdout(&out)
    );
    let out = pb.ctl(&["--json", "search", "forged", "--with", "pa"]);
    let hits = json_lines(&out.stdout);
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (&hits[0]["with"], &hits[0]["entry"]["body"]),
        (&"pa".into(), &HOSTILE.into())
    );
    let out = pb.ctl(&["search", "nowhere to be found"]);
    assert_eq!((code(&out), stdout(&out)), (0, String::new()));

    // inbox --unread: the three received ones (not the reply), with their conversation.
    let out = pb.ctl(&["inbox", "--unread"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_safe(&out, &pos);
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));
    let out = pb.ctl(&["--json", "inbox", "--unread"]);
    let unread = json_lines(&out.stdout);
    let bodies: Vec<_> = unread
        .iter()
        .map(|u| u["entry"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello one", HOSTILE, "hello three"]);
    assert!(unread.iter().all(|u| u["with"] == "pa"));
}

/// Wrong input gets the exit status of the table in `chatctl --help` and one clear line.
#[test]
fn wrong_input_gets_the_documented_exit_status() {
    let net = Net::new();
    let pa = net.node("pa");
    for (args, want) in [
        (&["history"][..], 2),
        (&["history", "bad name"], 2),
        (&["history", "pa", "--before", "yesterday"], 2),
        (&["history", "pa", "--before", "1", "--after", "2"], 2),
        (&["history", "pa", "--limit", "-1"], 2),
        (&["history", "@nosuchgroup"], 4),
        (&["history", "pa", "--limit", "0"], 2),
        (&["search"], 2),
        (&["search", "x", "--with", "bad name"], 2),
        (&["search", "x", "--from", "@ops"], 2),
        (&["search", "x", "--with", "@nosuchgroup"], 4),
        (&["search", ""], 2),
        (&["inbox", "--unread", "--follow"], 2),
    ] {
        let out = pa.ctl(args);
        assert_eq!(code(&out), want, "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            stderr(&out).starts_with("chatctl: ") || stderr(&out).starts_with("error: "),
            "{args:?}: {}",
            stderr(&out)
        );
        let out = pa.ctl(&[&["--json"], args].concat());
        assert_eq!(code(&out), want, "--json {args:?}");
    }
}

/// `chatctl history NAME | head -1` and `search … | head -1` exit quietly when head leaves.
#[test]
fn history_and_search_into_head_are_quiet() {
    let net = Net::new();
    let pa = net.node("pa");
    let lines: String = (1..=1000)
        .map(|i| format!("line {i} {}\n", "x".repeat(100)))
        .collect();
    let out = pa.ctl_stdin(&["send", "-l", "pa"], lines.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pa.wait_inbox(1000, T);
    for cmd in ["history pa --limit 1000", "search line --limit 1000"] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; '{}' --socket '{}' {cmd} | head -1",
                bin("chatctl").display(),
                pa.socket.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert_eq!(stderr(&out), "", "{cmd}");
        assert_eq!(stdout(&out).lines().count(), 1, "{cmd}");
    }
}
