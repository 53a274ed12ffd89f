//! `chatctl send` and `chatctl broadcast`: one message from the arguments or stdin, or (`-l`)
//! one per stdin line, pipelined: a thread writes requests while this one reads the replies.
//!
//! `-l` survives chatd restarts. Every line goes out with its own message id (a UUIDv7 made
//! here), and the requests not yet answered are kept (at most [`MAX_IN_FLIGHT`]). When the
//! connection drops, the reader reconnects (up to `--reconnect-timeout`), writes those requests
//! again, unchanged and in order, and only then lets the writer go on: chatd answers a line it had
//! already recorded from its outbox (the same id and body are a repeat, protocol.md 2.5.2), so
//! nothing is lost, duplicated or reordered. If chatd does not come back, the first line not
//! accepted is reported and the exit status is 1.

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use peerchat_client::{self as client, Client, Writer};
use peerchat_proto::control::{code, DeliveryState, Request, RequestLine, Response};
use peerchat_proto::envelope::to_line;
use peerchat_proto::{ErrorBody, Name, MAX_BODY_BYTES};
use serde::Serialize;

use crate::cli::{BroadcastArgs, MessageArgs, SendArgs};
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::one_line;

/// Whom to send to, as parsed from the command line.
#[derive(Clone)]
struct Targets {
    to: Vec<Name>,
    groups: Vec<Name>,
    broadcast: bool,
}

impl Targets {
    fn request(&self, body: String, msg_id: Option<String>) -> Request {
        Request::Send {
            to: self.to.clone(),
            groups: self.groups.clone(),
            broadcast: self.broadcast,
            body,
            // Checked when given (a usage error) or a UUIDv7 made here: always valid.
            msg_id: msg_id.and_then(|id| peerchat_proto::MsgId::new(id).ok()),
            conversation: None,
        }
    }
}

#[derive(Serialize)]
struct ResultLine<'a> {
    id: &'a str,
    to: &'a str,
    state: &'a str,
    error: Option<&'a str>,
}

pub fn run(socket: Option<&Path>, json: bool, args: SendArgs) -> Result<i32, Failure> {
    let targets = parse_targets(&args.to)?;
    send(socket, json, targets, args.message)
}

pub fn run_broadcast(
    socket: Option<&Path>,
    json: bool,
    args: BroadcastArgs,
) -> Result<i32, Failure> {
    let targets = Targets {
        to: Vec::new(),
        groups: Vec::new(),
        broadcast: true,
    };
    send(socket, json, targets, args.message)
}

/// `--wait` (`Some(None)`: no limit) as a deadline.
fn wait_deadline(wait: Option<Option<f64>>) -> Result<Option<Option<std::time::Instant>>, Failure> {
    Ok(match wait {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => Some(Some(
            std::time::Instant::now() + super::outbox::seconds("--wait", s)?,
        )),
    })
}

/// Seconds left until `deadline` (for one more wait request).
fn left(deadline: Option<std::time::Instant>) -> Option<f64> {
    deadline.map(|d| {
        d.saturating_duration_since(std::time::Instant::now())
            .as_secs_f64()
    })
}

fn send(
    socket: Option<&Path>,
    json: bool,
    targets: Targets,
    args: MessageArgs,
) -> Result<i32, Failure> {
    let MessageArgs {
        words: message,
        lines,
        id,
        wait,
        reconnect_timeout,
    } = args;
    let deadline = wait_deadline(wait)?;
    let reconnect = super::outbox::seconds("--reconnect-timeout", reconnect_timeout)?;
    // What is printed only reports on the sends: a reader that goes away (`| head`) must not
    // stop them.
    output::keep_going_without_stdout();
    let from_stdin = message.is_empty() || message == ["-"];
    if lines {
        if !from_stdin {
            return Err(Failure::usage(
                "with --lines the messages come from stdin; give no MESSAGE",
            ));
        }
        if id.is_some() {
            return Err(Failure::usage(
                "--id names one message; it cannot be used with --lines",
            ));
        }
        return send_lines(Client::connect(socket)?, json, targets, deadline, reconnect);
    }
    let body = if from_stdin {
        read_stdin_message()?
    } else {
        message.join(" ")
    };
    check_body(&body)?;
    let mut client = Client::connect(socket)?;
    let reply = client.call(&targets.request(body, id))?;
    // Printed before any wait: the message is accepted, whatever happens to this connection.
    let code = print_result(json, &reply);
    output::flush();
    match (deadline, &reply) {
        (Some(d), Response::Accepted { id, .. }) => {
            let waited = super::outbox::wait(&mut client, json, id, left(d), reconnect)?;
            Ok(if code != exit::OK { code } else { waited })
        }
        _ => Ok(code),
    }
}

