//! chatd's command line (also read from `CHATD_*` variables and the TOML config file; see
//! `peerchat_daemon::config`). Public so man pages can be generated from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::Parser;
use peerchat_daemon::logging::LogFormat;
use peerchat_proto::Name;

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
  chatd --name pa                              # OS-chosen peer port, registry 127.0.0.1:8888
  chatd --name pb --listen 0.0.0.0:7000 --registry 10.0.0.1:8888
  chatd --name pd --registry reg1.example.org:8888,reg2.example.org:8888   # failover
  chatd --name pe --lan --registry none         # names from the LAN (DNS-SD) only
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
    #[arg(long, value_name = "NAME", env = "CHATD_NAME", value_parser = parse_name)]
    pub name: Option<Name>,
    /// Peer address to listen on (port 0: the OS picks one, and that port is registered)
    #[arg(
        long,
        default_value = "0.0.0.0:0",
        value_name = "ADDR",
        env = "CHATD_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Address to register instead of the one the registry sees: HOST or HOST:PORT ([v6]:PORT)
    #[arg(long, value_name = "HOST[:PORT]", env = "CHATD_ADVERTISE", value_parser = parse_advertise)]
    pub advertise: Option<Advertise>,
    /// Registries, in order of preference: HOST:PORT ([v6]:PORT), several separated by commas
    /// (a host name with several addresses counts as several); `none` for no registry (with
    /// --lan: names from the LAN only). chatd registers with every one, asks those that answer,
    /// and keeps the freshest signed record
    #[arg(
        long,
        default_value = "127.0.0.1:8888",
        value_name = "HOST:PORT[,...]",
        env = "CHATD_REGISTRY",
        value_parser = parse_registries
    )]
    pub registry: Registries,
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
    /// (CHATD_LEGACY and the file also take 1/0, yes/no, on/off)
    #[arg(long, env = "CHATD_LEGACY", value_parser = BoolishValueParser::new())]
    pub legacy: bool,
    /// Announce this node on the LAN and learn other nodes' names there, without any registry
    /// (DNS-SD over multicast, service _peerchat._tcp; a registry's record still wins). Anyone
    /// on the LAN can announce: the peer must prove the announced key, and a pinned key is never
    /// replaced (CHATD_LAN and the file also take 1/0, yes/no, on/off)
    #[arg(long, env = "CHATD_LAN", value_parser = BoolishValueParser::new())]
    pub lan: bool,
    /// With --lan: announce and browse only on these network interfaces (by name; repeat the
    /// option or separate names by commas) [default: every non-loopback interface]. Each must
    /// exist, with an address, at start. `--lan-interface lo` keeps DNS-SD on this machine
    /// (nodes on one host find each other; nothing is sent to the network); only when loopback
    /// is the whole LAN are loopback addresses in announcements used
    #[arg(
        long,
        value_name = "IFACE[,...]",
        env = "CHATD_LAN_INTERFACE",
        action = clap::ArgAction::Append,
        value_delimiter = ',',
        requires = "lan",
        value_parser = parse_interface
    )]
    pub lan_interface: Vec<String>,
    /// First retry delay for undelivered messages, seconds (doubles up to --retry-max)
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        env = "CHATD_RETRY_INITIAL",
        value_parser = parse_delay
    )]
    pub retry_initial: f64,
    /// Longest retry delay, seconds
    #[arg(
        long,
        default_value_t = 300.0,
        value_name = "SECS",
        env = "CHATD_RETRY_MAX",
        value_parser = parse_delay
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
    /// Serve metrics (Prometheus text, GET /metrics over HTTP) on this loopback address, e.g.
    /// 127.0.0.1:9464 (port 0: the OS picks one, logged in the `chatd ready` line); off by
    /// default. Addresses other than loopback are refused: the metrics are not authenticated.
    #[arg(long, value_name = "ADDR", env = "CHATD_METRICS", value_parser = peerchat_daemon::metrics::parse_addr)]
    pub metrics: Option<SocketAddr>,
    /// Log level: error, warn, info, debug, trace or off; or a filter, recognised by its `=` or
    /// `,` (e.g. chatd=debug or warn,chatd::delivery=trace) [default: $RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL", env = "CHATD_LOG_LEVEL", value_parser = peerchat_daemon::logging::parse_level)]
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

// The value parsers below are the whole validation of the options: clap runs them on the command
// line, the environment and the config file alike, so `--check-config` refuses exactly what
// start-up refuses, and names the file's line.

fn parse_name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| e.to_string())
}

/// A retry delay: seconds, more than 0 and at most a day.
fn parse_delay(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err("must be more than 0 and at most 86400 seconds".into())
    }
}

