//! `chatctl history` (one conversation, both directions), `chatctl search` (bodies sent and
//! received) and `chatctl inbox --unread` (received after each conversation's read position):
//! protocol.md §2.9. Bodies and names from peers are printed through `safe_text`.

use std::path::Path;

use peerchat_client::Client;
use peerchat_proto::control::{ConvKey, Direction, Entry, Request, Response};
use peerchat_proto::Name;

use crate::cli::{HistoryArgs, SearchArgs};
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::{one_line, visible, INDENT};

fn conversation(s: &str) -> Result<ConvKey, Failure> {
    ConvKey::parse(s).map_err(Failure::usage)
}

fn unexpected(r: Response) -> Failure {
    Failure::new(
        exit::OTHER,
        "protocol",
        format!("unexpected reply from chatd: {r:?}"),
    )
}

pub fn history(socket: Option<&Path>, json: bool, args: HistoryArgs) -> Result<i32, Failure> {
    let with = conversation(&args.with)?;
    let mut client = Client::connect(socket)?;
    let reply = client.call(&Request::History {
        with,
        before: args.before,
        after: args.after,
        limit: args.limit,
    })?;
    let Response::History {
        with,
        entries,
        older,
        newer,
        ..
    } = reply
    else {
        return Err(unexpected(reply));
    };
    for e in &entries {
        print(json, None, e);
    }
    if !json {
        if let Some(o) = older {
            eprintln!("chatctl: older messages: chatctl history {with} --before {o}");
        }
        if let (Some(n), Some(_)) = (newer, args.before.or(args.after)) {
            eprintln!("chatctl: newer messages: chatctl history {with} --after {n}");
        }
    }
    Ok(exit::OK)
}

pub fn search(socket: Option<&Path>, json: bool, args: SearchArgs) -> Result<i32, Failure> {
    // A usage error like any other bad argument (exit 2), before connecting.
    let max = peerchat_proto::control::MAX_SEARCH_TEXT;
    if args.text.is_empty() || args.text.len() > max {
        return Err(Failure::usage(format!(
            "the search text must be 1 to {max} bytes"
        )));
    }
    let with = args.with.as_deref().map(conversation).transpose()?;
    let from = args
        .from
        .as_deref()
        .map(|f| Name::new(f).map_err(|e| Failure::usage(format!("--from {f:?}: {e}"))))
        .transpose()?;
    let mut client = Client::connect(socket)?;
    let reply = client.call(&Request::Search {
        text: args.text,
        with,
        from,
        before: args.before,
        after: None,
        limit: args.limit,
    })?;
    let Response::SearchResults { hits, older } = reply else {
        return Err(unexpected(reply));
    };
    for h in &hits {
        if json {
            output::json(h);
        } else {
            print(false, Some(&h.with), &h.entry);
        }
    }
    if let (false, Some(o)) = (json, older) {
        eprintln!("chatctl: more may match: add --before {o}");
    }
    Ok(exit::OK)
}

/// `inbox --unread`: received entries above each conversation's read position, oldest
/// conversation first (the position is not moved).
pub fn unread(socket: Option<&Path>, json: bool) -> Result<i32, Failure> {
    let mut client = Client::connect(socket)?;
    let reply = client.call(&Request::Conversations { limit: None })?;
    let Response::Conversations { conversations } = reply else {
        return Err(unexpected(reply));
    };
    for c in conversations.iter().rev().filter(|c| c.unread > 0) {
        let mut after = c.read_up_to;
        loop {
            let reply = client.call(&Request::History {
                with: c.with.clone(),
                before: None,
                after: Some(after),
                limit: Some(peerchat_proto::control::MAX_PAGE),
            })?;
            let Response::History { entries, newer, .. } = reply else {
                return Err(unexpected(reply));
            };
            for e in entries.iter().filter(|e| e.direction == Direction::In) {
                print(json, Some(&c.with), e);
            }
            match newer {
                Some(n) if n > after => after = n,
                _ => break,
            }
        }
    }
    Ok(exit::OK)
}

/// One entry: `[POS] TIME FROM: BODY`, a sent one with each recipient's state, a search hit
/// or unread one with its conversation.
fn print(json: bool, with: Option<&ConvKey>, e: &Entry) {
    if json {
        match with {
            Some(w) => output::json(&serde_json::json!({"with": w, "entry": e})),
            None => output::json(e),
        }
        return;
    }
    let at = e.received_at.as_deref().unwrap_or(&e.sent_at);
    let conv = with.map(|w| format!(" {w}")).unwrap_or_default();
    let states = if e.direction == Direction::Out {
        let s: Vec<String> = e
            .delivery
            .iter()
            .map(|d| format!("{}:{}", d.to, d.state.as_str()))
            .collect();
        format!(" ({})", s.join(" "))
    } else {
        String::new()
    };
    output::line(&format!(
        "[{}]{conv} {at} {}{states}: {}",
        e.pos,
        one_line(e.from.as_str()),
        visible(&e.body, INDENT)
    ));
}
