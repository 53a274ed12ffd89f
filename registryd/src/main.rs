use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// peerchat name registry: maps NAME to the address of the node that holds it.
///
/// Nodes (chatd) register NAME -> IP:PORT as a lease they renew; others look names up. The table
/// lives in SQLite and survives restarts. The seed's text protocol (`reg NAME PORT`, `get NAME`)
/// is answered on the same port.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "\
Examples:
  registryd                                  # 0.0.0.0:8888, database in the state directory
  registryd --listen 127.0.0.1:9000 --db /tmp/reg.db --ttl 30

The state directory is $STATE_DIRECTORY, else $XDG_STATE_HOME/peerchat, else ~/.local/state/peerchat.
Logs go to stderr; set the level with RUST_LOG (e.g. RUST_LOG=debug).
Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a startup error."
)]
struct Args {
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0:8888", value_name = "ADDR")]
    listen: SocketAddr,
    /// SQLite database file [default: STATE_DIR/registry.db]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Seconds a registration stays online without renewal
    #[arg(long, default_value_t = 90, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ttl: u64,
    /// Most client connections served at once
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
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
        eprintln!("registryd: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let config = registryd::Config {
        db: args
            .db
            .unwrap_or_else(|| peerchat_db::default_state_dir().join("registry.db")),
        ttl: Duration::from_secs(args.ttl),
        max_connections: args.max_connections.max(1),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let shutdown = registryd::shutdown_on_signals().context("installing signal handlers")?;
        registryd::run(listener, config, shutdown).await
    })?;
    Ok(())
}
