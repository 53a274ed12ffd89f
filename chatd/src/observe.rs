//! What an operator sees of each message: a debug log line per message accepted, delivered and
//! received (ids and names, never the body, so `journalctl -u chatd` can answer "did it
//! arrive?"), and the `--metrics` counters, gauges and histograms.
//!
//! A leaf: the store holds the node's [`Observe`] (`Store::observe`), so every part that already
//! has the store reports through it without new plumbing; it takes plain values, never store
//! types.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use peerchat_daemon::metrics::Exporter;
use peerchat_proto::control::{DeliveryState, RecipientState};
use tracing::debug;

/// Most recipients named in an `accepted` log line (a broadcast may have 1,024).
const LOGGED_RECIPIENTS: usize = 16;

/// Most recipients given their own `chatd_queued_messages{recipient=…}` line: those with the most
/// pending messages; the rest are only in the totals. Bounds the scrape whatever the outbox holds.
pub const QUEUED_TOP: usize = 50;

pub struct Observe {
    accepted: Counter,
    delivered: Counter,
    received: Counter,
    failed: Counter,
    links_out: Gauge,
    links_in: Gauge,
    commit: Histogram,
    delivery: Histogram,
}

/// Which way a peer link goes: dialled by us (delivery) or accepted (peer server).
#[derive(Debug, Clone, Copy)]
pub enum LinkDirection {
    Out,
    In,
}

/// Counts a link as open until dropped.
pub struct OpenLink(Gauge);

impl Drop for OpenLink {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Observe {
    pub fn new(x: &Exporter) -> Observe {
        let links = "Peer links open, by direction (out: dialled to deliver; in: accepted).";
        Observe {
            accepted: x.counter(
                "chatd_messages_accepted_total",
                "Messages accepted by send (committed to the outbox), not counting repeats.",
                &[],
            ),
            delivered: x.counter(
                "chatd_messages_delivered_total",
                "Deliveries acknowledged by the recipient (one per message and recipient).",
                &[],
            ),
            received: x.counter(
                "chatd_messages_received_total",
                "Messages received from peers and committed to the inbox, not counting repeats.",
                &[],
            ),
            failed: x.counter(
                "chatd_messages_failed_total",
                "Deliveries given up (refused, unknown name, past their lifetime, legacy off).",
                &[],
            ),
            links_out: x.gauge("chatd_links_open", links, &[("direction", "out")]),
            links_in: x.gauge("chatd_links_open", links, &[("direction", "in")]),
            commit: x.histogram(
                "chatd_commit_seconds",
                "Time to commit one batch of the database thread (the transaction and its fsync).",
            ),
            delivery: x.histogram(
                "chatd_delivery_seconds",
                "From a message's acceptance to the recipient's acknowledgement.",
            ),
        }
    }

    /// Records nothing but the log lines (no `--metrics`).
    pub fn disabled() -> Observe {
        Observe::new(&Exporter::disabled())
    }

    /// A `send` committed a new message.
    pub fn accepted(&self, msg_id: &str, recipients: &[RecipientState]) {
        self.accepted.increment(1);
        let refused = recipients
            .iter()
            .filter(|r| r.state == DeliveryState::Failed)
            .count();
        self.failed.increment(refused as u64);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut to: Vec<&str> = recipients
                .iter()
                .take(LOGGED_RECIPIENTS)
                .map(|r| r.to.as_str())
                .collect();
            if recipients.len() > LOGGED_RECIPIENTS {
                to.push("…");
            }
            debug!(msg_id, to = %to.join(","), recipients = recipients.len(), refused, "message accepted");
        }
    }

    /// A `send` repeated an accepted message (same id, recipients and body): nothing new.
    pub fn repeated(&self, msg_id: &str) {
        debug!(msg_id, "message already accepted (a repeated send)");
    }

    /// `to` acknowledged the message accepted at `accepted_at_ms`.
    pub fn delivered(&self, msg_id: &str, to: &str, accepted_at_ms: u64) {
        self.delivered.increment(1);
        let ms = peerchat_db::now_ms().saturating_sub(accepted_at_ms);
        self.delivery
            .record(Duration::from_millis(ms).as_secs_f64());
        debug!(msg_id, to, "message delivered");
    }

    /// A message from `from` was committed to the inbox (`repeat`: it was there already and is
    /// acknowledged again).
    pub fn received(&self, msg_id: &str, from: &str, repeat: bool) {
        if repeat {
            debug!(
                msg_id,
                from, "message received again (a repeat; acknowledged again)"
            );
        } else {
            self.received.increment(1);
            debug!(msg_id, from, "message received");
        }
    }

    /// `n` deliveries to `to` were given up.
    pub fn failed(&self, to: &str, n: usize) {
        self.failed.increment(n as u64);
        debug!(to, messages = n, "delivery failed");
    }

    pub fn link_open(&self, direction: LinkDirection) -> OpenLink {
        let g = match direction {
            LinkDirection::Out => self.links_out.clone(),
            LinkDirection::In => self.links_in.clone(),
        };
        g.increment(1.0);
        OpenLink(g)
    }

    /// One batch of the DB thread committed in `took`.
    pub fn committed(&self, took: Duration) {
        self.commit.record(took.as_secs_f64());
    }
}

/// The pending (queued or sent, not final) deliveries at scrape time.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Queued {
    /// Pending deliveries in all.
    pub total: u64,
    /// Recipients with at least one.
    pub recipients: u64,
    /// The [`QUEUED_TOP`] recipients with the most, most first.
    pub top: Vec<(String, u64)>,
}

/// The queue gauges as Prometheus text. Computed per scrape rather than kept as registered gauges:
/// the set of recipients changes, and a registered labelled gauge never goes away.
pub fn render_queued(q: &Queued) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP chatd_queued_messages Pending deliveries (queued or sent, not yet acknowledged) of the {QUEUED_TOP} recipients with the most."
    );
    let _ = writeln!(s, "# TYPE chatd_queued_messages gauge");
    // Names are validated (letters, digits, `-`, `_`, `.`): nothing to escape in a label.
    for (name, n) in &q.top {
        let _ = writeln!(s, "chatd_queued_messages{{recipient=\"{name}\"}} {n}");
    }
    let _ = writeln!(
        s,
        "# HELP chatd_queued_messages_total Pending deliveries to all recipients."
    );
    let _ = writeln!(s, "# TYPE chatd_queued_messages_total gauge");
    let _ = writeln!(s, "chatd_queued_messages_total {}", q.total);
    let _ = writeln!(
        s,
        "# HELP chatd_queued_recipients Recipients with pending deliveries."
    );
    let _ = writeln!(s, "# TYPE chatd_queued_recipients gauge");
    let _ = writeln!(s, "chatd_queued_recipients {}", q.recipients);
    s
}
