//! chat-bench: throughput and latency of peerchat on loopback, with real processes and the
//! shipped durability settings, against raw TCP, the seed's design and mosquitto, all in one run.
//!
//! Build and run (the daemons are taken from the directory holding this binary):
//!
//! ```sh
//! cargo build --release -p registryd -p chatd -p chatctl -p peerchat-bench
//! target/release/chat-bench            # table on stdout (~1.5 minutes on 2 cores)
//! target/release/chat-bench --quick    # a smaller run
//! target/release/chat-bench --json     # JSON on stdout, the table on stderr
//! ```
//!
//! See docs/benchmarks.md for what each number means and the latest results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use peerchat_testkit::{Node, Registry};

use crate::{baseline, chat, floor, procfs, registry, report};
use chat::{FollowOut, Follower, SendOut, SendSpec, Sender};
use report::{Latency, Machine, Report, Row, Target, RAM_DIR};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call (one clock for every thread of this process).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// peerchat A→B throughput for each body size.
    Throughput,
    /// raw TCP, the seed's way and mosquitto for each body size.
    Baselines,
    /// send→follow latency at a fixed rate.
    Latency,
    /// registry lookups per second.
    Registry,
    /// 1, 4, 16 nodes → one recipient; one node → 16 recipients.
    Fan,
}

/// Throughput and latency of peerchat on loopback, with real processes and durable acks,
/// against raw TCP, the seed's design and mosquitto, measured in the same run.
#[derive(Parser, Debug)]
#[command(
    name = "chat-bench",
    after_help = "\
Starts registryd and chatd nodes (the binaries next to this program) in a temporary directory
with the shipped settings (SQLite WAL, synchronous=FULL: a send is accepted, and a message
acknowledged, only after its commit), then measures:
  1. throughput A -> B for each body size: messages are submitted pipelined on A's control
     socket, and a message counts when B's follower (control `follow`) has received it;
  2. the same for raw loopback TCP, the seed's design (one connection per message, nothing
     stored), and mosquitto QoS 0/1 (mosquitto_pub -l -> mosquitto_sub), when installed;
  3. latency send -> follow at a fixed rate (default 1000 msg/s), and its physical floor on
     the same disk: two fsynced 4 KiB writes in series over loopback at the same rate; then
     the same latency run with two fresh nodes whose databases are in RAM (/dev/shm, where
     fsync costs nothing; not a shipped setting), to tell the disk's share from the software's;
  4. registry lookups/s (4 clients, persistent pipelined connections) and chatd's RSS;
  5. 1, 4 and 16 sending nodes into one recipient, and one sender to 16 recipients.

peerchat A -> B and mosquitto QoS 0 alternate --rounds times (default 3) per body size; the
table keeps each one's median round.

Examples:
  chat-bench                      # everything (~2.5 minutes on 2 cores)
  chat-bench --quick              # smaller counts (~20 s)
  chat-bench --messages 50000 --sizes 64
  chat-bench --only throughput,baselines --sizes 64,1024 --json > out.json"
)]
struct Args {
    /// Smaller counts everywhere (about 20 s)
    #[arg(long)]
    quick: bool,
    /// Messages per throughput run with 64 B and 1 KiB bodies (16 KiB bodies: a quarter)
    /// [default: 100000, --quick 10000]
    #[arg(long, value_name = "N")]
    messages: Option<usize>,
    /// Body sizes in bytes for the throughput runs (at least 48)
    #[arg(long, value_delimiter = ',', default_value = "64,1024,16384")]
    sizes: Vec<usize>,
    /// Messages in the latency run [default: 10000, --quick 3000]
    #[arg(long, value_name = "N")]
    latency_messages: Option<usize>,
    /// Fixed send rate of the latency run, messages per second
    #[arg(long, default_value_t = 1000.0, value_name = "RATE")]
    latency_rate: f64,
    /// Rounds of each peerchat A→B and mosquitto QoS 0 throughput run, alternating; the table
    /// shows the median round (this machine's run-to-run noise is ±20 %) [default: 3, --quick 1]
    #[arg(long, value_name = "K")]
    rounds: Option<usize>,
    /// Seconds of registry lookups [default: 5, --quick 1]
    #[arg(long, value_name = "SECS")]
    lookup_secs: Option<f64>,
    /// A run ends as incomplete after this many seconds without a new message
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    stall_secs: u64,
    /// Run only these phases
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Phase>,
    /// Skip mosquitto even when it is installed
    #[arg(long)]
    no_mosquitto: bool,
    /// JSON on stdout (the table goes to stderr)
    #[arg(long)]
    json: bool,
    /// Keep the temporary directory (databases and daemon logs) and print its path
    #[arg(long)]
    keep: bool,
}

