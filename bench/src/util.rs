//! Small helpers every part of chat-bench uses: the one clock, progress lines, message bodies,
//! a byte search and percentiles. Imports no other module of the crate, so that the others can
//! all use it without importing each other.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call (one clock for every thread of this process).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A progress line on stderr, stamped with the time since the start.
pub fn progress(msg: &str) {
    eprintln!("[{:7.1}s] {msg}", now_ns() as f64 / 1e9);
}

/// A message body of exactly `size` bytes that carries its index and send time.
pub fn body(tag: &str, i: usize, ns: u64, size: usize) -> String {
    let mut s = format!("{tag}{i}.{ns}.");
    while s.len() < size {
        s.push('x');
    }
    s
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64
}
