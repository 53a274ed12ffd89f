//! The targets of the issue, checked against a finished report.

use crate::report::{self, Latency, Report, Row, Target};

pub fn targets(r: &Report) -> Vec<Target> {
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
    issue22_throughput(r, &mut t);
    if let Some(l) = &r.latency {
        latency(l, &mut t);
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

fn row<'a>(r: &'a Report, system: &str, size: usize) -> Option<&'a Row> {
    r.throughput
        .iter()
        .find(|x| x.system == system && x.body_bytes == size)
}

/// `measured / of` as a ratio target; unmet when either side is missing or incomplete.
fn ratio(what: String, target: f64, ours: Option<&Row>, theirs: Option<&Row>) -> Target {
    match (ours, theirs) {
        (Some(o), Some(p)) if p.msgs_per_sec > 0.0 => Target {
            what,
            target: format!(
                ">= {target:.1}x ({} {}/s)",
                p.system,
                report::fmt_int(p.msgs_per_sec)
            ),
            measured: format!(
                "{:.2}x ({}/s)",
                o.msgs_per_sec / p.msgs_per_sec,
                report::fmt_int(o.msgs_per_sec)
            ),
            met: Some(o.complete && o.msgs_per_sec >= target * p.msgs_per_sec),
        },
        _ => Target {
            what,
            target: format!(">= {target:.1}x"),
            measured: "not measured (a peer is not installed, or a run failed)".into(),
            met: None,
        },
    }
}

/// Issue 22's throughput targets: the command line, 1 KiB, 16 KiB against the disk, and Redis.
fn issue22_throughput(r: &Report, t: &mut Vec<Target>) {
    let q0 = |size| row(r, "mosquitto QoS 0", size);
    t.push(ratio(
        "chatctl send -l -> inbox --follow vs mosquitto_pub -l -> mosquitto_sub, 64 B".into(),
        1.0,
        row(r, "peerchat CLI: send -l → inbox --follow", 64),
        q0(64),
    ));
    t.push(ratio(
        "durable throughput A->B, 1 KiB, vs mosquitto QoS 0".into(),
        1.0,
        row(r, "peerchat, durable", 1024),
        q0(1024),
    ));
    for size in [64, 1024] {
        t.push(ratio(
            format!("durable throughput A->B, {size} B, vs Redis appendfsync always"),
            1.0,
            row(r, "peerchat, durable", size),
            row(r, "Redis XADD, AOF fsync always", size),
        ));
    }
    if let Some(c) = row(r, "peerchat, durable", 16384) {
        let (s, d) = (
            c.sender_cpu_us_per_msg.unwrap_or(f64::MAX),
            c.recipient_cpu_us_per_msg.unwrap_or(f64::MAX),
        );
        t.push(Target {
            what: "CPU per 16 KiB message, each chatd".into(),
            target: "<= 40 µs".into(),
            measured: format!("sender {s:.0} µs, recipient {d:.0} µs"),
            met: Some(s <= 40.0 && d <= 40.0),
        });
        if let Some(disk) = &r.disk {
            let ceiling = disk.ceiling(16384, 2);
            t.push(Target {
                what: "16 KiB throughput vs the disk's ceiling for two durable copies".into(),
                target: format!(
                    ">= 0.5x ({:.0} MB/s / (2 x 16 KiB) = {}/s)",
                    disk.bytes_per_sec / 1e6,
                    report::fmt_int(ceiling)
                ),
                measured: format!(
                    "{:.2}x ({}/s)",
                    c.msgs_per_sec / ceiling,
                    report::fmt_int(c.msgs_per_sec)
                ),
                met: Some(c.complete && c.msgs_per_sec >= 0.5 * ceiling),
            });
        }
    }
}

/// p99 against the same run's two-fsync floor, and with the databases in RAM.
fn latency(l: &Latency, t: &mut Vec<Target>) {
    let what = format!(
        "p99 send->follow at {} msg/s",
        report::fmt_int(l.rate_per_sec)
    );
    match &l.floor {
        Some(f) => t.push(Target {
            what: what.clone(),
            target: format!("<= floor p99 + 0.4 ms ({:.2} + 0.40 ms)", f.p99_us / 1e3),
            measured: format!("{:.2} ms", l.p99_us / 1e3),
            met: Some(l.received == l.messages && l.p99_us <= f.p99_us + 400.0),
        }),
        None => t.push(Target {
            what: what.clone(),
            target: "<= floor p99 + 0.4 ms".into(),
            measured: format!("{:.2} ms (floor not measured)", l.p99_us / 1e3),
            met: None,
        }),
    }
    if let Some(ram) = &l.in_ram {
        t.push(Target {
            what: format!("{what}, databases on tmpfs"),
            target: "<= 0.5 ms".into(),
            measured: format!("{:.2} ms", ram.p99_us / 1e3),
            met: Some(ram.received == ram.messages && ram.p99_us <= 500.0),
        });
    }
}
