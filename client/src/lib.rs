//! A blocking client of chatd's control socket (docs/protocol.md section 2), shared by chatctl,
//! the test kit and chat-bench: finds the socket, says hello (checking the protocol version),
//! then sends requests and reads replies, one at a time, pipelined (a [`Writer`] on another
//! thread) or as a stream (`follow`, `wait`).
//!
//! A crate of its own rather than part of `peerchat-proto`, which stays free of I/O (fuzzers and
//! the async daemons use it); this one is std-only blocking I/O over a Unix socket, or a named
//! pipe on Windows.
//!
//! Per request it allocates nothing of its own: request lines are encoded into a buffer the
//! client keeps, and replies are read through one buffered reader into a kept line buffer.

mod error;
pub mod platform;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerchat_proto::control::{self, InboxMessage, MessageInfo, NodeStatus, Request, Response};
use peerchat_proto::envelope::{append_line, Reply, RequestLine};

pub use error::Error;
pub use platform::Stream;

/// Replies to ordinary requests must come within this time (see [`Client::set_read_timeout`]).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The sockets to try, in order: `explicit` (`--socket`), else `$CHATD_SOCKET`, else
/// `$XDG_RUNTIME_DIR/peerchat/chatd.sock` if it exists, else `/run/chatd/chatd.sock` (on
/// Windows the named pipe `\\.\pipe\peerchat-chatd`).
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os("CHATD_SOCKET").filter(|s| !s.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    platform::default_endpoints()
}

/// One control connection, after hello.
pub struct Client {
    reader: BufReader<Stream>,
    writer: Writer,
    next_id: u64,
    /// The reply line being read; bytes read before a read timeout stay here for the next
    /// `recv`.
    line: Vec<u8>,
    socket: PathBuf,
}

impl Client {
    /// Connects to the first of [`candidates`] that accepts, says hello, and leaves a read
    /// timeout of [`REPLY_TIMEOUT`].
    pub fn connect(explicit: Option<&Path>) -> Result<Client, Error> {
        Client::connect_timeout(explicit, REPLY_TIMEOUT)
    }