fn read_stdin_message() -> Result<String, Failure> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        // Otherwise a user who forgot the message sees nothing happen.
        eprintln!("chatctl: type the message, then Ctrl-D on a line of its own (or pass it as an argument)");
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::io("reading stdin", e))?;
    let mut s = String::from_utf8(buf).map_err(|e| {
        let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        Failure::new(
            exit::OTHER,
            "bad_input",
            format!(
                "stdin is not valid UTF-8 (byte {} of line {line}); messages are UTF-8 text, nothing was sent",
                column + 1
            ),
        )
    })?;
    // `echo text | chatctl send` means "text", not "text\n".
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// `pa,pb,@ops` → names and groups.
fn parse_targets(s: &str) -> Result<Targets, Failure> {
    let mut t = Targets {
        to: Vec::new(),
        groups: Vec::new(),
        broadcast: false,
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (list, raw) = match part.strip_prefix('@') {
            Some(g) => (&mut t.groups, g),
            None => (&mut t.to, part),
        };
        let n = Name::new(raw)
            .map_err(|e| Failure::usage(format!("invalid recipient {part:?}: {e}")))?;
        list.push(n);
    }
    if t.to.is_empty() && t.groups.is_empty() {
        return Err(Failure::usage("no recipient given"));
    }
    Ok(t)
}

