//! A Jepsen-style checker for "never lose a message": chatd must never lose, duplicate or reorder
//! a message, even when either end is killed with SIGKILL at any moment.
//!
//! [`run`] starts a registryd and two chatd nodes, A and B, in a fresh directory, then:
//!
//! 1. **Sends** `messages` uniquely numbered messages from A to B (body `chk-000123`, message id
//!    `chk-<tag>-000123`) over A's control socket, speaking the JSON-lines control protocol
//!    directly: one connection at a time, pipelined with at most `window` sends in flight, each
//!    with a caller-chosen `msg_id` so that retrying it is idempotent. A send whose reply never
//!    came (A died with the request in flight) is *indeterminate*: it is resent with the same id
//!    after A is back, until chatd answers `accepted`.
//! 2. **Kills** A, B or both with `kill -9` at random moments meanwhile (the moments are random
//!    points of the send progress plus a random delay), and restarts them after a random downtime
//!    (same name, database, socket and peer port).
//! 3. **Drains**: once every message is accepted and every kill is done, waits until A's outbox
//!    holds nothing undelivered (`status`: no `queued` or `sent` delivery rows).
//! 4. **Checks** B's whole inbox (paged with `after`) against what A accepted, and counts
//!    `lost`, `duplicated`, `reordered` and `unexpected` messages (see [`Report`]).
//!
//! # Acceptance order, and why the sender cannot reorder legitimately
//!
//! chatd promises (docs/protocol.md 4.6) that B stores A's messages in the order A *accepted*
//! them, i.e. the order of their outbox commits. The checker must therefore know that order, and
//! it is the order in which the `accepted` replies arrive, provided the sender keeps to these
//! rules (all of them are implemented in [`Sender`]):
//!
//! - There is only ever one control connection sending, and a new one is opened only after the
//!   old one was closed by chatd (end-of-file: A died). chatd handles one connection's requests
//!   in order and commits them through a single FIFO database queue, so on one connection the
//!   commit order is the request order, replies come in request order, and when A dies the sends
//!   that were committed are a *prefix* of those in flight.
//! - The messages not yet confirmed form one queue `Q` = in flight (in the order written) followed
//!   by those waiting to be (re)sent. After a crash the whole of `Q` is sent again in the same
//!   order before any new message. The prefix that A had already committed is answered
//!   `accepted` again (idempotent, no new outbox row, so it keeps its original place), the rest is
//!   committed now, behind it. Either way the commits happen in `Q` order, which is the order in
//!   which the `accepted` replies then arrive.
//!
//! So every message gets a *rank*: the position of its first `accepted` reply among all of
//! them, which is its position in A's outbox. New messages enter `Q` in increasing number, so
//! without error replies the rank order is simply the number order and B's inbox must hold
//! `chk-000000`, `chk-000001`, ... strictly increasing. An error reply to a send (counted as
//! `rejected`; none is expected in this scenario) means that message was not recorded; it is
//! sent again and ranked by its later acceptance, legitimately behind messages that were already
//! in flight after it. The one case whose place is genuinely unknown is an error reply to the
//! *resend* of an indeterminate message (it may have been committed before the crash at its old
//! place); such messages are excluded from the order check and counted as `order_unknown`.
//!
//! `reordered` is the smallest number of messages that must be removed from B's sequence of
//! first arrivals for the ranks to be strictly increasing (that is, the length minus the longest
//! increasing subsequence), so one message delivered early counts once, not once for every
//! message it overtook.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerchat_proto::control::{self, Counts, InboxMessage, Request, RequestLine, Response};
use peerchat_proto::envelope::{to_line, Outcome, Reply};
use peerchat_proto::Name;

use crate::{Node, Registry};

/// What to run. [`Config::new`] gives sensible defaults for everything but the two sizes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Messages to send from A to B.
    pub messages: u64,
    /// Kill events; each kills A, B or both (chosen at random).
    pub kills: u32,
    /// Most `send` requests in flight on the control connection.
    pub window: usize,
    /// Seed of the random choices (kill moments, targets, downtimes); printed in the report.
    pub seed: u64,
    /// Extra chatd arguments (quick retries, so that recovery after a kill is fast).
    pub chatd_args: Vec<String>,
    /// Longest a node stays dead before it is restarted (the downtime is random below this).
    pub max_downtime: Duration,
    /// How long to wait, after the last kill, for A's outbox to drain.
    pub drain_timeout: Duration,
    /// Give up if no send is accepted for this long.
    pub stall_timeout: Duration,
    /// Keep the directory (databases, daemon logs) even when the run passes; it is always kept
    /// when the run fails.
    pub keep_dir: bool,
    /// Progress and kill events on stderr.
    pub verbose: bool,
}

