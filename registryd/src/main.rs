use std::time::Duration;

use anyhow::Context;
use registryd::cli::Args;

fn main() {
    // An operator subcommand; everything else is the daemon's own command line.
    if std::env::args_os().nth(1).is_some_and(|a| a == "release") {
        release_main();
    }
    let args: Args = peerchat_daemon::startup::load("registryd");
    if let Some(path) = &args.check_config {
        peerchat_daemon::startup::check_and_exit::<Args>("registryd", path);
    }
    peerchat_daemon::logging::init(args.log_level.as_deref(), args.log_format);
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
        max_connections: args.max_connections as usize,
        limits: registryd::Limits {
            max_names: args.max_names as usize,
            registrations_per_minute: args.register_rate,
        },
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

/// The `db` the daemon would use according to its config file (`config`, else the user's
/// registryd.toml when it exists), read with the daemon's own layered parser.
fn configured_db(config: Option<&std::path::Path>) -> anyhow::Result<Option<std::path::PathBuf>> {
    use peerchat_daemon::config::{parse_from, ConfigPath};
    let argv = vec![std::ffi::OsString::from("registryd")];
    let args: Args = parse_from(argv, |_| match config {
        Some(p) => ConfigPath::Explicit(p.to_path_buf()),
        None => peerchat_daemon::startup::user_config("registryd.toml")
            .map_or(ConfigPath::None, ConfigPath::Default),
    })?;
    Ok(args.db)
}

fn release_main() -> ! {
    use clap::Parser;
    let args = registryd::cli::ReleaseArgs::parse_from(std::env::args_os().skip(1));
    let result = (|| -> anyhow::Result<bool> {
        let name = peerchat_proto::Name::new(args.name.clone())
            .map_err(|e| anyhow::anyhow!("{:?}: {e}", args.name))?;
        let db = match args.db {
            Some(db) => db,
            None => configured_db(args.config.as_deref())?
                .unwrap_or_else(|| peerchat_db::default_state_dir().join("registry.db")),
        };
        if !db.exists() {
            anyhow::bail!("no registry database at {}", db.display());
        }
        registryd::release(&db, &name).with_context(|| format!("releasing in {}", db.display()))
    })();
    match result {
        Ok(true) => {
            eprintln!("registryd: released {}", args.name);
            std::process::exit(0)
        }
        Ok(false) => {
            eprintln!("registryd: {} is not registered", args.name);
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("registryd: {e:#}");
            std::process::exit(1)
        }
    }
}
