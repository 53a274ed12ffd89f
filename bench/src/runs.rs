//! One measured peerchat run: senders and followers on the nodes' control sockets, and the
//! processes' CPU, disk and RSS meanwhile (`run_chat`); the A → B pair most phases measure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use peerchat_testkit::Node;

use crate::chat::{FollowOut, Follower, SendOut, SendSpec, Sender};
use crate::procfs;
use crate::report::Row;

/// What one peerchat run saw: every sender and follower, and the processes' usage.
pub struct ChatRun {
    pub sends: Vec<SendOut>,
    pub follows: Vec<FollowOut>,
    pub expected: usize,
    pub usage: BTreeMap<String, procfs::Usage>,
    pub rss_peak: Vec<u64>,
}

impl ChatRun {
    pub fn row(
        self,
        system: &str,
        scenario: &str,
        size: usize,
        senders: &[&str],
        recipients: &[&str],
    ) -> Row {
        let received: usize = self.follows.iter().map(|f| f.count).sum();
        let sent: usize = self.sends.iter().map(|s| s.accepted).sum();
        let start = self.sends.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = self.follows.iter().map(|f| f.last_ns).max().unwrap_or(0);
        let accepted_end = self
            .sends
            .iter()
            .map(|s| s.last_accept_ns)
            .max()
            .unwrap_or(0);
        let mut row = Row::new(
            system,
            scenario,
            size,
            sent,
            received,
            self.expected,
            end.saturating_sub(start) as f64 / 1e9,
        );
        let acc_secs = accepted_end.saturating_sub(start) as f64 / 1e9;
        if acc_secs > 0.0 {
            row.accepted_per_sec = Some(sent as f64 / acc_secs);
        }
        let n = received.max(1) as f64;
        let cpu = |labels: &[&str]| -> f64 {
            self.usage
                .iter()
                .filter(|(k, _)| labels.contains(&k.as_str()))
                .map(|(_, u)| u.cpu_secs)
                .sum::<f64>()
                * 1e6
                / n
        };
        row.sender_cpu_us_per_msg = Some(cpu(senders));
        row.recipient_cpu_us_per_msg = Some(cpu(recipients));
        let disk: u64 = self
            .usage
            .iter()
            .filter(|(k, _)| k.starts_with("chatd"))
            .map(|(_, u)| u.disk_write_bytes)
            .sum();
        row.disk_bytes_per_msg = Some(disk as f64 / n);
        let mut notes: Vec<String> = Vec::new();
        for s in &self.sends {
            if let Some(e) = &s.first_error {
                notes.push(format!("{} send errors, first: {e}", s.errors));
                break;
            }
        }
        for f in &self.follows {
            if let Some(e) = &f.error {
                notes.push(e.clone());
                break;
            }
        }
        if !notes.is_empty() {
            row.note = Some(notes.join("; "));
        }
        row.usage = self.usage;
        row
    }
}

/// Node "a" sending to node "b", and their daemons' usage labels.
pub struct Pair<'a> {
    pub a: &'a Node,
    pub b: &'a Node,
    pub procs: Vec<(String, u32)>,
    /// The directory holding their databases.
    pub dir: PathBuf,
}

impl<'a> Pair<'a> {
    pub fn new(a: &'a Node, b: &'a Node, dir: &Path) -> Pair<'a> {
        let procs = vec![
            ("chatd A".to_string(), a.daemon.child.id()),
            ("chatd B".to_string(), b.daemon.child.id()),
        ];
        Pair {
            a,
            b,
            procs,
            dir: dir.to_path_buf(),
        }
    }

    /// `n` messages from a to b.
    pub fn spec(&self, n: usize) -> SendSpec {
        SendSpec {
            socket: self.a.socket.clone(),
            to: vec!["b".into()],
            n,
        }
    }

    /// A → B as measured: a short warm-up (the link up, the queues empty), then `n` messages of
    /// `size` B, pipelined or paced at `rate` (then with per-message latencies).
    pub fn run(
        &self,
        n: usize,
        size: usize,
        rate: Option<f64>,
        next_tag: &mut impl FnMut() -> String,
        stall: Duration,
    ) -> anyhow::Result<ChatRun> {
        warmup(
            &[self.spec(50)],
            std::slice::from_ref(&self.b.socket),
            next_tag,
            stall,
        )?;
        run_chat(
            &[self.spec(n)],
            &[(self.b.socket.clone(), n)],
            &next_tag(),
            size,
            rate,
            rate.is_some(),
            stall,
            &self.procs,
        )
    }
}

/// Sends from every `senders` entry at once (pipelined, or paced at `rate`), follows every
/// recipient until it has seen its expected count (or stalls), and records CPU, disk and RSS
/// of `procs` meanwhile.
#[allow(clippy::too_many_arguments)]
pub fn run_chat(
    senders: &[SendSpec],
    recipients: &[(PathBuf, usize)],
    tag: &str,
    size: usize,
    rate: Option<f64>,
    latencies: bool,
    stall: Duration,
    procs: &[(String, u32)],
) -> anyhow::Result<ChatRun> {
    let mut followers = Vec::new();
    for (socket, expected) in recipients {
        followers.push(Follower::start(socket, tag, *expected, latencies, stall)?);
    }
    let mut gos = Vec::new();
    let mut handles = Vec::new();
    for s in senders {
        let (tx, rx) = mpsc::channel();
        handles.push(Sender::start(s, tag, size, rate, rx)?);
        gos.push(tx);
    }
    let me = std::process::id();
    let before: Vec<procfs::Snap> = procs.iter().map(|(_, p)| procfs::snap(*p)).collect();
    let me_before = procfs::snap(me);
    let sampler = procfs::RssSampler::start(procs.iter().map(|(_, p)| *p).collect());
    for g in gos {
        let _ = g.send(());
    }
    let sends: Vec<SendOut> = handles.into_iter().map(|h| h.wait()).collect();
    let follows: Vec<FollowOut> = followers.into_iter().map(|f| f.wait()).collect();
    let rss_peak = sampler.finish();
    let mut usage = BTreeMap::new();
    for ((label, pid), b) in procs.iter().zip(&before) {
        usage.insert(label.clone(), procfs::usage(b, &procfs::snap(*pid)));
    }
    usage.insert(
        "bench client".to_string(),
        procfs::usage(&me_before, &procfs::snap(me)),
    );
    Ok(ChatRun {
        sends,
        follows,
        expected: recipients.iter().map(|r| r.1).sum(),
        usage,
        rss_peak,
    })
}

/// A short unmeasured run: links up, caches warm.
pub fn warmup(
    senders: &[SendSpec],
    recipients: &[PathBuf],
    next_tag: &mut impl FnMut() -> String,
    stall: Duration,
) -> anyhow::Result<()> {
    let tag = next_tag();
    let mut expected: BTreeMap<&Path, usize> = BTreeMap::new();
    for s in senders {
        for r in recipients {
            *expected.entry(r.as_path()).or_default() += s.n;
        }
    }
    let recips: Vec<(PathBuf, usize)> = recipients
        .iter()
        .map(|r| (r.clone(), expected[r.as_path()]))
        .collect();
    let run = run_chat(senders, &recips, &tag, 64, None, false, stall, &[])?;
    let got: usize = run.follows.iter().map(|f| f.count).sum();
    if got < run.expected {
        let why = run
            .sends
            .iter()
            .find_map(|s| s.first_error.clone())
            .or_else(|| run.follows.iter().find_map(|f| f.error.clone()))
            .unwrap_or_default();
        anyhow::bail!("warm-up: {got} of {} messages arrived: {why}", run.expected);
    }
    Ok(())
}