impl Config {
    pub fn new(messages: u64, kills: u32) -> Config {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (std::process::id() as u64).rotate_left(32);
        Config {
            messages,
            kills,
            window: 128,
            seed,
            chatd_args: ["--retry-initial", "0.05", "--retry-max", "0.5"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_downtime: Duration::from_millis(300),
            drain_timeout: Duration::from_secs(120) + Duration::from_millis(messages),
            stall_timeout: Duration::from_secs(60),
            keep_dir: false,
            verbose: false,
        }
    }
}

/// The outcome of a run. [`Report::passed`] is the verdict; `Display` prints it for humans.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub messages: u64,
    /// Messages A answered `accepted` (all of them, unless the sender gave up).
    pub accepted: u64,
    /// Messages that were in flight, without a reply, at least once when A died.
    pub indeterminate: u64,
    /// Error replies to a `send` (each was retried).
    pub rejected: u64,
    /// Error replies by code.
    pub rejected_codes: BTreeMap<String, u64>,
    /// Control connections opened after the first one (A died, the sender reconnected).
    pub reconnects: u64,
    /// Kill events, and how many times each node was killed.
    pub kills: u32,
    pub kills_a: u32,
    pub kills_b: u32,
    /// Every message in B's inbox (whatever the sender).
    pub received: u64,
    /// Accepted by A, not in B's inbox.
    pub lost: u64,
    /// Extra copies in B's inbox (a message stored three times counts 2).
    pub duplicated: u64,
    /// Messages out of acceptance order in B's inbox (see the module docs).
    pub reordered: u64,
    /// Messages in B's inbox that A never accepted and that were never indeterminate, or that
    /// are not ours at all (other sender, unknown body, id not matching the body).
    pub unexpected: u64,
    /// Messages excluded from the order check (see the module docs); normally 0.
    pub order_unknown: u64,
    /// A's delivery counts at the end (`failed` ones were given up: lost).
    pub a_counts: Option<Counts>,
    pub send_elapsed: Duration,
    pub drain_elapsed: Duration,
    pub elapsed: Duration,
    /// What went wrong with the run itself (stalls, timeouts, a daemon that died on its own).
    pub problems: Vec<String>,
    /// The first few lost, duplicated, reordered and unexpected messages.
    pub examples: Vec<String>,
    /// The kills, in order: when, which node, progress.
    pub kill_log: Vec<String>,
    /// Where the databases and logs are, when kept.
    pub dir: Option<PathBuf>,
}

