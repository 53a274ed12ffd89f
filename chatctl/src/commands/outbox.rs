//! `chatctl outbox`, `chatctl status ID`, `chatctl cancel ID`, and the `--wait` of send.

use std::time::{Duration, Instant};

use peerchat_client::{self as client, Client, Error};
use peerchat_proto::control::{code, DeliveryState, MessageInfo, Request, Response};

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
        let request = Request::Outbox {
            limit,
            after: after.take(),
        };
        let (entries, next, more) = client.call_expect(&request, |r| match r {
            Response::Outbox {
                entries,
                next,
                more,
            } => Ok((entries, next, more)),
            r => Err(Error::unexpected(r)),
        })?;
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

/// Longest time a `--wait` or `--reconnect-timeout` may name: a year. (Without a value,
/// `--wait` waits without a limit.)
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// `secs` of option `what` as a duration: a number of seconds from 0 to [`MAX_SECONDS`], else a
/// usage error (never a panic, never a wrapped-around value).
pub fn seconds(what: &str, secs: f64) -> Result<Duration, Failure> {
    if secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(Failure::usage(format!(
            "{what} takes a number of seconds from 0 to {MAX_SECONDS} (a year)"
        )))
    }
}

pub fn status(mut client: Client, json: bool, id: String) -> Result<i32, Failure> {
    let info = client.message_info(&Request::MessageStatus { msg_id: id })?;
    print_info(json, &info);
    Ok(exit::OK)
}

pub fn cancel(mut client: Client, json: bool, id: String) -> Result<i32, Failure> {
    let info = client.message_info(&Request::Cancel { msg_id: id })?;
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
///
/// The message is already accepted, so a lost connection (chatd restarting) changes nothing
/// about it: reconnect (waiting up to `reconnect` for chatd to answer) and wait again. Only if
/// chatd does not come back in time is this an error (exit 1), never "failed".
pub fn wait(
    client: &mut Client,
    json: bool,
    id: &str,
    secs: Option<f64>,
    reconnect: Duration,
) -> Result<i32, Failure> {
    let deadline = match secs {
        Some(s) => Some(Instant::now() + seconds("--wait", s)?),
        None => None,
    };
    let info = loop {
        let timeout_ms =
            deadline.map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64);
        // The reply may take as long as the wait: no read timeout on this connection from now on.
        let reply = client.set_streaming().and_then(|()| {
            client.message_info(&Request::Wait {
                msg_id: id.to_string(),
                timeout_ms,
            })
        });
        match reply {
            Ok(info) => {
                // chatd answers a pending wait early when it stops: that is not the end of the
                // wait. Ask again (on a new connection, once this one ends).
                let time_left = deadline.is_none_or(|d| {
                    d.saturating_duration_since(Instant::now()) > EARLY_REPLY_SLACK
                });
                if time_left && !info.recipients.iter().all(|r| r.done) {
                    std::thread::sleep(EARLY_REPLY_PAUSE);
                    continue;
                }
                break info;
            }
            Err(e) if e.is_lost() || e.code() == code::SHUTTING_DOWN => {
                eprintln!(
                    "chatctl: lost the connection to chatd while waiting for {id}; reconnecting"
                );
                let socket = client.socket().to_path_buf();
                *client = match client::reconnect(
                    &socket,
                    Some(Instant::now() + reconnect),
                    &|| false,
                ) {
                    Ok(Some(c)) => c,
                    Ok(None) => unreachable!("reconnect without a stop condition"),
                    Err(e) => {
                        let why = e.to_string().lines().next().unwrap_or_default().to_string();
                        return Err(Failure::new(
                            exit::OTHER,
                            "disconnected",
                            format!(
                                "chatd did not come back within {} s (last try: {why}); message {id} is accepted and stays in chatd's outbox: `chatctl status {id}` shows it once chatd runs again",
                                reconnect.as_secs_f64()
                            ),
                        ));
                    }
                };
            }
            Err(e) => return Err(e.into()),
        }
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

/// A `wait` reply with recipients still pending and more than this left of `--wait` came early
/// (chatd stopping), so chatctl waits again.
const EARLY_REPLY_SLACK: Duration = Duration::from_millis(50);
/// Pause before asking again after an early reply (chatd is going away; do not spin).
const EARLY_REPLY_PAUSE: Duration = Duration::from_millis(100);
