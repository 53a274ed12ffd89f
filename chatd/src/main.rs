use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use peerchat_proto::Name;

/// peerchat node daemon: receives, delivers and records messages.
///
/// chatd registers NAME with the registry and keeps the lease alive, accepts messages from other
/// nodes on its peer port, delivers what local clients (chatctl) send, and records every message
/// in and out in SQLite.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "\
Examples:
  chatd --name pa                              # peer port chosen by the OS, registry on 127.0.0.1:8888
  chatd --name pb --listen 0.0.0.0:7000 --registry 10.0.0.1:8888
  chatd --name pc --advertise chat.example.org:7000 --socket /tmp/pc.sock --db /tmp/pc.db

Defaults: the database is STATE_DIR/chatd.db, where STATE_DIR is $STATE_DIRECTORY, else
$XDG_STATE_HOME/peerchat, else ~/.local/state/peerchat. The control socket is
$RUNTIME_DIRECTORY/chatd.sock, else $XDG_RUNTIME_DIR/peerchat/chatd.sock, else /run/chatd/chatd.sock.
Logs go to stderr; set the level with RUST_LOG (e.g. RUST_LOG=chatd=debug).
Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a startup error."
)]
struct Args {
    /// Name to register [default: the host name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Peer address to listen on (port 0: the OS picks one, and that port is registered)
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR")]
    listen: SocketAddr,
    /// Address to register instead of the one the registry sees: HOST or HOST:PORT ([v6]:PORT)
    #[arg(long, value_name = "HOST[:PORT]")]
    advertise: Option<String>,
    /// Registry address
    #[arg(long, default_value = "127.0.0.1:8888", value_name = "ADDR")]
    registry: String,
    /// Control socket path
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// SQLite database file [default: STATE_DIR/chatd.db]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Accept and send the seed's plain-text messages (unauthenticated, unacknowledged)
    #[arg(long)]
    legacy: bool,
    /// First retry delay for undelivered messages, seconds (doubles up to --retry-max)
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    retry_initial: f64,
    /// Longest retry delay, seconds
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    retry_max: f64,
    /// Give up on (fail) a message not delivered within this many seconds (default: 7 days)
    #[arg(long, default_value_t = 604_800, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    message_lifetime: u64,
    /// Remove inbox messages, and delivered/failed/cancelled outgoing ones, older than this many
    /// seconds (default: keep everything). Undelivered messages are never removed.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    retention_age: Option<u64>,
    /// Keep at most this many inbox messages and this many finished outgoing messages (default:
    /// all)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    retention_count: Option<u64>,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = real_main(args) {
        eprintln!("chatd: {e:#}");
        std::process::exit(1);
    }
}

fn parse_advertise(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), Some(sa.port())));
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok((ip.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port: u16 = port
                .parse()
                .with_context(|| format!("--advertise {s:?}: bad port"))?;
            Ok((host.to_string(), Some(port)))
        }
        _ if !s.is_empty() => Ok((s.to_string(), None)),
        _ => bail!("--advertise needs HOST or HOST:PORT"),
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let name = match args.name {
        Some(n) => Name::new(n).context("--name")?,
        None => {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            let short = host.split('.').next().unwrap_or(&host).to_string();
            Name::new(short.clone()).with_context(|| {
                format!("the host name {short:?} is not a valid node name; pass --name")
            })?
        }
    };
    let socket = args.socket.unwrap_or_else(chatd::default_socket);
    let db = args
        .db
        .unwrap_or_else(|| peerchat_db::default_state_dir().join("chatd.db"));
    let mut config = chatd::Config::new(name, socket, db);
    config.registry = args.registry;
    config.legacy = args.legacy;
    if let Some(a) = &args.advertise {
        let (host, port) = parse_advertise(a)?;
        config.advertise_host = Some(host);
        config.advertise_port = port;
    }
    for (flag, v) in [
        ("--retry-initial", args.retry_initial),
        ("--retry-max", args.retry_max),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
            bail!("{flag} must be between 0 and 86400 seconds");
        }
    }
    config.retry.initial = std::time::Duration::from_secs_f64(args.retry_initial);
    config.retry.max = std::time::Duration::from_secs_f64(args.retry_max.max(args.retry_initial));
    config.retry.lifetime = std::time::Duration::from_secs(args.message_lifetime);
    config.retention = chatd::Retention {
        max_age: args.retention_age.map(std::time::Duration::from_secs),
        max_count: args.retention_count,
    };

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let shutdown = chatd::shutdown_on_signals().context("installing signal handlers")?;
        chatd::run(listener, config, shutdown).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
