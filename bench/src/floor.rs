//! The latency floor of a durable hop, measured in the same run as peerchat: what two durable
//! writes in series cost on this disk, with nothing else on the path.
//!
//! peerchat's send → follow path has two commits in series that cannot go (A's before
//! `accepted`, B's before its `ack` and before a follower sees the message). This baseline does
//! only that: a thread "A" writes one 4 KiB page and `fdatasync`s it (as SQLite's WAL commit
//! does), then hands a 16-byte token over loopback TCP to a thread "B", which writes and
//! `fdatasync`s its own page. Both files live in the bench's temporary directory, on the same
//! disk as the daemons' databases, and are overwritten in place (a reused WAL; no file growth).
//! Paced open-loop at the latency run's rate, like the peerchat client, so an fsync that runs
//! long delays the ones behind it just as it would in chatd.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::report::percentile;
use crate::unix_main::now_ns;

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
    /// One `fdatasync` alone (both threads' calls), for reference.
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

/// Writes page `i` of `f` and makes it durable; returns how long the `fdatasync` took, in ns.
fn durable_write(f: &File, page: &[u8], i: u64) -> anyhow::Result<u64> {
    f.write_all_at(page, (i % PAGES) * PAGE as u64)?;
    let t = now_ns();
    f.sync_data()?;
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
        let mut token = [0u8; 16];
        for _ in 0..n {
            s.read_exact(&mut token)?;
            let (i, due) = token.split_at(8);
            let i = u64::from_le_bytes(i.try_into()?);
            let due = u64::from_le_bytes(due.try_into()?);
            syncs.push(durable_write(&fb, &page, i)?);
            lat.push(now_ns().saturating_sub(due));
        }
        Ok((lat, syncs))
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let page = vec![b'a'; PAGE];
    let mut syncs = Vec::with_capacity(n);
    let t0 = Instant::now();
    let t0_ns = now_ns();
    for i in 0..n as u64 {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        let now = t0.elapsed();
        if offset > now {
            std::thread::sleep(offset - now);
        }
        let due = t0_ns + offset.as_nanos() as u64;
        syncs.push(durable_write(&fa, &page, i)?);
        let mut token = [0u8; 16];
        token[..8].copy_from_slice(&i.to_le_bytes());
        token[8..].copy_from_slice(&due.to_le_bytes());
        s.write_all(&token)?;
    }
    let (mut lat, b_syncs) = b
        .join()
        .map_err(|_| anyhow::anyhow!("floor thread B panicked"))??;
    syncs.extend(b_syncs);
    lat.sort_unstable();
    syncs.sort_unstable();
    let _ = std::fs::remove_file(dir.join("floor-a.dat"));
    let _ = std::fs::remove_file(dir.join("floor-b.dat"));
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
