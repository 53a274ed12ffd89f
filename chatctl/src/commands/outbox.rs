//! `chatctl outbox`, `chatctl status ID`, `chatctl cancel ID`, and the `--wait` of send.

use std::time::Duration;

use peerchat_proto::control::{DeliveryState, MessageInfo, Request, Response};

use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::one_line;

/// Lists the outbox: with `limit`, one page of at most that many entries (and on stderr how
/// many more there are and the cursor to continue with); without, every entry, page by page.
pub fn list(
    mut client: Client,
    json: bool,
    limit: Option<u32>,
    mut after: Option<String>,
) -> Result<i32, Failure> {
    if limit == Some(0) {
        return Err(Failure::usage("--limit must be at least 1"));
    }
    loop {
        let Response::Outbox {
            entries,
            next,
            more,
        } = client.call(Request::Outbox {
            limit,
            after: after.clone(),
        })?
        else {
            return Err(unexpected());
        };
        for e in &entries {
            if json {
                output::json(e);
            } else {
                let err = e
                    .error
                    .as_deref()
                    .map(|e| format!("  last error: {}", one_line(e)))
                    .unwrap_or_default();
                output::line(&format!(
                    "{} {} {} attempts={} since {}{err}",
                    one_line(&e.id),
                    e.to,
                    e.state.as_str(),
                    e.attempts,
                    e.created_at
                ));
            }
        }
        match next {
            // An older chatd sends no cursor: nothing more to ask for.
            None => return Ok(exit::OK),
            Some(cursor) if limit.is_some() => {
                eprintln!(
                    "chatctl: … and {more} more; continue with --after {}",
                    one_line(&cursor)
                );
                return Ok(exit::OK);
            }
            Some(cursor) => after = Some(cursor),
        }
    }
}

pub fn status(mut client: Client, json: bool, id: String) -> Result<i32, Failure> {
    let Response::MessageInfo(info) = client.call(Request::MessageStatus { msg_id: id })? else {
        return Err(unexpected());
    };
    print_info(json, &info);
    Ok(exit::OK)
}

pub fn cancel(mut client: Client, json: bool, id: String) -> Result<i32, Failure> {
    let Response::MessageInfo(info) = client.call(Request::Cancel { msg_id: id })? else {
        return Err(unexpected());
    };
    print_info(json, &info);
    Ok(exit::OK)
}

fn print_info(json: bool, info: &MessageInfo) {
    if json {
        output::json(info);
        return;
    }
    output::line(&format!(
        "{}  accepted {}",
        one_line(&info.id),
        info.created_at
    ));
    for r in &info.recipients {
        let err = r
            .error
            .as_deref()
            .map(|e| format!("  last error: {}", one_line(e)))
            .unwrap_or_default();
        output::line(&format!(
            "  {} {} attempts={} updated {}{err}",
            r.to,
            r.state.as_str(),
            r.attempts,
            r.updated_at
        ));
    }
}

/// Waits for `id` as `send --wait[=SECS]` asks; returns the exit code: 0 all delivered (or sent
/// to a legacy peer), 6 any failed or cancelled, 5 time ran out with recipients still pending.
pub fn wait(client: &mut Client, json: bool, id: &str, secs: Option<f64>) -> Result<i32, Failure> {
    let timeout_ms = match secs {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(Failure::usage("--wait takes a number of seconds"))
        }
        Some(s) => Some(Duration::from_secs_f64(s).as_millis() as u64),
        None => None,
    };
    // The reply may take as long as the wait: no read timeout on this connection from now on.
    client.set_streaming()?;
    let Response::MessageInfo(info) = client.call(Request::Wait {
        msg_id: id.to_string(),
        timeout_ms,
    })?
    else {
        return Err(unexpected());
    };
    let code = if info
        .recipients
        .iter()
        .any(|r| matches!(r.state, DeliveryState::Failed | DeliveryState::Cancelled))
    {
        exit::FAILED
    } else if info.recipients.iter().all(|r| r.done) {
        exit::OK
    } else {
        exit::WAIT_EXPIRED
    };
    for r in &info.recipients {
        if json {
            output::json(&serde_json::json!({
                "id": info.id, "to": r.to, "state": r.state.as_str(), "error": r.error,
            }));
        } else {
            let err = r
                .error
                .as_deref()
                .map(|e| format!(": {}", one_line(e)))
                .unwrap_or_default();
            let id = one_line(&info.id);
            output::line(&format!("{id} {} {}{err}", r.to, r.state.as_str()));
        }
    }
    Ok(code)
}

fn unexpected() -> Failure {
    Failure::new(exit::OTHER, "protocol", "unexpected reply from chatd")
}
