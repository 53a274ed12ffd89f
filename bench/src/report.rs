//! Results: one serializable report (`--json`) and the table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::procfs::Usage;
use crate::registry::LookupResult;

/// One throughput measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: String,
    /// Senders → recipients, e.g. `1→1`, `16→1`, `1→16`.
    pub scenario: String,
    pub body_bytes: usize,
    /// Messages submitted (for a message to several recipients: once).
    pub sent: usize,
    /// Messages counted at the receiving end (per recipient: a message to 16 counts 16 times).
    pub received: usize,
    pub expected: usize,
    /// From the first submission to the last message counted.
    pub secs: f64,
    /// `received / secs`.
    pub msgs_per_sec: f64,
    /// Body bytes received per second, MB = 10^6 bytes.
    pub mb_per_sec: f64,
    /// peerchat: `send`s accepted (committed) per second by the sending node(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_per_sec: Option<f64>,
    /// peerchat: CPU time of the sending chatd(s) per received message, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_cpu_us_per_msg: Option<f64>,
    /// peerchat: CPU time of the receiving chatd(s) per received message, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_cpu_us_per_msg: Option<f64>,
    /// peerchat: bytes written to storage by all chatd per received message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes_per_msg: Option<f64>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Per process (e.g. `chatd A`): CPU, per-thread CPU and disk writes during the run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, Usage>,
}

