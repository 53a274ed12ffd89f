//! Step 2: kill -9 A, B or both at random points of the send progress, and restart them.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::config::Config;
use super::report::Report;
use crate::Node;

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
pub(super) struct PlannedKill {
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

pub(super) struct Kills {
    pub(super) a: Node,
    pub(super) b: Node,
    events: Vec<KillEvent>,
    problems: Vec<String>,
}

impl Kills {
    /// The kills' counts, log and problems, into the report.
    pub(super) fn record(&self, report: &mut Report) {
        report.problems.extend(self.problems.iter().cloned());
        report.kills = self.events.len() as u32;
        report.kills_a = self.events.iter().filter(|e| e.which.has_a()).count() as u32;
        report.kills_b = self.events.iter().filter(|e| e.which.has_b()).count() as u32;
        report.kill_log = self.events.iter().map(|e| e.to_string()).collect();
    }
}

/// Random kill moments between 5% and 95% of the send progress, in order.
pub(super) fn plan_kills(config: &Config, rng: &mut Rng) -> Vec<PlannedKill> {
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

pub(super) fn killer(
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
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
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
