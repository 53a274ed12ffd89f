//! `chatctl export [--with NAME] [--since T]`: every message in and out as JSON lines, in time
//! order. Two paged streams over the control socket (`inbox` by seq, `sent` by seq, 1,000 per
//! request), merged by time; at most one page of each is held.

use std::collections::VecDeque;

use peerchat_client::{Client, Error};
use peerchat_proto::control::{InboxMessage, Request, Response, SentMessage};
use peerchat_proto::Name;
use serde_json::{json, Value};

use crate::exit::{self, Failure};
use crate::output;

const PAGE: u32 = 1000;

/// `--since`: an RFC 3339 time, or a duration back from now (`2h`, `7days`), as chatd writes
/// times (RFC 3339 UTC with milliseconds), so that it compares as a string.
pub fn since(s: &str) -> Result<String, Failure> {
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s).map_err(|_| {
                Failure::usage(format!(
                    "--since {s:?}: expected a time (2024-05-01T12:00:00Z) or a duration ago (2h, 7days)"
                ))
            })?;
            std::time::SystemTime::now()
                .checked_sub(ago)
                .unwrap_or(std::time::UNIX_EPOCH)
        }
    };
    Ok(humantime::format_rfc3339_millis(t).to_string())
}

/// `--with`'s name, checked before connecting.
pub fn with(name: Option<String>) -> Result<Option<Name>, Failure> {
    name.map(|n| Name::new(n.clone()).map_err(|e| Failure::usage(format!("{n:?}: {e}"))))
        .transpose()
}

pub fn run(mut client: Client, with: Option<Name>, since: Option<String>) -> Result<i32, Failure> {
    let mut inbox = Side::default();
    let mut sent = Side::default();
    loop {
        if inbox.wants_more() {
            inbox.fill(next_inbox(&mut client, &with, inbox.after)?);
        }
        if sent.wants_more() {
            sent.fill(next_sent(&mut client, &with, sent.after)?);
        }
        let next = match (inbox.rows.front(), sent.rows.front()) {
            (None, None) => break,
            (Some(_), None) => inbox.rows.pop_front(),
            (None, Some(_)) => sent.rows.pop_front(),
            (Some(i), Some(o)) if at(i) <= at(o) => inbox.rows.pop_front(),
            _ => sent.rows.pop_front(),
        };
        if let Some(line) = next {
            if since.as_deref().is_none_or(|s| at(&line) >= s) {
                output::json(&line);
            }
        }
    }
    Ok(exit::OK)
}

/// One stream: the page in hand and where the next starts.
#[derive(Default)]
struct Side {
    rows: VecDeque<Value>,
    after: i64,
    done: bool,
}

impl Side {
    fn wants_more(&self) -> bool {
        self.rows.is_empty() && !self.done
    }

    fn fill(&mut self, (rows, last, more): (Vec<Value>, Option<i64>, bool)) {
        if let Some(last) = last {
            self.after = last;
        }
        self.done = !more || rows.is_empty();
        self.rows.extend(rows);
    }
}

fn at(v: &Value) -> &str {
    v["at"].as_str().unwrap_or_default()
}

type Page = (Vec<Value>, Option<i64>, bool);

fn next_inbox(client: &mut Client, with: &Option<Name>, after: i64) -> Result<Page, Failure> {
    let request = Request::Inbox {
        from: with.clone(),
        limit: Some(PAGE),
        after: Some(after),
    };
    let (messages, truncated) = client.call_expect(&request, |r| match r {
        Response::Messages {
            messages,
            truncated,
        } => Ok((messages, truncated)),
        r => Err(Error::unexpected(r)),
    })?;
    let last = messages.last().map(|m| m.seq);
    let more = truncated || messages.len() as u32 >= PAGE;
    Ok((messages.into_iter().map(inbound).collect(), last, more))
}

fn next_sent(client: &mut Client, with: &Option<Name>, after: i64) -> Result<Page, Failure> {
    let request = Request::Sent {
        to: with.clone(),
        after: Some(after),
        limit: Some(PAGE),
    };
    let (messages, more) = client.call_expect(&request, |r| match r {
        Response::SentMessages { messages, more } => Ok((messages, more)),
        r => Err(Error::unexpected(r)),
    })?;
    let last = messages.last().map(|m| m.seq);
    Ok((messages.into_iter().map(outbound).collect(), last, more))
}

/// A received message as an export line (`at`: when it was received).
fn inbound(m: InboxMessage) -> Value {
    let to = if m.recipients.is_empty() {
        vec![m.to.clone()]
    } else {
        m.recipients.clone()
    };
    json!({
        "dir": "in",
        "at": m.received_at,
        "seq": m.seq,
        "id": m.id,
        "from": m.from,
        "to": to,
        "body": m.body,
        "sent_at": m.sent_at,
        "received_at": m.received_at,
        "authenticated": m.authenticated,
    })
}

/// A sent message as an export line (`at`: when chatd accepted it).
fn outbound(m: SentMessage) -> Value {
    let to: Vec<&str> = m.recipients.iter().map(|r| r.to.as_str()).collect();
    json!({
        "dir": "out",
        "at": m.sent_at,
        "seq": m.seq,
        "id": m.id,
        "to": to,
        "body": m.body,
        "sent_at": m.sent_at,
        "recipients": m.recipients,
    })
}
