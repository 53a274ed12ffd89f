//! `chatctl inbox`: list received messages, or follow new ones like `tail -f`.
//!
//! A follow survives chatd restarts: when the connection drops it reconnects by itself and
//! resumes right after the last message it printed. With `--cursor-file` that position is also
//! kept on disk (written atomically after every printed message), so a new chatctl resumes where
//! the last one stopped: no gap, and no repeat after a clean exit (after a kill -9 of chatctl, at
//! most the last printed message repeats).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use peerchat_client::{self as client, Client, Error};
use peerchat_proto::control::{InboxMessage, Request, Response};
use peerchat_proto::Name;

use crate::cli::InboxArgs;
use crate::exit::{self, Failure};
use crate::output;
use crate::safe_text::{one_line, visible, INDENT};

pub fn run(socket: Option<&Path>, json: bool, args: InboxArgs) -> Result<i32, Failure> {
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
    let cursor = args.cursor_file.as_deref().map(Cursor::open).transpose()?;
    let after = match (&cursor, args.after) {
        (_, Some(a)) => Some(a),
        (Some(c), None) => c.seq,
        (None, None) => None,
    };
    let client = Client::connect(socket)?;
    if args.follow {
        return follow(client, json, from, args.limit.unwrap_or(10), after, cursor);
    }
    list(client, json, from, args.limit.unwrap_or(20), after, cursor)
}

fn list(
    mut client: Client,
    json: bool,
    from: Option<Name>,
    limit: u32,
    after: Option<i64>,
    mut cursor: Option<Cursor>,
) -> Result<i32, Failure> {
    let (messages, truncated) = client.inbox(&Request::Inbox {
        from,
        limit: Some(limit),
        after,
    })?;
    for m in &messages {
        print(json, m);
        if let Some(c) = cursor.as_mut() {
            c.save(m.seq)?;
        }
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

fn follow(
    mut client: Client,
    json: bool,
    from: Option<Name>,
    backlog: u32,
    mut after: Option<i64>,
    mut cursor: Option<Cursor>,
) -> Result<i32, Failure> {
    crate::platform::exit_when_stdout_closes();
    // Reconnect to the socket that answered, even if discovery would find another one while
    // chatd is away (`$XDG_RUNTIME_DIR/peerchat/chatd.sock` is only tried while it exists).
    let path = client.socket().to_path_buf();
    // Ctrl-C / SIGTERM end the follow between two messages, never between printing one and
    // saving the cursor, so a clean exit never repeats a message.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Failure::io("installing signal handlers", e))?;
    }
    loop {
        client.set_read_timeout(Some(STOP_POLL))?;
        client.send(&Request::Follow {
            from: from.clone(),
            backlog: Some(backlog),
            after,
        })?;
        // Read until the connection drops; protocol errors end the command.
        loop {
            if stop.load(Ordering::Relaxed) {
                output::flush();
                return Ok(exit::OK);
            }
            let reply = client.recv();
            if reply.is_err() {
                // Nothing printed stays behind in the batch (see `print_follow`).
                output::flush();
            }
            let reply = match reply {
                Ok(r) => r,
                Err(Error::Timeout) => continue,
                Err(e) if e.is_lost() => break,
                Err(e) => return Err(e.into()),
            };
            let outcome = reply.outcome.into_result().map_err(Failure::from);
            if outcome.is_err() {
                output::flush();
            }
            match outcome? {
                // Where to resume if we lose the connection before printing anything.
                Response::Following { after: start } => {
                    if after.is_none() {
                        after = Some(start);
                    }
                }
                Response::Heartbeat => {}
                Response::Message(m) => {
                    // Without a cursor file, a burst is printed with one write: stdout is
                    // flushed once no further reply is already read. With one, each message is
                    // flushed before its cursor is saved (a saved cursor was printed).
                    let batch = cursor.is_none() && client.has_buffered();
                    print_follow(json, &m, batch);
                    after = Some(m.seq);
                    if let Some(c) = cursor.as_mut() {
                        c.save(m.seq)?;
                    }
                }
                other => {
                    output::flush();
                    return Err(Error::unexpected(other).into());
                }
            }
        }
        eprintln!("chatctl: lost the connection to chatd; reconnecting");
        // No time limit: only a signal (or a closed stdout) ends a follow.
        client = match client::reconnect(&path, None, &|| stop.load(Ordering::Relaxed)) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(exit::OK),
            Err(e) => return Err(e.into()),
        };
    }
}

/// How often a follow checks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The last printed sequence number, kept in a file replaced atomically (temp file + rename).
struct Cursor {
    path: PathBuf,
    tmp: PathBuf,
    seq: Option<i64>,
}

impl Cursor {
    fn open(path: &Path) -> Result<Cursor, Failure> {
        let seq = match std::fs::read_to_string(path) {
            Ok(s) => Some(s.trim().parse::<i64>().map_err(|_| {
                Failure::new(
                    exit::OTHER,
                    "bad_cursor",
                    format!(
                        "cursor file {} does not hold a sequence number",
                        path.display()
                    ),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Failure::io(
                    &format!("reading cursor file {}", path.display()),
                    e,
                ))
            }
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        // Find out now, not after the first message is printed, that the cursor cannot be kept
        // there (a missing directory, no permission).
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .and_then(|_| std::fs::remove_file(&tmp))
            .map_err(|e| {
                Failure::io(
                    &format!("cursor file {} cannot be written", path.display()),
                    e,
                )
            })?;
        Ok(Cursor {
            path: path.to_path_buf(),
            tmp: PathBuf::from(tmp),
            seq,
        })
    }

    fn save(&mut self, seq: i64) -> Result<(), Failure> {
        let write = || -> std::io::Result<()> {
            std::fs::write(&self.tmp, format!("{seq}\n"))?;
            std::fs::rename(&self.tmp, &self.path)
        };
        write()
            .map_err(|e| Failure::io(&format!("writing cursor file {}", self.path.display()), e))?;
        self.seq = Some(seq);
        Ok(())
    }
}

/// A followed message; unflushed when `batch` (more replies are already read).
fn print_follow(json: bool, m: &InboxMessage, batch: bool) {
    if json {
        output::json_unflushed(m);
    } else {
        output::line_unflushed(format!("{}\n", text_line(m)).as_bytes());
    }
    if !batch {
        output::flush();
    }
}

fn text_line(m: &InboxMessage) -> String {
    // Controls are made visible and continuation lines indented, so every message (and only
    // a message) starts at column 0.
    format!(
        "[{}] {} {}: {}",
        m.seq,
        m.received_at,
        one_line(&m.from),
        visible(&m.body, INDENT)
    )
}

fn print(json: bool, m: &InboxMessage) {
    if json {
        output::json(m);
        return;
    }
    output::line(&text_line(m));
}
