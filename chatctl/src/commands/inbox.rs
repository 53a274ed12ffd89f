//! `chatctl inbox`: list received messages, or follow new ones like `tail -f`.

use peerchat_proto::control::{InboxMessage, Request, Response};
use peerchat_proto::Name;

use crate::cli::InboxArgs;
use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output;

pub fn run(mut client: Client, json: bool, args: InboxArgs) -> Result<i32, Failure> {
    let from = match &args.from {
        Some(f) if f.starts_with("legacy:") => {
            return Err(Failure::usage(
                "--from takes a node name; use --json and filter on .from for legacy senders",
            ));
        }
        Some(f) => {
            Some(Name::new(f.as_str()).map_err(|e| Failure::usage(format!("--from {f:?}: {e}")))?)
        }
        None => None,
    };
    if args.follow {
        return follow(client, json, from, &args);
    }
    match client.call(Request::Inbox {
        from,
        limit: Some(args.limit.unwrap_or(20)),
        after: args.after,
    })? {
        Response::Messages {
            messages,
            truncated,
        } => {
            for m in &messages {
                print(json, m);
            }
            if truncated {
                let hint = match messages.last() {
                    Some(m) => format!("; continue with --after {}", m.seq),
                    None => String::new(),
                };
                eprintln!("chatctl: more messages matched than fit in one reply{hint}");
            }
            Ok(exit::OK)
        }
        other => Err(unexpected(&other)),
    }
}

fn follow(
    mut client: Client,
    json: bool,
    from: Option<Name>,
    args: &InboxArgs,
) -> Result<i32, Failure> {
    crate::stdout_watch::exit_when_stdout_closes();
    client.set_streaming()?;
    let backlog = args.limit.unwrap_or(10);
    client.send(Request::Follow {
        from,
        backlog: Some(backlog),
        after: args.after,
    })?;
    loop {
        let reply = client.recv()?;
        match reply.outcome.into_result().map_err(Failure::from)? {
            Response::Following | Response::Heartbeat => {}
            Response::Message(m) => print(json, &m),
            other => return Err(unexpected(&other)),
        }
    }
}

fn print(json: bool, m: &InboxMessage) {
    if json {
        output::json(m);
        return;
    }
    // Continuation lines are indented so every message starts at column 0.
    let body = m.body.replace('\n', "\n    ");
    output::line(&format!(
        "[{}] {} {}: {}",
        m.seq, m.received_at, m.from, body
    ));
}

fn unexpected(r: &Response) -> Failure {
    Failure::new(
        exit::OTHER,
        "protocol",
        format!("unexpected reply from chatd: {r:?}"),
    )
}
