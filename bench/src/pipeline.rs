//! The command line users actually run: `chatctl send -l b` on A fed N lines on stdin, and
//! `chatctl inbox --follow --json` on B printing them, counted at the follower's stdout. The
//! same shape as the mosquitto row (`mosquitto_pub -l` → `mosquitto_sub`), with the same lines.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procfs;
use crate::report::Row;
use crate::runs::Pair;
use crate::util::{body, contains, now_ns};

/// A child process, killed and reaped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chatctl(socket: &Path) -> Command {
    let mut c = Command::new(peerchat_testkit::bin_dir().join("chatctl"));
    c.arg("--socket").arg(socket);
    c
}

/// `n` lines of `size` bytes through `chatctl send -l` → `chatctl inbox --follow --json`.
/// Timing starts with the first line written, once a first message went through.
pub fn run(pair: &Pair, tag: &str, size: usize, n: usize, stall: Duration) -> anyhow::Result<Row> {
    let mut follow = Guard(
        chatctl(&pair.b.socket)
            .args(["inbox", "--follow", "--json", "--limit", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chatctl inbox --follow")?,
    );
    let out = follow.0.stdout.take().context("follower stdout")?;
    let count = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let ready_body = format!("{tag}ready");
    let reader = {
        let (count, last, ready) = (count.clone(), last.clone(), ready.clone());
        let (tag, ready_body) = (tag.to_string(), ready_body.clone());
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(256 * 1024, out);
            let mut line = Vec::with_capacity(64 * 1024);
            let ready_json = format!("\"body\":\"{ready_body}\"");
            let tag_json = format!("\"body\":\"{tag}");
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if contains(&line, ready_json.as_bytes()) {
                    ready.store(1, Ordering::Relaxed);
                } else if contains(&line, tag_json.as_bytes()) {
                    count.fetch_add(1, Ordering::Relaxed);
                    last.store(now_ns(), Ordering::Relaxed);
                }
            }
        })
    };
    // The follow is in place (and the link up) once a message sent now arrives.
    let status = chatctl(&pair.a.socket)
        .args(["send", "b", &ready_body])
        .stdout(Stdio::null())
        .status()
        .context("chatctl send")?;
    if !status.success() {
        bail!("chatctl send b {ready_body}: {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            bail!("chatctl inbox --follow did not print a test message within 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut send = Guard(
        chatctl(&pair.a.socket)
            .args(["send", "-l", "b"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chatctl send -l")?,
    );
    let mut stdin = send.0.stdin.take().context("chatctl send -l stdin")?;
    let mut pids = pair.procs.clone();
    pids.push(("chatctl send -l".into(), send.0.id()));
    pids.push(("chatctl inbox --follow".into(), follow.0.id()));
    let before: Vec<procfs::Snap> = pids.iter().map(|(_, p)| procfs::snap(*p)).collect();
    // The lines are made before the clock starts, as `seq` or a file would have them ready.
    let lines: Vec<String> = (0..n).map(|i| body(tag, i, 0, size)).collect();
    let start = now_ns();
    {
        let mut w = BufWriter::with_capacity(64 * 1024, &mut stdin);
        for l in &lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    drop(stdin);
    let mut seen = count.load(Ordering::Relaxed);
    let mut progress = Instant::now();
    while seen < n && progress.elapsed() < stall {
        std::thread::sleep(Duration::from_millis(10));
        let c = count.load(Ordering::Relaxed);
        if c != seen {
            seen = c;
            progress = Instant::now();
        }
    }
    let after: Vec<procfs::Snap> = pids.iter().map(|(_, p)| procfs::snap(*p)).collect();
    let send_status = send.0.wait().ok();
    drop(follow);
    let _ = reader.join();
    let got = count.load(Ordering::Relaxed);
    let mut row = Row::new(
        "peerchat CLI: send -l → inbox --follow",
        "1→1",
        size,
        n,
        got,
        n,
        last.load(Ordering::Relaxed).saturating_sub(start) as f64 / 1e9,
    );
    for ((label, _), (b, a)) in pids.iter().zip(before.iter().zip(&after)) {
        row.usage.insert(label.clone(), procfs::usage(b, a));
    }
    let per_msg = |k: &str| {
        row.usage
            .get(k)
            .map_or(0.0, |u| u.cpu_secs * 1e6 / got.max(1) as f64)
    };
    row.sender_cpu_us_per_msg = Some(per_msg("chatd A"));
    row.recipient_cpu_us_per_msg = Some(per_msg("chatd B"));
    let mut notes = vec![format!(
        "CPU µs/msg chatctl send -l {:.1}, inbox --follow {:.1}",
        per_msg("chatctl send -l"),
        per_msg("chatctl inbox --follow")
    )];
    match send_status {
        Some(s) if s.success() => {}
        Some(s) => notes.push(format!("chatctl send -l exited with {s}")),
        None => notes.push("chatctl send -l could not be waited for".into()),
    }
    row.note = Some(notes.join("; "));
    Ok(row)
}