    /// Like [`Client::connect`], with `timeout` for the hello and the replies after it.
    pub fn connect_timeout(explicit: Option<&Path>, timeout: Duration) -> Result<Client, Error> {
        let mut tried = Vec::new();
        for path in candidates(explicit) {
            match platform::connect(&path) {
                Ok(stream) => return Client::hello(stream, path, timeout),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(Error::PermissionDenied(path));
                }
                Err(e) => tried.push((path, e)),
            }
        }
        Err(Error::NotRunning(tried))
    }

    fn hello(stream: Stream, socket: PathBuf, timeout: Duration) -> Result<Client, Error> {
        let writer = stream
            .try_clone()
            .map_err(|e| Error::Io("control socket", e))?;
        platform::set_read_timeout(&stream, Some(timeout))
            .map_err(|e| Error::Io("control socket", e))?;
        let mut c = Client {
            reader: BufReader::new(stream),
            writer: Writer::new(writer),
            next_id: 1,
            line: Vec::new(),
            socket,
        };
        // chatd may refuse us (credentials) and close before reading our hello: try to read its
        // answer even when writing the hello failed.
        let sent = c.send(&Request::Hello {
            version: control::VERSION,
        });
        let reply = match (sent, c.recv()) {
            (_, Ok(r)) => r.outcome.into_result()?,
            (Err(e), Err(_)) | (Ok(_), Err(e)) => return Err(e),
        };
        match reply {
            Response::Hello { .. } => Ok(c),
            other => Err(Error::Protocol(format!(
                "unexpected hello reply: {other:?}"
            ))),
        }
    }

    /// The socket (or pipe) this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request without waiting; returns its id.
    pub fn send(&mut self, request: &Request) -> Result<u64, Error> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .send(id, request)
            .map_err(|e| Error::Io("writing to chatd", e))?;
        Ok(id)
    }

    /// The id the next request will get (for a pipelining writer that numbers its own).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Takes the next `n` request ids for requests a [`Writer`] sends (pipelining); returns
    /// them in order.
    pub fn reserve_ids(&mut self, n: u64) -> std::ops::Range<u64> {
        let first = self.next_id;
        self.next_id += n;
        first..self.next_id
    }

    /// A second handle for writing while this one reads (pipelining from another thread).
    pub fn writer(&self) -> Result<Writer, Error> {
        self.writer
            .try_clone()
            .map_err(|e| Error::Io("control socket", e))
    }

    /// Reads the next reply line (of at most `MAX_REPLY_LINE` bytes).
    pub fn recv(&mut self) -> Result<Reply<Response>, Error> {
        let line = self.recv_line()?;
        serde_json::from_slice(line)
            .map_err(|e| Error::Protocol(format!("unreadable reply from chatd: {e}")))
    }

    /// Whether a reply (or part of one) has already been read from the socket: a follower that
    /// prints replies flushes its output only when this is false, so a burst costs one write
    /// to its stdout instead of one per message, and a lone message is printed at once.
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Reads the next reply line without parsing it (with its `\n`), for a caller that only
    /// looks for a few bytes in it (chat-bench, which must stay cheap next to the daemons it
    /// measures). The line is valid until the next read.
    pub fn recv_line(&mut self) -> Result<&[u8], Error> {
        // The last line was handed out whole; a partial one (read timeout) is continued.
        if self.line.last() == Some(&b'\n') {
            self.line.clear();
        }
        let room = (control::MAX_REPLY_LINE as u64).saturating_sub(self.line.len() as u64);
        let n = (&mut self.reader)
            .take(room)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| match e.kind() {
                // What was read so far stays in `line` for the next call.
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
                _ => Error::Io("reading from chatd", e),
            })?;
        if n == 0 || !self.line.ends_with(b"\n") {
            if self.line.len() as u64 >= control::MAX_REPLY_LINE as u64 {
                return Err(Error::Protocol("reply line from chatd is too long".into()));
            }
            return Err(Error::Disconnected);
        }
        Ok(&self.line)
    }

    /// Sends a request and waits for its reply; chatd's error reply is [`Error::Chatd`].
    pub fn call(&mut self, request: &Request) -> Result<Response, Error> {
        let id = self.send(request)?;
        let reply = self.recv()?;
        if reply.id != id && reply.id != 0 {
            return Err(Error::Protocol(format!(
                "reply for request {} while waiting for {id}",
                reply.id
            )));
        }
        Ok(reply.outcome.into_result()?)
    }

    /// Like [`Client::call`], for a request answered with one reply type: `pick` takes what it
    /// wants from the reply, or turns a reply of another type into [`Error::unexpected`].
    pub fn call_expect<T>(
        &mut self,
        request: &Request,
        pick: impl FnOnce(Response) -> Result<T, Error>,
    ) -> Result<T, Error> {
        pick(self.call(request)?)
    }

    /// `status`: this node at a glance.
    pub fn status(&mut self) -> Result<NodeStatus, Error> {
        self.call_expect(&Request::Status, |r| match r {
            Response::Status(s) => Ok(s),
            r => Err(Error::unexpected(r)),
        })
    }

    /// A page of the inbox (`inbox`): the messages, and whether more matched than fit.
    pub fn inbox(&mut self, request: &Request) -> Result<(Vec<InboxMessage>, bool), Error> {
        self.call_expect(request, |r| match r {
            Response::Messages {
                messages,
                truncated,
            } => Ok((messages, truncated)),
            r => Err(Error::unexpected(r)),
        })
    }

    /// A request answered with one message's state (`message_status`, `cancel`, `wait`).
    pub fn message_info(&mut self, request: &Request) -> Result<MessageInfo, Error> {
        self.call_expect(request, |r| match r {
            Response::MessageInfo(info) => Ok(info),
            r => Err(Error::unexpected(r)),
        })
    }

    /// For streams (`follow`) and long requests (`wait`): no reply timeout.
    pub fn set_streaming(&mut self) -> Result<(), Error> {
        self.set_read_timeout(None)
    }

    /// `recv` gives up with [`Error::Timeout`] after this long (the partial line is kept).
    /// No effect on Windows, where reads block until chatd answers.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), Error> {
        platform::set_read_timeout(self.reader.get_ref(), t)
            .map_err(|e| Error::Io("control socket", e))
    }

    /// Writes (by this client and every [`Writer`] of it) fail after this long. No effect on
    /// Windows.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<(), Error> {
        platform::set_write_timeout(self.reader.get_ref(), t)
            .map_err(|e| Error::Io("control socket", e))
    }
}

/// The write half of a connection: request lines encoded into a buffer it keeps.
pub struct Writer {
    stream: Stream,
    buf: Vec<u8>,
}

impl Writer {
    fn new(stream: Stream) -> Writer {
        Writer {
            stream,
            buf: Vec::with_capacity(256),
        }
    }

    /// Writes one request line with this `id`. (Pipelining callers number their requests
    /// from [`Client::next_id`] on.)
    pub fn send(&mut self, id: u64, request: &Request) -> io::Result<()> {
        self.buf.clear();
        append_line(&mut self.buf, &RequestLine { id, request });
        self.stream.write_all(&self.buf)
    }

    /// Another handle on the same connection.
    pub fn try_clone(&self) -> io::Result<Writer> {
        self.stream.try_clone().map(Writer::new)
    }

    /// Tells chatd no more requests come (it still answers those it has).
    pub fn shutdown(&self) -> io::Result<()> {
        platform::shutdown_write(&self.stream)
    }
}

/// Raw bytes, for request lines encoded beforehand (`chatctl send -l` keeps each line to write
/// it again after a reconnect).
impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.stream.write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
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
) -> Result<Option<Client>, Error> {
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
            Err(e) if until.is_some_and(|u| Instant::now() >= u) => return Err(e),
            Err(_) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(all(test, unix))]
mod tests;
