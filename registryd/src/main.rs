use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use peerchat_daemon::config::{parse, ConfigPath};
use registryd::cli::Args;

fn main() {
    let args = match parse::<Args>(|m| {
        if m.get_one::<PathBuf>("check_config").is_some() {
            return ConfigPath::None;
        }
        match m.get_one::<PathBuf>("config") {
            Some(p) => ConfigPath::Explicit(p.clone()),
            None => user_config().map_or(ConfigPath::None, ConfigPath::Default),
        }
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("registryd: {e}");
            std::process::exit(1);
        }
    };
    if let Some(path) = &args.check_config {
        match peerchat_daemon::config::check::<Args>(path) {
            Ok(()) => {
                eprintln!("{}: ok", path.display());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("registryd: {e}");
                std::process::exit(1);
            }
        }
    }
    peerchat_daemon::logging::init(args.log_level.as_deref(), args.log_format);
    if let Err(e) = real_main(args) {
        tracing::error!("{e:#}");
        eprintln!("registryd: {e:#}");
        std::process::exit(1);
    }
}

fn user_config() -> Option<PathBuf> {
    let env = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CONFIG_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("peerchat/registryd.toml"))
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let config = registryd::Config {
        db: args
            .db
            .unwrap_or_else(|| peerchat_db::default_state_dir().join("registry.db")),
        ttl: Duration::from_secs(args.ttl),
        max_connections: args.max_connections as usize,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let shutdown = peerchat_daemon::signals::shutdown_on_signals("registryd")
            .context("installing signal handlers")?;
        registryd::run(listener, config, shutdown).await
    })?;
    Ok(())
}
