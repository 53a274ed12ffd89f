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

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use peerchat_testkit::{Node, Registry};

use crate::cli::{Args, Phase, Plan};
use crate::environment::{commit, date_utc, machine};
use crate::report::Report;
use crate::runs::{warmup, Pair};
use crate::util::{now_ns, progress};
use crate::{fan, latency, procfs, registry, targets, throughput};

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

/// Starts the registry and nodes a and b, runs the selected phases in order and prints the
/// report.
fn run(args: Args) -> anyhow::Result<i32> {
    let plan = Plan::from_args(&args)?;
    // Its own daemons (etcd, two registryd, then SQLite) and its own table.
    if plan.phases == [Phase::RegistryScale] {
        return crate::registry_scale::run(
            args.scale_names,
            Duration::from_secs(args.scale_secs),
            args.json,
        );
    }
    let dir = peerchat_testkit::tempdir();
    let mut report = new_report(&args, &plan, dir.path());

    progress(&format!(
        "starting registryd and chatd a, b in {} (daemons from {})",
        dir.path().display(),
        peerchat_testkit::bin_dir().display()
    ));
    let reg = Registry::start(dir.path());
    let a = Node::start_with(dir.path(), "a", reg.addr, &[]);
    let b = Node::start_with(dir.path(), "b", reg.addr, &[]);
    let pair = Pair::new(&a, &b, dir.path());
    std::thread::sleep(Duration::from_secs(1));
    report.memory.chatd_idle_kb = rss_of(&pair);
    report.memory.registryd_idle_kb = procfs::rss_kb(reg.daemon.child.id()).unwrap_or(0);

    let mut tag_no = 0usize;
    let mut next_tag = || {
        tag_no += 1;
        format!("T{tag_no}.")
    };
    let mosquitto = throughput::start_mosquitto(&args, &plan, dir.path(), &mut report);
    let redis = throughput::start_redis(&args, &plan, dir.path(), &mut report);

    // Connect A to B (resolve, link up) before measuring.
    warmup(
        &[pair.spec(200)],
        std::slice::from_ref(&b.socket),
        &mut next_tag,
        plan.stall,
    )?;

    throughput::run(
        &plan,
        &pair,
        (mosquitto.as_ref(), redis.as_ref()),
        &mut next_tag,
        &mut report,
    )?;
    drop(redis);
    if let Some(m) = &mosquitto {
        report.memory.mosquitto_after_kb = procfs::rss_kb(m.pid);
    }
    drop(mosquitto);

    if plan.has(Phase::Latency) {
        latency::run(
            &plan,
            args.latency_rate,
            dir.path(),
            &pair,
            &mut next_tag,
            args.keep,
            &mut report,
        )?;
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
        if let Err(e) = fan::run(&plan, dir.path(), &reg, &a, &b, &mut next_tag, &mut report) {
            report.errors.push(format!("fan-in/fan-out: {e:#}"));
        }
    }

    std::thread::sleep(Duration::from_secs(1));
    report.memory.chatd_after_kb = rss_of(&pair);
    report.targets = targets::targets(&report);
    print_report(&args, &report)?;
    if args.keep {
        let path = dir.keep();
        eprintln!("kept {}", path.display());
    }
    drop(pair);
    drop(b);
    drop(a);
    drop(reg);
    Ok(0)
}

/// The report's header: the command, date, commit, machine and settings of this run.
fn new_report(args: &Args, plan: &Plan, dir: &Path) -> Report {
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date_utc: date_utc(),
        commit: commit(),
        machine: machine(dir),
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
    report
}

/// RSS of chatd A and B, in KiB (0 when unreadable).
fn rss_of(pair: &Pair) -> Vec<u64> {
    pair.procs
        .iter()
        .map(|(_, pid)| procfs::rss_kb(*pid).unwrap_or(0))
        .collect()
}

/// The table on stdout, or with `--json` the JSON there and the table on stderr.
fn print_report(args: &Args, report: &Report) -> anyhow::Result<()> {
    let table = report.table();
    if args.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{table}");
    }
    Ok(())
}
