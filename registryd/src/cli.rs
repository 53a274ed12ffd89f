//! registryd's command line (also read from `REGISTRYD_*` variables and the TOML config file).
//! Public so man pages can be generated from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use peerchat_daemon::logging::LogFormat;

use crate::store_url::StoreUrl;

/// Whether registryd answers the seed's text protocol (`reg`/`get`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedProtocol {
    /// Answer it (as the seed's registry did)
    On,
    /// Close connections that do not start with `{` (JSON only)
    Off,
}

/// peerchat name registry: maps NAME to the address of the node that holds it.
///
/// Nodes (chatd) register NAME -> IP:PORT as a lease they renew; others look names up. The table
/// lives in SQLite and survives restarts. The seed's text protocol (`reg NAME PORT`, `get NAME`)
/// is answered on the same port.
///
/// Every option can also be set in the config file (long name with `_`, e.g. `ttl = 60`) or the
/// environment (`REGISTRYD_TTL=60`). Precedence: command line > environment > file > defaults.
/// The file is read at start only: restart registryd to apply changes (SIGHUP is logged and
/// otherwise ignored).
#[derive(Parser, Debug)]
#[command(
    name = "registryd",
    version,
    after_help = "\
Examples:
  registryd                                  # 0.0.0.0:8888, database in the state directory
  registryd --listen 127.0.0.1:9000 --db /tmp/reg.db --ttl 30
  registryd --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
  registryd --check-config /etc/peerchat/registryd.toml

Files: the config file is --config, else $XDG_CONFIG_HOME/peerchat/registryd.toml when it exists;
the system unit passes /etc/peerchat/registryd.toml. The database is STATE_DIR/registry.db, where
STATE_DIR is $STATE_DIRECTORY, else $XDG_STATE_HOME/peerchat, else ~/.local/state/peerchat.
One registryd per SQLite database: it locks DB.lock next to it, and a second one refuses to
start. With --store etcd://..., any number of registryd instances share the cluster; when etcd is
unreachable they answer lookups from memory and refuse registrations (error `unavailable`).
Logs go to stderr; level by --log-level or RUST_LOG.
Operator commands: `registryd release NAME [--db PATH]` frees a name bound to a lost key;
`registryd release --legacy-offline` deletes every seed registration that is not online (see
`registryd release --help`); `registryd migrate --from sqlite:PATH --to etcd://...` copies a
registry into etcd.
Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a startup or configuration error,
2 on a usage error."
)]
pub struct Args {
    /// Configuration file (TOML)
    #[arg(long, value_name = "PATH", env = "REGISTRYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration file PATH and exit (0 valid, 1 invalid, with the line)
    #[arg(long, value_name = "PATH", exclusive = true)]
    pub check_config: Option<PathBuf>,
    /// Address to listen on
    #[arg(
        long,
        default_value = "0.0.0.0:8888",
        value_name = "ADDR",
        env = "REGISTRYD_LISTEN"
    )]
    pub listen: SocketAddr,
    /// SQLite database file [default: STATE_DIR/registry.db]; short for --store sqlite:PATH
    #[arg(
        long,
        value_name = "PATH",
        env = "REGISTRYD_DB",
        conflicts_with = "store"
    )]
    pub db: Option<PathBuf>,
    /// Where the table is kept: sqlite:PATH (one registryd on this machine), or
    /// etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (any number of registryd instances sharing one
    /// etcd cluster; PREFIX defaults to /peerchat/) [default: sqlite:STATE_DIR/registry.db]
    #[arg(long, value_name = "URL", env = "REGISTRYD_STORE")]
    pub store: Option<StoreUrl>,
    /// Seconds a registration stays online without renewal
    #[arg(long, default_value_t = 90, value_name = "SECS", env = "REGISTRYD_TTL",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ttl: u64,
    /// Most client connections served at once
    #[arg(long, default_value_t = 1024, value_name = "N", env = "REGISTRYD_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Most names the registry holds; new names beyond it are refused
    #[arg(long, default_value_t = 100_000, value_name = "N", env = "REGISTRYD_MAX_NAMES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_names: u64,
    /// Most registrations (including renewals) per source address per minute (a node renews
    /// every TTL/3, i.e. twice a minute by default: 120 allows 60 nodes behind one address)
    #[arg(long, default_value_t = 120, value_name = "N", env = "REGISTRYD_REGISTER_RATE",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub register_rate: u32,
    /// Answer the seed's text protocol (`reg NAME PORT`, `get NAME`) on the same port; `off`
    /// closes every connection whose first byte is not `{`
    #[arg(
        long,
        value_enum,
        default_value = "on",
        value_name = "on|off",
        env = "REGISTRYD_SEED_PROTOCOL"
    )]
    pub seed_protocol: SeedProtocol,
    /// Most seed (text protocol) names registered from one source address, online or not; a
    /// `reg` of a further name from it gets an empty reply (renewals and `registryd release
    /// --legacy-offline` make room)
    #[arg(long, default_value_t = 8, value_name = "N", env = "REGISTRYD_MAX_LEGACY_PER_SOURCE",
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub max_legacy_per_source: u64,
    /// Serve metrics (Prometheus text, GET /metrics over HTTP) on this loopback address, e.g.
    /// 127.0.0.1:9465 (port 0: the OS picks one, logged in the `registryd ready` line); off by
    /// default. Addresses other than loopback are refused: the metrics are not authenticated.
    #[arg(long, value_name = "ADDR", env = "REGISTRYD_METRICS", value_parser = peerchat_daemon::metrics::parse_addr)]
    pub metrics: Option<SocketAddr>,
    /// Log level: error, warn, info, debug, trace or off; or a filter, recognised by its `=` or
    /// `,` (e.g. registryd=debug) [default: $RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL", env = "REGISTRYD_LOG_LEVEL", value_parser = peerchat_daemon::logging::parse_level)]
    pub log_level: Option<String>,
    /// Log format
    #[arg(
        long,
        value_enum,
        default_value = "text",
        value_name = "FORMAT",
        env = "REGISTRYD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Release NAME: delete it and its key binding, so that any node may register it again. Or, with
