//! `chatctl send` and `chatctl broadcast`: one message from the arguments or stdin, or (`-l`)
//! one per stdin line, pipelined: a thread writes requests while this one reads the replies.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use peerchat_proto::control::{DeliveryState, Request, RequestLine, Response};
use peerchat_proto::envelope::to_line;
use peerchat_proto::{Name, MAX_BODY_BYTES};
use serde::Serialize;

use crate::cli::{BroadcastArgs, MessageArgs, SendArgs};
use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::one_line;

/// Whom to send to, as parsed from the command line.
#[derive(Clone)]
struct Targets {
    to: Vec<Name>,
    groups: Vec<Name>,
    broadcast: bool,
}

impl Targets {
    fn request(&self, body: String, msg_id: Option<String>) -> Request {
        Request::Send {
            to: self.to.clone(),
            groups: self.groups.clone(),
            broadcast: self.broadcast,
            body,
            msg_id,
        }
    }
}

#[derive(Serialize)]
struct ResultLine<'a> {
    id: &'a str,
    to: &'a str,
    state: &'a str,
    error: Option<&'a str>,
}

pub fn run(socket: Option<&Path>, json: bool, args: SendArgs) -> Result<i32, Failure> {
    let targets = parse_targets(&args.to)?;
    send(socket, json, targets, args.message)
}

pub fn run_broadcast(
    socket: Option<&Path>,
    json: bool,
    args: BroadcastArgs,
) -> Result<i32, Failure> {
    let targets = Targets {
        to: Vec::new(),
        groups: Vec::new(),
        broadcast: true,
    };
    send(socket, json, targets, args.message)
}

/// `--wait` (`Some(None)`: no limit) as a deadline.
fn wait_deadline(wait: Option<Option<f64>>) -> Result<Option<Option<std::time::Instant>>, Failure> {
    Ok(match wait {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) if s.is_finite() && s >= 0.0 => Some(Some(
            std::time::Instant::now() + std::time::Duration::from_secs_f64(s),
        )),
        Some(Some(_)) => return Err(Failure::usage("--wait takes a number of seconds")),
    })
}

/// Seconds left until `deadline` (for one more wait request).
fn left(deadline: Option<std::time::Instant>) -> Option<f64> {
    deadline.map(|d| {
        d.saturating_duration_since(std::time::Instant::now())
            .as_secs_f64()
    })
}

fn send(
    socket: Option<&Path>,
    json: bool,
    targets: Targets,
    args: MessageArgs,
) -> Result<i32, Failure> {
    let MessageArgs {
        words: message,
        lines,
        id,
        wait,
    } = args;
    let deadline = wait_deadline(wait)?;
    let from_stdin = message.is_empty() || message == ["-"];
    if lines {
        if !from_stdin {
            return Err(Failure::usage(
                "with --lines the messages come from stdin; give no MESSAGE",
            ));
        }
        if id.is_some() {
            return Err(Failure::usage(
                "--id names one message; it cannot be used with --lines",
            ));
        }
        return send_lines(Client::connect(socket)?, json, targets, deadline);
    }
    let body = if from_stdin {
        read_stdin_message()?
    } else {
        message.join(" ")
    };
    check_body(&body)?;
    let mut client = Client::connect(socket)?;
    let reply = client.call(targets.request(body, id))?;
    match (deadline, &reply) {
        (Some(d), Response::Accepted { id, .. }) => {
            super::outbox::wait(&mut client, json, id, left(d))
        }
        _ => Ok(print_result(json, &reply)),
    }
}

fn read_stdin_message() -> Result<String, Failure> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::io("reading stdin", e))?;
    let mut s = String::from_utf8(buf)
        .map_err(|_| Failure::new(exit::OTHER, "bad_input", "stdin is not valid UTF-8"))?;
    // `echo text | chatctl send` means "text", not "text\n".
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// `pa,pb,@ops` → names and groups.
fn parse_targets(s: &str) -> Result<Targets, Failure> {
    let mut t = Targets {
        to: Vec::new(),
        groups: Vec::new(),
        broadcast: false,
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (list, raw) = match part.strip_prefix('@') {
            Some(g) => (&mut t.groups, g),
            None => (&mut t.to, part),
        };
        let n = Name::new(raw)
            .map_err(|e| Failure::usage(format!("invalid recipient {part:?}: {e}")))?;
        list.push(n);
    }
    if t.to.is_empty() && t.groups.is_empty() {
        return Err(Failure::usage("no recipient given"));
    }
    Ok(t)
}

