//! The baselines measured in the same run: raw loopback TCP (the physical limit), the seed's way
//! (one TCP connection per message, nothing stored), and mosquitto QoS 0 / QoS 1 driven by
//! `mosquitto_pub -l` and counted at `mosquitto_sub`.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::report::Row;
use crate::util::{body, find_program, now_ns};

/// One TCP connection, newline-framed messages, buffered writes: what loopback can carry.
pub fn raw_tcp(size: usize, n: usize) -> anyhow::Result<Row> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> anyhow::Result<(usize, u64)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut count = 0usize;
        let mut last = 0;
        while count < n {
            let k = s.read(&mut buf)?;
            if k == 0 {
                break;
            }
            count += buf[..k].iter().filter(|&&b| b == b'\n').count();
            last = now_ns();
        }
        Ok((count, last))
    });
    let mut line = body("raw.", 0, 0, size).into_bytes();
    line.push(b'\n');
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let start = now_ns();
    {
        let mut w = BufWriter::with_capacity(64 * 1024, &s);
        for _ in 0..n {
            w.write_all(&line)?;
        }
        w.flush()?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let (count, last) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(Row::new(
        "raw TCP, 1 connection",
        "1→1",
        size,
        n,
        count,
        n,
        secs(start, last),
    ))
}

/// The seed's design: a new connection per message, written and closed; the receiver reads it
/// to the end and keeps nothing.
pub fn seed(size: usize, n: usize) -> anyhow::Result<Row> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let receiver = std::thread::spawn(move || -> (usize, u64) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut count = 0usize;
        let mut last = 0;
        listener.set_nonblocking(false).ok();
        while count < n && !done2.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut got = 0;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got += k,
                }
            }
            if got > 0 {
                count += 1;
                last = now_ns();
            }
        }
        (count, last)
    });
    let msg = body("seed.", 0, 0, size).into_bytes();
    let start = now_ns();
    let mut sent = 0;
    let mut note = None;
    for _ in 0..n {
        match TcpStream::connect(addr).and_then(|mut s| s.write_all(&msg)) {
            Ok(()) => sent += 1,
            Err(e) => {
                note = Some(format!("sender stopped after {sent}: {e}"));
                break;
            }
        }
    }
    if sent < n {
        done.store(true, Ordering::Relaxed);
        // Wake the accept so the receiver sees `done`.
        let _ = TcpStream::connect(addr);
    }
    let (count, last) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let mut row = Row::new(
        "seed way: 1 conn/msg, no storage",
        "1→1",
        size,
        sent,
        count.min(sent),
        n,
        secs(start, last),
    );
    row.note = note;
    Ok(row)
}

fn secs(start: u64, end: u64) -> f64 {
    end.saturating_sub(start) as f64 / 1e9
}

