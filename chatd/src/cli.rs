//! chatd's command line (also read from `CHATD_*` variables and the TOML config file; see
//! `peerchat_daemon::config`). Public so man pages can be generated from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use peerchat_daemon::logging::LogFormat;

/// peerchat node daemon: receives, delivers and records messages.
///
/// chatd registers NAME with the registry and keeps the lease alive, accepts messages from other
/// nodes on its peer port, delivers what local clients (chatctl) send, and records every message
/// in and out in SQLite.
///
/// Every option can also be set in the config file (the option's long name with `_`, e.g.
/// `retry_max = 60`) or in the environment (`CHATD_RETRY_MAX=60`). Precedence: command line >
/// environment > file > defaults. The file is read at start only: after editing it, restart chatd
/// (SIGHUP is logged and otherwise ignored).
#[derive(Parser, Debug)]
#[command(
    name = "chatd",
    version,
    after_help = "\
Examples:
  chatd --name pa                              # peer port chosen by the OS, registry on 127.0.0.1:8888
  chatd --name pb --listen 0.0.0.0:7000 --registry 10.0.0.1:8888
  chatd --name pc --advertise chat.example.org:7000 --socket /tmp/pc.sock --db /tmp/pc.db
  chatd --check-config /etc/peerchat/chatd.toml

Files: the config file is --config, else $XDG_CONFIG_HOME/peerchat/chatd.toml (or
~/.config/peerchat/chatd.toml) when it exists; the system unit passes /etc/peerchat/chatd.toml.
The database is STATE_DIR/chatd.db, where STATE_DIR is $STATE_DIRECTORY, else
$XDG_STATE_HOME/peerchat, else ~/.local/state/peerchat. The control socket is
$RUNTIME_DIRECTORY/chatd.sock, else $XDG_RUNTIME_DIR/peerchat/chatd.sock, else /run/chatd/chatd.sock.

Logs go to stderr (journald under systemd); level by --log-level or RUST_LOG.
Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a startup or configuration error,
2 on a usage error."
)]
pub struct Args {
    /// Configuration file (TOML)
    #[arg(long, value_name = "PATH", env = "CHATD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration file PATH and exit (0 valid, 1 invalid, with the line)
    #[arg(long, value_name = "PATH", exclusive = true)]
    pub check_config: Option<PathBuf>,
    /// Name to register [default: the host name]
    #[arg(long, value_name = "NAME", env = "CHATD_NAME")]
    pub name: Option<String>,
    /// Peer address to listen on (port 0: the OS picks one, and that port is registered)
    #[arg(
        long,
        default_value = "0.0.0.0:0",
        value_name = "ADDR",
        env = "CHATD_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Address to register instead of the one the registry sees: HOST or HOST:PORT ([v6]:PORT)
    #[arg(long, value_name = "HOST[:PORT]", env = "CHATD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Registry address
    #[arg(
        long,
        default_value = "127.0.0.1:8888",
        value_name = "ADDR",
        env = "CHATD_REGISTRY"
    )]
    pub registry: String,
    /// Control socket path
    #[arg(long, value_name = "PATH", env = "CHATD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Group whose members may use the control socket (socket mode 0660, directory 0750)
    #[arg(long, value_name = "GROUP", env = "CHATD_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// SQLite database file [default: STATE_DIR/chatd.db]
    #[arg(long, value_name = "PATH", env = "CHATD_DB")]
    pub db: Option<PathBuf>,
    /// This node's identity key (Ed25519, mode 0600; made at first start)
    /// [default: the database path with extension .key, e.g. STATE_DIR/chatd.key]
    #[arg(long, value_name = "PATH", env = "CHATD_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Accept and send the seed's plain-text messages (unauthenticated, unacknowledged)
    #[arg(long, env = "CHATD_LEGACY")]
    pub legacy: bool,
    /// First retry delay for undelivered messages, seconds (doubles up to --retry-max)
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        env = "CHATD_RETRY_INITIAL"
    )]
    pub retry_initial: f64,
    /// Longest retry delay, seconds
    #[arg(
        long,
        default_value_t = 300.0,
        value_name = "SECS",
        env = "CHATD_RETRY_MAX"
    )]
    pub retry_max: f64,
    /// Give up on (fail) a message not delivered within this many seconds (default: 7 days)
    #[arg(long, default_value_t = 604_800, value_name = "SECS", env = "CHATD_MESSAGE_LIFETIME",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub message_lifetime: u64,
    /// Remove inbox messages, and delivered/failed/cancelled outgoing ones, older than this many
    /// seconds (default: keep everything). Undelivered messages are never removed, nor the newest
    /// inbox and the newest outgoing message, however old (their seqs must never be reused).
    #[arg(long, value_name = "SECS", env = "CHATD_RETENTION_AGE", value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_age: Option<u64>,
    /// Keep at most this many inbox messages and this many finished outgoing messages (default:
    /// all; at least the newest of each is always kept)
    #[arg(long, value_name = "N", env = "CHATD_RETENTION_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_count: Option<u64>,
    /// Log level or filter (error, warn, info, debug, trace, or e.g. chatd=debug) [default: $RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL", env = "CHATD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format
    #[arg(
        long,
        value_enum,
        default_value = "text",
        value_name = "FORMAT",
        env = "CHATD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}