pub fn main() {
    now_ns();
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn progress(msg: &str) {
    eprintln!("[{:7.1}s] {msg}", now_ns() as f64 / 1e9);
}

struct Plan {
    n: usize,
    sizes: Vec<usize>,
    latency_n: usize,
    lookup: Duration,
    stall: Duration,
    /// Rounds of the peerchat A→B and mosquitto QoS 0 throughput runs per body size.
    rounds: usize,
    phases: Vec<Phase>,
}

impl Plan {
    fn has(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }

    /// peerchat and mosquitto messages for one body size.
    fn msgs(&self, size: usize) -> usize {
        if size >= 8192 {
            (self.n / 4).max(100)
        } else {
            self.n
        }
    }

    /// Raw TCP: enough to last a fraction of a second (at least 256 MiB or the peerchat count).
    fn raw_msgs(&self, size: usize) -> usize {
        ((256usize << 20) / size).clamp(self.n, 4_000_000)
    }

    /// The seed's way: one connection each, so bounded by ephemeral ports in TIME_WAIT.
    fn seed_msgs(&self) -> usize {
        self.n.min(10_000)
    }
}

fn run(args: Args) -> anyhow::Result<i32> {
    let plan = Plan {
        n: args
            .messages
            .unwrap_or(if args.quick { 10_000 } else { 100_000 }),
        sizes: args.sizes.clone(),
        latency_n: args
            .latency_messages
            .unwrap_or(if args.quick { 3000 } else { 10_000 }),
        lookup: Duration::from_secs_f64(args.lookup_secs.unwrap_or(if args.quick {
            1.0
        } else {
            5.0
        })),
        stall: Duration::from_secs(args.stall_secs),
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        phases: if args.only.is_empty() {
            vec![
                Phase::Throughput,
                Phase::Baselines,
                Phase::Latency,
                Phase::Registry,
                Phase::Fan,
            ]
        } else {
            args.only.clone()
        },
    };
    if let Some(s) = plan.sizes.iter().find(|s| **s < 48 || **s > 65_536) {
        anyhow::bail!("--sizes: {s} is outside 48..=65536");
    }
    let dir = peerchat_testkit::tempdir();
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date_utc: date_utc(),
        commit: commit(),
        machine: machine(dir.path()),
        ..Report::default()
    };
    for (k, v) in [
        ("messages", plan.n.to_string()),
        ("sizes", format!("{:?}", plan.sizes)),
        ("latency_messages", plan.latency_n.to_string()),
        ("latency_rate", args.latency_rate.to_string()),
        ("rounds", plan.rounds.to_string()),
        ("lookup_secs", plan.lookup.as_secs_f64().to_string()),
        ("daemons", peerchat_testkit::bin_dir().display().to_string()),
        ("chatd_flags", "defaults (durable)".into()),
    ] {
        report.settings.insert(k.into(), v);
    }

    progress(&format!(
        "starting registryd and chatd a, b in {} (daemons from {})",
        dir.path().display(),
        peerchat_testkit::bin_dir().display()
    ));
    let reg = Registry::start(dir.path());
    let a = Node::start_with(dir.path(), "a", reg.addr, &[]);
    let b = Node::start_with(dir.path(), "b", reg.addr, &[]);
    let (pa, pb) = (a.daemon.child.id(), b.daemon.child.id());
    std::thread::sleep(Duration::from_secs(1));
    report.memory.chatd_idle_kb = vec![
        procfs::rss_kb(pa).unwrap_or(0),
        procfs::rss_kb(pb).unwrap_or(0),
    ];
    report.memory.registryd_idle_kb = procfs::rss_kb(reg.daemon.child.id()).unwrap_or(0);

    let ab_procs = vec![("chatd A".to_string(), pa), ("chatd B".to_string(), pb)];
    let mut tag_no = 0usize;
    let mut next_tag = || {
        tag_no += 1;
        format!("T{tag_no}.")
    };
    let spec_ab = |n| SendSpec {
        socket: a.socket.clone(),
        to: vec!["b".into()],
        n,
    };

    let mosquitto = if args.no_mosquitto || !plan.has(Phase::Baselines) {
        report.mosquitto = "not run (--no-mosquitto or baselines not selected)".into();
        None
    } else {
        match baseline::Mosquitto::start(dir.path()) {
            Ok(Some(m)) => {
                report.mosquitto = format!(
                    "{} on 127.0.0.1:{}, persistence false (QoS 1 is acknowledged from memory, not disk)",
                    m.version, m.port
                );
                Some(m)
            }
            Ok(None) => {
                report.mosquitto = "NOT INSTALLED: no mosquitto baseline (apt-get install mosquitto mosquitto-clients)".into();
                None
            }
            Err(e) => {
                report.mosquitto = format!("failed to start: {e:#}");
                None
            }
        }
    };

    // Connect A to B (resolve, link up) before measuring.
    warmup(
        &[spec_ab(200)],
        std::slice::from_ref(&b.socket),
        &mut next_tag,
        plan.stall,
    )?;

    let mut peaks = vec![0u64; 2];
    for &size in &plan.sizes {
        let n = plan.msgs(size);
        // peerchat and mosquitto QoS 0 alternate round by round, so that both see the same
        // stretch of machine noise; the median round of each goes into the table.
        let mut chat_rounds = Vec::new();
        let mut qos0_rounds = Vec::new();
        for round in 1..=plan.rounds {
            let of = if plan.rounds > 1 {
                format!(" (round {round} of {})", plan.rounds)
            } else {
                String::new()
            };
            if plan.has(Phase::Throughput) {
                progress(&format!("peerchat A -> B: {n} x {size} B{of}"));
                let run = run_ab(
                    &spec_ab,
                    &b,
                    n,
                    size,
                    None,
                    &mut next_tag,
                    plan.stall,
                    &ab_procs,
                )?;
                for (p, r) in peaks.iter_mut().zip(&run.rss_peak) {
                    *p = (*p).max(*r);
                }
                let row = run.row("peerchat, durable", "1→1", size, &["chatd A"], &["chatd B"]);
                progress(&format!("  {} msg/s", report::fmt_int(row.msgs_per_sec)));
                chat_rounds.push(row);
            }
            if let (true, Some(m)) = (plan.has(Phase::Baselines), &mosquitto) {
                progress(&format!("mosquitto QoS 0: {n} x {size} B{of}"));
                match m.run(&next_tag(), 0, size, n, plan.stall) {
                    Ok(row) => {
                        progress(&format!("  {} msg/s", report::fmt_int(row.msgs_per_sec)));
                        qos0_rounds.push(row);
                    }
                    Err(e) => push(&mut report, Err(e)),
                }
            }
        }
        report.throughput.extend(report::median_round(chat_rounds));
        if plan.has(Phase::Baselines) {
            progress(&format!("raw TCP: {} x {size} B", plan.raw_msgs(size)));
            push(&mut report, baseline::raw_tcp(size, plan.raw_msgs(size)));
            progress(&format!("seed way: {} x {size} B", plan.seed_msgs()));
            push(&mut report, baseline::seed(size, plan.seed_msgs()));
            report.throughput.extend(report::median_round(qos0_rounds));
            if let Some(m) = &mosquitto {
                progress(&format!("mosquitto QoS 1: {n} x {size} B"));
                let r = m.run(&next_tag(), 1, size, n, plan.stall);
                push(&mut report, r);
            }
        }
    }
    report.memory.chatd_load_peak_kb = peaks;
    if let Some(m) = &mosquitto {
        report.memory.mosquitto_after_kb = procfs::rss_kb(m.pid);
    }
    drop(mosquitto);

    if plan.has(Phase::Latency) {
        let n = plan.latency_n;
        progress(&format!(
            "latency: {n} x 64 B at {} msg/s",
            args.latency_rate
        ));
        let run = run_ab(
            &spec_ab,
            &b,
            n,
            64,
            Some(args.latency_rate),
            &mut next_tag,
            plan.stall,
            &ab_procs,
        )?;
        let mut l = latency(&run, args.latency_rate, 64, n);
        progress(&format!(
            "latency floor: 2 fsyncs in series, {n} at {} msg/s",
            args.latency_rate
        ));
        match floor::durable_floor(dir.path(), args.latency_rate, n) {
            Ok(f) => l.floor = Some(f),
            Err(e) => report.errors.push(format!("latency floor: {e:#}")),
        }
        match latency_in_ram(args.latency_rate, n, &mut next_tag, plan.stall, args.keep) {
            Ok(r) => l.in_ram = r.map(Box::new),
            Err(e) => report.errors.push(format!("latency in RAM: {e:#}")),
        }
        report.latency = Some(l);
    }

    if plan.has(Phase::Registry) {
        progress(&format!(
            "registry: 4 clients for {:.1} s",
            plan.lookup.as_secs_f64()
        ));
        match registry::lookups(reg.addr, 4, plan.lookup, &["a".into(), "b".into()]) {
            Ok(r) => report.registry = Some(r),
            Err(e) => report.errors.push(format!("registry lookups: {e:#}")),
        }
    }

    if plan.has(Phase::Fan) {
        if let Err(e) = fan(&plan, dir.path(), &reg, &a, &b, &mut next_tag, &mut report) {
            report.errors.push(format!("fan-in/fan-out: {e:#}"));
        }
    }

    std::thread::sleep(Duration::from_secs(1));
    report.memory.chatd_after_kb = vec![
        procfs::rss_kb(pa).unwrap_or(0),
        procfs::rss_kb(pb).unwrap_or(0),
    ];
    report.targets = targets(&report);

    let table = report.table();
    if args.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
    }
    if args.keep {
        let path = dir.keep();
        eprintln!("kept {}", path.display());
    }
    drop(b);
    drop(a);
    drop(reg);
    Ok(0)
}

