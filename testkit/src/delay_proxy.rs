//! A TCP proxy that adds latency: every chunk read from one side is written to the other
//! `delay ± jitter` after it arrived, in order (a TCP stream cannot be reordered, so a chunk
//! never overtakes the one before it). The network fault suite (`.ci/netfaults.sh`) puts it in
//! front of a node because this machine's kernel has no `netem` qdisc.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Added one-way latency: `base` plus a uniform offset in `[-jitter, +jitter]`, per chunk.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub base: Duration,
    pub jitter: Duration,
}

/// Most bytes read at once; also the most that one delayed chunk holds.
const CHUNK: usize = 64 * 1024;

/// A tiny xorshift generator: the jitter needs no cryptographic quality.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Rng(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

impl Latency {
    fn sample(&self, rng: &mut Rng) -> Duration {
        let jitter_us = self.jitter.as_micros() as u64;
        if jitter_us == 0 {
            return self.base;
        }
        let offset = rng.next() % (2 * jitter_us + 1);
        (self.base + Duration::from_micros(offset)).saturating_sub(self.jitter)
    }
}

/// Accepts on `listener` forever; each connection gets its own connection to `target` and a
/// delayed pump in each direction. Returns only if accepting fails.
pub fn serve(listener: TcpListener, target: SocketAddr, latency: Latency) -> std::io::Result<()> {
    loop {
        let (client, _) = listener.accept()?;
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            // The target is down: close at once, as the target itself would.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        pump(client, server, latency);
        pump(s2, c2, latency);
    }
}

/// `from` → `to` with latency: a reader thread stamps each chunk with its due time, a writer
/// thread writes it then. End of stream (or an error) is passed on as a shutdown after the
/// data before it, so the far side sees the close with the same delay.
fn pump(mut from: TcpStream, mut to: TcpStream, latency: Latency) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut rng = Rng::new();
        let mut last_due = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            // Never before the previous chunk: a stream keeps its order.
            let due = (Instant::now() + latency.sample(&mut rng)).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).is_err() || n == 0 {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if chunk.is_empty() || to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_within_the_jitter() {
        let l = Latency {
            base: Duration::from_millis(100),
            jitter: Duration::from_millis(20),
        };
        let mut rng = Rng::new();
        let samples: Vec<Duration> = (0..2000).map(|_| l.sample(&mut rng)).collect();
        assert!(samples.iter().all(|d| *d >= Duration::from_millis(80)));
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(120)));
        // Spread over the range, not a constant.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(90)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(110)));
    }

    #[test]
    fn delays_each_direction_and_keeps_the_order() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut r = s.try_clone().unwrap();
            std::io::copy(&mut r, &mut s).ok();
        });
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let latency = Latency {
            base: Duration::from_millis(100),
            jitter: Duration::from_millis(20),
        };
        std::thread::spawn(move || serve(proxy, echo_addr, latency));

        let mut c = TcpStream::connect(proxy_addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sent: Vec<u8> = (0..200u32).flat_map(|i| i.to_be_bytes()).collect();
        let t0 = Instant::now();
        for piece in sent.chunks(8) {
            c.write_all(piece).unwrap();
        }
        let mut got = vec![0u8; sent.len()];
        c.read_exact(&mut got).unwrap();
        // There and back: at least twice the smallest one-way delay.
        assert!(
            t0.elapsed() >= Duration::from_millis(160),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(got, sent);
    }
}
