//! Step 1: the pipelined, reconnecting, idempotent sender (the rules are in the module docs of
//! `checker`).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use peerchat_client::{Client, Error, Writer};
use peerchat_proto::control::{Request, RequestLine, Response};
use peerchat_proto::envelope::{append_line, Outcome, Reply};
use peerchat_proto::Name;

use super::config::Config;
use super::report::Report;

/// What the sender knows about one message.
#[derive(Debug, Clone, Default)]
pub(super) struct MsgState {
    /// Position of its first `accepted` reply among all of them.
    pub(super) rank: Option<u64>,
    /// It was in flight without a reply at least once when A died.
    pub(super) indeterminate: bool,
    /// Its place in A's outbox cannot be known (see the module docs).
    pub(super) order_unknown: bool,
}

/// The pipelined, reconnecting, idempotent sender (see the module docs for its rules).
pub(super) struct Sender {
    pub(super) total: u64,
    pub(super) window: usize,
    stall_timeout: Duration,
    tag: String,
    width: usize,
    to: Name,
    socket: PathBuf,
    progress: Arc<AtomicU64>,
    pub(super) state: Vec<MsgState>,
    /// Next message never sent yet.
    next_new: u64,
    /// Sent on the current connection, not yet answered: (request id, message), in write order.
    pub(super) inflight: VecDeque<(u64, u64)>,
    /// To be sent (again) before any new message, in this order.
    pub(super) retry: VecDeque<u64>,
    /// Error replies put back at the front of `retry` since the last write (keeps their order).
    requeued_front: usize,
    next_request: u64,
    /// The request lines of one write, encoded into this buffer (kept between writes).
    out: Vec<u8>,
    pub(super) accepted: u64,
    reconnects: u64,
    opened: u64,
    rejected: u64,
    rejected_codes: BTreeMap<String, u64>,
    pub(super) problems: Vec<String>,
}

enum ReaderEvent {
    /// (Boxed: a reply is far larger than the other events.)
    Reply(Box<Reply<Response>>),
    /// End of file or an error: chatd closed the connection (or died).
    Closed,
    /// A line that is not a reply: a protocol violation.
    Garbage(String),
}

/// How long connecting and the hello, and then each write, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One control connection: the write half here, replies from a reader thread.
struct Conn {
    writer: Writer,
    replies: mpsc::Receiver<ReaderEvent>,
    /// A write failed: write nothing more, wait for the reader to see the end.
    broken: bool,
}

impl Conn {
    /// Connects and says hello; returns the connection and the first request id free on it.
    fn open(socket: &Path) -> Result<(Conn, u64), String> {
        let mut client =
            Client::connect_timeout(Some(socket), CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
        client
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        // Replies may pause for as long as A is stopped; only chatd closing the connection
        // ends the reader.
        client.set_streaming().map_err(|e| e.to_string())?;
        let writer = client.writer().map_err(|e| e.to_string())?;
        let first_id = client.next_id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || reader(client, tx));
        let conn = Conn {
            writer,
            replies: rx,
            broken: false,
        };
        Ok((conn, first_id))
    }
}

fn reader(mut client: Client, tx: mpsc::Sender<ReaderEvent>) {
    loop {
        let ev = match client.recv() {
            Ok(reply) => ReaderEvent::Reply(Box::new(reply)),
            Err(e @ Error::Protocol(_)) => ReaderEvent::Garbage(e.to_string()),
            Err(_) => ReaderEvent::Closed,
        };
        let end = !matches!(ev, ReaderEvent::Reply(_));
        if tx.send(ev).is_err() || end {
            return;
        }
    }
}

/// What one look at the replies brought.
struct Replies {
    /// At least one reply was taken.
    progress: bool,
    /// The connection ended (after those replies).
    closed: bool,
}

