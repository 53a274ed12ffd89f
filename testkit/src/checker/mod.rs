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

//!
//! The modules follow those steps: [`Config`] (what to run), `sender` (1), `killer` (2),
//! `query` (the one-shot requests of 3 and 4), `verify` (4) and [`Report`].

mod config;
mod killer;
mod query;
mod report;
mod sender;
#[cfg(test)]
mod tests;
mod verify;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerchat_proto::control::{Request, Response};
use peerchat_proto::Name;

use crate::{Node, Registry};

pub use config::Config;
pub use query::{query, read_inbox};
pub use report::Report;

use killer::{killer, plan_kills, Kills, Rng};
use sender::Sender;

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
    let a_socket = a.socket.clone();
    let b_socket = b.socket.clone();
    let b_name = Name::new(b.name.clone()).expect("valid name");
    let a_name = a.name.clone();

    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = spawn_killer(config, (a, b), &progress, &stop, start);

    // 1. Send everything (while the killer kills).
    let tag = format!("{:08x}", config.seed as u32);
    let mut sender = Sender::new(config, tag, b_name, a_socket.clone(), progress.clone());
    sender.run(&stop, &log);
    report.send_elapsed = start.elapsed();
    sender.record(&mut report);
    if sender.accepted < config.messages {
        // The sender gave up; the remaining kills would wait for progress that never comes.
        stop.store(true, Ordering::SeqCst);
    }
    log(&format!(
        "sending done: {} accepted in {:.1} s; waiting for the remaining kills",
        sender.accepted,
        report.send_elapsed.as_secs_f64()
    ));
    let kills: Kills = match killer.join() {
        Ok(k) => k,
        Err(p) => std::panic::resume_unwind(p),
    };
    report.problems.extend(sender.problems.iter().cloned());
    kills.record(&mut report);
    let Kills { mut a, mut b, .. } = kills;

    // 2. Drain: wait for A's outbox to empty (every delivery acknowledged by B).
    let drain_start = Instant::now();
    log("draining: waiting for A's outbox to empty");
    drain(config, (&mut a, &mut b), &a_socket, &mut report, &log);
    report.drain_elapsed = drain_start.elapsed();

    // 3. Read B's inbox and compare.
    compare(&sender, &a_name, &b_socket, &mut report);
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

/// The killer thread, with its plan made from the seed; it hands the nodes back when done.
fn spawn_killer(
    config: &Config,
    (a, b): (Node, Node),
    progress: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
    start: Instant,
) -> std::thread::JoinHandle<Kills> {
    let mut rng = Rng::new(config.seed);
    let plan = plan_kills(config, &mut rng);
    let progress = progress.clone();
    let stop = stop.clone();
    let verbose = config.verbose;
    std::thread::spawn(move || killer(a, b, plan, &progress, &stop, start, verbose))
}

/// Reads B's whole inbox and checks it against what the sender knows.
fn compare(sender: &Sender, a_name: &str, b_socket: &Path, report: &mut Report) {
    match read_inbox(b_socket) {
        Ok(inbox) => {
            report.received = inbox.len() as u64;
            verify::check(sender, a_name, &inbox, report);
        }
        Err(e) => report
            .problems
            .push(format!("could not read B's inbox: {e}")),
    }
}

/// Waits until A's outbox holds nothing undelivered (no `queued` or `sent` delivery), up to
/// `config.drain_timeout`; notes A's last counts and any problem in `report`.
fn drain(
    config: &Config,
    (a, b): (&mut Node, &mut Node),
    a_socket: &Path,
    report: &mut Report,
    log: &dyn Fn(&str),
) {
    let deadline = Instant::now() + config.drain_timeout;
    let mut last_print = Instant::now();
    loop {
        if !a.daemon.is_running() || !b.daemon.is_running() {
            report
                .problems
                .push("a chatd exited on its own during the drain (see its log)".into());
            return;
        }
        match query(a_socket, Request::Status) {
            Ok(Response::Status(s)) => {
                let pending = s.counts.queued + s.counts.sent;
                report.a_counts = Some(s.counts);
                if pending == 0 {
                    return;
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
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