impl Report {
    /// Every message accepted and delivered exactly once, in order, nothing else received, and
    /// the run itself went as planned.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.unexpected == 0
            && self.accepted == self.messages
            && self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Duration| d.as_secs_f64();
        let rate = |n: u64, d: Duration| {
            if d.as_secs_f64() > 0.0 {
                n as f64 / d.as_secs_f64()
            } else {
                0.0
            }
        };
        writeln!(f, "peerchat checker, seed {}", self.seed)?;
        writeln!(f, "  messages       {}", self.messages)?;
        writeln!(f, "  accepted       {}", self.accepted)?;
        writeln!(f, "  indeterminate  {}", self.indeterminate)?;
        write!(f, "  rejected       {}", self.rejected)?;
        for (code, n) in &self.rejected_codes {
            write!(f, " {code}={n}")?;
        }
        writeln!(f)?;
        writeln!(f, "  reconnects     {}", self.reconnects)?;
        writeln!(
            f,
            "  kills          {} (A killed {}, B killed {})",
            self.kills, self.kills_a, self.kills_b
        )?;
        writeln!(f, "  received       {}", self.received)?;
        if let Some(c) = &self.a_counts {
            writeln!(
                f,
                "  A deliveries   delivered={} queued={} sent={} failed={} cancelled={}",
                c.delivered, c.queued, c.sent, c.failed, c.cancelled
            )?;
        }
        writeln!(f, "  lost           {}", self.lost)?;
        writeln!(f, "  duplicated     {}", self.duplicated)?;
        writeln!(f, "  reordered      {}", self.reordered)?;
        writeln!(f, "  unexpected     {}", self.unexpected)?;
        if self.order_unknown > 0 {
            writeln!(f, "  order_unknown  {}", self.order_unknown)?;
        }
        writeln!(
            f,
            "  elapsed        {:.1} s (sending {:.1} s, draining {:.1} s)",
            secs(self.elapsed),
            secs(self.send_elapsed),
            secs(self.drain_elapsed)
        )?;
        writeln!(
            f,
            "  throughput     {:.0} msg/s accepted, {:.0} msg/s end to end",
            rate(self.accepted, self.send_elapsed),
            rate(self.accepted, self.send_elapsed + self.drain_elapsed)
        )?;
        for k in &self.kill_log {
            writeln!(f, "  kill           {k}")?;
        }
        for e in &self.examples {
            writeln!(f, "  example        {e}")?;
        }
        for p in &self.problems {
            writeln!(f, "  PROBLEM        {p}")?;
        }
        if let Some(d) = &self.dir {
            writeln!(f, "  directory      {}", d.display())?;
        }
        write!(f, "RESULT: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// Starts the network, sends, kills, drains and checks; see the module docs. Panics only when
/// the network cannot be started at all.
pub fn run(config: &Config) -> Report {
    let start = Instant::now();
    let dir = crate::tempdir();
    let registry = Registry::start(dir.path());
    let args: Vec<&str> = config.chatd_args.iter().map(String::as_str).collect();
    let a = Node::start_with(dir.path(), "chk-a", registry.addr, &args);
    let b = Node::start_with(dir.path(), "chk-b", registry.addr, &args);
    let log = |msg: &str| {
        if config.verbose {
            eprintln!("[checker {:7.2}s] {msg}", start.elapsed().as_secs_f64());
        }
    };
    log(&format!(
        "seed {}; registry {}; A={} B={}; directory {}",
        config.seed,
        registry.addr,
        a.listen,
        b.listen,
        dir.path().display()
    ));

    let mut report = Report {
        seed: config.seed,
        messages: config.messages,
        ..Report::default()
    };
    let mut rng = Rng::new(config.seed);
    let plan = plan_kills(config, &mut rng);
    let a_socket = a.socket.clone();
    let b_socket = b.socket.clone();
    let b_name = Name::new(b.name.clone()).expect("valid name");
    let a_name = a.name.clone();

    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let progress = progress.clone();
        let stop = stop.clone();
        let verbose = config.verbose;
        std::thread::spawn(move || killer(a, b, plan, &progress, &stop, start, verbose))
    };

    // 1. Send everything (while the killer kills).
    let tag = format!("{:08x}", config.seed as u32);
    let mut sender = Sender::new(config, tag, b_name, a_socket.clone(), progress.clone());
    sender.run(&stop, &log);
    report.send_elapsed = start.elapsed();
    report.accepted = sender.accepted;
    report.indeterminate = sender.state.iter().filter(|s| s.indeterminate).count() as u64;
    report.rejected = sender.rejected;
    report.rejected_codes = sender.rejected_codes.clone();
    report.reconnects = sender.reconnects;
    if sender.accepted < config.messages {
        // The sender gave up; the remaining kills would wait for progress that never comes.
        stop.store(true, Ordering::SeqCst);
    }
    log(&format!(
        "sending done: {} accepted in {:.1} s; waiting for the remaining kills",
        sender.accepted,
        report.send_elapsed.as_secs_f64()
    ));
    let Kills {
        mut a,
        mut b,
        events,
        problems,
    } = match killer.join() {
        Ok(k) => k,
        Err(p) => std::panic::resume_unwind(p),
    };
    report.problems.extend(sender.problems.iter().cloned());
    report.problems.extend(problems);
    report.kills = events.len() as u32;
    report.kills_a = events.iter().filter(|e| e.which.has_a()).count() as u32;
    report.kills_b = events.iter().filter(|e| e.which.has_b()).count() as u32;
    report.kill_log = events.iter().map(|e| e.to_string()).collect();

    // 2. Drain: wait for A's outbox to empty (every delivery acknowledged by B).
    let drain_start = Instant::now();
    log("draining: waiting for A's outbox to empty");
    let deadline = drain_start + config.drain_timeout;
    let mut last_print = Instant::now();
    loop {
        if !a.daemon.is_running() || !b.daemon.is_running() {
            report
                .problems
                .push("a chatd exited on its own during the drain (see its log)".into());
            break;
        }
        match query(&a_socket, Request::Status) {
            Ok(Response::Status(s)) => {
                let pending = s.counts.queued + s.counts.sent;
                report.a_counts = Some(s.counts);
                if pending == 0 {
                    break;
                }
                if last_print.elapsed() > Duration::from_secs(5) {
                    log(&format!("draining: {pending} deliveries pending on A"));
                    last_print = Instant::now();
                }
            }
            Ok(other) => report
                .problems
                .push(format!("A answered status with {other:?}")),
            Err(e) => log(&format!("status from A failed: {e}")),
        }
        if Instant::now() > deadline {
            report.problems.push(format!(
                "A's outbox did not drain within {:?}",
                config.drain_timeout
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report.drain_elapsed = drain_start.elapsed();

    // 3. Read B's inbox and compare.
    match read_inbox(&b_socket) {
        Ok(inbox) => {
            report.received = inbox.len() as u64;
            check(&sender, &a_name, &inbox, &mut report);
        }
        Err(e) => report
            .problems
            .push(format!("could not read B's inbox: {e}")),
    }
    if !a.daemon.is_running() || !b.daemon.is_running() {
        report
            .problems
            .push("a chatd exited on its own (see its log)".into());
    }
    report.elapsed = start.elapsed();
    log("done");
    a.daemon.kill9();
    b.daemon.kill9();
    drop(registry);
    if config.keep_dir || !report.passed() {
        report.dir = Some(dir.keep());
    }
    report
}

/// Compares B's inbox with what the sender knows.
fn check(sender: &Sender, a_name: &str, inbox: &[InboxMessage], report: &mut Report) {
    let n = sender.total as usize;
    let mut copies = vec![0u32; n];
    // Ranks of our messages in the order of their first arrival in B's inbox.
    let mut arrivals: Vec<(u64, u64)> = Vec::with_capacity(n);
    let mut examples: Vec<String> = Vec::new();
    let mut example = |kind: &str, text: String| {
        if examples.iter().filter(|e| e.starts_with(kind)).count() < 5 {
            examples.push(format!("{kind}: {text}"));
        }
    };
    for m in inbox {
        let num = (m.from == a_name)
            .then(|| parse_body(&m.body))
            .flatten()
            .filter(|&k| k < sender.total && m.id == sender.msg_id(k));
        let Some(k) = num else {
            report.unexpected += 1;
            example(
                "unexpected",
                format!(
                    "seq {} from {:?} id {:?} body {:?}",
                    m.seq, m.from, m.id, m.body
                ),
            );
            continue;
        };
        let st = &sender.state[k as usize];
        if st.rank.is_none() && !st.indeterminate {
            // Never accepted and never in doubt: A must not have delivered it.
            report.unexpected += 1;
            example(
                "unexpected",
                format!("seq {} {} was never accepted", m.seq, m.body),
            );
        }
        copies[k as usize] += 1;
        if copies[k as usize] > 1 {
            report.duplicated += 1;
            example(
                "duplicated",
                format!("{} (copy {}, seq {})", m.body, copies[k as usize], m.seq),
            );
            continue;
        }
        if let (Some(rank), false) = (st.rank, st.order_unknown) {
            arrivals.push((rank, k));
        }
    }
    for (k, st) in sender.state.iter().enumerate() {
        if st.rank.is_some() && copies[k] == 0 {
            report.lost += 1;
            example("lost", sender.body(k as u64));
        }
        if st.order_unknown {
            report.order_unknown += 1;
        }
    }
    let (reordered, overtaken) = out_of_order(&arrivals);
    report.reordered = reordered;
    for (i, j) in overtaken.into_iter().take(5) {
        example(
            "reordered",
            format!(
                "{} (accepted #{}) arrived after {} (accepted #{})",
                sender.body(arrivals[i].1),
                arrivals[i].0,
                sender.body(arrivals[j].1),
                arrivals[j].0
            ),
        );
    }
    report.examples = examples;
}

/// The number of elements to remove for the ranks to be strictly increasing (length minus the
/// longest increasing subsequence), and the first few (index, index of an earlier element with
/// a higher rank) pairs as examples.
fn out_of_order(arrivals: &[(u64, u64)]) -> (u64, Vec<(usize, usize)>) {
    // Patience sorting: tails[l] = smallest rank ending an increasing subsequence of length l+1.
    let mut tails: Vec<u64> = Vec::new();
    let mut examples = Vec::new();
    let mut max_at: Option<usize> = None;
    for (i, &(rank, _)) in arrivals.iter().enumerate() {
        let pos = tails.partition_point(|&t| t < rank);
        if pos == tails.len() {
            tails.push(rank);
        } else {
            tails[pos] = rank;
        }
        match max_at {
            Some(m) if arrivals[m].0 > rank => {
                if examples.len() < 5 {
                    examples.push((i, m));
                }
            }
            _ => max_at = Some(i),
        }
    }
    ((arrivals.len() - tails.len()) as u64, examples)
}

fn parse_body(body: &str) -> Option<u64> {
    let digits = body.strip_prefix("chk-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the sender knows about one message.
#[derive(Debug, Clone, Default)]
struct MsgState {
    /// Position of its first `accepted` reply among all of them.
    rank: Option<u64>,
    /// It was in flight without a reply at least once when A died.
    indeterminate: bool,
    /// Its place in A's outbox cannot be known (see the module docs).
    order_unknown: bool,
}

/// The pipelined, reconnecting, idempotent sender (see the module docs for its rules).
struct Sender {
    total: u64,
    window: usize,
    stall_timeout: Duration,
    tag: String,
    width: usize,
    to: Name,
    socket: PathBuf,
    progress: Arc<AtomicU64>,
    state: Vec<MsgState>,
    /// Next message never sent yet.
    next_new: u64,
    /// Sent on the current connection, not yet answered: (request id, message), in write order.
    inflight: VecDeque<(u64, u64)>,
    /// To be sent (again) before any new message, in this order.
    retry: VecDeque<u64>,
    /// Error replies put back at the front of `retry` since the last write (keeps their order).
    requeued_front: usize,
    next_request: u64,
    accepted: u64,
    reconnects: u64,
    opened: u64,
    rejected: u64,
    rejected_codes: BTreeMap<String, u64>,
    problems: Vec<String>,
}

enum ReaderEvent {
    Reply(Reply<Response>),
    /// End of file or an error: chatd closed the connection (or died).
    Closed(String),
    /// A line that is not a reply: a protocol violation.
    Garbage(String),
}

/// One control connection: the write half here, replies from a reader thread.
struct Conn {
    stream: UnixStream,
    replies: mpsc::Receiver<ReaderEvent>,
    /// A write failed: write nothing more, wait for the reader to see the end.
    broken: bool,
}

impl Conn {
    fn open(socket: &Path, request_id: &mut u64) -> Result<Conn, String> {
        let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let read = stream.try_clone().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || reader(read, tx));
        let mut conn = Conn {
            stream,
            replies: rx,
            broken: false,
        };
        let id = *request_id;
        *request_id += 1;
        let hello = RequestLine {
            id,
            request: Request::Hello {
                version: control::VERSION,
            },
        };
        conn.stream
            .write_all(&to_line(&hello))
            .map_err(|e| format!("writing hello: {e}"))?;
        match conn.replies.recv_timeout(Duration::from_secs(10)) {
            Ok(ReaderEvent::Reply(Reply {
                outcome: Outcome::Ok(Response::Hello { .. }),
                ..
            })) => Ok(conn),
            Ok(ReaderEvent::Reply(r)) => Err(format!("hello answered with {r:?}")),
            Ok(ReaderEvent::Closed(e)) => Err(format!("closed during hello: {e}")),
            Ok(ReaderEvent::Garbage(l)) => Err(format!("hello answered with {l:?}")),
            Err(_) => Err("no hello reply within 10 s".into()),
        }
    }
}

fn reader(read: UnixStream, tx: mpsc::Sender<ReaderEvent>) {
    let mut r = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let ev = match r.read_line(&mut line) {
            Ok(0) => ReaderEvent::Closed("end of file".into()),
            Err(e) => ReaderEvent::Closed(e.to_string()),
            Ok(_) if !line.ends_with('\n') => ReaderEvent::Closed("end of file mid-line".into()),
            Ok(_) => match serde_json::from_str::<Reply<Response>>(&line) {
                Ok(reply) => ReaderEvent::Reply(reply),
                Err(e) => ReaderEvent::Garbage(format!("{e}: {}", line.trim_end())),
            },
        };
        let end = !matches!(ev, ReaderEvent::Reply(_));
        if tx.send(ev).is_err() || end {
            return;
        }
    }
}

impl Sender {
    fn new(
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
            accepted: 0,
            reconnects: 0,
            opened: 0,
            rejected: 0,
            rejected_codes: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    fn body(&self, k: u64) -> String {
        format!("chk-{k:0w$}", w = self.width)
    }

    fn msg_id(&self, k: u64) -> String {
        format!("chk-{}-{k:0w$}", self.tag, w = self.width)
    }

    fn run(&mut self, stop: &AtomicBool, log: &dyn Fn(&str)) {
        let mut conn: Option<Conn> = None;
        let mut last_progress = Instant::now();
        let mut last_print = Instant::now();
        let mut last_connect_error = String::new();
        'send: while self.accepted < self.total {
            if stop.load(Ordering::SeqCst) {
                self.problems
                    .push("stopped before every message was accepted".into());
                break;
            }
            if last_progress.elapsed() > self.stall_timeout {
                self.problems.push(format!(
                    "no send accepted for {:?} ({} of {} accepted; last connect error: {})",
                    self.stall_timeout, self.accepted, self.total, last_connect_error
                ));
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
                match Conn::open(&self.socket, &mut self.next_request) {
                    Ok(c) => {
                        if self.opened > 0 {
                            self.reconnects += 1;
                        }
                        self.opened += 1;
                        conn = Some(c);
                    }
                    Err(e) => {
                        last_connect_error = e;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            };
            if !c.broken {
                let buf = self.fill();
                if !buf.is_empty() && c.stream.write_all(&buf).is_err() {
                    // Do not reconnect before chatd closed this connection: it may still be
                    // working through what it read, and two connections at once could reorder.
                    c.broken = true;
                }
            }
            let first = match c.replies.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => ev,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    ReaderEvent::Closed("reader stopped".into())
                }
            };
            let mut next = Some(first);
            while let Some(ev) = next {
                match ev {
                    ReaderEvent::Reply(reply) => {
                        if let Err(e) = self.on_reply(reply) {
                            self.problems.push(e);
                            break 'send;
                        }
                        last_progress = Instant::now();
                    }
                    ReaderEvent::Garbage(line) => {
                        self.problems
                            .push(format!("chatd sent a line that is not a reply: {line}"));
                        break 'send;
                    }
                    ReaderEvent::Closed(_) => {
                        self.connection_lost();
                        conn = None;
                        break;
                    }
                }
                next = conn.as_ref().and_then(|c| c.replies.try_recv().ok());
            }
        }
        // Given up with requests unanswered: A may still accept them.
        for &(_, k) in &self.inflight {
            self.state[k as usize].indeterminate = true;
        }
    }

    /// The requests to write now: the retry queue first, then new messages, up to the window.
    fn fill(&mut self) -> Vec<u8> {
        self.requeued_front = 0;
        let mut buf = Vec::new();
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
            buf.extend_from_slice(&to_line(&line));
            self.inflight.push_back((id, k));
        }
        buf
    }

    fn on_reply(&mut self, reply: Reply<Response>) -> Result<(), String> {
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
    fn connection_lost(&mut self) {
        while let Some((_, k)) = self.inflight.pop_back() {
            self.state[k as usize].indeterminate = true;
            self.retry.push_front(k);
        }
        self.requeued_front = 0;
    }
}

/// One request on a fresh connection (hello, then `request`); the reply or why there is none.
pub fn query(socket: &Path, request: Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let timeout = Some(Duration::from_secs(30));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let hello = RequestLine {
        id: 1,
        request: Request::Hello {
            version: control::VERSION,
        },
    };
    let mut out = to_line(&hello);
    out.extend_from_slice(&to_line(&RequestLine { id: 2, request }));
    w.write_all(&out).map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    for want in [1, 2] {
        line.clear();
        let n = r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the reply".into());
        }
        let reply: Reply<Response> =
            serde_json::from_str(&line).map_err(|e| format!("bad reply {line:?}: {e}"))?;
        if reply.id != want && reply.id != 0 {
            return Err(format!("reply id {} instead of {want}", reply.id));
        }
        match reply.outcome {
            Outcome::Err(e) => return Err(format!("{}: {}", e.code, e.message)),
            Outcome::Ok(resp) if want == 2 => return Ok(resp),
            Outcome::Ok(_) => {}
        }
    }
    unreachable!("the loop returns at the second reply")
}

/// Every message in the inbox behind `socket`, oldest first (paged with `after`, so neither the
/// 10 000-message limit nor the 8 MiB `truncated` cut loses anything).
pub fn read_inbox(socket: &Path) -> Result<Vec<InboxMessage>, String> {
    let mut all: Vec<InboxMessage> = Vec::new();
    let mut after = 0i64;
    loop {
        let resp = query(
            socket,
            Request::Inbox {
                from: None,
                limit: Some(10_000),
                after: Some(after),
            },
        )?;
        let Response::Messages { messages, .. } = resp else {
            return Err(format!("inbox answered with {resp:?}"));
        };
        let Some(last) = messages.last() else {
            return Ok(all);
        };
        if last.seq <= after || messages.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(format!("inbox seq not increasing after {after}"));
        }
        after = last.seq;
        all.extend(messages);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    A,
    B,
    /// Both, A restarted first.
    BothAFirst,
    /// Both, B restarted first.
    BothBFirst,
}

impl Which {
    fn has_a(self) -> bool {
        self != Which::B
    }
    fn has_b(self) -> bool {
        self != Which::A
    }
}

#[derive(Debug, Clone)]
struct PlannedKill {
    /// Kill once this many messages were accepted...
    at: u64,
    /// ... and this much later.
    delay: Duration,
    which: Which,
    downtime: Duration,
}

struct KillEvent {
    at: Duration,
    progress: u64,
    which: Which,
    downtime: Duration,
}

impl fmt::Display for KillEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.which {
            Which::A => "A",
            Which::B => "B",
            Which::BothAFirst | Which::BothBFirst => "A+B",
        };
        write!(
            f,
            "{:.2}s {who:3} after {} accepted, down {} ms",
            self.at.as_secs_f64(),
            self.progress,
            self.downtime.as_millis()
        )
    }
}

struct Kills {
    a: Node,
    b: Node,
    events: Vec<KillEvent>,
    problems: Vec<String>,
}

/// Random kill moments between 5% and 95% of the send progress, in order.
fn plan_kills(config: &Config, rng: &mut Rng) -> Vec<PlannedKill> {
    let lo = config.messages / 20;
    let hi = (config.messages * 19 / 20).max(lo + 1);
    let mut plan: Vec<PlannedKill> = (0..config.kills)
        .map(|_| PlannedKill {
            at: lo + rng.below(hi - lo),
            delay: Duration::from_micros(rng.below(30_000)),
            which: match rng.below(10) {
                0..=3 => Which::A,
                4..=7 => Which::B,
                8 => Which::BothAFirst,
                _ => Which::BothBFirst,
            },
            downtime: Duration::from_micros(
                rng.below(config.max_downtime.as_micros().max(1) as u64),
            ),
        })
        .collect();
    plan.sort_by_key(|k| k.at);
    plan
}

fn killer(
    mut a: Node,
    mut b: Node,
    plan: Vec<PlannedKill>,
    progress: &AtomicU64,
    stop: &AtomicBool,
    start: Instant,
    verbose: bool,
) -> Kills {
    let mut events = Vec::new();
    let mut problems = Vec::new();
    'plan: for k in plan {
        while progress.load(Ordering::SeqCst) < k.at {
            if stop.load(Ordering::SeqCst) {
                break 'plan;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(k.delay);
        let event = KillEvent {
            at: start.elapsed(),
            progress: progress.load(Ordering::SeqCst),
            which: k.which,
            downtime: k.downtime,
        };
        if verbose {
            eprintln!(
                "[checker {:7.2}s] kill -9 {event}",
                start.elapsed().as_secs_f64()
            );
        }
        if k.which.has_a() {
            a.daemon.kill9();
        }
        if k.which.has_b() {
            b.daemon.kill9();
        }
        std::thread::sleep(k.downtime);
        let order: &mut [&mut Node] = match k.which {
            Which::A => &mut [&mut a],
            Which::B => &mut [&mut b],
            Which::BothAFirst => &mut [&mut a, &mut b],
            Which::BothBFirst => &mut [&mut b, &mut a],
        };
        for node in order.iter_mut() {
            let restarted =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.restart()));
            if restarted.is_err() {
                problems.push(format!(
                    "{} did not restart after kill -9 (see its log)",
                    node.name
                ));
                stop.store(true, Ordering::SeqCst);
            }
        }
        events.push(event);
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    Kills {
        a,
        b,
        events,
        problems,
    }
}

/// SplitMix64: small, seedable, good enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_counts_the_fewest_moved() {
        let r = |v: &[u64]| out_of_order(&v.iter().map(|&x| (x, x)).collect::<Vec<_>>()).0;
        assert_eq!(r(&[]), 0);
        assert_eq!(r(&[0, 1, 2, 3]), 0);
        assert_eq!(r(&[0, 1, 9, 2, 3, 4, 5, 6, 7, 8]), 1);
        assert_eq!(r(&[3, 2, 1, 0]), 3);
        assert_eq!(r(&[1, 0, 3, 2]), 2);
    }