impl Sender {
    pub(super) fn new(
        config: &Config,
        tag: String,
        to: Name,
        socket: PathBuf,
        progress: Arc<AtomicU64>,
    ) -> Sender {
        let width = config.messages.saturating_sub(1).to_string().len().max(6);
        Sender {
            total: config.messages,
            window: config.window.max(1),
            stall_timeout: config.stall_timeout,
            tag,
            width,
            to,
            socket,
            progress,
            state: vec![MsgState::default(); config.messages as usize],
            next_new: 0,
            inflight: VecDeque::new(),
            retry: VecDeque::new(),
            requeued_front: 0,
            next_request: 1,
            out: Vec::new(),
            accepted: 0,
            reconnects: 0,
            opened: 0,
            rejected: 0,
            rejected_codes: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    pub(super) fn body(&self, k: u64) -> String {
        format!("chk-{k:0w$}", w = self.width)
    }

    pub(super) fn msg_id(&self, k: u64) -> String {
        format!("chk-{}-{k:0w$}", self.tag, w = self.width)
    }

    /// Sends until every message is accepted, or gives up (stopped, stalled, or chatd broke
    /// the protocol: see `problems`).
    pub(super) fn run(&mut self, stop: &AtomicBool, log: &dyn Fn(&str)) {
        let mut conn: Option<Conn> = None;
        let mut last_progress = Instant::now();
        let mut last_print = Instant::now();
        let mut last_connect_error = String::new();
        while self.accepted < self.total {
            if let Some(problem) = self.give_up(stop, last_progress, &last_connect_error) {
                self.problems.push(problem);
                break;
            }
            if last_print.elapsed() > Duration::from_secs(5) {
                log(&format!(
                    "sending: {} of {} accepted, {} in flight, {} reconnects",
                    self.accepted,
                    self.total,
                    self.inflight.len(),
                    self.reconnects
                ));
                last_print = Instant::now();
            }
            let Some(c) = conn.as_mut() else {
                match self.open() {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        last_connect_error = e;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            };
            if !c.broken {
                let buf = self.fill();
                if !buf.is_empty() && c.writer.write_all(buf).is_err() {
                    // Do not reconnect before chatd closed this connection: it may still be
                    // working through what it read, and two connections at once could reorder.
                    c.broken = true;
                }
            }
            match self.take_replies(c) {
                Ok(r) => {
                    if r.progress {
                        last_progress = Instant::now();
                    }
                    if r.closed {
                        conn = None;
                    }
                }
                Err(problem) => {
                    self.problems.push(problem);
                    break;
                }
            }
        }
        // Given up with requests unanswered: A may still accept them.
        for &(_, k) in &self.inflight {
            self.state[k as usize].indeterminate = true;
        }
    }

    /// Why to stop sending now, if there is a reason.
    fn give_up(
        &self,
        stop: &AtomicBool,
        last_progress: Instant,
        last_connect_error: &str,
    ) -> Option<String> {
        if stop.load(Ordering::SeqCst) {
            return Some("stopped before every message was accepted".into());
        }
        (last_progress.elapsed() > self.stall_timeout).then(|| {
            format!(
                "no send accepted for {:?} ({} of {} accepted; last connect error: {})",
                self.stall_timeout, self.accepted, self.total, last_connect_error
            )
        })
    }

    /// A new connection (only once the last one was closed by chatd, see the module docs).
    fn open(&mut self) -> Result<Conn, String> {
        let (conn, first_id) = Conn::open(&self.socket)?;
        // Request ids keep increasing across connections (and never reuse the hello's).
        self.next_request = self.next_request.max(first_id);
        if self.opened > 0 {
            self.reconnects += 1;
        }
        self.opened += 1;
        Ok(conn)
    }

    /// Handles the replies that arrived, waiting up to 200 ms for the first; `Err` is a
    /// problem that ends the run.
    fn take_replies(&mut self, c: &Conn) -> Result<Replies, String> {
        let mut next = match c.replies.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => Some(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(ReaderEvent::Closed),
        };
        let mut progress = false;
        while let Some(ev) = next {
            match ev {
                ReaderEvent::Reply(reply) => {
                    self.on_reply(*reply)?;
                    progress = true;
                }
                ReaderEvent::Garbage(line) => {
                    return Err(format!("chatd sent a line that is not a reply: {line}"));
                }
                ReaderEvent::Closed => {
                    self.connection_lost();
                    return Ok(Replies {
                        progress,
                        closed: true,
                    });
                }
            }
            next = c.replies.try_recv().ok();
        }
        Ok(Replies {
            progress,
            closed: false,
        })
    }

    /// The sender's counts, into the report.
    pub(super) fn record(&self, report: &mut Report) {
        report.accepted = self.accepted;
        report.indeterminate = self.state.iter().filter(|s| s.indeterminate).count() as u64;
        report.rejected = self.rejected;
        report.rejected_codes = self.rejected_codes.clone();
        report.reconnects = self.reconnects;
    }

    /// The requests to write now: the retry queue first, then new messages, up to the window.
    pub(super) fn fill(&mut self) -> &[u8] {
        self.requeued_front = 0;
        self.out.clear();
        while self.inflight.len() < self.window {
            let k = if let Some(k) = self.retry.pop_front() {
                k
            } else if self.next_new < self.total {
                self.next_new += 1;
                self.next_new - 1
            } else {
                break;
            };
            let id = self.next_request;
            self.next_request += 1;
            let line = RequestLine {
                id,
                request: Request::Send {
                    to: vec![self.to.clone()],
                    groups: Vec::new(),
                    broadcast: false,
                    body: self.body(k),
                    msg_id: Some(
                        peerchat_proto::MsgId::new(self.msg_id(k)).expect("a valid message id"),
                    ),
                },
            };
            append_line(&mut self.out, &line);
            self.inflight.push_back((id, k));
        }
        &self.out
    }

    pub(super) fn on_reply(&mut self, reply: Reply<Response>) -> Result<(), String> {
        let Some((id, k)) = self.inflight.pop_front() else {
            return Err(format!("a reply nobody asked for: {reply:?}"));
        };
        if reply.id != id && reply.id != 0 {
            return Err(format!(
                "reply {} out of order (expected the reply to request {id})",
                reply.id
            ));
        }
        match reply.outcome {
            Outcome::Ok(Response::Accepted { id: got, .. }) => {
                let want = self.msg_id(k);
                if got != want {
                    return Err(format!("send of {want} answered with id {got}"));
                }
                let st = &mut self.state[k as usize];
                if st.rank.is_none() {
                    st.rank = Some(self.accepted);
                    self.accepted += 1;
                    self.progress.store(self.accepted, Ordering::SeqCst);
                }
                Ok(())
            }
            Outcome::Ok(other) => Err(format!("send answered with {other:?}")),
            Outcome::Err(e) => {
                // Not recorded: send it again, before anything not yet written.
                self.rejected += 1;
                *self.rejected_codes.entry(e.code.clone()).or_default() += 1;
                let st = &mut self.state[k as usize];
                if st.indeterminate {
                    // It may have been committed before the crash, at its old place.
                    st.order_unknown = true;
                }
                self.retry.insert(self.requeued_front, k);
                self.requeued_front += 1;
                Ok(())
            }
        }
    }

    /// A died (or closed the connection): whatever was in flight is indeterminate and goes
    /// back to the front of the queue, in the order it was written.
    pub(super) fn connection_lost(&mut self) {
        while let Some((_, k)) = self.inflight.pop_back() {
            self.state[k as usize].indeterminate = true;
            self.retry.push_front(k);
        }
        self.requeued_front = 0;
    }
}
