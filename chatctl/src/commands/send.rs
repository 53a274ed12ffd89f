//! `chatctl send`: one message from the arguments or stdin, or (`-l`) one per stdin line,
//! pipelined: a thread writes requests while this one reads the replies in order.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use peerchat_proto::control::{Request, RequestLine, Response};
use peerchat_proto::envelope::to_line;
use peerchat_proto::{Name, MAX_BODY_BYTES};
use serde::Serialize;

use crate::cli::SendArgs;
use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output;

#[derive(Serialize)]
struct ResultLine<'a> {
    id: &'a str,
    to: &'a str,
    state: &'a str,
    error: Option<&'a str>,
}

pub fn run(socket: Option<&Path>, json: bool, args: SendArgs) -> Result<i32, Failure> {
    let to = parse_recipients(&args.to)?;
    if args.lines {
        if !args.message.is_empty() && args.message != ["-"] {
            return Err(Failure::usage(
                "with --lines the messages come from stdin; give no MESSAGE",
            ));
        }
        if args.id.is_some() {
            return Err(Failure::usage(
                "--id names one message; it cannot be used with --lines",
            ));
        }
        return send_lines(Client::connect(socket)?, json, to);
    }
    let body = if args.message.is_empty() || args.message == ["-"] {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Failure::io("reading stdin", e))?;
        let mut s = String::from_utf8(buf)
            .map_err(|_| Failure::new(exit::OTHER, "bad_input", "stdin is not valid UTF-8"))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        s
    } else {
        args.message.join(" ")
    };
    check_body(&body)?;
    let mut client = Client::connect(socket)?;
    let reply = client.call(Request::Send {
        to,
        body,
        msg_id: args.id,
    })?;
    print_result(json, &reply);
    Ok(exit::OK)
}

fn parse_recipients(s: &str) -> Result<Vec<Name>, Failure> {
    let names: Vec<&str> = s.split(',').filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Err(Failure::usage("no recipient given"));
    }
    names
        .into_iter()
        .map(|n| Name::new(n).map_err(|e| Failure::usage(format!("invalid recipient {n:?}: {e}"))))
        .collect()
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

fn print_result(json: bool, reply: &Response) {
    if let Response::Accepted { id, recipients } = reply {
        for r in recipients {
            if json {
                output::json(&ResultLine {
                    id,
                    to: r.to.as_str(),
                    state: r.state.as_str(),
                    error: r.error.as_deref(),
                });
            } else {
                output::line(&format!("{id} {} {}", r.to, r.state.as_str()));
            }
        }
    }
}

/// What the writer thread tells the reader: a request went out for this line, or a line was
/// refused locally, or stdin is finished.
enum Sent {
    Request(usize),
    Local(usize, Failure),
    Done(Option<Failure>),
}

fn send_lines(mut client: Client, json: bool, to: Vec<Name>) -> Result<i32, Failure> {
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
            let req = Request::Send {
                to: to.clone(),
                body: line.to_string(),
                msg_id: None,
            };
            if writer
                .write_all(&to_line(&RequestLine { id, request: req }))
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
    for event in rx {
        match event {
            Sent::Request(n) => {
                let reply = client.recv()?;
                match reply.outcome.into_result() {
                    Ok(r) => print_result(json, &r),
                    Err(e) => {
                        let f = Failure::from(e);
                        report_line(json, n, &f);
                        if code == exit::OK {
                            code = f.exit;
                        }
                    }
                }
            }
            Sent::Local(n, f) => {
                report_line(json, n, &f);
                if code == exit::OK {
                    code = f.exit;
                }
            }
            Sent::Done(None) => break,
            Sent::Done(Some(f)) => return Err(f),
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
        eprintln!("chatctl: line {n}: {}", f.message);
    }
}
