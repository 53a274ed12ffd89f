//! The disk's own bound on durable throughput, measured in the same run: sequential writes of
//! incompressible data to the temporary directory (where the databases are), each followed by
//! `fdatasync`, the way a group commit appends to a WAL. A message that must be durable on two
//! nodes needs its body written twice, so `bandwidth ÷ (2 × body)` messages per second is the
//! ceiling any such design reaches on this disk.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::util::{body, now_ns};

/// Writes between two syncs, tried in turn; the best counts. Small syncs measure the sync's
/// cost more than the bandwidth (here 256 KiB chunks gave 56 MB/s, 1 MiB 200 MB/s), and a
/// busy chatd commits megabytes at a time.
const CHUNKS: [usize; 2] = [1 << 20, 4 << 20];
const MAX_BYTES: usize = 128 << 20;
const MAX_NS: u64 = 2_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct DiskBandwidth {
    pub bytes_per_sec: f64,
    /// The write size between two syncs that gave `bytes_per_sec`.
    pub chunk_bytes: usize,
    pub bytes: usize,
}

impl DiskBandwidth {
    /// Messages per second when each body must reach the disk `copies` times.
    pub fn ceiling(&self, body_bytes: usize, copies: usize) -> f64 {
        self.bytes_per_sec / (copies * body_bytes) as f64
    }
}

/// The best of [`CHUNKS`].
pub fn sequential_write(dir: &Path) -> anyhow::Result<DiskBandwidth> {
    let mut best: Option<DiskBandwidth> = None;
    for chunk in CHUNKS {
        let d = write_chunks(dir, chunk)?;
        if best
            .as_ref()
            .is_none_or(|b| d.bytes_per_sec > b.bytes_per_sec)
        {
            best = Some(d);
        }
    }
    best.context("no chunk size measured")
}

fn write_chunks(dir: &Path, chunk: usize) -> anyhow::Result<DiskBandwidth> {
    let path = dir.join("disk-bandwidth.dat");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // Bodies are at most 64 KiB (`util::body`): a chunk is made of them.
    let piece = 64 * 1024;
    let chunks: Vec<String> = (0..4)
        .map(|c| {
            (0..chunk / piece)
                .map(|i| body("disk.", c * 1000 + i, 0, piece))
                .collect()
        })
        .collect();
    let start = now_ns();
    let mut bytes = 0;
    while bytes < MAX_BYTES && now_ns() - start < MAX_NS {
        f.write_all(chunks[(bytes / chunk) % chunks.len()].as_bytes())?;
        f.sync_data()?;
        bytes += chunk;
    }
    let secs = (now_ns() - start) as f64 / 1e9;
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(DiskBandwidth {
        bytes_per_sec: bytes as f64 / secs.max(1e-9),
        chunk_bytes: chunk,
        bytes,
    })
}
