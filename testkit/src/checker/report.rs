//! The outcome of a run, and how it is printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use peerchat_proto::control::Counts;

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
