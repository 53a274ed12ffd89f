//! The latency floor of a durable hop, measured in the same run as peerchat: what two durable
//! writes in series cost on this disk, with nothing else on the path.
//!
//! peerchat's send → follow path has two commits in series that cannot go (A's before
//! `accepted`, B's before its `ack` and before a follower sees the message). This baseline does
//! only that, the way SQLite's WAL commit does it (a write, then `fsync`: the bundled SQLite is
//! built without `HAVE_FDATASYNC`): a thread "A" writes one 4 KiB page and syncs it, then hands a
//! 16-byte token per message (its start time, its number) over loopback TCP to a thread "B", which writes and syncs its own
//! page. Both group-commit like chatd: A syncs once for every message due by then, B once for
//! every token it has read. Both files live in the bench's temporary directory, on the same disk
//! as the daemons' databases, and are overwritten in place (a reused WAL; no file growth).
//!
//! Paced open-loop at the latency run's rate, like the peerchat client. A message's clock starts
//! when it is due, or when A wakes up for it if A was sleeping then (timer oversleep is the
//! client's lateness, not the disk's; peerchat's client likewise measures from its write).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::util::{now_ns, percentile};

const PAGE: usize = 4096;
/// Pages per file, overwritten in turn (4 MiB, the size of a WAL at SQLite's default checkpoint).
const PAGES: u64 = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub messages: usize,
    pub rate_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// One commit's `fsync` alone (both threads' calls), for reference.
    pub sync_p50_us: f64,
    pub sync_p99_us: f64,
}

fn page_file(dir: &Path, name: &str) -> anyhow::Result<File> {
    let path = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // Allocate the whole file first, so that the measured writes overwrite, as a reused WAL does.
    f.write_all_at(&vec![0u8; PAGE * PAGES as usize], 0)?;
    f.sync_all()?;
    Ok(f)
}

/// Writes page `i` of `f` and makes it durable; returns how long the `fsync` took, in ns.
fn durable_write(f: &File, page: &[u8], i: u64) -> anyhow::Result<u64> {
    f.write_all_at(page, (i % PAGES) * PAGE as u64)?;
    let t = now_ns();
    f.sync_all()?;
    Ok(now_ns() - t)
}

pub fn durable_floor(dir: &Path, rate: f64, n: usize) -> anyhow::Result<Floor> {
    let fa = page_file(dir, "floor-a.dat")?;
    let fb = page_file(dir, "floor-b.dat")?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let b = std::thread::spawn(move || -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let page = vec![b'b'; PAGE];
        let mut lat = Vec::with_capacity(n);
        let mut syncs = Vec::with_capacity(n);
        let mut buf = vec![0u8; 16 * 1024];
        let mut have = 0usize;
        let mut commits = 0u64;
        while lat.len() < n {
            let k = s.read(&mut buf[have..])?;
            if k == 0 {
                anyhow::bail!("A closed the connection after {} messages", lat.len());
            }
            have += k;
            let whole = have / 16 * 16;
            if whole == 0 {
                continue;
            }
            // One commit for every token read so far (group commit).
            syncs.push(durable_write(&fb, &page, commits)?);
            commits += 1;
            let done = now_ns();
            for token in buf[..whole].chunks_exact(16) {
                let start = u64::from_le_bytes(token[..8].try_into()?);
                lat.push(done.saturating_sub(start));
            }
            buf.copy_within(whole..have, 0);
            have -= whole;
        }
        Ok((lat, syncs))
    });
    let result = drive_a(&fa, addr, rate, n);
    let joined = b
        .join()
        .map_err(|_| anyhow::anyhow!("floor thread B panicked"));
    let _ = std::fs::remove_file(dir.join("floor-a.dat"));
    let _ = std::fs::remove_file(dir.join("floor-b.dat"));
    // B's error explains A's (a broken pipe), so it comes first.
    let (mut lat, b_syncs) = joined??;
    let mut syncs = result?;
    syncs.extend(b_syncs);
    lat.sort_unstable();
    syncs.sort_unstable();
    let us = |v: f64| v / 1e3;
    Ok(Floor {
        messages: n,
        rate_per_sec: rate,
        p50_us: us(percentile(&lat, 50.0)),
        p99_us: us(percentile(&lat, 99.0)),
        p999_us: us(percentile(&lat, 99.9)),
        max_us: us(lat.last().copied().unwrap_or(0) as f64),
        sync_p50_us: us(percentile(&syncs, 50.0)),
        sync_p99_us: us(percentile(&syncs, 99.0)),
    })
}

/// Thread A: paces `n` messages at `rate`, one durable write for all that are due, then a token
/// per message to B carrying the time its clock started. Returns A's fsync times.
fn drive_a(f: &File, addr: std::net::SocketAddr, rate: f64, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let page = vec![b'a'; PAGE];
    let mut syncs = Vec::new();
    let t0 = Instant::now();
    let t0_ns = now_ns();
    let due = |i: usize| Duration::from_secs_f64(i as f64 / rate);
    let mut next = 0usize;
    let mut commits = 0u64;
    let mut tokens = Vec::with_capacity(16 * 64);
    while next < n {
        let now = t0.elapsed();
        let mut woke = None;
        if due(next) > now {
            std::thread::sleep(due(next) - now);
            woke = Some(now_ns());
        }
        // Every message due by now joins this commit.
        let elapsed = t0.elapsed();
        let mut last = next;
        while last < n && due(last) <= elapsed {
            last += 1;
        }
        let last = last.max(next + 1);
        syncs.push(durable_write(f, &page, commits)?);
        commits += 1;
        tokens.clear();
        for i in next..last {
            let scheduled = t0_ns + due(i).as_nanos() as u64;
            // A message due while A slept starts when A woke for it (see the module docs).
            let start = match woke {
                Some(w) if i == next => w.max(scheduled),
                _ => scheduled,
            };
            tokens.extend_from_slice(&start.to_le_bytes());
            tokens.extend_from_slice(&(i as u64).to_le_bytes());
        }
        s.write_all(&tokens)?;
        next = last;
    }
    Ok(syncs)
}
