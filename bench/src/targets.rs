//! The targets of the issue, checked against a finished report.

use crate::report::{self, Report, Target};

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
