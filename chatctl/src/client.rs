//! A connection to chatd's control socket: finds the socket, says hello (checking the protocol
//! version), then sends requests and reads replies (possibly pipelined).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerchat_proto::control::{self, Request, RequestLine, Response};
use peerchat_proto::envelope::{to_line, Reply};

use crate::exit::{self, Failure};
use crate::platform::{self, Stream};

/// Replies to ordinary requests must come within this time.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Client {
    reader: BufReader<Stream>,
    writer: Stream,
    next_id: u64,
    /// Bytes of a reply line read before a read timeout; kept for the next `recv`.
    partial: Vec<u8>,
    pub socket: PathBuf,
}

/// Whether a failed request means the connection is gone (chatd stopped or restarted), so that
/// a reconnect may help.
pub fn is_lost(f: &Failure) -> bool {
    f.code == "disconnected" || f.code == "io"
}

/// The first delay of [`reconnect`]; it doubles after every failed try, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often [`reconnect`] checks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Connects to `socket` again after the connection to chatd was lost (chatd restarting): tries
/// after 100 ms, then with the delay doubling up to 2 s, until chatd answers. Gives up with the
/// last error once `until` has passed (the last try is made at `until`), or with `Ok(None)` as
/// soon as `stop()` is true.
pub fn reconnect(
    socket: &Path,
    until: Option<Instant>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Client>, Failure> {
    let mut delay = RETRY_FIRST;
    loop {
        let next = Instant::now() + delay;
        let next = until.map_or(next, |u| next.min(u));
        while Instant::now() < next {
            if stop() {
                return Ok(None);
            }
            std::thread::sleep(STOP_POLL.min(next.saturating_duration_since(Instant::now())));
        }
        if stop() {
            return Ok(None);
        }
        match Client::connect(Some(socket)) {
            Ok(c) => return Ok(Some(c)),
            Err(f) if until.is_some_and(|u| Instant::now() >= u) => return Err(f),
            Err(_) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// The sockets to try, in order: `--socket`, else `$CHATD_SOCKET`, else
/// `$XDG_RUNTIME_DIR/peerchat/chatd.sock` if it exists, else `/run/chatd/chatd.sock`.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os("CHATD_SOCKET").filter(|s| !s.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    platform::default_endpoints()
}

impl Client {
    pub fn connect(explicit: Option<&Path>) -> Result<Client, Failure> {
        let mut tried = Vec::new();
        for path in candidates(explicit) {
            match platform::connect(&path) {
                Ok(stream) => return Client::hello(stream, path),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(Failure::new(
                        exit::REFUSED,
                        "permission",
                        format!(
                            "permission denied on {}: ask the operator to add you to the group that owns chatd's socket (peerchat, when installed from the package), then log in again",
                            path.display()
                        ),
                    ));
                }
                Err(e) => tried.push(format!("  {}: {e}", path.display())),
            }
        }
        Err(Failure::new(
            exit::NOT_RUNNING,
            "not_running",
            format!(
                "chatd is not running (no control socket answered)\ntried:\n{}\nstart it with `systemctl start chatd` (or `chatd --name NAME`), or point --socket / $CHATD_SOCKET at its socket",
                tried.join("\n")
            ),
        ))
    }

    fn hello(stream: Stream, socket: PathBuf) -> Result<Client, Failure> {
        let writer = stream
            .try_clone()
            .map_err(|e| Failure::io("control socket", e))?;
        platform::set_read_timeout(&stream, Some(REPLY_TIMEOUT))
            .map_err(|e| Failure::io("control socket", e))?;
        let mut c = Client {
            partial: Vec::new(),
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            socket,
        };
        // chatd may refuse us (credentials) and close before reading our hello: try to read its
        // answer even when writing the hello failed.
        let sent = c.send(Request::Hello {
            version: control::VERSION,
        });
        let reply = match (sent, c.recv()) {
            (_, Ok(r)) => r.outcome.into_result().map_err(Failure::from)?,
            (Err(f), Err(_)) | (Ok(_), Err(f)) => return Err(f),
        };
        match reply {
            Response::Hello { .. } => Ok(c),
            other => Err(Failure::new(
                exit::OTHER,
                "protocol",
                format!("unexpected hello reply: {other:?}"),
            )),
        }
    }

    /// Sends one request without waiting; returns its id.
    pub fn send(&mut self, request: Request) -> Result<u64, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write_all(&to_line(&RequestLine { id, request }))
            .map_err(|e| Failure::io("writing to chatd", e))?;
        Ok(id)
    }

    /// The id the next request will get (for a pipelining writer that numbers its own).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// A second handle for writing while this one reads (for pipelining from another thread).
    pub fn writer(&self) -> Result<Stream, Failure> {
        self.writer
            .try_clone()
            .map_err(|e| Failure::io("control socket", e))
    }

    /// Reads the next reply line.
    pub fn recv(&mut self) -> Result<Reply<Response>, Failure> {
        let room = (control::MAX_REPLY_LINE as u64).saturating_sub(self.partial.len() as u64);
        let n = (&mut self.reader)
            .take(room)
            .read_until(b'\n', &mut self.partial)
            .map_err(|e| match e.kind() {
                // What was read so far stays in `partial` for the next call.
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    Failure::new(exit::OTHER, "timeout", "chatd did not answer in time")
                }
                _ => Failure::io("reading from chatd", e),
            })?;
        if n == 0 || !self.partial.ends_with(b"\n") {
            if self.partial.len() as u64 >= control::MAX_REPLY_LINE as u64 {
                return Err(Failure::new(
                    exit::OTHER,
                    "protocol",
                    "reply line from chatd is too long",
                ));
            }
            return Err(Failure::new(
                exit::OTHER,
                "disconnected",
                "chatd closed the connection",
            ));
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_slice(&line).map_err(|e| {
            Failure::new(
                exit::OTHER,
                "protocol",
                format!("unreadable reply from chatd: {e}"),
            )
        })
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, request: Request) -> Result<Response, Failure> {
        let id = self.send(request)?;
        let reply = self.recv()?;
        if reply.id != id && reply.id != 0 {
            return Err(Failure::new(
                exit::OTHER,
                "protocol",
                format!("reply for request {} while waiting for {id}", reply.id),
            ));
        }
        reply.outcome.into_result().map_err(Failure::from)
    }

    /// For streams (follow): no reply timeout.
    pub fn set_streaming(&mut self) -> Result<(), Failure> {
        self.set_read_timeout(None)
    }

    /// `recv` gives up with code `timeout` after this long (the partial line is kept).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), Failure> {
        platform::set_read_timeout(self.reader.get_ref(), t)
            .map_err(|e| Failure::io("control socket", e))
    }
}

use std::io::Read as _;
