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

/// Printable ASCII without `"` and `\\` (which JSON escapes, and which the follower's substring
/// search for a body's end would trip on): 93 characters.
const PAD_CHARS: &[u8] = b" !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~";

/// 256 KiB of random printable text (xorshift64*, fixed seed: runs stay comparable). About 6.5
/// bits of entropy per byte, so neither a disk, a database nor a broker gains anything from
/// compressing the bench's own filler.
fn pad() -> &'static [u8] {
    static PAD: OnceLock<Vec<u8>> = OnceLock::new();
    PAD.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..256 * 1024)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
                PAD_CHARS[(r % PAD_CHARS.len() as u64) as usize]
            })
            .collect()
    })
}

/// A message body of exactly `size` bytes that carries its index and send time, then random
/// printable text taken at an offset that differs from message to message.
pub fn body(tag: &str, i: usize, ns: u64, size: usize) -> String {
    let mut s = format!("{tag}{i}.{ns}.");
    let pad = pad();
    let need = size.saturating_sub(s.len());
    // Bodies are at most 64 KiB (chat-bench's --sizes), so any offset below this one fits.
    let span = pad.len() - need.min(pad.len());
    let at = (i.wrapping_mul(7919) ^ (ns as usize)) % span.max(1);
    // PAD_CHARS is ASCII.
    s.push_str(std::str::from_utf8(&pad[at..at + need.min(pad.len())]).unwrap_or_default());
    s
}

/// `name` on `$PATH` or in the sbin directories (where Debian puts daemons).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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
