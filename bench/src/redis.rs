//! The durable peer: Redis 7 (Debian's `redis-server`) with `appendonly yes` and
//! `appendfsync always`, so that a write is answered only after the append-only file was
//! fsync'd (one fsync per event-loop round: group commit, like peerchat's). A pipelined `XADD`
//! publisher and an `XREAD BLOCK` consumer, counted at the consumer. Redis keeps one durable
//! copy of each body; peerchat keeps two (A's outbox and B's inbox) and encrypts the link.
//!
//! The bench speaks the two commands it needs in RESP (the Redis protocol: arrays of bulk
//! strings) itself: a client library would bring a URL parser and a dozen crates into the build
//! for two commands to a server the bench started on loopback.

use std::io::{BufReader, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::Value;

use crate::report::Row;
use crate::util::{body, find_program, now_ns};

/// A redis-server on a free loopback port with its append-only file in the bench's directory,
/// killed on drop.
pub struct Redis {
    child: Child,
    addr: SocketAddr,
    pub version: String,
    pub pid: u32,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// `Ok(None)` when `redis-server` is not installed.
    pub fn start(dir: &Path) -> anyhow::Result<Option<Redis>> {
        let Some(server) = find_program("redis-server") else {
            return Ok(None);
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let version = Command::new(&server)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let child = Command::new(&server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&data)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let pid = child.id();
        let r = Redis {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            version,
            pid,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = TcpStream::connect(r.addr).ok().and_then(|s| {
                let mut c = Conn::new(s).ok()?;
                c.command(&[b"PING"]).ok()?;
                c.flush().ok()?;
                c.read().ok()
            });
            if matches!(pong, Some(Ok(Value::SimpleString(ref p))) if p == "PONG") {
                return Ok(Some(r));
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING on {} within 10 s", r.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `n` bodies of `size` bytes: `XADD` pipelined on one connection (a second thread reads
    /// the replies), `XREAD BLOCK` on another, counted at the consumer. Time runs from the first
    /// `XADD` written to the last entry read.
    pub fn run(&self, tag: &str, size: usize, n: usize, stall: Duration) -> anyhow::Result<Row> {
        let key = format!("bench:{}", tag.trim_end_matches('.'));
        let count = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let consumer = {
            let mut c = Conn::new(TcpStream::connect(self.addr)?)?;
            let (count, last, key, tag) =
                (count.clone(), last.clone(), key.clone(), tag.to_string());
            std::thread::spawn(move || consume(&mut c, &key, &tag, n, stall, &count, &last))
        };
        let stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        let replies = {
            let mut r = Conn::new(stream.try_clone()?)?;
            std::thread::spawn(move || -> anyhow::Result<(usize, Option<String>)> {
                let (mut errors, mut first) = (0, None);
                for _ in 0..n {
                    if let Err(e) = r.read()? {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
                Ok((errors, first))
            })
        };
        let before = crate::procfs::snap(self.pid);
        let start = now_ns();
        {
            let mut w = Conn::new(stream)?;
            for i in 0..n {
                let b = body(tag, i, 0, size);
                w.command(&[b"XADD", key.as_bytes(), b"*", b"b", b.as_bytes()])?;
            }
            w.flush()?;
        }
        let (errors, first_error) = replies
            .join()
            .map_err(|_| anyhow::anyhow!("reply reader panicked"))??;
        consumer
            .join()
            .map_err(|_| anyhow::anyhow!("consumer panicked"))??;
        let got = count.load(Ordering::Relaxed);
        let end = last.load(Ordering::Relaxed);
        let mut row = Row::new(
            "Redis XADD, AOF fsync always",
            "1→1",
            size,
            n,
            got,
            n,
            end.saturating_sub(start) as f64 / 1e9,
        );
        let usage = crate::procfs::usage(&before, &crate::procfs::snap(self.pid));
        let mut notes = vec![format!(
            "server CPU {:.1} µs/msg; disk {:.1} KB/msg",
            usage.cpu_secs * 1e6 / got.max(1) as f64,
            usage.disk_write_bytes as f64 / got.max(1) as f64 / 1e3
        )];
        if let Some(e) = first_error {
            notes.push(format!("{errors} XADD errors, first: {e}"));
        }
        row.note = Some(notes.join("; "));
        row.usage.insert("redis-server".into(), usage);
        Ok(row)
    }
}

/// Reads the stream from its start until `n` entries carrying `tag` arrived or nothing came
/// for `stall`.
fn consume(
    c: &mut Conn,
    key: &str,
    tag: &str,
    n: usize,
    stall: Duration,
    count: &AtomicUsize,
    last: &AtomicU64,
) -> anyhow::Result<()> {
    let mut cursor = b"0-0".to_vec();
    let mut progress = Instant::now();
    while count.load(Ordering::Relaxed) < n && progress.elapsed() < stall {
        c.command(&[
            b"XREAD",
            b"COUNT",
            b"4096",
            b"BLOCK",
            b"1000",
            b"STREAMS",
            key.as_bytes(),
            &cursor,
        ])?;
        c.flush()?;
        // Null on timeout; else [[key, [[id, [field, value]], ...]]].
        let Ok(Value::Array(streams)) = c.read()? else {
            continue;
        };
        for s in streams {
            let Value::Array(mut s) = s else { continue };
            let Some(Value::Array(entries)) = s.pop() else {
                continue;
            };
            for e in entries {
                let Value::Array(mut e) = e else { continue };
                let fields = e.pop();
                if let Some(Value::BulkString(id)) = e.pop() {
                    cursor = id;
                }
                if let Some(Value::Array(f)) = fields {
                    if matches!(f.get(1), Some(Value::BulkString(v)) if v.starts_with(tag.as_bytes()))
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                        last.store(now_ns(), Ordering::Relaxed);
                        progress = Instant::now();
                    }
                }
            }
        }
    }
    Ok(())
}

/// One connection: commands packed by the redis crate and written buffered, replies parsed by
/// its `Parser` (which keeps what it read ahead, so one parser per connection).
struct Conn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    parser: redis::Parser,
}

impl Conn {
    fn new(s: TcpStream) -> anyhow::Result<Conn> {
        Ok(Conn {
            r: BufReader::with_capacity(256 * 1024, s.try_clone()?),
            w: BufWriter::with_capacity(256 * 1024, s),
            parser: redis::Parser::new(),
        })
    }

    /// Writes one command (buffered).
    fn command(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(*a);
        }
        self.w.write_all(&cmd.get_packed_command())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }

    /// The next reply: a value, or the error Redis answered.
    fn read(&mut self) -> anyhow::Result<Result<redis::Value, String>> {
        match self.parser.parse_value(&mut self.r) {
            Ok(v) => Ok(Ok(v)),
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                Err(anyhow::anyhow!("reading from redis: {e}"))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }
}
