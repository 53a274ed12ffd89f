use std::time::Duration;

use anyhow::Context;
use registryd::cli::{Args, SeedProtocol};
use registryd::StoreUrl;

fn main() {
    // Operator subcommands; everything else is the daemon's own command line.
    if std::env::args_os().nth(1).is_some_and(|a| a == "release") {
        release_main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "backup") {
        backup_main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "migrate") {
        migrate_main();
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
        store: store_of(args.store.clone(), args.db.clone()),
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

/// `--store`, else `--db` as `sqlite:PATH`, else the SQLite database in the state directory.
fn store_of(store: Option<StoreUrl>, db: Option<std::path::PathBuf>) -> StoreUrl {
    store.unwrap_or_else(|| {
        StoreUrl::Sqlite(db.unwrap_or_else(|| peerchat_db::default_state_dir().join("registry.db")))
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn migrate_main() -> ! {
    use clap::Parser;
    let args = registryd::cli::MigrateArgs::parse_from(std::env::args_os().skip(1));
    let result = (|| -> anyhow::Result<String> {
        let (StoreUrl::Sqlite(from), StoreUrl::Etcd(to)) = (&args.from, &args.to) else {
            anyhow::bail!(
                "migrate copies from sqlite:PATH to etcd://...; got --from {} --to {}",
                args.from,
                args.to
            );
        };
        let done = runtime()?
            .block_on(registryd::migrate(from, to))
            .with_context(|| format!("migrating {} to {to}", from.display()))?;
        Ok(format!(
            "copied {} names and {} tombstones from {} to {to}",
            done.names,
            done.tombstones,
            from.display()
        ))
    })();
    match result {
        Ok(what) => {
            eprintln!("registryd: {what}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("registryd: {e:#}");
            std::process::exit(1)
        }
    }
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
        let named = args.store.is_some() || args.db.is_some();
        let daemon = if named && (name.is_some() || args.ttl.is_some()) {
            None
        } else {
            Some(configured(args.config.as_deref())?)
        };
        let store = match (args.store, args.db, &daemon) {
            (Some(s), _, _) => s,
            (None, Some(db), _) => StoreUrl::Sqlite(db),
            (None, None, Some(d)) => store_of(d.store.clone(), d.db.clone()),
            (None, None, None) => store_of(None, None),
        };
        match store {
            StoreUrl::Sqlite(db) => release_sqlite(&db, name, args.ttl, daemon),
            StoreUrl::Etcd(url) => {
                let rt = runtime()?;
                let context = || format!("releasing in {url}");
                match name {
                    Some(name) => {
                        let found = rt
                            .block_on(registryd::release_etcd(&url, &name))
                            .with_context(context)?;
                        Ok((name.as_str().to_string(), found))
                    }
                    None => {
                        let n = rt
                            .block_on(registryd::release_legacy_offline_etcd(&url))
                            .with_context(context)?;
                        Ok((format!("{n} offline seed registrations"), true))
                    }
                }
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

fn release_sqlite(
    db: &std::path::Path,
    name: Option<peerchat_proto::Name>,
    ttl: Option<u64>,
    daemon: Option<Args>,
) -> anyhow::Result<(String, bool)> {
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
            let found = registryd::release(db, &name).with_context(context)?;
            Ok((name.as_str().to_string(), found))
        }
        None => {
            let ttl = ttl.or(daemon.map(|d| d.ttl)).unwrap_or(90);
            let n = registryd::release_legacy_offline(db, Duration::from_secs(ttl))
                .with_context(context)?;
            Ok((format!("{n} offline seed registrations"), true))
        }
    }
}
