//! Talking to chatd's control socket directly (JSON lines, docs/protocol.md section 2): pipelined
//! `send`s on one connection, and a `follow` stream that timestamps every arrival.
//!
//! Bodies are plain ASCII (`TAG<index>.<send time ns>.xxxx…`), so request lines are written
//! without a JSON encoder and the follower finds a body with a substring search instead of
//! parsing each line: the client stays cheap next to the daemons it measures.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util::{body, contains, now_ns};

/// Connects and says hello; returns the reader and writer halves.
fn connect(socket: &Path) -> anyhow::Result<(BufReader<UnixStream>, UnixStream)> {
    let mut w = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let r = BufReader::with_capacity(256 * 1024, w.try_clone()?);
    let hello = format!(
        "{{\"id\":0,\"op\":\"hello\",\"version\":{}}}\n",
        peerchat_proto::control::VERSION
    );
    w.write_all(hello.as_bytes())?;
    let mut r = r;
    let mut line = String::new();
    r.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))?;
    r.read_line(&mut line)?;
    if !line.contains("\"ok\"") {
        bail!("hello refused by {}: {}", socket.display(), line.trim());
    }
    r.get_mut().set_read_timeout(None)?;
    Ok((r, w))
}

/// The body of a `message` line, found without parsing the JSON (bodies contain no escapes).
fn find_body(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"body\":\"";
    let start = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[start..].iter().position(|&b| b == b'"')?;
    Some(&line[start..start + len])
}

/// The send time embedded by [`body`].
fn body_send_ns(body: &[u8], tag: &str) -> Option<u64> {
    let rest = body.strip_prefix(tag.as_bytes())?;
    let mut parts = rest.split(|&b| b == b'.');
    parts.next()?;
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// What a follower saw.
#[derive(Debug, Default, Clone)]
pub struct FollowOut {
    pub count: usize,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Arrival time minus the send time in the body, per message (when asked for).
    pub latencies_ns: Vec<u64>,
    pub error: Option<String>,
}

/// A `follow` stream on one node, counting the messages whose body starts with a tag.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FollowOut>>,
}

