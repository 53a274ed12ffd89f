use std::time::Duration;

use anyhow::Context;
use registryd::cli::{Args, SeedProtocol};

fn main() {
    // An operator subcommand; everything else is the daemon's own command line.
    if std::env::args_os().nth(1).is_some_and(|a| a == "release") {
        release_main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "backup") {
        backup_main();
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
            legacy_per_source: args.max_legacy_per_source as usize,
        },
        seed_protocol: args.seed_protocol == SeedProtocol::On,
        metrics: args.metrics,
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

/// The daemon's settings according to its config file (`config`, else the user's registryd.toml
/// when it exists) and environment, read with the daemon's own layered parser: `release` wants
/// its `db` and `ttl`.
fn configured(config: Option<&std::path::Path>) -> anyhow::Result<Args> {
    use peerchat_daemon::config::{parse_from, ConfigPath};
    let argv = vec![std::ffi::OsString::from("registryd")];
    let args: Args = parse_from(argv, |_| match config {
        Some(p) => ConfigPath::Explicit(p.to_path_buf()),
        None => peerchat_daemon::startup::user_config("registryd.toml")
            .map_or(ConfigPath::None, ConfigPath::Default),
    })?;
    Ok(args)
}

fn release_main() -> ! {
    use clap::{CommandFactory, Parser};
    // clap takes "release" for the program's name; `bin_name` in `ReleaseArgs` makes usage and
    // errors say `registryd release`.
    let args = registryd::cli::ReleaseArgs::parse_from(std::env::args_os().skip(1));
    if args.name.is_none() && !args.legacy_offline {
        registryd::cli::ReleaseArgs::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "give a NAME or --legacy-offline",
            )
            .exit();
    }
    let result = (|| -> anyhow::Result<(String, bool)> {
        let name = match &args.name {
            Some(n) => Some(
                peerchat_proto::Name::new(n.clone()).map_err(|e| anyhow::anyhow!("{n:?}: {e}"))?,
            ),
            None => None,
        };
        // The config file is read only when something is not on the command line.
        let daemon = match (&args.db, args.ttl) {
            (Some(_), Some(_)) => None,
            (Some(_), None) if name.is_some() => None,
            _ => Some(configured(args.config.as_deref())?),
        };
        let db = match (args.db, &daemon) {
            (Some(db), _) => db,
            (None, d) => d
                .as_ref()
                .and_then(|d| d.db.clone())
                .unwrap_or_else(|| peerchat_db::default_state_dir().join("registry.db")),
        };
        if !db.exists() {
            anyhow::bail!("no registry database at {}", db.display());
        }
        if db.is_dir() {
            anyhow::bail!(
                "{} is a directory; --db takes the database file (e.g. {})",
                db.display(),
                db.join("registry.db").display()
            );
        }
        let context = || format!("releasing in {}", db.display());
        match name {
            Some(name) => {
                let found = registryd::release(&db, &name).with_context(context)?;
                Ok((name.as_str().to_string(), found))
            }
            None => {
                let ttl = args.ttl.or(daemon.map(|d| d.ttl)).unwrap_or(90);
                let n = registryd::release_legacy_offline(&db, Duration::from_secs(ttl))
                    .with_context(context)?;
                Ok((format!("{n} offline seed registrations"), true))
            }
        }
    })();
    match result {
        Ok((what, true)) => {
            eprintln!("registryd: released {what}");
            std::process::exit(0)
        }
        Ok((what, false)) => {
            eprintln!("registryd: {what} is not registered");
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("registryd: {e:#}");
            std::process::exit(1)
        }
    }
}

fn backup_main() -> ! {
    use clap::Parser;
    let args = registryd::cli::BackupArgs::parse_from(std::env::args_os().skip(1));
    let result = (|| -> anyhow::Result<peerchat_db::backup::Copied> {
        let db = match args.db {
            Some(db) => db,
            None => configured(args.config.as_deref())?
                .db
                .unwrap_or_else(|| peerchat_db::default_state_dir().join("registry.db")),
        };
        if !db.is_file() {
            anyhow::bail!("no registry database at {}", db.display());
        }
        peerchat_db::backup::backup(&db, &args.out, args.force)
            .with_context(|| format!("backing up {}", db.display()))
    })();
    match result {
        Ok(c) => {
            eprintln!(
                "registryd: backed up to {} ({} bytes in {} ms)",
                c.path.display(),
                c.bytes,
                c.took.as_millis()
            );
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("registryd: {e:#}");
            std::process::exit(1)
        }
    }
}