fn push(report: &mut Report, r: anyhow::Result<Row>) {
    match r {
        Ok(row) => {
            progress(&format!("  {} msg/s", report::fmt_int(row.msgs_per_sec)));
            report.throughput.push(row);
        }
        Err(e) => {
            progress(&format!("  failed: {e:#}"));
            report.errors.push(format!("{e:#}"));
        }
    }
}

/// What one peerchat run saw: every sender and follower, and the processes' usage.
struct ChatRun {
    sends: Vec<SendOut>,
    follows: Vec<FollowOut>,
    expected: usize,
    usage: BTreeMap<String, procfs::Usage>,
    rss_peak: Vec<u64>,
}

impl ChatRun {
    fn row(
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

/// A → B as measured: a short warm-up (the link up, the queues empty), then `n` messages of
/// `size` B, pipelined or paced at `rate` (then with per-message latencies).
#[allow(clippy::too_many_arguments)]
fn run_ab(
    spec_ab: &impl Fn(usize) -> SendSpec,
    b: &Node,
    n: usize,
    size: usize,
    rate: Option<f64>,
    next_tag: &mut impl FnMut() -> String,
    stall: Duration,
    procs: &[(String, u32)],
) -> anyhow::Result<ChatRun> {
    warmup(
        &[spec_ab(50)],
        std::slice::from_ref(&b.socket),
        next_tag,
        stall,
    )?;
    run_chat(
        &[spec_ab(n)],
        &[(b.socket.clone(), n)],
        &next_tag(),
        size,
        rate,
        rate.is_some(),
        stall,
        procs,
    )
}

/// Sends from every `senders` entry at once (pipelined, or paced at `rate`), follows every
/// recipient until it has seen its expected count (or stalls), and records CPU, disk and RSS
/// of `procs` meanwhile.
#[allow(clippy::too_many_arguments)]
fn run_chat(
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
fn warmup(
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

/// The latency run again with a fresh registry and two fresh nodes whose databases live in
/// [`RAM_DIR`] (an `fsync` there costs nothing), so that the table can tell the disk's share
/// of the latency from the software's. `None` where there is no such directory. Optional: a
/// failure here (even a daemon that does not start) is reported, not fatal.
fn latency_in_ram(
    rate: f64,
    n: usize,
    next_tag: &mut impl FnMut() -> String,
    stall: Duration,
    keep: bool,
) -> anyhow::Result<Option<Latency>> {
    if !Path::new(RAM_DIR).is_dir() {
        return Ok(None);
    }
    progress(&format!(
        "latency again with fresh nodes, databases in RAM ({RAM_DIR}): {n} x 64 B at {rate} msg/s"
    ));
    let dir = tempfile::Builder::new()
        .prefix("pc-ram")
        .tempdir_in(RAM_DIR)
        .map_err(|e| anyhow::anyhow!("creating a directory in {RAM_DIR}: {e}"))?;
    // The testkit's start functions panic when a daemon does not come up.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let reg = Registry::start(dir.path());
        let a = Node::start_with(dir.path(), "a", reg.addr, &[]);
        let b = Node::start_with(dir.path(), "b", reg.addr, &[]);
        let procs = vec![
            ("chatd A".to_string(), a.daemon.child.id()),
            ("chatd B".to_string(), b.daemon.child.id()),
        ];
        let spec = |n| SendSpec {
            socket: a.socket.clone(),
            to: vec!["b".into()],
            n,
        };
        run_ab(&spec, &b, n, 64, Some(rate), next_tag, stall, &procs)
    }))
    .map_err(|_| anyhow::anyhow!("a daemon did not start (see the message above)"));
    if keep {
        eprintln!("kept {}", dir.keep().display());
    }
    Ok(Some(latency(&run??, rate, 64, n)))
}

fn latency(run: &ChatRun, rate: f64, size: usize, n: usize) -> Latency {
    let f = &run.follows[0];
    let s = &run.sends[0];
    let mut l = f.latencies_ns.clone();
    l.sort_unstable();
    let mut acc = s.accept_latencies_ns.clone();
    acc.sort_unstable();
    let us = |v: f64| v / 1e3;
    let mut notes = Vec::new();
    if let Some(e) = &s.first_error {
        notes.push(format!("{} send errors, first: {e}", s.errors));
    }
    if let Some(e) = &f.error {
        notes.push(e.clone());
    }
    Latency {
        rate_per_sec: rate,
        body_bytes: size,
        messages: n,
        received: f.count,
        p50_us: us(report::percentile(&l, 50.0)),
        p99_us: us(report::percentile(&l, 99.0)),
        p999_us: us(report::percentile(&l, 99.9)),
        max_us: us(l.last().copied().unwrap_or(0) as f64),
        mean_us: us(l.iter().sum::<u64>() as f64 / l.len().max(1) as f64),
        accept_p50_us: us(report::percentile(&acc, 50.0)),
        accept_p99_us: us(report::percentile(&acc, 99.0)),
        accept_p999_us: us(report::percentile(&acc, 99.9)),
        late_sends: s.late,
        floor: None,
        in_ram: None,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// Fan-in (1, 4, 16 nodes → b) and fan-out (a → 16 nodes), 64 B bodies.
fn fan(
    plan: &Plan,
    dir: &Path,
    reg: &Registry,
    a: &Node,
    b: &Node,
    next_tag: &mut impl FnMut() -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    let size = 64;
    progress("starting 16 more chatd nodes (n01..n16)");
    let nodes: Vec<Node> = (1..=16)
        .map(|i| Node::start_with(dir, &format!("n{i:02}"), reg.addr, &[]))
        .collect();
    for k in [1usize, 4, 16] {
        let per = (plan.n / k).max(1);
        let senders: Vec<SendSpec> = nodes[..k]
            .iter()
            .map(|n| SendSpec {
                socket: n.socket.clone(),
                to: vec!["b".into()],
                n: per,
            })
            .collect();
        let warm: Vec<SendSpec> = senders
            .iter()
            .map(|s| SendSpec {
                socket: s.socket.clone(),
                to: s.to.clone(),
                n: 20,
            })
            .collect();
        warmup(&warm, std::slice::from_ref(&b.socket), next_tag, plan.stall)?;
        progress(&format!("fan-in: {k} nodes x {per} x {size} B -> b"));
        let mut procs: Vec<(String, u32)> = nodes[..k]
            .iter()
            .map(|n| (format!("chatd {}", n.name), n.daemon.child.id()))
            .collect();
        procs.push(("chatd b".into(), b.daemon.child.id()));
        let run = run_chat(
            &senders,
            &[(b.socket.clone(), per * k)],
            &next_tag(),
            size,
            None,
            false,
            plan.stall,
            &procs,
        )?;
        let send_labels: Vec<String> = procs[..k].iter().map(|p| p.0.clone()).collect();
        let send_refs: Vec<&str> = send_labels.iter().map(String::as_str).collect();
        let row = run.row(
            "peerchat, durable",
            &format!("{k}→1"),
            size,
            &send_refs,
            &["chatd b"],
        );
        progress(&format!("  {} msg/s", report::fmt_int(row.msgs_per_sec)));
        report.fan.push(row);
    }
    // Fan-out: every message to all 16 recipients.
    let per = (plan.n / 16).max(10);
    let to: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let sockets: Vec<PathBuf> = nodes.iter().map(|n| n.socket.clone()).collect();
    let spec = |n| SendSpec {
        socket: a.socket.clone(),
        to: to.clone(),
        n,
    };
    warmup(&[spec(10)], &sockets, next_tag, plan.stall)?;
    progress(&format!(
        "fan-out: a -> 16 nodes, {per} x {size} B, each to all 16"
    ));
    let mut procs = vec![("chatd a".to_string(), a.daemon.child.id())];
    procs.extend(
        nodes
            .iter()
            .map(|n| (format!("chatd {}", n.name), n.daemon.child.id())),
    );
    let recips: Vec<(PathBuf, usize)> = sockets.iter().map(|s| (s.clone(), per)).collect();
    let run = run_chat(
        &[spec(per)],
        &recips,
        &next_tag(),
        size,
        None,
        false,
        plan.stall,
        &procs,
    )?;
    let recv_labels: Vec<String> = procs[1..].iter().map(|p| p.0.clone()).collect();
    let recv_refs: Vec<&str> = recv_labels.iter().map(String::as_str).collect();
    let mut row = run.row("peerchat, durable", "1→16", size, &["chatd a"], &recv_refs);
    row.note = Some(
        [
            row.note.take(),
            Some(format!("{} sends of 16 recipients each", row.sent)),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; "),
    );
    progress(&format!(
        "  {} deliveries/s",
        report::fmt_int(row.msgs_per_sec)
    ));
    report.fan.push(row);
    drop(nodes);
    Ok(())
}

fn targets(r: &Report) -> Vec<Target> {
    let mut t = Vec::new();
    let find = |sys: &str| {
        r.throughput
            .iter()
            .find(|x| x.system == sys && x.body_bytes == 64)
    };
    let chat = find("peerchat, durable");
    let q0 = find("mosquitto QoS 0");
    if let Some(c) = chat {
        let floor = q0.map(|q| q.msgs_per_sec.max(50_000.0)).unwrap_or(50_000.0);
        t.push(Target {
            what: "durable throughput A->B, 64 B".into(),
            target: match q0 {
                Some(q) => format!(
                    ">= mosquitto QoS 0 ({}/s measured), never below 50,000/s",
                    report::fmt_int(q.msgs_per_sec)
                ),
                None => ">= mosquitto QoS 0 (not measured; ~90,000/s), never below 50,000/s".into(),
            },
            measured: format!("{}/s", report::fmt_int(c.msgs_per_sec)),
            met: Some(c.complete && c.msgs_per_sec >= floor),
        });
    }
    if let Some(l) = &r.latency {
        t.push(Target {
            what: format!(
                "p99 send->follow at {} msg/s",
                report::fmt_int(l.rate_per_sec)
            ),
            target: {
                let mut t = "<= 1 ms".to_string();
                if let Some(f) = &l.floor {
                    t += &format!(
                        "; the floor of 2 fsyncs in series measured {:.2} ms in this run",
                        f.p99_us / 1e3
                    );
                }
                if let Some(r) = l.in_ram.as_ref().filter(|r| r.received == r.messages) {
                    t += &format!(
                        "; with the databases in RAM peerchat measured {:.2} ms",
                        r.p99_us / 1e3
                    );
                }
                t
            },
            measured: format!("{:.2} ms", l.p99_us / 1e3),
            met: Some(l.received == l.messages && l.p99_us <= 1000.0),
        });
    }
    if let Some(&kb) = r.memory.chatd_idle_kb.iter().max() {
        t.push(Target {
            what: "chatd idle RSS".into(),
            target: "<= 10 MB".into(),
            measured: report::fmt_mib(kb),
            met: Some(kb * 1024 <= 10_000_000),
        });
    }
    if let Some(g) = &r.registry {
        t.push(Target {
            what: "registry lookups".into(),
            target: ">= 100,000/s".into(),
            measured: format!("{}/s", report::fmt_int(g.per_sec)),
            met: Some(g.errors == 0 && g.per_sec >= 100_000.0),
        });
    }
    t
}

fn machine(dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // The mount holding the temporary directory: where SQLite fsyncs.
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && canon.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} {}", f[2], f[0], f[1])))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, s)| s)
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model: model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        mem_total_kb: mem,
        temp_dir: dir.display().to_string(),
        temp_fs: fs,
    }
}

/// `git describe`-like: short commit, plus a mark when the tree has local changes.
fn commit() -> String {
    let ws = peerchat_testkit::bin_dir()
        .ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&ws)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} + uncommitted changes")
            } else {
                c
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

fn date_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}
