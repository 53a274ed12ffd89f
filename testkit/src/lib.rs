//! Test helpers: each test gets a fresh directory and real daemons on loopback with OS-chosen
//! ports: the built binaries (this module), or `chatd::run`/`registryd::run` in the test's own
//! process ([`inproc`]). Waiting is always polling with a deadline, never a fixed sleep.
//! The tests drive Unix processes and sockets: on other systems this crate is empty.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod checker;
pub mod delay_proxy;
pub mod etcd;
pub mod identity;
pub mod inproc;
pub mod proxy;
pub mod registry_wire;

/// The directory holding the workspace's built binaries (next to the test executable's `deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with a hint when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo test --workspace` builds every binary)",
        p.display()
    );
    p
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("pc")
        .tempdir()
        .expect("tempdir")
}

/// A daemon process; killed (SIGKILL) on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Sends SIGTERM and waits up to `timeout` for the exit; returns how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_for(timeout, "daemon to exit after SIGTERM", || {
            self.child.try_wait().ok().flatten()
        });
        start.elapsed()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process stays, its sockets stay open, and nothing is read or answered.
    pub fn freeze(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// SIGCONT after [`Daemon::freeze`].
    pub fn thaw(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns `cmd` with stderr copied to `log`, and returns the first stderr line containing
/// `ready_marker` (so a test can read the address a daemon chose).
pub fn spawn_logged(mut cmd: Command, log: &Path, ready_marker: &str) -> (Daemon, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.env(
        "RUST_LOG",
        std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    let mut child = cmd.spawn().expect("spawn daemon");
    let stderr = child.stderr.take().expect("stderr");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let (tx, rx) = mpsc::channel();
    let marker = ready_marker.to_string();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
            if line.contains(&marker) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    let daemon = Daemon {
        child,
        log: log.to_path_buf(),
    };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => (daemon, line),
        Err(_) => panic!(
            "daemon did not log {ready_marker:?} within 20 s; log:\n{}",
            daemon.log_text()
        ),
    }
}

/// Value of `key=` in a tracing log line.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let start = line.find(&pat)? + pat.len();
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

pub struct Registry {
    pub daemon: Daemon,
    pub addr: SocketAddr,
    pub db: PathBuf,
}

impl Registry {
    /// Starts registryd on 127.0.0.1 with an OS-chosen port and its database in `dir`.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_on(dir, "127.0.0.1:0")
    }

    pub fn start_on(dir: &Path, listen: &str) -> Registry {
        Registry::start_with(dir, listen, &[])
    }

    /// Like [`Registry::start_on`], with more registryd options (e.g. `--ttl 1`).
    pub fn start_with(dir: &Path, listen: &str, extra: &[&str]) -> Registry {
        let db = dir.join("registry.db");
        let mut cmd = Command::new(bin("registryd"));
        cmd.args(["--listen", listen, "--db"]).arg(&db).args(extra);
        let (daemon, line) = spawn_logged(cmd, &dir.join("registryd.log"), "registryd ready");
        let addr = log_field(&line, "listen")
            .and_then(|a| a.parse().ok())
            .expect("listen address in log");
        Registry { daemon, addr, db }
    }
}

impl Registry {
    /// registryd on `--store URL` (e.g. an etcd cluster), log in `dir/LOG_NAME`.
    pub fn start_store(dir: &Path, log_name: &str, store: &str, extra: &[&str]) -> Registry {
        let mut cmd = Command::new(bin("registryd"));
        cmd.args(["--listen", "127.0.0.1:0", "--store", store])
            .args(extra);
        let (daemon, line) = spawn_logged(cmd, &dir.join(log_name), "registryd ready");
        let addr = log_field(&line, "listen")
            .and_then(|a| a.parse().ok())
            .expect("listen address in log");
        Registry {
            daemon,
            addr,
            db: dir.join("registry.db"),
        }
    }
}

pub struct Node {
    pub name: String,
    pub daemon: Daemon,
    pub socket: PathBuf,
    pub db: PathBuf,
    pub registry: SocketAddr,
    pub listen: SocketAddr,
    pub extra: Vec<String>,
    pub dir: PathBuf,
}

impl Node {
    /// Starts chatd NAME with socket and database in `dir`, peer port chosen by the OS.
    pub fn start(dir: &Path, name: &str, registry: SocketAddr) -> Node {
        Node::start_with(dir, name, registry, &[])
    }

    pub fn start_with(dir: &Path, name: &str, registry: SocketAddr, extra: &[&str]) -> Node {
        Node::start_at(dir, name, registry, &dir.join(format!("{name}.db")), extra)
    }

    /// Like [`Node::start_with`], with the database at `db`.
    pub fn start_at(
        dir: &Path,
        name: &str,
        registry: SocketAddr,
        db: &Path,
        extra: &[&str],
    ) -> Node {
        let socket = dir.join(format!("{name}.sock"));
        let db = db.to_path_buf();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (daemon, listen) =
            Node::spawn(dir, name, registry, &socket, &db, "127.0.0.1:0", &extra);
        Node {
            name: name.into(),
            daemon,
            socket,
            db,
            registry,
            listen,
            extra,
            dir: dir.to_path_buf(),
        }
    }

    fn spawn(
        dir: &Path,
        name: &str,
        registry: SocketAddr,
        socket: &Path,
        db: &Path,
        listen: &str,
        extra: &[String],
    ) -> (Daemon, SocketAddr) {
        let mut cmd = Command::new(bin("chatd"));
        cmd.args([
            "--name",
            name,
            "--listen",
            listen,
            "--registry",
            &registry.to_string(),
        ])
        .arg("--socket")
        .arg(socket)
        .arg("--db")
        .arg(db)
        .args(extra);
        let (daemon, line) = spawn_logged(cmd, &dir.join(format!("{name}.log")), "chatd ready");
        let listen = log_field(&line, "listen")
            .and_then(|a| a.parse().ok())
            .expect("listen address in log");
        (daemon, listen)
    }

    /// Starts the same node again (same name, socket, database and peer port) after it stopped.
    pub fn restart(&mut self) {
        let _ = self.daemon.child.try_wait();
        let (daemon, listen) = Node::spawn(
            &self.dir,
            &self.name,
            self.registry,
            &self.socket,
            &self.db,
            &self.listen.to_string(),
            &self.extra,
        );
        self.daemon = daemon;
        self.listen = listen;
    }

    /// Runs chatctl against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        chatctl(&self.socket, args, None)
    }

    pub fn ctl_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        chatctl(&self.socket, args, Some(stdin))
    }

    /// `chatctl --json inbox --limit 10000` parsed.
    pub fn inbox(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["--json", "inbox", "--limit", "10000"]);
        assert!(
            out.status.success(),
            "inbox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// Bodies in this node's inbox, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.inbox()
            .iter()
            .map(|m| m["body"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Polls until the inbox holds at least `n` messages; returns the bodies.
    pub fn wait_inbox(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_for(
            timeout,
            &format!("{} messages in {}'s inbox", n, self.name),
            || {
                let b = self.bodies();
                (b.len() >= n).then_some(b)
            },
        )
    }
}

pub fn chatctl(socket: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin("chatctl"));
    cmd.arg("--socket").arg(socket).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn chatctl");
    if let Some(data) = stdin {
        let mut si = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&data);
        });
    }
    child.wait_with_output().expect("chatctl output")
}

pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// A small local network: one registry and named nodes, all in one fresh directory.
pub struct Net {
    pub dir: TempDir,
    pub registry: Registry,
}

impl Net {
    pub fn new() -> Net {
        let dir = tempdir();
        let registry = Registry::start(dir.path());
        Net { dir, registry }
    }

    pub fn node(&self, name: &str) -> Node {
        Node::start(self.dir.path(), name, self.registry.addr)
    }

    pub fn node_with(&self, name: &str, extra: &[&str]) -> Node {
        Node::start_with(self.dir.path(), name, self.registry.addr, extra)
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}