/// A mosquitto broker on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub version: String,
    publ: PathBuf,
    sub: PathBuf,
    pub pid: u32,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// `Ok(None)` when mosquitto or its clients are not installed.
    pub fn start(dir: &Path) -> anyhow::Result<Option<Mosquitto>> {
        let (Some(broker), Some(publ), Some(sub)) = (
            find_program("mosquitto"),
            find_program("mosquitto_pub"),
            find_program("mosquitto_sub"),
        ) else {
            return Ok(None);
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
            ),
        )?;
        let version = Command::new(&broker)
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_default();
        let child = Command::new(&broker)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", broker.display()))?;
        let pid = child.id();
        let m = Mosquitto {
            child,
            port,
            version,
            publ,
            sub,
            pid,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(m))
    }

    fn client(&self, prog: &Path, topic: &str, qos: u8) -> Command {
        let mut c = Command::new(prog);
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic])
            .args(["-q", &qos.to_string()]);
        c
    }

    /// `n` messages through `mosquitto_pub -l` at QoS `qos`; counts what `mosquitto_sub`
    /// printed. Timing starts once a first line went through (both clients connected).
    pub fn run(
        &self,
        tag: &str,
        qos: u8,
        size: usize,
        n: usize,
        stall: Duration,
    ) -> anyhow::Result<Row> {
        let topic = format!("bench/{}", tag.trim_end_matches('.'));
        let ready = format!("{tag}ready");
        let go = format!("{tag}go");
        let mut sub = Guard(
            self.client(&self.sub, &topic, qos)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mosquitto_sub")?,
        );
        let out = sub.0.stdout.take().context("mosquitto_sub stdout")?;
        let count = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let saw_ready = Arc::new(AtomicBool::new(false));
        let saw_go = Arc::new(AtomicBool::new(false));
        let reader = {
            let (count, last, saw_ready, saw_go) = (
                count.clone(),
                last.clone(),
                saw_ready.clone(),
                saw_go.clone(),
            );
            let (tag, ready, go) = (tag.to_string(), ready.clone(), go.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::with_capacity(256 * 1024, out);
                let mut line = Vec::with_capacity(64 * 1024);
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let l = line.strip_suffix(b"\n").unwrap_or(&line);
                    if l == ready.as_bytes() {
                        saw_ready.store(true, Ordering::Relaxed);
                    } else if l == go.as_bytes() {
                        saw_go.store(true, Ordering::Relaxed);
                    } else if l.starts_with(tag.as_bytes()) {
                        count.fetch_add(1, Ordering::Relaxed);
                        last.store(now_ns(), Ordering::Relaxed);
                    }
                }
            })
        };
        // The subscription is in place once a message published after it arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !saw_ready.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                bail!("mosquitto_sub did not receive a test message within 10 s");
            }
            let _ = self
                .client(&self.publ, &topic, qos)
                .args(["-m", &ready])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let t = Instant::now();
            while !saw_ready.load(Ordering::Relaxed) && t.elapsed() < Duration::from_millis(200) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut publ = Guard(
            self.client(&self.publ, &topic, qos)
                .arg("-l")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mosquitto_pub")?,
        );
        let mut stdin = publ.0.stdin.take().context("mosquitto_pub stdin")?;
        stdin.write_all(format!("{go}\n").as_bytes())?;
        stdin.flush()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !saw_go.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                bail!("mosquitto_pub's first line did not arrive within 10 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let broker_before = crate::procfs::snap(self.pid);
        let start = now_ns();
        {
            let mut w = BufWriter::with_capacity(64 * 1024, &mut stdin);
            for i in 0..n {
                w.write_all(body(tag, i, 0, size).as_bytes())?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        drop(stdin);
        let _ = publ.0.wait();
        // Everything published is out; wait for the subscriber to catch up (or stall).
        let mut seen = count.load(Ordering::Relaxed);
        let mut progress = Instant::now();
        while seen < n && progress.elapsed() < stall.min(Duration::from_secs(3)) {
            std::thread::sleep(Duration::from_millis(20));
            let c = count.load(Ordering::Relaxed);
            if c != seen {
                seen = c;
                progress = Instant::now();
            }
        }
        drop(sub);
        let _ = reader.join();
        let got = count.load(Ordering::Relaxed);
        let mut row = Row::new(
            &format!("mosquitto QoS {qos}"),
            "1→1",
            size,
            n,
            got,
            n,
            secs(start, last.load(Ordering::Relaxed)),
        );
        let broker = crate::procfs::usage(&broker_before, &crate::procfs::snap(self.pid));
        let mut notes = vec![format!(
            "broker CPU {:.1} µs/msg",
            broker.cpu_secs * 1e6 / got.max(1) as f64
        )];
        if got < n {
            notes.push(format!("subscriber received {got} of {n}"));
        }
        row.note = Some(notes.join("; "));
        row.usage.insert("mosquitto".into(), broker);
        Ok(row)
    }
}

/// A helper process, killed and reaped when dropped (std never signals a reaped child).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
