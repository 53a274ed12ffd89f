//! Events per source address per minute (fixed one-minute windows): registrations in
//! registryd, registry lookups forced by unknown callers in chatd.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Entries kept before old windows are swept out (bounds memory under a spray of addresses).
const SWEEP_AT: usize = 10_000;

pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Counts one event from `ip`; false if it is over the limit for this minute.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= SWEEP_AT {
            w.retain(|_, (m, _)| *m == minute);
        }
        let entry = w.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }
}
