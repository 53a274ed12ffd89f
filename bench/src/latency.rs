//! The latency phase: send → follow at a fixed rate, its physical floor on the same disk, and
//! the same run with the databases in RAM.

use std::path::Path;
use std::time::Duration;

use peerchat_testkit::{Node, Registry};

use crate::cli::Plan;
use crate::floor;
use crate::report::{Latency, Report, RAM_DIR};
use crate::runs::{ChatRun, Pair};
use crate::util::{percentile, progress};

/// Measures the latency of `pair` at `rate`, then the floor and the in-RAM run (those two are
/// optional: their failures go to the report's errors).
pub fn run(
    plan: &Plan,
    rate: f64,
    dir: &Path,
    pair: &Pair,
    next_tag: &mut impl FnMut() -> String,
    keep: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = plan.latency_n;
    progress(&format!("latency: {n} x 64 B at {rate} msg/s"));
    let run = pair.run(n, 64, Some(rate), next_tag, plan.stall)?;
    let mut l = latency(&run, rate, 64, n);
    progress(&format!(
        "latency floor: 2 fsyncs in series, {n} at {rate} msg/s"
    ));
    match floor::durable_floor(dir, rate, n) {
        Ok(f) => l.floor = Some(f),
        Err(e) => report.errors.push(format!("latency floor: {e:#}")),
    }
    match latency_in_ram(rate, n, next_tag, plan.stall, keep) {
        Ok(r) => l.in_ram = r.map(Box::new),
        Err(e) => report.errors.push(format!("latency in RAM: {e:#}")),
    }
    report.latency = Some(l);
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
        Pair::new(&a, &b, dir.path()).run(n, 64, Some(rate), next_tag, stall)
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
    // Replies and arrivals both come in send order, so message i is entry i of each: the part
    // after A's reply (the link, B's commit, the follower), and for the slowest 1 % how their
    // time splits between A's commit and that rest.
    let (mut rest, mut tail) = (Vec::new(), (0.0, 0.0, 0usize));
    if f.latencies_ns.len() == s.accept_latencies_ns.len() {
        let pairs: Vec<(u64, u64)> = f
            .latencies_ns
            .iter()
            .zip(&s.accept_latencies_ns)
            .map(|(&total, &acc)| (total, acc.min(total)))
            .collect();
        rest = pairs.iter().map(|(t, a)| t - a).collect();
        rest.sort_unstable();
        let cut = percentile(&l, 99.0) as u64;
        for (t, a) in pairs.iter().filter(|(t, _)| *t >= cut) {
            tail = (tail.0 + *a as f64, tail.1 + (t - a) as f64, tail.2 + 1);
        }
    }
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
        p50_us: us(percentile(&l, 50.0)),
        p99_us: us(percentile(&l, 99.0)),
        p999_us: us(percentile(&l, 99.9)),
        max_us: us(l.last().copied().unwrap_or(0) as f64),
        mean_us: us(l.iter().sum::<u64>() as f64 / l.len().max(1) as f64),
        accept_p50_us: us(percentile(&acc, 50.0)),
        accept_p99_us: us(percentile(&acc, 99.0)),
        accept_p999_us: us(percentile(&acc, 99.9)),
        after_accept_p50_us: us(percentile(&rest, 50.0)),
        after_accept_p99_us: us(percentile(&rest, 99.0)),
        tail_split_us: (tail.2 > 0)
            .then(|| (us(tail.0 / tail.2 as f64), us(tail.1 / tail.2 as f64))),
        late_sends: s.late,
        floor: None,
        in_ram: None,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}
