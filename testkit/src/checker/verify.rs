//! Step 4: B's inbox against what the sender knows (lost, duplicated, reordered, unexpected).

use peerchat_proto::control::InboxMessage;

use super::report::Report;
use super::sender::Sender;

/// Compares B's inbox with what the sender knows.
pub(super) fn check(sender: &Sender, a_name: &str, inbox: &[InboxMessage], report: &mut Report) {
    let n = sender.total as usize;
    let mut copies = vec![0u32; n];
    // Ranks of our messages in the order of their first arrival in B's inbox.
    let mut arrivals: Vec<(u64, u64)> = Vec::with_capacity(n);
    let mut examples: Vec<String> = Vec::new();
    let mut example = |kind: &str, text: String| {
        if examples.iter().filter(|e| e.starts_with(kind)).count() < 5 {
            examples.push(format!("{kind}: {text}"));
        }
    };
    for m in inbox {
        let num = (m.from == a_name)
            .then(|| parse_body(&m.body))
            .flatten()
            .filter(|&k| k < sender.total && m.id == sender.msg_id(k));
        let Some(k) = num else {
            report.unexpected += 1;
            example(
                "unexpected",
                format!(
                    "seq {} from {:?} id {:?} body {:?}",
                    m.seq, m.from, m.id, m.body
                ),
            );
            continue;
        };
        let st = &sender.state[k as usize];
        if st.rank.is_none() && !st.indeterminate {
            // Never accepted and never in doubt: A must not have delivered it.
            report.unexpected += 1;
            example(
                "unexpected",
                format!("seq {} {} was never accepted", m.seq, m.body),
            );
        }
        copies[k as usize] += 1;
        if copies[k as usize] > 1 {
            report.duplicated += 1;
            example(
                "duplicated",
                format!("{} (copy {}, seq {})", m.body, copies[k as usize], m.seq),
            );
            continue;
        }
        if let (Some(rank), false) = (st.rank, st.order_unknown) {
            arrivals.push((rank, k));
        }
    }
    for (k, st) in sender.state.iter().enumerate() {
        if st.rank.is_some() && copies[k] == 0 {
            report.lost += 1;
            example("lost", sender.body(k as u64));
        }
        if st.order_unknown {
            report.order_unknown += 1;
        }
    }
    let (reordered, overtaken) = out_of_order(&arrivals);
    report.reordered = reordered;
    for (i, j) in overtaken.into_iter().take(5) {
        example(
            "reordered",
            format!(
                "{} (accepted #{}) arrived after {} (accepted #{})",
                sender.body(arrivals[i].1),
                arrivals[i].0,
                sender.body(arrivals[j].1),
                arrivals[j].0
            ),
        );
    }
    report.examples = examples;
}

/// The number of elements to remove for the ranks to be strictly increasing (length minus the
/// longest increasing subsequence), and the first few (index, index of an earlier element with
/// a higher rank) pairs as examples.
pub(super) fn out_of_order(arrivals: &[(u64, u64)]) -> (u64, Vec<(usize, usize)>) {
    // Patience sorting: tails[l] = smallest rank ending an increasing subsequence of length l+1.
    let mut tails: Vec<u64> = Vec::new();
    let mut examples = Vec::new();
    let mut max_at: Option<usize> = None;
    for (i, &(rank, _)) in arrivals.iter().enumerate() {
        let pos = tails.partition_point(|&t| t < rank);
        if pos == tails.len() {
            tails.push(rank);
        } else {
            tails[pos] = rank;
        }
        match max_at {
            Some(m) if arrivals[m].0 > rank => {
                if examples.len() < 5 {
                    examples.push((i, m));
                }
            }
            _ => max_at = Some(i),
        }
    }
    ((arrivals.len() - tails.len()) as u64, examples)
}

pub(super) fn parse_body(body: &str) -> Option<u64> {
    let digits = body.strip_prefix("chk-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
