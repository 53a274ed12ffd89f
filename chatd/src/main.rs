use anyhow::Context;
use chatd::cli::Args;
use peerchat_proto::Name;

fn main() {
    let args: Args = peerchat_daemon::startup::load("chatd");
    if let Some(path) = &args.check_config {
        peerchat_daemon::startup::check_and_exit::<Args>("chatd", path);
    }
    peerchat_daemon::logging::init(args.log_level.as_deref(), args.log_format);
    if let Err(e) = real_main(args) {
        eprintln!("chatd: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let name = match args.name {
        Some(n) => n,
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
    config.registry = args.registry.0;
    if let Some(path) = args.identity {
        config.identity = path;
    }
    config.legacy = args.legacy;
    config.lan = args.lan;
    config.lan_interfaces = args.lan_interface;
    config.socket_group = args.socket_group;
    config.metrics = args.metrics;
    // The values were validated by the parsers in `cli.rs` (also for `--check-config`).
    if let Some(a) = args.advertise {
        config.advertise_host = Some(a.host);
        config.advertise_port = a.port;
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
        let shutdown = peerchat_daemon::signals::shutdown_on_signals("chatd")
            .context("installing signal handlers")?;
        chatd::run(listener, config, shutdown).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
