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

/// `chatctl chat` in a real pseudo-terminal of 80×24; what it draws is fed to a VT100 parser.
struct Tui {
    screen: std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
    keys: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Tui {
    fn start(socket: &std::path::Path, args: &[&str]) -> Tui {
        use portable_pty::{native_pty_system, CommandBuilder, PtySize};
        let size = PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        };
        let pair = native_pty_system().openpty(size).unwrap();
        let mut cmd = CommandBuilder::new(bin("chatctl"));
        cmd.arg("--socket");
        cmd.arg(socket);
        cmd.arg("chat");
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        cmd.env("TZ", "UTC");
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let screen = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(24, 80, 0)));
        let mut reader = pair.master.try_clone_reader().unwrap();
        let s = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    return;
                }
                s.lock().unwrap().process(&buf[..n]);
            }
        });
        let keys = pair.master.take_writer().unwrap();
        Tui {
            screen,
            keys,
            child,
            _master: pair.master,
        }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Polls the screen until `pred` holds (panics with the screen after `T`).
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + T;
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            if std::time::Instant::now() > deadline {
                panic!("screen never showed {what}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_keys(&mut self, s: &str) {
        self.keys.write_all(s.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tui_shows_an_incoming_message_with_its_unread_count_and_sends_a_reply() {
    let net = Net::new();
    let pa = net.node("pa");
    let pb = net.node("pb");
    let mut tui = Tui::start(&pb.socket, &[]);
    tui.wait("connected", |s| s.contains("pb · connected"));
    assert!(pa.ctl(&["send", "pb", "你好, pb!"]).status.success());
    let screen = tui.wait("pa with 1 unread", |s| {
        s.lines()
            .any(|l| l.starts_with("● pa") || l.starts_with("· pa") && l.contains(" 1 "))
            && s.contains("1 unread")
    });
    println!("{screen}");
    // Ctrl+N opens it: the message, its time and sender.
    tui.type_keys("\x0e");
    let screen = tui.wait("the message", |s| s.contains("pa: 你好, pb!"));
    assert!(screen.contains("times in UTC+00:00"), "{screen}");
    tui.type_keys("回复: 收到 ✓\r");
    assert_eq!(pa.wait_inbox(1, T), vec!["回复: 收到 ✓"]);
    let screen = tui.wait("the reply with a tick", |s| {
        s.contains("pb: 回复: 收到 ✓ ✓")
    });
    std::fs::write(
        std::env::temp_dir().join("peerchat-tui-screen.txt"),
        &screen,
    )
    .ok();
    // Quitting restores the terminal and exits 0.
    tui.type_keys("\x03");
    let status = tui.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn tui_keeps_what_was_typed_across_a_chatd_restart() {
    let net = Net::new();
    let pa = net.node("pa");
    let mut pb = net.node("pb");
    let mut tui = Tui::start(&pb.socket, &["pa"]);
    tui.wait("connected", |s| s.contains("pb · connected"));
    pb.daemon.terminate(T);
    tui.wait("reconnecting", |s| s.contains("reconnecting"));
    tui.type_keys("typed while chatd was away\r");
    let screen = tui.wait("the text kept", |s| {
        s.contains("typed while chatd was away")
    });
    assert!(screen.contains("sending"), "{screen}");
    pb.restart();
    tui.wait("reconnected", |s| s.contains("pb · connected"));
    assert_eq!(pa.wait_inbox(1, T), vec!["typed while chatd was away"]);
    tui.wait("the input cleared", |s| {
        s.lines()
            .filter(|l| l.contains("typed while chatd was away"))
            .count()
            == 1
            && !s.contains("sending")
    });
    // Sent once, under one id: still one message after a while of polling pa's inbox.
    assert_eq!(pa.bodies(), vec!["typed while chatd was away"]);
}
