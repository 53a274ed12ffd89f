//! Talking to chatd's control socket through `peerchat_client` (docs/protocol.md section 2):
//! pipelined `send`s on one connection, and a `follow` stream that timestamps every arrival.
//!
//! Bodies are plain ASCII (`TAG<index>.<send time ns>.xxxx…`), so replies are read as raw lines
//! (`recv_line`) and the follower finds a body with a substring search instead of parsing each
//! line, and a request is encoded into a reused buffer with only its body replaced: the client
//! stays cheap next to the daemons it measures.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use peerchat_client::{Client, Error};
use peerchat_proto::control::Request;
use peerchat_proto::envelope::{append_line, RequestLine};
use peerchat_proto::Name;

use crate::util::{body, contains, now_ns};

/// Connects and says hello (within 10 s).
fn connect(socket: &Path) -> anyhow::Result<Client> {
    Client::connect_timeout(Some(socket), Duration::from_secs(10))
        .with_context(|| format!("connecting to {}", socket.display()))
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
        let mut c = connect(socket)?;
        c.send(&Request::Follow {
            from: None,
            backlog: Some(0),
            after: None,
        })?;
        let line = c.recv_line()?;
        if !contains(line, b"\"following\"") {
            bail!(
                "follow refused by {}: {}",
                socket.display(),
                String::from_utf8_lossy(line).trim()
            );
        }
        c.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let tag = tag.to_string();
        let thread = std::thread::Builder::new()
            .name("follow".into())
            .spawn(move || follow_loop(c, &tag, expected, latencies, stall, &stop2))?;
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
    mut c: Client,
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
    let mut last_progress = Instant::now();
    while out.count < expected && !stop.load(Ordering::Relaxed) {
        match c.recv_line() {
            Ok(line) => {
                let t = now_ns();
                if let Some(b) = find_body(line) {
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
                } else if contains(line, b"\"error\":{") {
                    out.error = Some(String::from_utf8_lossy(line).trim().to_string());
                    break;
                }
            }
            // The bytes read so far stay in the client.
            Err(Error::Timeout) => {
                if last_progress.elapsed() > stall {
                    out.error = Some(format!(
                        "no new message for {:?} ({} of {expected} arrived)",
                        stall, out.count
                    ));
                    break;
                }
            }
            Err(Error::Disconnected) => {
                out.error = Some("chatd closed the follow stream".into());
                break;
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
        let mut c = connect(&spec.socket)?;
        // A reply later than this means chatd is stuck; the sender gives up.
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        let w = c.writer()?;
        let first_id = c.next_id();
        let mut request = Request::Send {
            to: spec
                .to
                .iter()
                .map(|n| Name::new(n.as_str()))
                .collect::<Result<_, _>>()
                .context("a recipient")?,
            groups: Vec::new(),
            broadcast: false,
            body: String::new(),
            msg_id: None,
            conversation: None,
        };
        let n = spec.n;
        let tag_w = tag.to_string();
        let writer = std::thread::Builder::new().name("send-w".into()).spawn(
            move || -> anyhow::Result<WriterOut> {
                let mut out = WriterOut::default();
                if go.recv().is_err() {
                    let _ = w.shutdown();
                    return Ok(out);
                }
                let mut raw = w;
                // One request, its body replaced for each message; each line encoded into
                // `line` (no allocation per message beyond the body).
                let mut line = Vec::with_capacity(size + 256);
                let mut encode = |id: u64, b: String, line: &mut Vec<u8>| {
                    if let Request::Send { body, .. } = &mut request {
                        *body = b;
                    }
                    line.clear();
                    append_line(
                        line,
                        &RequestLine {
                            id,
                            request: &request,
                        },
                    );
                };
                let start = now_ns();
                out.start_ns = start;
                match rate {
                    None => {
                        let mut bw = BufWriter::with_capacity(64 * 1024, &mut raw);
                        for i in 0..n {
                            encode(first_id + i as u64, body(&tag_w, i, start, size), &mut line);
                            bw.write_all(&line)?;
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
                            encode(first_id + i as u64, body(&tag_w, i, t, size), &mut line);
                            raw.write_all(&line)?;
                            out.write_ns.push(t);
                        }
                    }
                }
                let _ = raw.shutdown();
                Ok(out)
            },
        )?;
        let paced = rate.is_some();
        let reader = std::thread::Builder::new()
            .name("send-r".into())
            .spawn(move || {
                let mut out = SendOut::default();
                let mut seen = 0;
                while seen < n {
                    let Ok(line) = c.recv_line() else { break };
                    let t = now_ns();
                    seen += 1;
                    if contains(line, b"\"ok\":{\"type\":\"accepted\"") {
                        out.accepted += 1;
                        out.last_accept_ns = t;
                    } else {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(String::from_utf8_lossy(line).trim().into());
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
