//! The throughput phases: peerchat A → B and the baselines (raw TCP, the seed's way,
//! mosquitto QoS 0 and 1) for each body size.

use std::path::Path;

use crate::baseline::{self, Mosquitto};
use crate::cli::{Args, Phase, Plan};
use crate::redis::Redis;
use crate::report::{self, Report, Row};
use crate::runs::Pair;
use crate::util::progress;

/// Starts mosquitto when the baselines run and it is installed; the report says which.
pub fn start_mosquitto(
    args: &Args,
    plan: &Plan,
    dir: &Path,
    report: &mut Report,
) -> Option<Mosquitto> {
    if args.no_mosquitto || !plan.has(Phase::Baselines) {
        report.mosquitto = "not run (--no-mosquitto or baselines not selected)".into();
        return None;
    }
    match Mosquitto::start(dir) {
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
}

/// Starts redis-server when the baselines run and it is installed; the report says which.
pub fn start_redis(args: &Args, plan: &Plan, dir: &Path, report: &mut Report) -> Option<Redis> {
    if args.no_redis || !plan.has(Phase::Baselines) {
        report.redis = "not run (--no-redis or baselines not selected)".into();
        return None;
    }
    match Redis::start(dir) {
        Ok(Some(r)) => {
            report.redis = format!(
                "{}, appendonly yes, appendfsync always (acknowledged once its AOF is fsync'd; one copy)",
                r.version
            );
            Some(r)
        }
        Ok(None) => {
            report.redis = "NOT INSTALLED: no Redis baseline (apt-get install redis-server)".into();
            None
        }
        Err(e) => {
            report.redis = format!("failed to start: {e:#}");
            None
        }
    }
}

/// Every body size in turn: the alternating rounds, the command-line pipeline, then the
/// baselines. Records chatd's peak RSS under load.
pub fn run(
    plan: &Plan,
    pair: &Pair,
    peers: (Option<&Mosquitto>, Option<&Redis>),
    next_tag: &mut impl FnMut() -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (mosquitto, redis) = peers;
    let mut peaks = vec![0u64; 2];
    for &size in &plan.sizes {
        let (chat_rounds, qos0_rounds) =
            rounds(plan, pair, mosquitto, size, next_tag, &mut peaks, report)?;
        report.throughput.extend(report::median_round(chat_rounds));
        if plan.has(Phase::Cli) {
            let n = plan.msgs(size);
            progress(&format!(
                "chatctl send -l -> inbox --follow: {n} x {size} B"
            ));
            push(
                report,
                crate::pipeline::run(pair, &next_tag(), size, n, plan.stall),
            );
        }
        if plan.has(Phase::Baselines) {
            baselines(plan, mosquitto, size, qos0_rounds, next_tag, report);
            if let Some(r) = redis {
                let n = plan.msgs(size);
                progress(&format!(
                    "Redis XADD -> XREAD, appendfsync always: {n} x {size} B"
                ));
                push(report, r.run(&next_tag(), size, n, plan.stall));
            }
        }
    }
    if plan.has(Phase::Throughput) {
        progress("disk: sequential writes with fdatasync");
        match crate::disk::sequential_write(&pair.dir) {
            Ok(d) => report.disk = Some(d),
            Err(e) => report.errors.push(format!("disk bandwidth: {e:#}")),
        }
    }
    report.memory.chatd_load_peak_kb = peaks;
    Ok(())
}

/// peerchat and mosquitto QoS 0 alternate round by round, so that both see the same stretch
/// of machine noise; the median round of each goes into the table.
fn rounds(
    plan: &Plan,
    pair: &Pair,
    mosquitto: Option<&Mosquitto>,
    size: usize,
    next_tag: &mut impl FnMut() -> String,
    peaks: &mut [u64],
    report: &mut Report,
) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let n = plan.msgs(size);
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
            let run = pair.run(n, size, None, next_tag, plan.stall)?;
            for (p, r) in peaks.iter_mut().zip(&run.rss_peak) {
                *p = (*p).max(*r);
            }
            let row = run.row("peerchat, durable", "1→1", size, &["chatd A"], &["chatd B"]);
            progress(&format!("  {} msg/s", report::fmt_int(row.msgs_per_sec)));
            chat_rounds.push(row);
        }
        if let (true, Some(m)) = (plan.has(Phase::Baselines), mosquitto) {
            progress(&format!("mosquitto QoS 0: {n} x {size} B{of}"));
            match m.run(&next_tag(), 0, size, n, plan.stall) {
                Ok(row) => {
                    progress(&format!("  {} msg/s", report::fmt_int(row.msgs_per_sec)));
                    qos0_rounds.push(row);
                }
                Err(e) => push(report, Err(e)),
            }
        }
    }
    Ok((chat_rounds, qos0_rounds))
}

/// Raw TCP, the seed's way, the QoS 0 rounds' median and mosquitto QoS 1, for one body size.
fn baselines(
    plan: &Plan,
    mosquitto: Option<&Mosquitto>,
    size: usize,
    qos0_rounds: Vec<Row>,
    next_tag: &mut impl FnMut() -> String,
    report: &mut Report,
) {
    progress(&format!("raw TCP: {} x {size} B", plan.raw_msgs(size)));
    push(report, baseline::raw_tcp(size, plan.raw_msgs(size)));
    progress(&format!("seed way: {} x {size} B", plan.seed_msgs()));
    push(report, baseline::seed(size, plan.seed_msgs()));
    report.throughput.extend(report::median_round(qos0_rounds));
    if let Some(m) = mosquitto {
        let n = plan.msgs(size);
        progress(&format!("mosquitto QoS 1: {n} x {size} B"));
        let r = m.run(&next_tag(), 1, size, n, plan.stall);
        push(report, r);
    }
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