    fn inbox_of(sender: &Sender, from: &str, nums: &[u64]) -> Vec<InboxMessage> {
        nums.iter()
            .enumerate()
            .map(|(i, &k)| InboxMessage {
                seq: i as i64 + 1,
                id: sender.msg_id(k),
                from: from.into(),
                to: "chk-b".into(),
                recipients: Vec::new(),
                body: sender.body(k),
                sent_at: String::new(),
                received_at: String::new(),
                authenticated: false,
            })
            .collect()
    }

    /// A sender that had messages 0..n accepted in number order.
    fn accepted(n: u64) -> Sender {
        let config = Config::new(n, 0);
        let mut s = Sender::new(
            &config,
            "t".into(),
            Name::new("chk-b").unwrap(),
            PathBuf::new(),
            Arc::new(AtomicU64::new(0)),
        );
        for (k, st) in s.state.iter_mut().enumerate() {
            st.rank = Some(k as u64);
        }
        s.accepted = n;
        s
    }

    fn checked(sender: &Sender, inbox: &[InboxMessage]) -> Report {
        let mut r = Report::default();
        check(sender, "chk-a", inbox, &mut r);
        r
    }

    #[test]
    fn check_finds_lost_duplicated_reordered_unexpected() {
        let s = accepted(6);
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2, 3, 4, 5]));
        assert_eq!(
            (r.lost, r.duplicated, r.reordered, r.unexpected),
            (0, 0, 0, 0)
        );
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 4, 5]));
        assert_eq!(
            (r.lost, r.duplicated, r.reordered, r.unexpected),
            (1, 0, 0, 0)
        );
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2, 2, 3, 4, 5, 0]));
        assert_eq!(
            (r.lost, r.duplicated, r.reordered, r.unexpected),
            (0, 2, 0, 0)
        );
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 2, 1, 3, 5, 4]));
        assert_eq!(
            (r.lost, r.duplicated, r.reordered, r.unexpected),
            (0, 0, 2, 0)
        );
        // Another sender, a number out of range, an id that does not match the body.
        let mut inbox = inbox_of(&s, "chk-a", &[0, 1, 2, 3, 4, 5]);
        inbox.extend(inbox_of(&s, "someone", &[1]));
        inbox.extend(inbox_of(&s, "chk-a", &[6]));
        let mut wrong_id = inbox_of(&s, "chk-a", &[1]);
        wrong_id[0].id = "other".into();
        inbox.extend(wrong_id);
        let r = checked(&s, &inbox);
        assert_eq!(
            (r.lost, r.duplicated, r.reordered, r.unexpected),
            (0, 0, 0, 3)
        );
        assert_eq!(r.examples.len(), 3, "{:?}", r.examples);
    }

    #[test]
    fn check_uses_acceptance_ranks_and_allows_indeterminate() {
        let mut s = accepted(4);
        // 2 was rejected once and accepted last: 0, 1, 3, 2 is the right order.
        s.state[3].rank = Some(2);
        s.state[2].rank = Some(3);
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 2]));
        assert_eq!((r.lost, r.reordered), (0, 0));
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2, 3]));
        assert_eq!(r.reordered, 1);
        // Never accepted: unexpected if it shows up, unless it was indeterminate.
        s.state[3].rank = None;
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 2]));
        assert_eq!((r.lost, r.unexpected), (0, 1));
        s.state[3].indeterminate = true;
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 3, 2]));
        assert_eq!((r.lost, r.unexpected), (0, 0));
        let r = checked(&s, &inbox_of(&s, "chk-a", &[0, 1, 2]));
        assert_eq!((r.lost, r.unexpected), (0, 0));
    }

    #[test]
    fn a_crash_requeues_in_flight_first_in_write_order() {
        let mut s = accepted(0);
        s.total = 10;
        s.state = vec![MsgState::default(); 10];
        s.window = 3;
        s.fill();
        assert_eq!(
            s.inflight.iter().map(|x| x.1).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        s.connection_lost();
        assert_eq!(s.retry, [0, 1, 2]);
        assert!(s.state[..3].iter().all(|m| m.indeterminate));
        s.window = 5;
        s.fill();
        assert_eq!(
            s.inflight.iter().map(|x| x.1).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let reply = |id, outcome| Reply { id, outcome };
        let ok = |k: u64, s: &Sender| {
            Outcome::Ok(Response::Accepted {
                id: s.msg_id(k),
                recipients: Vec::new(),
            })
        };
        let (id0, _) = s.inflight[0];
        s.on_reply(reply(id0, ok(0, &s))).unwrap();
        // An error reply to the resend of an indeterminate message: its place is unknown.
        let (id1, _) = s.inflight[0];
        let err = Outcome::Err(peerchat_proto::ErrorBody::new("storage", "x"));
        s.on_reply(reply(id1, err)).unwrap();
        assert!(s.state[1].order_unknown);
        assert_eq!(s.retry, [1]);
        assert_eq!(s.state[0].rank, Some(0));
        let (id2, _) = s.inflight[0];
        assert!(s.on_reply(reply(id2, ok(3, &s))).is_err(), "wrong id");
    }

    #[test]
    fn bodies_parse() {
        assert_eq!(parse_body("chk-000123"), Some(123));
        assert_eq!(parse_body("chk-"), None);
        assert_eq!(parse_body("chk-12a"), None);
        assert_eq!(parse_body("hello"), None);
    }
}