/// Most interfaces `--lan-interface` may name.
pub const MAX_LAN_INTERFACES: usize = 16;

/// One `--lan-interface` name: not empty, at most 64 bytes (Linux allows 15; Windows names
/// such as `Ethernet 2` are longer and have spaces), no control characters. Whether it exists,
/// and the count (at most [`MAX_LAN_INTERFACES`]), are checked at start.
fn parse_interface(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
        return Err("expected an interface name, e.g. eth0 or lo".into());
    }
    Ok(s.to_string())
}

/// `--advertise`: a host (name or IP, `[v6]` allowed) and maybe a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    pub host: String,
    pub port: Option<u16>,
}

fn parse_advertise(s: &str) -> Result<Advertise, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(Advertise {
            host: sa.ip().to_string(),
            port: Some(sa.port()),
        });
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(Advertise {
            host: ip.to_string(),
            port: None,
        });
    }
    if s.trim().is_empty() || s.contains(char::is_whitespace) {
        return Err("needs HOST or HOST:PORT".into());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
            Ok(Advertise {
                host: host.to_string(),
                port: Some(port),
            })
        }
        Some(_) => Err("needs HOST or HOST:PORT".into()),
        None => Ok(Advertise {
            host: s.to_string(),
            port: None,
        }),
    }
}

/// `--registry`'s list (empty for `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registries(pub Vec<String>);

/// Most registries one `--registry` lists (each is registered with and asked).
pub const MAX_REGISTRIES: usize = 16;

/// `--registry`: `none`, or HOST:PORT entries separated by commas, at most [`MAX_REGISTRIES`].
fn parse_registries(s: &str) -> Result<Registries, String> {
    if s.trim() == "none" {
        return Ok(Registries(Vec::new()));
    }
    let entries: Vec<String> = s
        .split(',')
        .map(|e| parse_host_port(e.trim()))
        .collect::<Result<_, _>>()?;
    if entries.len() > MAX_REGISTRIES {
        return Err(format!("at most {MAX_REGISTRIES} registries"));
    }
    Ok(Registries(entries))
}

/// One registry: HOST:PORT with a host name or an IP (`[v6]:PORT`); resolved at start-up.
fn parse_host_port(s: &str) -> Result<String, String> {
    const WANT: &str = "expected HOST:PORT, e.g. 127.0.0.1:8888 or registry.example.org:8888";
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let (host, port) = s.rsplit_once(':').ok_or(WANT)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && !host.starts_with('[')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if port_ok && host_ok {
        Ok(s.to_string())
    } else {
        Err(WANT.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["chatd"];
        argv.extend(args);
        Args::try_parse_from(argv)
    }

    #[test]
    fn values_start_up_would_refuse_are_refused_by_the_parser() {
        for bad in [
            &["--name", "bad name"][..],
            &["--retry-initial", "0"],
            &["--retry-max", "86401"],
            &["--retry-max", "NaN"],
            &["--advertise", ""],
            &["--advertise", "host:port"],
            &["--registry", "not an address"],
            &["--registry", "host"],
            &["--registry", "host:0"],
            &["--registry", "a:1,"],
            &["--registry", "a:1,,b:2"],
            &["--registry", ""],
            &["--log-level", "bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse(&["--retry-initial", "0"]).unwrap_err().to_string();
        assert!(
            e.contains("more than 0 and at most 86400"),
            "the wording must not say 0 is allowed: {e}"
        );
    }

    #[test]
    fn good_values_parse() {
        let a = parse(&[
            "--name",
            "pa",
            "--advertise",
            "chat.example.org:7000",
            "--registry",
            "reg.example.org:8888",
            "--retry-initial",
            "0.5",
            "--log-level",
            "chatd=debug",
        ])
        .unwrap();
        assert_eq!(a.name.as_ref().map(Name::as_str), Some("pa"));
        assert_eq!(
            a.advertise,
            Some(Advertise {
                host: "chat.example.org".into(),
                port: Some(7000)
            })
        );
        assert_eq!(a.registry.0, ["reg.example.org:8888"]);
        assert!(parse(&["--registry", "[::1]:8888"]).is_ok());
        let a = parse(&[
            "--registry",
            "r1.example.org:8888, 10.0.0.2:8888,[::1]:8888",
        ])
        .unwrap();
        assert_eq!(
            a.registry.0,
            ["r1.example.org:8888", "10.0.0.2:8888", "[::1]:8888"]
        );
        assert!(parse(&["--registry", "none"])
            .unwrap()
            .registry
            .0
            .is_empty());
        let a = parse(&["--advertise", "[::1]"]).unwrap();
        assert_eq!(
            a.advertise.map(|a| (a.host, a.port)),
            Some(("::1".into(), None))
        );
    }
}
