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

/// One write between two syncs: a group commit of sixteen 16 KiB messages.
const CHUNK: usize = 256 * 1024;
const MAX_BYTES: usize = 256 << 20;
const MAX_NS: u64 = 4_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct DiskBandwidth {
    pub bytes_per_sec: f64,
    pub chunk_bytes: usize,
    pub bytes: usize,
}

impl DiskBandwidth {
    /// Messages per second when each body must reach the disk `copies` times.
    pub fn ceiling(&self, body_bytes: usize, copies: usize) -> f64 {
        self.bytes_per_sec / (copies * body_bytes) as f64
    }
}

pub fn sequential_write(dir: &Path) -> anyhow::Result<DiskBandwidth> {
    let path = dir.join("disk-bandwidth.dat");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let chunks: Vec<String> = (0..16).map(|i| body("disk.", i, 0, CHUNK)).collect();
    let start = now_ns();
    let mut bytes = 0;
    while bytes < MAX_BYTES && now_ns() - start < MAX_NS {
        f.write_all(chunks[(bytes / CHUNK) % chunks.len()].as_bytes())?;
        f.sync_data()?;
        bytes += CHUNK;
    }
    let secs = (now_ns() - start) as f64 / 1e9;
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(DiskBandwidth {
        bytes_per_sec: bytes as f64 / secs.max(1e-9),
        chunk_bytes: CHUNK,
        bytes,
    })
}
