//! chat-bench's command line (`Args`, the phases) and what it makes of it (`Plan`).

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// peerchat A→B throughput for each body size.
    Throughput,
    /// `chatctl send -l` → `chatctl inbox --follow --json` for each body size.
    Cli,
    /// raw TCP, the seed's way and mosquitto for each body size.
    Baselines,
    /// send→follow latency at a fixed rate.
    Latency,
    /// registry lookups per second.
    Registry,
    /// 1, 4, 16 nodes → one recipient; one node → 16 recipients.
    Fan,
    /// Not run by default: many signed names registering and renewing against 2 registryd on
    /// a 3-member etcd cluster and against SQLite, with lookups (`--scale-names`).
    RegistryScale,
}

/// Throughput and latency of peerchat on loopback, with real processes and durable acks,
/// against raw TCP, the seed's design and mosquitto, measured in the same run.
#[derive(Parser, Debug)]
#[command(
    name = "chat-bench",
    after_help = "\
Starts registryd and chatd nodes (the binaries next to this program) in a temporary directory
with the shipped settings (SQLite WAL, synchronous=FULL: a send is accepted, and a message
acknowledged, only after its commit), then measures:
  1. throughput A -> B for each body size: messages are submitted pipelined on A's control
     socket, and a message counts when B's follower (control `follow`) has received it;
  2. the command line: chatctl send -l -> chatctl inbox --follow --json, fed the same lines;
     the same for raw loopback TCP, the seed's design (one connection per message, nothing
     stored), mosquitto QoS 0/1 (mosquitto_pub -l -> mosquitto_sub) and Redis with
     appendfsync always (pipelined XADD -> XREAD BLOCK), when installed; the disk's
     sequential write bandwidth with fdatasync, and the ceiling it sets for two durable copies;
  3. latency send -> follow at a fixed rate (default 1000 msg/s), and its physical floor on
     the same disk: two fsynced 4 KiB writes in series over loopback at the same rate; then
     the same latency run with two fresh nodes whose databases are in RAM (/dev/shm, where
     fsync costs nothing; not a shipped setting), to tell the disk's share from the software's;
  4. registry lookups/s (4 clients, persistent pipelined connections) and chatd's RSS;
  5. 1, 4 and 16 sending nodes into one recipient, and one sender to 16 recipients.

peerchat A -> B and mosquitto QoS 0 alternate --rounds times (default 3) per body size; the
table keeps each one's median round.

Examples:
  chat-bench                      # everything (~2.5 minutes on 2 cores)
  chat-bench --quick              # smaller counts (~20 s)
  chat-bench --messages 50000 --sizes 64
  chat-bench --only throughput,baselines --sizes 64,1024 --json > out.json"
)]
pub struct Args {
    /// Smaller counts everywhere (about 20 s)
    #[arg(long)]
    pub quick: bool,
    /// Messages per throughput run with 64 B and 1 KiB bodies (16 KiB bodies: a quarter)
    /// [default: 100000, --quick 10000]
    #[arg(long, value_name = "N")]
    pub messages: Option<usize>,
    /// Body sizes in bytes for the throughput runs (at least 48)
    #[arg(long, value_delimiter = ',', default_value = "64,1024,16384")]
    pub sizes: Vec<usize>,
    /// Messages in the latency run [default: 10000, --quick 3000]
    #[arg(long, value_name = "N")]
    pub latency_messages: Option<usize>,
    /// Fixed send rate of the latency run, messages per second
    #[arg(long, default_value_t = 1000.0, value_name = "RATE")]
    pub latency_rate: f64,
    /// Rounds of each peerchat A→B and mosquitto QoS 0 throughput run, alternating; the table
    /// shows the median round (this machine's run-to-run noise is ±20 %) [default: 3, --quick 1]
    #[arg(long, value_name = "K")]
    pub rounds: Option<usize>,
    /// Seconds of registry lookups [default: 5, --quick 1]
    #[arg(long, value_name = "SECS")]
    pub lookup_secs: Option<f64>,
    /// A run ends as incomplete after this many seconds without a new message
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub stall_secs: u64,
    /// registry-scale: names registered, then renewed every 30 s
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub scale_names: usize,
    /// registry-scale: seconds of renewals and lookups per store after the registrations
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub scale_secs: u64,
    /// Run only these phases

    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Phase>,
    /// Skip mosquitto even when it is installed
    #[arg(long)]
    pub no_mosquitto: bool,
    /// Skip Redis (the durable peer) even when redis-server is installed
    #[arg(long)]
    pub no_redis: bool,
    /// JSON on stdout (the table goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// Keep the temporary directory (databases and daemon logs) and print its path
    #[arg(long)]
    pub keep: bool,
}

pub struct Plan {
    pub n: usize,
    pub sizes: Vec<usize>,
    pub latency_n: usize,
    pub lookup: Duration,
    pub stall: Duration,
    /// Rounds of the peerchat A→B and mosquitto QoS 0 throughput runs per body size.
    pub rounds: usize,
    pub phases: Vec<Phase>,
}

impl Plan {
    pub fn has(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }

    /// peerchat and mosquitto messages for one body size.
    pub fn msgs(&self, size: usize) -> usize {
        if size >= 8192 {
            (self.n / 4).max(100)
        } else {
            self.n
        }
    }

    /// Raw TCP: enough to last a fraction of a second (at least 256 MiB or the peerchat count).
    pub fn raw_msgs(&self, size: usize) -> usize {
        ((256usize << 20) / size).clamp(self.n, 4_000_000)
    }

    /// The seed's way: one connection each, so bounded by ephemeral ports in TIME_WAIT.
    pub fn seed_msgs(&self) -> usize {
        self.n.min(10_000)
    }

    /// The counts and phases `args` ask for (their defaults depend on `--quick`).
    pub fn from_args(args: &Args) -> anyhow::Result<Plan> {
        let plan = Plan {
            n: args
                .messages
                .unwrap_or(if args.quick { 10_000 } else { 100_000 }),
            sizes: args.sizes.clone(),
            latency_n: args
                .latency_messages
                .unwrap_or(if args.quick { 3000 } else { 10_000 }),
            lookup: Duration::from_secs_f64(args.lookup_secs.unwrap_or(if args.quick {
                1.0
            } else {
                5.0
            })),
            stall: Duration::from_secs(args.stall_secs),
            rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
            phases: if args.only.is_empty() {
                vec![
                    Phase::Throughput,
                    Phase::Cli,
                    Phase::Baselines,
                    Phase::Latency,
                    Phase::Registry,
                    Phase::Fan,
                ]
            } else {
                args.only.clone()
            },
        };
        if let Some(s) = plan.sizes.iter().find(|s| **s < 48 || **s > 65_536) {
            anyhow::bail!("--sizes: {s} is outside 48..=65536");
        }
        Ok(plan)
    }
}
