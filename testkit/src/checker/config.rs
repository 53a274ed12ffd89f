//! What a run does: sizes, window, seed, timings, output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to run. [`Config::new`] gives sensible defaults for everything but the two sizes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Messages to send from A to B.
    pub messages: u64,
    /// Kill events; each kills A, B or both (chosen at random).
    pub kills: u32,
    /// Most `send` requests in flight on the control connection.
    pub window: usize,
    /// Seed of the random choices (kill moments, targets, downtimes); printed in the report.
    pub seed: u64,
    /// Extra chatd arguments (quick retries, so that recovery after a kill is fast).
    pub chatd_args: Vec<String>,
    /// Longest a node stays dead before it is restarted (the downtime is random below this).
    pub max_downtime: Duration,
    /// How long to wait, after the last kill, for A's outbox to drain.
    pub drain_timeout: Duration,
    /// Give up if no send is accepted for this long.
    pub stall_timeout: Duration,
    /// Keep the directory (databases, daemon logs) even when the run passes; it is always kept
    /// when the run fails.
    pub keep_dir: bool,
    /// Progress and kill events on stderr.
    pub verbose: bool,
}

impl Config {
    pub fn new(messages: u64, kills: u32) -> Config {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (std::process::id() as u64).rotate_left(32);
        Config {
            messages,
            kills,
            window: 128,
            seed,
            chatd_args: ["--retry-initial", "0.05", "--retry-max", "0.5"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_downtime: Duration::from_millis(300),
            drain_timeout: Duration::from_secs(120) + Duration::from_millis(messages),
            stall_timeout: Duration::from_secs(60),
            keep_dir: false,
            verbose: false,
        }
    }
}