fn check_body(body: &str) -> Result<(), Failure> {
    if body.is_empty() {
        return Err(Failure::usage("the message is empty"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Failure::new(
            exit::REFUSED,
            "too_large",
            format!(
                "the message is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    Ok(())
}

/// Prints one line per recipient; returns the exit code (6 if any recipient already failed).
fn print_result(json: bool, reply: &Response) -> i32 {
    let mut code = exit::OK;
    if let Response::Accepted { id, recipients } = reply {
        for r in recipients {
            if r.state == DeliveryState::Failed {
                code = exit::FAILED;
            }
            if json {
                output::json(&ResultLine {
                    id,
                    to: r.to.as_str(),
                    state: r.state.as_str(),
                    error: r.error.as_deref(),
                });
            } else {
                match &r.error {
                    Some(e) => output::line(&format!(
                        "{} {} {}: {}",
                        one_line(id),
                        r.to,
                        r.state.as_str(),
                        one_line(e)
                    )),
                    None => {
                        output::line(&format!("{} {} {}", one_line(id), r.to, r.state.as_str()))
                    }
                }
            }
        }
    }
    code
}

/// What the writer thread tells the reader: a request went out for this line, or a line was
/// refused locally, or stdin is finished.
enum Sent {
    Request(usize),
    Local(usize, Failure),
    Done(Option<Failure>),
}

fn send_lines(
    mut client: Client,
    json: bool,
    targets: Targets,
    deadline: Option<Option<std::time::Instant>>,
) -> Result<i32, Failure> {
    let mut writer = client.writer()?;
    let (tx, rx) = mpsc::channel::<Sent>();
    let first_id = client.next_id();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut n = 0usize;
        let mut id = first_id;
        for line in stdin.lock().lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Sent::Done(Some(Failure::io("reading stdin", e))));
                    return;
                }
            };
            n += 1;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.trim().is_empty() {
                continue;
            }
            if let Err(f) = check_body(line) {
                let _ = tx.send(Sent::Local(n, f));
                continue;
            }
            let request = targets.request(line.to_string(), None);
            if writer
                .write_all(&to_line(&RequestLine { id, request }))
                .is_err()
            {
                break; // the reader will see the connection end
            }
            id += 1;
            if tx.send(Sent::Request(n)).is_err() {
                return;
            }
        }
        let _ = tx.send(Sent::Done(None));
    });
    let mut code = exit::OK;
    let mut note = |c: i32| {
        if code == exit::OK {
            code = c;
        }
    };
    let mut accepted = Vec::new();
    for event in rx {
        match event {
            Sent::Request(n) => match client.recv()?.outcome.into_result() {
                Ok(Response::Accepted { id, .. }) if deadline.is_some() => accepted.push(id),
                Ok(r) => note(print_result(json, &r)),
                Err(e) => {
                    let f = Failure::from(e);
                    report_line(json, n, &f);
                    note(f.exit);
                }
            },
            Sent::Local(n, f) => {
                report_line(json, n, &f);
                note(f.exit);
            }
            Sent::Done(None) => break,
            Sent::Done(Some(f)) => return Err(f),
        }
    }
    if let Some(d) = deadline {
        for id in accepted {
            let c = super::outbox::wait(&mut client, json, &id, left(d))?;
            note(c);
        }
    }
    Ok(code)
}

fn report_line(json: bool, n: usize, f: &Failure) {
    if json {
        output::json(
            &serde_json::json!({"line": n, "error": {"code": f.code, "message": f.message}}),
        );
    } else {
        eprintln!("chatctl: line {n}: {}", one_line(&f.message));
    }
}
