//! The fan phase: 1, 4 and 16 nodes sending to one recipient, and one node sending to 16.

use std::path::{Path, PathBuf};

use peerchat_testkit::{Node, Registry};

use crate::chat::SendSpec;
use crate::cli::Plan;
use crate::report::{self, Report};
use crate::runs::{run_chat, warmup};
use crate::util::progress;

/// Body size of every fan run.
const SIZE: usize = 64;

/// Fan-in (1, 4, 16 nodes → b) and fan-out (a → 16 nodes), 64 B bodies.
pub fn run(
    plan: &Plan,
    dir: &Path,
    reg: &Registry,
    a: &Node,
    b: &Node,
    next_tag: &mut impl FnMut() -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    progress("starting 16 more chatd nodes (n01..n16)");
    let nodes: Vec<Node> = (1..=16)
        .map(|i| Node::start_with(dir, &format!("n{i:02}"), reg.addr, &[]))
        .collect();
    for k in [1usize, 4, 16] {
        fan_in(plan, &nodes[..k], b, next_tag, report)?;
    }
    fan_out(plan, &nodes, a, next_tag, report)?;
    drop(nodes);
    Ok(())
}

/// Every node of `senders` sends its share of `plan.n` to b at once.
fn fan_in(
    plan: &Plan,
    senders: &[Node],
    b: &Node,
    next_tag: &mut impl FnMut() -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (size, k) = (SIZE, senders.len());
    let per = (plan.n / k).max(1);
    let specs: Vec<SendSpec> = senders
        .iter()
        .map(|n| SendSpec {
            socket: n.socket.clone(),
            to: vec!["b".into()],
            n: per,
        })
        .collect();
    let warm: Vec<SendSpec> = specs
        .iter()
        .map(|s| SendSpec {
            socket: s.socket.clone(),
            to: s.to.clone(),
            n: 20,
        })
        .collect();
    warmup(&warm, std::slice::from_ref(&b.socket), next_tag, plan.stall)?;
    progress(&format!("fan-in: {k} nodes x {per} x {size} B -> b"));
    let mut procs: Vec<(String, u32)> = senders
        .iter()
        .map(|n| (format!("chatd {}", n.name), n.daemon.child.id()))
        .collect();
    procs.push(("chatd b".into(), b.daemon.child.id()));
    let run = run_chat(
        &specs,
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
    Ok(())
}

/// a sends every message to all of `nodes`.
fn fan_out(
    plan: &Plan,
    nodes: &[Node],
    a: &Node,
    next_tag: &mut impl FnMut() -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    let size = SIZE;
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
    Ok(())
}