impl Row {
    pub fn new(
        system: &str,
        scenario: &str,
        body_bytes: usize,
        sent: usize,
        received: usize,
        expected: usize,
        secs: f64,
    ) -> Row {
        let rate = if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        };
        Row {
            system: system.into(),
            scenario: scenario.into(),
            body_bytes,
            sent,
            received,
            expected,
            secs,
            msgs_per_sec: rate,
            mb_per_sec: rate * body_bytes as f64 / 1e6,
            accepted_per_sec: None,
            sender_cpu_us_per_msg: None,
            recipient_cpu_us_per_msg: None,
            disk_bytes_per_msg: None,
            complete: received >= expected,
            note: None,
            usage: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub rate_per_sec: f64,
    pub body_bytes: usize,
    pub messages: usize,
    pub received: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Write of the `send` to its `accepted` reply (the sender's commit).
    pub accept_p50_us: f64,
    pub accept_p99_us: f64,
    pub accept_p999_us: f64,
    /// A's reply to the arrival at B's follower (the link, B's commit, the follower).
    pub after_accept_p50_us: f64,
    pub after_accept_p99_us: f64,
    /// The slowest 1 % of messages: mean time to A's reply, and mean time after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_split_us: Option<(f64, f64)>,
    /// Sends written more than 1 ms after their scheduled time (the client fell behind).
    pub late_sends: usize,
    /// The physical floor measured right after, at the same rate: two `fsync`ed writes in series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<crate::floor::Floor>,
    /// The same run with a fresh registry and two fresh nodes whose databases are on tmpfs,
    /// where `fsync` costs nothing (not a shipped setting): what the software path costs
    /// without the disk. Fresh nodes: in a full run the disk nodes have the throughput phases'
    /// data behind them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_ram: Option<Box<Latency>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Where chat-bench runs the latency phase a second time with the databases in RAM: a tmpfs.
pub const RAM_DIR: &str = "/dev/shm";

#[derive(Debug, Clone, Serialize, Default)]
pub struct Memory {
    /// VmRSS of each chatd (A, B) 1 s after start, before any message; KiB.
    pub chatd_idle_kb: Vec<u64>,
    /// Highest VmRSS of each chatd (A, B) sampled every 20 ms during the A→B throughput runs.
    pub chatd_load_peak_kb: Vec<u64>,
    /// VmRSS of each chatd (A, B) at the end, idle again.
    pub chatd_after_kb: Vec<u64>,
    pub registryd_idle_kb: u64,
    /// mosquitto's VmRSS after its runs, for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mosquitto_after_kb: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_kb: u64,
    pub temp_dir: String,
    pub temp_fs: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub command: String,
    pub date_utc: String,
    pub commit: String,
    pub machine: Machine,
    pub settings: BTreeMap<String, String>,
    /// 1→1 throughput per body size: peerchat and the baselines.
    pub throughput: Vec<Row>,
    pub latency: Option<Latency>,
    pub registry: Option<LookupResult>,
    pub memory: Memory,
    /// Fan-in (k nodes → 1) and fan-out (1 node → 16) with peerchat.
    pub fan: Vec<Row>,
    pub mosquitto: String,
    pub redis: String,
    /// The disk's sequential write bandwidth with fdatasync (the throughput phase).
    pub disk: Option<crate::disk::DiskBandwidth>,
    pub targets: Vec<Target>,
    pub errors: Vec<String>,
}

fn int(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn size(b: usize) -> String {
    if b >= 1024 && b % 1024 == 0 {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// Accept rate, CPU µs per message and disk bytes per message for the peerchat processes.
fn usage_note(r: &Row) -> String {
    let mut parts = Vec::new();
    if let Some(a) = r.accepted_per_sec {
        parts.push(format!("accepted {}/s", int(a)));
    }
    if let (Some(s), Some(d)) = (r.sender_cpu_us_per_msg, r.recipient_cpu_us_per_msg) {
        parts.push(format!("CPU µs/msg sender {s:.0} recipient {d:.0}"));
    }
    if let Some(b) = r.usage.get("bench client") {
        parts.push(format!(
            "client {:.0}",
            b.cpu_secs * 1e6 / r.received.max(1) as f64
        ));
    }
    if let Some(d) = r.disk_bytes_per_msg {
        // Per node too: the bound counts each node's durable copy of the body.
        let per_node: Vec<String> = ["chatd A", "chatd B"]
            .iter()
            .filter_map(|k| r.usage.get(*k))
            .map(|u| {
                format!(
                    "{:.1}",
                    u.disk_write_bytes as f64 / r.received.max(1) as f64 / 1e3
                )
            })
            .collect();
        if per_node.len() == 2 {
            parts.push(format!(
                "disk {:.1} KB/msg (A {}, B {})",
                d / 1e3,
                per_node[0],
                per_node[1]
            ));
        } else {
            parts.push(format!("disk {:.1} KB/msg", d / 1e3));
        }
    }
    parts.join("; ")
}

impl Report {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        let _ = writeln!(
            t,
            "chat-bench: peerchat on loopback, durable (shipped settings), with baselines"
        );
        let _ = writeln!(
            t,
            "machine: {} CPUs, {}, Linux {}, {:.1} GiB RAM; temp dir {} ({})",
            m.cpus,
            m.cpu_model,
            m.kernel,
            m.mem_total_kb as f64 / 1024.0 / 1024.0,
            m.temp_dir,
            m.temp_fs
        );
        let _ = writeln!(t, "commit {}; {}", self.commit, self.date_utc);
        let _ = writeln!(t, "command: {}", self.command);
        let _ = writeln!(t);

        let qos0: BTreeMap<usize, f64> = self
            .throughput
            .iter()
            .filter(|r| r.system == "mosquitto QoS 0")
            .map(|r| (r.body_bytes, r.msgs_per_sec))
            .collect();
        let _ = writeln!(
            t,
            "Throughput, one sender -> one recipient (peerchat: counted when B's follower printed it)"
        );
        let _ = writeln!(
            t,
            "{:<8} {:<34} {:>9} {:>7} {:>12} {:>9} {:>8}  notes",
            "body", "system", "msgs", "secs", "msg/s", "MB/s", "vs QoS0"
        );
        for r in &self.throughput {
            let vs = match qos0.get(&r.body_bytes) {
                Some(q) if *q > 0.0 => format!("{:.2}x", r.msgs_per_sec / q),
                _ => "-".into(),
            };
            let mut note = usage_note(r);
            if !r.complete {
                note = format!(
                    "INCOMPLETE {} of {}{}{}",
                    r.received,
                    r.expected,
                    if note.is_empty() { "" } else { "; " },
                    note
                );
            }
            if let Some(n) = &r.note {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(n);
            }
            let _ = writeln!(
                t,
                "{:<8} {:<34} {:>9} {:>7.2} {:>12} {:>9.2} {:>8}  {}",
                size(r.body_bytes),
                r.system,
                r.received,
                r.secs,
                int(r.msgs_per_sec),
                r.mb_per_sec,
                vs,
                note
            );
        }
        let _ = writeln!(t, "mosquitto: {}", self.mosquitto);
        let _ = writeln!(t, "redis: {}", self.redis);
        if let Some(d) = &self.disk {
            let _ = writeln!(
                t,
                "disk: sequential {} KiB writes + fdatasync: {:.0} MB/s; ceiling for two durable copies of a body: {}",
                d.chunk_bytes / 1024,
                d.bytes_per_sec / 1e6,
                self.throughput
                    .iter()
                    .filter(|r| r.system == "peerchat, durable")
                    .map(|r| {
                        let c = d.ceiling(r.body_bytes, 2);
                        format!("{} {}/s (peerchat {:.2}x)", size(r.body_bytes), int(c), r.msgs_per_sec / c)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(t);

        if let Some(l) = &self.latency {
            let _ = writeln!(
                t,
                "Latency send -> follow at {} msg/s, {} bodies, {} messages ({} arrived, {} sends late):",
                int(l.rate_per_sec),
                size(l.body_bytes),
                l.messages,
                l.received,
                l.late_sends
            );
            let _ = writeln!(
                t,
                "  p50 {}  p99 {}  p99.9 {}  max {}  mean {}",
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us),
                ms(l.mean_us)
            );
            let _ = writeln!(
                t,
                "  of which send -> accepted (A's commit): p50 {}  p99 {}  p99.9 {}",
                ms(l.accept_p50_us),
                ms(l.accept_p99_us),
                ms(l.accept_p999_us)
            );
            let _ = writeln!(
                t,
                "  accepted -> follow (the link, B's commit, the follower): p50 {}  p99 {}",
                ms(l.after_accept_p50_us),
                ms(l.after_accept_p99_us)
            );
            if let Some((a, rest)) = l.tail_split_us {
                let _ = writeln!(
                    t,
                    "  the slowest 1 %: on average {} until A's reply, {} after it",
                    ms(a),
                    ms(rest)
                );
            }
            if let Some(f) = &l.floor {
                let _ = writeln!(
                    t,
                    "  floor on this disk (2 x (4 KiB write + fsync) in series over loopback, group commit, same rate): p50 {}  p99 {}  p99.9 {}  max {} (one fsync: p50 {}  p99 {})",
                    ms(f.p50_us),
                    ms(f.p99_us),
                    ms(f.p999_us),
                    ms(f.max_us),
                    ms(f.sync_p50_us),
                    ms(f.sync_p99_us)
                );
            }
            if let Some(r) = &l.in_ram {
                let _ = writeln!(
                    t,
                    "  the same with a fresh registry and nodes whose databases are in RAM ({}: fsync costs nothing; not a shipped setting; {} of {} arrived, {} sends late): p50 {}  p99 {}  p99.9 {}  (send -> accepted p99 {})",
                    RAM_DIR,
                    r.received,
                    r.messages,
                    r.late_sends,
                    ms(r.p50_us),
                    ms(r.p99_us),
                    ms(r.p999_us),
                    ms(r.accept_p99_us)
                );
                if let Some(n) = &r.note {
                    let _ = writeln!(t, "    {n}");
                }
            }
            if let Some(n) = &l.note {
                let _ = writeln!(t, "  {n}");
            }
            let _ = writeln!(t);
        }
        if let Some(r) = &self.registry {
            let _ = writeln!(
                t,
                "Registry lookups: {} clients, persistent connections, {} requests in flight each: {} lookups/s ({} in {:.2} s, {} errors)",
                r.clients,
                r.pipeline_depth,
                int(r.per_sec),
                int(r.lookups as f64),
                r.secs,
                r.errors
            );
            let _ = writeln!(t);
        }
        let mem = &self.memory;
        let list = |v: &[u64]| {
            if v.iter().all(|k| *k == 0) {
                return "not measured".to_string();
            }
            v.iter()
                .zip(["A", "B"])
                .map(|(kb, n)| format!("{n} {}", mib(*kb)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            t,
            "Memory (VmRSS): chatd idle {}; peak under load {}; idle after the runs {}; registryd idle {}{}",
            list(&mem.chatd_idle_kb),
            list(&mem.chatd_load_peak_kb),
            list(&mem.chatd_after_kb),
            mib(mem.registryd_idle_kb),
            mem.mosquitto_after_kb
                .map(|k| format!("; mosquitto {}", mib(k)))
                .unwrap_or_default()
        );
        let _ = writeln!(t);

        if !self.fan.is_empty() {
            let _ = writeln!(
                t,
                "Fan-in / fan-out (peerchat, counted at the recipients' followers; 1->16: every message to all 16)"
            );
            let _ = writeln!(
                t,
                "{:<8} {:<10} {:>9} {:>7} {:>12} {:>9}  notes",
                "body", "senders->", "msgs", "secs", "msg/s", "MB/s"
            );
            for r in &self.fan {
                let mut note = usage_note(r);
                if !r.complete {
                    note = format!("INCOMPLETE {} of {}; {}", r.received, r.expected, note);
                }
                if let Some(n) = &r.note {
                    note.push_str("; ");
                    note.push_str(n);
                }
                let _ = writeln!(
                    t,
                    "{:<8} {:<10} {:>9} {:>7.2} {:>12} {:>9.2}  {}",
                    size(r.body_bytes),
                    r.scenario,
                    r.received,
                    r.secs,
                    int(r.msgs_per_sec),
                    r.mb_per_sec,
                    note
                );
            }
            let _ = writeln!(t);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(t, "Targets (2-core machine):");
            for g in &self.targets {
                let mark = match g.met {
                    Some(true) => "met ",
                    Some(false) => "MISS",
                    None => " -- ",
                };
                let _ = writeln!(
                    t,
                    "  [{mark}] {}: {} (target {})",
                    g.what, g.measured, g.target
                );
            }
        }
        for e in &self.errors {
            let _ = writeln!(t, "error: {e}");
        }
        t
    }
}

/// The median of several rounds of one measurement (by msg/s; of an even count, the lower
/// middle), noting every round's rate. Nothing for no rounds.
pub fn median_round(mut rounds: Vec<Row>) -> Option<Row> {
    if rounds.len() <= 1 {
        return rounds.pop();
    }
    rounds.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
    let all = rounds
        .iter()
        .map(|r| int(r.msgs_per_sec))
        .collect::<Vec<_>>()
        .join(", ");
    let k = rounds.len();
    let mut row = rounds.swap_remove((k - 1) / 2);
    let note = format!("median of {k} rounds ({all} msg/s, sorted)");
    row.note = Some(match row.note.take() {
        Some(n) => format!("{note}; {n}"),
        None => note,
    });
    Some(row)
}

/// Formats a count the way the table does (for targets).
pub fn fmt_int(v: f64) -> String {
    int(v)
}

pub fn fmt_mib(kb: u64) -> String {
    mib(kb)
}
