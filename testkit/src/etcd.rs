//! Real etcd members as plain processes on free loopback ports in a test's directory (never a
//! system service), for registryd's etcd store.
//!
//! [`EtcdCluster::start`] returns `None` when the `etcd` binary is missing outside CI, after a
//! loud message; under CI (`CI=true`) a missing etcd fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// The etcd binary, or `None` after a loud skip message (outside CI only).
pub fn etcd_or_skip(test: &str) -> Option<PathBuf> {
    match etcd_binary() {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: etcd is not installed, and CI must run the etcd tests (apt-get install etcd-server)")
        }
        None => {
            eprintln!("\n!!!!! SKIPPING {test}: no etcd binary (install Debian's etcd-server, or set ETCD_BIN) !!!!!\n");
            None
        }
    }
}

pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    binary: PathBuf,
    initial: String,
}

fn free_port() -> SocketAddr {
    // Bound and released: another process could take it before etcd does, which is unlikely
    // on loopback within milliseconds, and would fail the start loudly.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local_addr")
}

impl EtcdCluster {
    /// Starts `n` members in `dir` and waits until the cluster answers.
    pub fn start(dir: &Path, n: usize, test: &str) -> Option<EtcdCluster> {
        let binary = etcd_or_skip(test)?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                dir: dir.join(format!("etcd-m{i}")),
                log: dir.join(format!("etcd-m{i}.log")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            members,
            binary,
            initial,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy();
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.dir)
            .arg("--listen-client-urls")
            .arg(format!("http://{}", m.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", m.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-cluster")
            .arg(&self.initial)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(format!("peerchat-test-{}", std::process::id()))
            // Fast elections on loopback, so kill tests do not wait seconds for a leader.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// `etcd://A,B,C/PREFIX` for registryd.
    pub fn url(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self.members.iter().map(|m| m.client.to_string()).collect();
        format!("etcd://{}{prefix}", hosts.join(","))
    }

    /// Waits until every running member reports healthy (`GET /health`).
    pub fn wait_healthy(&self) {
        wait_for(Duration::from_secs(30), "etcd members healthy", || {
            self.members
                .iter()
                .filter(|m| m.child.is_some())
                .all(|m| healthy(m.client))
                .then_some(())
        });
    }

    /// kill -9 of member `i` (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.restart(i);
        }
        self.wait_healthy();
    }

    /// The running members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| c.id()))
            .collect()
    }

    pub fn log_text(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {}\n{}",
                    m.name,
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Whether the member at `client` answers `GET /health` with `"health":"true"`.
pub fn healthy(client: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&client, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {client}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}
