//! What the kernel says about a process: resident memory, CPU time (per thread name) and bytes
//! written to storage, from `/proc`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `VmRSS` of `pid`, in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// (comm, utime + stime in ticks) from a `stat` file.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    // Fields after the comm start with field 3 (state); utime and stime are fields 14 and 15.
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU time and I/O of one process at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snap {
    pub ticks: u64,
    /// Ticks per thread name (threads with the same name are added up).
    pub threads: BTreeMap<String, u64>,
    pub write_bytes: u64,
    pub syscw: u64,
}

pub fn snap(pid: u32) -> Snap {
    let mut s = Snap {
        ticks: stat_ticks(&format!("/proc/{pid}/stat"))
            .map(|t| t.1)
            .unwrap_or(0),
        ..Snap::default()
    };
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let p = e.path().join("stat");
            if let Some((comm, t)) = stat_ticks(&p.to_string_lossy()) {
                *s.threads.entry(comm).or_default() += t;
            }
        }
    }
    if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
        for l in io.lines() {
            if let Some(v) = l.strip_prefix("write_bytes: ") {
                s.write_bytes = v.trim().parse().unwrap_or(0);
            }
            if let Some(v) = l.strip_prefix("syscw: ") {
                s.syscw = v.trim().parse().unwrap_or(0);
            }
        }
    }
    s
}

/// What one process used between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub cpu_secs: f64,
    /// CPU seconds per thread name.
    pub threads: BTreeMap<String, f64>,
    /// Bytes the process caused to be written to storage.
    pub disk_write_bytes: u64,
    /// write-type system calls (write, pwrite, writev, ...; fsync is not counted).
    pub write_syscalls: u64,
}

pub fn usage(before: &Snap, after: &Snap) -> Usage {
    let hz = clk_tck();
    let mut threads = BTreeMap::new();
    for (k, v) in &after.threads {
        let b = before.threads.get(k).copied().unwrap_or(0);
        let d = v.saturating_sub(b) as f64 / hz;
        if d > 0.0 {
            threads.insert(k.clone(), d);
        }
    }
    Usage {
        cpu_secs: after.ticks.saturating_sub(before.ticks) as f64 / hz,
        threads,
        disk_write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
        write_syscalls: after.syscw.saturating_sub(before.syscw),
    }
}

/// Samples the RSS of some processes every 20 ms and keeps the maximum of each.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<Mutex<Vec<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(Mutex::new(vec![0u64; pids.len()]));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kb) = rss_kb(*pid) {
                        let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                        m[i] = m[i].max(kb);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak RSS (KiB) of each process, in the order given.
    pub fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let m = self.max.lock().unwrap_or_else(|p| p.into_inner());
        m.clone()
    }
}