impl Follower {
    /// Starts following (new messages only); returns once chatd has confirmed the stream.
    /// The stream ends after `expected` tagged messages, after `stall` without a new one, or
    /// when [`Follower::stop`] is called.
    pub fn start(
        socket: &Path,
        tag: &str,
        expected: usize,
        latencies: bool,
        stall: Duration,
    ) -> anyhow::Result<Follower> {
        let (mut r, mut w) = connect(socket)?;
        w.write_all(b"{\"id\":1,\"op\":\"follow\",\"backlog\":0}\n")?;
        let mut line = Vec::new();
        r.get_mut()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        r.read_until(b'\n', &mut line)?;
        if !contains(&line, b"\"following\"") {
            bail!(
                "follow refused by {}: {}",
                socket.display(),
                String::from_utf8_lossy(&line).trim()
            );
        }
        r.get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let tag = tag.to_string();
        let thread = std::thread::Builder::new()
            .name("follow".into())
            .spawn(move || {
                let _keep_writer_open = w;
                follow_loop(r, &tag, expected, latencies, stall, &stop2)
            })?;
        Ok(Follower {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn wait(mut self) -> FollowOut {
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow_loop(
    mut r: BufReader<UnixStream>,
    tag: &str,
    expected: usize,
    latencies: bool,
    stall: Duration,
    stop: &AtomicBool,
) -> FollowOut {
    let mut out = FollowOut::default();
    if latencies {
        out.latencies_ns.reserve(expected);
    }
    let mut line = Vec::with_capacity(64 * 1024);
    let mut last_progress = Instant::now();
    while out.count < expected && !stop.load(Ordering::Relaxed) {
        match r.read_until(b'\n', &mut line) {
            Ok(0) => {
                out.error = Some("chatd closed the follow stream".into());
                break;
            }
            Ok(_) if line.last() == Some(&b'\n') => {
                let t = now_ns();
                if let Some(b) = find_body(&line) {
                    if b.starts_with(tag.as_bytes()) {
                        if out.count == 0 {
                            out.first_ns = t;
                        }
                        out.count += 1;
                        out.last_ns = t;
                        last_progress = Instant::now();
                        if latencies {
                            if let Some(sent) = body_send_ns(b, tag) {
                                out.latencies_ns.push(t.saturating_sub(sent));
                            }
                        }
                    }
                } else if contains(&line, b"\"error\":{") {
                    out.error = Some(String::from_utf8_lossy(&line).trim().to_string());
                    break;
                }
                line.clear();
            }
            Ok(_) => {} // partial line at EOF; the next read says 0
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // The bytes read so far stay in `line`.
                if last_progress.elapsed() > stall {
                    out.error = Some(format!(
                        "no new message for {:?} ({} of {expected} arrived)",
                        stall, out.count
                    ));
                    break;
                }
            }
            Err(e) => {
                out.error = Some(format!("follow stream: {e}"));
                break;
            }
        }
    }
    out
}

/// What a sender saw.
#[derive(Debug, Default, Clone)]
pub struct SendOut {
    pub accepted: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub start_ns: u64,
    pub last_accept_ns: u64,
    /// Per message, when paced: accepted reply time minus write time.
    pub accept_latencies_ns: Vec<u64>,
    /// Paced sends that were written more than 1 ms after their scheduled time.
    pub late: usize,
}

#[derive(Default)]
struct WriterOut {
    start_ns: u64,
    /// When paced: the write time of each message.
    write_ns: Vec<u64>,
    late: usize,
}

/// One control connection sending `n` messages to `to`: a writer thread and a reader thread.
pub struct Sender {
    writer: Option<JoinHandle<anyhow::Result<WriterOut>>>,
    reader: Option<JoinHandle<SendOut>>,
}

pub struct SendSpec {
    pub socket: PathBuf,
    pub to: Vec<String>,
    pub n: usize,
}

impl Sender {
    /// Connects now; the sending starts when `go` receives a value (so several senders start
    /// together). `rate`: messages per second, or as fast as possible when `None`.
    pub fn start(
        spec: &SendSpec,
        tag: &str,
        size: usize,
        rate: Option<f64>,
        go: mpsc::Receiver<()>,
    ) -> anyhow::Result<Sender> {
        let (mut r, w) = connect(&spec.socket)?;
        // A reply later than this means chatd is stuck; the sender gives up.
        r.get_mut()
            .set_read_timeout(Some(Duration::from_secs(60)))?;
        let to = spec
            .to
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(",");
        let n = spec.n;
        let tag_w = tag.to_string();
        let writer = std::thread::Builder::new().name("send-w".into()).spawn(
            move || -> anyhow::Result<WriterOut> {
                let mut out = WriterOut::default();
                if go.recv().is_err() {
                    let _ = w.shutdown(std::net::Shutdown::Write);
                    return Ok(out);
                }
                let mut raw = w;
                let start = now_ns();
                out.start_ns = start;
                match rate {
                    None => {
                        let mut bw = BufWriter::with_capacity(64 * 1024, &raw);
                        for i in 0..n {
                            let b = body(&tag_w, i, start, size);
                            writeln!(
                                bw,
                                "{{\"id\":{},\"op\":\"send\",\"to\":[{to}],\"body\":\"{b}\"}}",
                                i + 1
                            )?;
                        }
                        bw.flush()?;
                    }
                    Some(rate) => {
                        out.write_ns.reserve(n);
                        let t0 = Instant::now();
                        for i in 0..n {
                            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            } else if now - due > Duration::from_millis(1) {
                                out.late += 1;
                            }
                            let t = now_ns();
                            let b = body(&tag_w, i, t, size);
                            let line = format!(
                                "{{\"id\":{},\"op\":\"send\",\"to\":[{to}],\"body\":\"{b}\"}}\n",
                                i + 1
                            );
                            raw.write_all(line.as_bytes())?;
                            out.write_ns.push(t);
                        }
                    }
                }
                let _ = raw.shutdown(std::net::Shutdown::Write);
                Ok(out)
            },
        )?;
        let paced = rate.is_some();
        let reader = std::thread::Builder::new()
            .name("send-r".into())
            .spawn(move || {
                let mut out = SendOut::default();
                let mut line = Vec::with_capacity(1024);
                let mut seen = 0;
                while seen < n {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let t = now_ns();
                    seen += 1;
                    if contains(&line, b"\"ok\":{\"type\":\"accepted\"") {
                        out.accepted += 1;
                        out.last_accept_ns = t;
                    } else {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(String::from_utf8_lossy(&line).trim().into());
                        }
                    }
                    if paced {
                        out.accept_latencies_ns.push(t);
                    }
                }
                out
            })?;
        Ok(Sender {
            writer: Some(writer),
            reader: Some(reader),
        })
    }

    pub fn wait(mut self) -> SendOut {
        let written = self.writer.take().map(|t| t.join());
        let mut out = self
            .reader
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let w = match written {
            Some(Ok(Ok(w))) => w,
            Some(Ok(Err(e))) => {
                out.first_error.get_or_insert(format!("writing: {e}"));
                return out;
            }
            _ => {
                out.first_error
                    .get_or_insert("the writer thread panicked".into());
                return out;
            }
        };
        out.start_ns = w.start_ns;
        out.late = w.late;
        // Reply i answers request i (replies keep request order).
        out.accept_latencies_ns = out
            .accept_latencies_ns
            .iter()
            .zip(w.write_ns.iter())
            .map(|(a, w)| a.saturating_sub(*w))
            .collect();
        out
    }
}