/// --legacy-offline, delete every seed (legacy) registration that is not online.
///
/// Run it on the registry host as the owner of the database (the `registryd` user, or root). It
/// writes the database directly; a running registryd picks the change up within a second.
/// It finds the database the way the daemon does: --db (or REGISTRYD_DB), else `db` in the
/// daemon's config file (--config, else the user's registryd.toml when it exists), else the
/// default. Use it when a node lost its key (a new install, a deleted state directory): the
/// node's old key can no longer sign for the name. --legacy-offline clears junk seed
/// registrations in bulk: those not renewed within the TTL (--ttl, else `ttl` in the config file,
/// else 90 s).
#[derive(Parser, Debug)]
#[command(
    name = "registryd release",
    bin_name = "registryd release",
    override_usage = "registryd release [OPTIONS] NAME\n       registryd release [OPTIONS] --legacy-offline",
    version,
    after_help = "\
Examples:
  sudo -u registryd registryd release alice --config /etc/peerchat/registryd.toml
  sudo -u registryd registryd release alice --db /var/lib/peerchat/registryd/registry.db
  registryd release bob                       # database in the state directory
  registryd release --legacy-offline --config /etc/peerchat/registryd.toml

Exit status: 0 released (with --legacy-offline: also when there was nothing to release), 1 error
(including: no such name), 2 usage error."
)]
pub struct ReleaseArgs {
    /// The name to release (required unless --legacy-offline)
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Instead of one name: delete every seed (legacy) registration that is not online
    #[arg(long, conflicts_with = "name")]
    pub legacy_offline: bool,
    /// Seconds a registration stays online without renewal, for --legacy-offline [default:
    /// `ttl` in the config file, else 90]
    #[arg(long, value_name = "SECS", env = "REGISTRYD_TTL",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ttl: Option<u64>,
    /// SQLite database file [default: `db` in the config file, else STATE_DIR/registry.db]
    #[arg(
        long,
        value_name = "PATH",
        env = "REGISTRYD_DB",
        conflicts_with = "store"
    )]
    pub db: Option<PathBuf>,
    /// The store: sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...][/PREFIX] [default: `store` or
    /// `db` in the config file, else sqlite:STATE_DIR/registry.db]
    #[arg(long, value_name = "URL", env = "REGISTRYD_STORE")]
    pub store: Option<StoreUrl>,
    /// The daemon's config file, read for its `db` (and `ttl`) [default: the user's
    /// registryd.toml when it exists]
    #[arg(long, value_name = "PATH", env = "REGISTRYD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Write a consistent copy of the registry's database to OUT, while registryd keeps running.
///
/// The copy is read from a snapshot (SQLite WAL), so a running registryd is neither stopped nor
/// slowed; it is written owner-only (0600) under a temporary name next to OUT and put in place
/// only when complete and synced. An existing OUT is refused unless --force; the database's own
/// files always are. To restore: stop registryd, put the copy in place of the database (remove
/// the old -wal and -shm files), start registryd.
#[derive(Parser, Debug)]
#[command(
    name = "registryd backup",
    bin_name = "registryd backup",
    version,
    after_help = "\
Examples:
  sudo -u registryd registryd backup --config /etc/peerchat/registryd.toml /var/backups/registry.db
  registryd backup --db /var/lib/peerchat/registryd/registry.db ./registry-copy.db

Exit status: 0 copied, 1 error (including: OUT exists), 2 usage error."
)]
pub struct BackupArgs {
    /// Where to write the copy
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// Replace OUT if it exists
    #[arg(long)]
    pub force: bool,
    /// SQLite database file [default: `db` in the config file, else STATE_DIR/registry.db]
    #[arg(long, value_name = "PATH", env = "REGISTRYD_DB")]
    pub db: Option<PathBuf>,
    /// The daemon's config file, read for its `db` [default: the user's registryd.toml when it
    /// exists]
    #[arg(long, value_name = "PATH", env = "REGISTRYD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Copy a registry from an SQLite database into an empty etcd prefix: every name with its key
/// binding, sequence number and rotations, and every tombstone.
///
/// Stop the registryd that uses the database first (or accept that registrations after the
/// copy are not in etcd). Names arrive offline and come online at their node's next renewal.
#[derive(Parser, Debug)]
#[command(
    name = "registryd migrate",
    bin_name = "registryd migrate",
    version,
    after_help = "\
Examples:
  registryd migrate --from sqlite:/var/lib/peerchat/registryd/registry.db --to etcd://127.0.0.1:2379
  registryd migrate --from sqlite:reg.db --to etcd://10.0.0.1:2379,10.0.0.2:2379/chat/

Exit status: 0 copied, 1 error (including: the etcd prefix is not empty), 2 usage error."
)]
pub struct MigrateArgs {
    /// The SQLite registry: sqlite:PATH
    #[arg(long, value_name = "URL")]
    pub from: StoreUrl,
    /// The etcd cluster and prefix: etcd://HOST:PORT[,HOST:PORT...][/PREFIX]
    #[arg(long, value_name = "URL")]
    pub to: StoreUrl,
}