fn check_body(body: &str) -> Result<(), Failure> {
    if body.is_empty() {
        return Err(Failure::usage("the message is empty"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Failure::new(
            exit::REFUSED,
            "too_large",
            format!(
                "the message is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    Ok(())
}

/// Prints one line per recipient, kept for the caller's `output::flush` (a burst of answers
/// to `send -l` is written at once); returns the exit code (6 if any recipient already failed).
fn print_result(json: bool, reply: &Response) -> i32 {
    let mut code = exit::OK;
    if let Response::Accepted { id, recipients, .. } = reply {
        for r in recipients {
            if r.state == DeliveryState::Failed {
                code = exit::FAILED;
            }
            if json {
                output::json_unflushed(&ResultLine {
                    id,
                    to: r.to.as_str(),
                    state: r.state.as_str(),
                    error: r.error.as_deref(),
                });
            } else {
                let line = match &r.error {
                    Some(e) => format!(
                        "{} {} {}: {}\n",
                        one_line(id),
                        r.to,
                        r.state.as_str(),
                        one_line(e)
                    ),
                    None => format!("{} {} {}\n", one_line(id), r.to, r.state.as_str()),
                };
                output::line_unflushed(line.as_bytes());
            }
        }
    }
    code
}

/// Most lines sent and not yet answered. They are kept (the request lines as written) to be
/// written again after a reconnect. Fewer than the 2 048 replies chatd queues per connection
/// (protocol.md 2.3), so chatd reads such a resend whole without waiting for us to read.
const MAX_IN_FLIGHT: usize = 1024;
/// ... and at most this many request bytes of them (a single line always goes).
const MAX_IN_FLIGHT_BYTES: usize = 8 << 20;
/// A writer waiting for room is woken only once this many lines (and 1 MiB, more than a request
/// line can take) are free again, so that it writes a batch per wake-up rather than one line.
const WAKE_LINES: usize = 128;
const WAKE_BYTES: usize = 1 << 20;

/// A stdin line sent as a `send` request and not yet answered.
struct Line {
    /// Its line number on stdin (from 1, blank lines counted).
    n: usize,
    msg_id: String,
    /// The request line as written; written again, unchanged, after a reconnect.
    request: Arc<Vec<u8>>,
    /// It was written again on a new connection.
    resent: bool,
}

/// What the writer thread tells the reader, in stdin order: a request went out for this line,
/// or a line was refused locally, or stdin is finished.
enum Sent {
    Request(Line),
    Local(usize, Failure),
    Done(Option<Failure>),
}

/// What the writer thread and the reader share.
struct Link {
    state: Mutex<LinkState>,
    wake: Condvar,
    /// Request ids, unique across connections.
    next_id: AtomicU64,
}

struct LinkState {
    /// Where new requests go; `None` while the reader reconnects.
    stream: Option<Writer>,
    /// Bumped on every change of `stream`, so that a write error on an old connection does not
    /// stop the writer on the new one.
    generation: u64,
    in_flight: usize,
    bytes: usize,
    /// The writer waits (for room, or for a connection) and must be woken.
    writer_waits: bool,
    /// The reader gave up: the writer stops.
    closed: bool,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A line was answered: room for another.
    fn release(&self, size: usize) {
        let mut st = self.lock();
        st.in_flight -= 1;
        st.bytes -= size;
        // Room for a batch implies room for the line the writer holds (see `write_lines`).
        let roomy = st.in_flight == 0
            || (st.in_flight + WAKE_LINES <= MAX_IN_FLIGHT
                && st.bytes + WAKE_BYTES <= MAX_IN_FLIGHT_BYTES);
        if st.writer_waits && roomy {
            self.wake.notify_one();
        }
    }

    /// New requests go to `stream` from now on (`None`: wait).
    fn switch(&self, stream: Option<Writer>) {
        let mut st = self.lock();
        st.stream = stream;
        st.generation += 1;
        if st.writer_waits {
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.wake.notify_one();
    }
}

/// Requests written but not yet sent to chatd, and the connection generation they are for.
/// Lines that stdin already holds are written together: one write (and one wake-up of chatd)
/// per burst instead of one per line.
struct Batch {
    bytes: Vec<u8>,
    generation: u64,
}

/// Largest batch of request lines written at once.
const BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    /// Writes the batch to `out` if that is still its connection. Requests of an older
    /// connection are dropped: the reader already knows them and writes them again.
    fn flush(&mut self, link: &Link, out: &mut Option<(u64, Writer)>) {
        if self.bytes.is_empty() {
            return;
        }
        let written = match out {
            Some((g, s)) if *g == self.generation => s.write_all(&self.bytes).is_ok(),
            _ => false,
        };
        self.bytes.clear();
        if !written {
            // The reader sees the connection end and reconnects; wait for that.
            let mut st = link.lock();
            if st.generation == self.generation {
                st.stream = None;
                st.generation += 1;
            }
        }
    }
}

/// The writer thread: reads stdin line by line and writes one `send` request per line.
fn write_lines(link: &Link, targets: &Targets, tx: &mpsc::Sender<Sent>) -> Option<Failure> {
    let mut input = std::io::BufReader::with_capacity(BATCH_BYTES, std::io::stdin().lock());
    let mut buf = Vec::new();
    let mut n = 0usize;
    // A handle on the current connection, and its generation.
    let mut out: Option<(u64, Writer)> = None;
    let mut batch = Batch {
        bytes: Vec::with_capacity(BATCH_BYTES),
        generation: 0,
    };
    loop {
        // Before reading stdin might block (nothing more is buffered), or when the batch is full.
        if input.buffer().is_empty() || batch.bytes.len() >= BATCH_BYTES {
            batch.flush(link, &mut out);
        }
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => {
                batch.flush(link, &mut out);
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                batch.flush(link, &mut out);
                return Some(Failure::io("reading stdin", e));
            }
        }
        n += 1;
        let body = match line_text(&buf) {
            Ok(body) if body.trim().is_empty() => continue,
            Ok(body) => body.to_string(),
            Err(f) => {
                if tx.send(Sent::Local(n, f)).is_err() {
                    return None;
                }
                continue;
            }
        };
        if let Err(f) = check_body(&body) {
            if tx.send(Sent::Local(n, f)).is_err() {
                return None;
            }
            continue;
        }
        let msg_id = uuid::Uuid::now_v7().to_string();
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Arc::new(to_line(&RequestLine {
            id,
            request: targets.request(body, Some(msg_id.clone())),
        }));
        let size = request.len();
        // Wait for room and a connection; tell the reader before writing, so that a request on
        // its way to a connection that breaks is among those the reader writes again.
        {
            let mut st = link.lock();
            loop {
                if st.closed {
                    return None;
                }
                let room = st.in_flight == 0
                    || (st.in_flight < MAX_IN_FLIGHT && st.bytes + size <= MAX_IN_FLIGHT_BYTES);
                if st.stream.is_some() && room {
                    break;
                }
                if !batch.bytes.is_empty() {
                    // Room comes from replies to what is still in the batch: write it first
                    // (without the lock, which the reader needs to take those replies).
                    drop(st);
                    batch.flush(link, &mut out);
                    st = link.lock();
                    continue;
                }
                st.writer_waits = true;
                st = link.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.writer_waits = false;
            st.in_flight += 1;
            st.bytes += size;
            if out.as_ref().map(|(g, _)| *g) != Some(st.generation) {
                out = st
                    .stream
                    .as_ref()
                    .and_then(|s| s.try_clone().ok())
                    .map(|s| (st.generation, s));
            }
            let line = Line {
                n,
                msg_id,
                request: request.clone(),
                resent: false,
            };
            if tx.send(Sent::Request(line)).is_err() {
                return None;
            }
            if batch.generation != st.generation {
                // For a connection that is gone: the reader writes those again.
                batch.bytes.clear();
                batch.generation = st.generation;
            }
        }
        batch.bytes.extend_from_slice(&request);
    }
}

/// A stdin line without its line end (`\n`, `\r\n`, or a final `\r`), as text.
fn line_text(buf: &[u8]) -> Result<&str, Failure> {
    let mut line = buf;
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l.strip_suffix(b"\r").unwrap_or(l);
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).map_err(|e| {
        Failure::new(
            exit::OTHER,
            "bad_input",
            format!(
                "not valid UTF-8 (byte {}); line skipped",
                e.valid_up_to() + 1
            ),
        )
    })
}

fn send_lines(
    mut client: Client,
    json: bool,
    targets: Targets,
    deadline: Option<Option<Instant>>,
    reconnect: Duration,
) -> Result<i32, Failure> {
    let link = Arc::new(Link {
        state: Mutex::new(LinkState {
            stream: Some(client.writer()?),
            generation: 0,
            in_flight: 0,
            bytes: 0,
            writer_waits: false,
            closed: false,
        }),
        wake: Condvar::new(),
        next_id: AtomicU64::new(client.next_id()),
    });
    let (tx, rx) = mpsc::channel::<Sent>();
    {
        let link = link.clone();
        std::thread::spawn(move || {
            let end = write_lines(&link, &targets, &tx);
            let _ = tx.send(Sent::Done(end));
        });
    }
    let mut code = exit::OK;
    let mut accepted = Vec::new();
    // Events taken from the channel and not yet done with (after a reconnect: the lines to be
    // answered, in order), ahead of those still in the channel.
    let mut queue: VecDeque<Sent> = VecDeque::new();
    loop {
        let event = match queue.pop_front() {
            Some(e) => e,
            None => rx
                .recv()
                .map_err(|_| Failure::new(exit::OTHER, "internal", "the stdin reader stopped"))?,
        };
        let line = match event {
            Sent::Request(line) => line,
            Sent::Local(n, f) => {
                report_line(json, n, &f);
                note(&mut code, f.exit);
                continue;
            }
            Sent::Done(None) => break,
            Sent::Done(Some(f)) => return Err(f),
        };
        let lost = match client.recv() {
            Ok(reply) => match reply.outcome.into_result() {
                // chatd is stopping: the line was not recorded; send it again once it is back.
                Err(e) if e.code == code::SHUTTING_DOWN => Failure::from(e),
                outcome => {
                    link.release(line.request.len());
                    let waiting = deadline.is_some();
                    note(
                        &mut code,
                        answer(json, &line, outcome, waiting, &mut accepted),
                    );
                    // One write for the answers already read (see `print_result`).
                    if !client.has_buffered() {
                        output::flush();
                    }
                    continue;
                }
            },
            Err(e) if e.is_lost() => Failure::from(e),
            Err(e) => {
                link.close();
                report_line(json, line.n, &not_accepted(&e.to_string()));
                note(&mut code, exit::OTHER);
                return Ok(code);
            }
        };
        output::flush();
        eprintln!(
            "chatctl: lost the connection to chatd ({}); reconnecting",
            lost.message
        );
        queue.push_front(Sent::Request(line));
        match resume(&link, &rx, &mut queue, client.socket(), reconnect) {
            Ok(c) => client = c,
            Err(f) => {
                link.close();
                let first = queue.iter().find_map(|e| match e {
                    Sent::Request(l) => Some(l.n),
                    _ => None,
                });
                let why = format!(
                    "chatd did not come back within {} s; last try: {}",
                    reconnect.as_secs_f64(),
                    f.message.lines().next().unwrap_or_default()
                );
                report_line(json, first.unwrap_or(0), &not_accepted(&why));
                note(&mut code, exit::OTHER);
                return Ok(code);
            }
        }
    }
    output::flush();
    if let Some(d) = deadline {
        for id in accepted {
            let c = super::outbox::wait(&mut client, json, &id, left(d), reconnect)?;
            note(&mut code, c);
        }
    }
    Ok(code)
}

/// The exit status of a run is that of the first line that failed.
fn note(code: &mut i32, c: i32) {
    if *code == exit::OK {
        *code = c;
    }
}

/// Prints the answer to one line; returns its exit status. Accepted ids are kept in `accepted`
/// when they are to be waited for.
fn answer(
    json: bool,
    line: &Line,
    outcome: Result<Response, ErrorBody>,
    waiting: bool,
    accepted: &mut Vec<String>,
) -> i32 {
    match outcome {
        Ok(r) => {
            if let (true, Response::Accepted { id, .. }) = (waiting, &r) {
                accepted.push(id.clone());
            }
            print_result(json, &r)
        }
        // The id is a new UUID: on a line written again, a conflict means chatd had recorded
        // it before the connection dropped, and its group or broadcast list changed since.
        Err(e) if e.code == code::CONFLICT && line.resent => {
            output::flush();
            eprintln!(
                "chatctl: line {}: accepted as {} before the connection to chatd dropped; its recipients changed since (`chatctl status {}` shows them)",
                line.n, line.msg_id, line.msg_id
            );
            if waiting {
                accepted.push(line.msg_id.clone());
            }
            exit::OK
        }
        Err(e) => {
            let f = Failure::from(e);
            report_line(json, line.n, &f);
            f.exit
        }
    }
}

/// The report for the first line without an answer when chatctl gives up. (chatd may have
/// recorded the lines written just before it went away; their answers were lost with it.)
fn not_accepted(why: &str) -> Failure {
    Failure::new(
        exit::OTHER,
        "disconnected",
        format!("not accepted (no answer for this line or any after it): {why}"),
    )
}

/// After a lost connection: stops the writer, reconnects (up to `timeout`), writes every
/// unanswered request again in order, then lets the writer go on on the new connection.
/// `queue` holds the unanswered lines first; everything the writer sent is added to it.
fn resume(
    link: &Link,
    rx: &mpsc::Receiver<Sent>,
    queue: &mut VecDeque<Sent>,
    socket: &Path,
    timeout: Duration,
) -> Result<Client, Failure> {
    // From here on the writer sends no request; every request it sent is in the channel (it
    // sends them while holding the lock).
    link.switch(None);
    queue.extend(rx.try_iter());
    let until = Instant::now() + timeout;
    loop {
        let client = match client::reconnect(socket, Some(until), &|| false)? {
            Some(c) => c,
            None => unreachable!("reconnect without a stop condition"),
        };
        let Ok(mut w) = client.writer() else { continue };
        let mut written = true;
        for event in queue.iter_mut() {
            if let Sent::Request(line) = event {
                line.resent = true;
                if w.write_all(&line.request).is_err() {
                    written = false;
                    break;
                }
            }
        }
        if written {
            link.switch(Some(w));
            return Ok(client);
        }
        // Lost again while writing: what went through is a repeat next time.
    }
}

fn report_line(json: bool, n: usize, f: &Failure) {
    // The answers to earlier lines first.
    output::flush();
    if json {
        output::json(
            &serde_json::json!({"line": n, "error": {"code": f.code, "message": f.message}}),
        );
    } else {
        eprintln!("chatctl: line {n}: {}", one_line(&f.message));
    }
}
