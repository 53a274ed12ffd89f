//! `chatctl chat --plain` (and whenever stdin or stdout is not a terminal): the seed's console,
//! done right. Incoming messages print as lines (`[HH:MM] NAME: body`, a multi-line body with
//! its later lines indented, controls escaped); each input line `NAME MESSAGE`,
//! `@GROUP MESSAGE` or just `MESSAGE` (to the last conversation) is sent under its own message
//! id. A line that is not accepted is reported on stderr with its number; at EOF the exit
//! status is non-zero if any line was not accepted. If chatd restarts, a line is sent again
//! under the same id after reconnecting (never twice).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_client::{self as client, Client, Error};
use peerchat_proto::control::{InboxMessage, Request, Response};
use peerchat_proto::{MsgId, Name};

use super::lines::Tz;
use super::model::parse_time;
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::{one_line, visible, INDENT};

/// How long a line waits for chatd to come back before it counts as not accepted.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Who `MESSAGE` alone goes to: the last conversation a line went to or a message came from.
type Last = Arc<Mutex<Option<String>>>;

pub fn run(socket: Option<&Path>, first: Option<String>) -> Result<i32, Failure> {
    // A closed stdout (`| head`) must not end the program before every line was sent.
    output::keep_going_without_stdout();
    let mut client = Client::connect(socket)?;
    let path = client.socket().to_path_buf();
    let known = known_names(&mut client);
    let last: Last = Arc::new(Mutex::new(first));
    let follower = follow(&path, last.clone())?;
    let stdin = std::io::stdin();
    let mut not_accepted = 0u64;
    for (n, line) in stdin.lock().lines().enumerate() {
        let n = n + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                report(n, "not UTF-8 text");
                not_accepted += 1;
                continue;
            }
            Err(e) => return Err(Failure::io("reading stdin", e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let target = parse_line(&line, &known, last.lock().ok().and_then(|l| l.clone()));
        match target.and_then(|(to, body)| send(&mut client, &path, &to, body).map(|_| to)) {
            Ok(to) => {
                if let Ok(mut l) = last.lock() {
                    *l = Some(to);
                }
            }
            Err(why) => {
                report(n, &why);
                not_accepted += 1;
            }
        }
    }
    drop(follower);
    if not_accepted > 0 {
        eprintln!("chatctl: {not_accepted} line(s) were not accepted");
        return Ok(exit::OTHER);
    }
    Ok(exit::OK)
}

fn report(n: usize, why: &str) {
    eprintln!("chatctl: line {n}: {}", one_line(why));
}

/// Peer names and `@groups` chatd knows, to tell `NAME MESSAGE` from a bare `MESSAGE`.
fn known_names(client: &mut Client) -> HashSet<String> {
    let mut names = HashSet::new();
    if let Ok(Response::Peers { peers, .. }) = client.call(&Request::Peers) {
        names.extend(peers.into_iter().map(|p| p.name.to_string()));
    }
    if let Ok(Response::Groups { groups }) = client.call(&Request::GroupList) {
        names.extend(groups.into_iter().map(|g| format!("@{}", g.name)));
    }
    names
}

/// `(recipient, body)` of one input line: `@GROUP MESSAGE`; `NAME MESSAGE` when NAME is a name
/// chatd knows (or there is no last conversation to send to); else the whole line to `last`.
pub fn parse_line(
    line: &str,
    known: &HashSet<String>,
    last: Option<String>,
) -> Result<(String, String), String> {
    let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
    let addressed = first.starts_with('@') || known.contains(first) || last.is_none();
    if addressed {
        if rest.trim().is_empty() {
            return Err(format!("no message after {:?}", one_line(first)));
        }
        return Ok((first.to_string(), rest.to_string()));
    }
    match last {
        Some(to) => Ok((to, line.to_string())),
        None => Err("no recipient: write NAME MESSAGE".to_string()),
    }
}

/// Sends one line; after a lost connection, reconnects and sends it again under the same id.
fn send(client: &mut Client, path: &Path, to: &str, body: String) -> Result<(), String> {
    let (names, groups) = match to.strip_prefix('@') {
        Some(g) => (Vec::new(), vec![name(g)?]),
        None => (vec![name(to)?], Vec::new()),
    };
    if body.len() > peerchat_proto::MAX_BODY_BYTES {
        return Err(format!(
            "the message is {} bytes; the limit is {} bytes (64 KiB)",
            body.len(),
            peerchat_proto::MAX_BODY_BYTES
        ));
    }
    let msg_id = uuid::Uuid::now_v7().to_string();
    let request = Request::Send {
        to: names,
        groups,
        broadcast: false,
        body,
        msg_id: MsgId::new(msg_id).ok(),
        conversation: None,
    };
    let deadline = Instant::now() + RECONNECT_TIMEOUT;
    loop {
        match client.call(&request) {
            Ok(Response::Accepted { .. }) => return Ok(()),
            Ok(other) => return Err(format!("unexpected reply: {other:?}")),
            Err(e) if e.is_lost() => match client::reconnect(path, Some(deadline), &|| false) {
                Ok(Some(c)) => *client = c,
                Ok(None) => return Err("stopped".into()),
                Err(e) => return Err(format!("chatd did not come back: {e}")),
            },
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| format!("{:?}: {e}", one_line(s)))
}

/// Prints incoming messages from a `follow` on its own connection (reconnecting, resuming
/// after the last one printed) until the process ends.
fn follow(path: &Path, last: Last) -> Result<std::thread::JoinHandle<()>, Failure> {
    let mut client = Client::connect(Some(path))?;
    client.set_streaming()?;
    let path: PathBuf = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("chat-plain-follow".into())
        .spawn(move || {
            let mut after: Option<i64> = None;
            loop {
                after = follow_once(&mut client, after, &last);
                match client::reconnect(&path, None, &|| false) {
                    Ok(Some(c)) => client = c,
                    _ => return,
                }
                let _ = client.set_streaming();
            }
        })
        .map_err(|e| Failure::io("starting a thread", e))?;
    Ok(thread)
}

/// One follow until the connection drops; returns where to resume.
fn follow_once(client: &mut Client, mut after: Option<i64>, last: &Last) -> Option<i64> {
    let request = Request::Follow {
        from: None,
        backlog: Some(0),
        after,
    };
    if client.send(&request).is_err() {
        return after;
    }
    loop {
        let reply = match client.recv() {
            Ok(r) => r,
            Err(Error::Timeout) => continue,
            Err(_) => return after,
        };
        match reply.outcome.into_result() {
            Ok(Response::Following { after: start }) => after = after.or(Some(start)),
            Ok(Response::Message(m)) => {
                after = Some(m.seq);
                print(&m);
                if let Ok(mut l) = last.lock() {
                    *l = Some(m.from.clone());
                }
            }
            Ok(_) => {}
            Err(_) => return after,
        }
    }
}

/// `[HH:MM] NAME: body`, in local time; later lines of the body indented.
fn print(m: &InboxMessage) {
    let at = Tz::Local.convert(parse_time(&m.received_at));
    output::line(&format!(
        "[{}] {}: {}",
        at.format("%H:%M"),
        one_line(&m.from),
        visible(&m.body, INDENT)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_their_recipient_or_go_to_the_last_one() {
        let known: HashSet<String> = ["pb".to_string(), "@ops".to_string()].into();
        let p = |l: &str, last: Option<&str>| parse_line(l, &known, last.map(str::to_string));
        assert_eq!(p("pb 你好", None), Ok(("pb".into(), "你好".into())));
        assert_eq!(
            p("@ops deploy done", Some("pb")),
            Ok(("@ops".into(), "deploy done".into()))
        );
        assert_eq!(
            p("hello there", Some("pb")),
            Ok(("pb".into(), "hello there".into()))
        );
        assert_eq!(p("pc hi", None), Ok(("pc".into(), "hi".into())));
        assert!(p("pb", None).is_err());
    }
}
