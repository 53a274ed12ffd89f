//! chatd: the peerchat node daemon.
//!
//! Entry point: [`run`], which serves a bound peer listener until `shutdown` resolves. `main`
//! only parses arguments, sets up logging and calls it; tests call it in-process or run the
//! binary. See `docs/ARCHITECTURE.md` for the map of modules.

pub mod cli;
mod config;
mod control;
mod delivery;
mod identity;
mod lan;
mod lease;
mod node;
mod observe;
mod paths;
mod peer;
mod platform;
mod presence;
mod reachability;
mod registries;
mod registry_client;
mod resolver;
mod scrape;
mod store;
mod time;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peerchat_proto::Name;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
pub use delivery::RetryPolicy;
pub use platform::default_socket;
pub use store::Retention;
/// The pending-floor statement, for schema-bench (it times the SQL chatd runs).
/// The statements of the hot path, for schema-bench (which times them).
pub use store::{
    ADVANCE_FLOOR_PAST, DELIVERED_RANGE, INSERT_DELIVERY, INSERT_INBOX, INSERT_OUTBOX,
};

/// How long shutdown waits for in-flight work before giving up on it (the whole stop must fit
/// in systemd's and the 5 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs a node on `listener` (peer port) until `shutdown` completes, then stops within about
/// [`SHUTDOWN_GRACE`] plus a second: in-flight work finishes, the registry hears we are
/// offline, the socket is removed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Checked before anything starts, so a --lan-interface that is not there is a start-up
    // error rather than a LAN of nothing.
    let lan_selection = match config.lan {
        true => Some(lan::interfaces::select(&config.lan_interfaces)?),
        false => None,
    };
    let _lock = peerchat_daemon::lock::lock_database(&config.db, "chatd")?;
    // Bound before anything else starts, so a bad --metrics is a start-up error.
    let metrics_listener = match config.metrics {
        Some(addr) => Some(peerchat_daemon::metrics::bind(addr).await?),
        None => None,
    };
    let db = config.db.clone();
    let (store, store_thread) = tokio::task::spawn_blocking(move || store::Store::open(&db))
        .await
        .context("opening the database")?
        .context("opening the database")?;
    let key_path = config.identity.clone();
    let identity = Arc::new(
        tokio::task::spawn_blocking(move || identity::Identity::load_or_create(&key_path))
            .await
            .context("loading the identity")??,
    );
    let exporter = Arc::new(match metrics_listener {
        Some(_) => peerchat_daemon::metrics::Exporter::enabled(),
        None => peerchat_daemon::metrics::Exporter::disabled(),
    });
    store.set_observer(Arc::new(observe::Observe::new(&exporter)));
    let control_listener = platform::bind_control(&config.socket, config.socket_group.as_deref())?;
    let listen = listener
        .local_addr()
        .context("reading the peer listener's address")?;

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let registry = Arc::new(registries::Registries::resolve(&config.registry).await);
    let lan_table = config.lan.then(|| Arc::new(lan::LanTable::default()));
    let resolver =
        Arc::new(resolver::Resolver::new(registry.clone(), lan_table.clone(), store.clone()).await);
    let (presence, presence_changes) = presence::PresenceWatch::new();
    let delivery = delivery::Delivery::new(
        config.name.clone(),
        identity.clone(),
        store.clone(),
        resolver.clone(),
        presence.clone(),
        config.retry.clone(),
        config.legacy,
        stop.clone(),
        tasks.clone(),
    );
    {
        // Newly committed messages go straight to their recipients' links (in commit order);
        // this is what wakes delivery for them (see `delivery`'s module docs).
        let delivery = Arc::downgrade(&delivery);
        store.set_outgoing_sink(Box::new(move |to, m| {
            if let Some(d) = delivery.upgrade() {
                d.hand_off(to, m);
            }
        }));
    }
    let lease = Arc::new(lease::Lease::new(
        registry.clone(),
        identity.clone(),
        lease::Registration {
            name: config.name.clone(),
            port: config.advertise_port.unwrap_or(listen.port()),
            host: config.advertise_host.clone(),
        },
    ));
    let node = Arc::new(node::Node {
        name: config.name.clone(),
        store: store.clone(),
        resolver: resolver.clone(),
        delivery: delivery.clone(),
        registry: registry.clone(),
        identity: identity.clone(),
        lease: lease.clone(),
        presence: presence.clone(),
        listen,
        legacy: config.legacy,
        lan: lan_table.clone(),
        started: Instant::now(),
        started_at_ms: peerchat_db::now_ms(),
        db: config.db.clone(),
        backup_running: tokio::sync::Mutex::new(()),
    });

    if let (Some(table), Some(selection)) = (&lan_table, &lan_selection) {
        start_lan(
            &config,
            &identity,
            (table, selection),
            listen,
            (&resolver, &delivery),
            &stop,
            &tasks,
        );
    }
    tasks.spawn(presence.run(registry.clone(), stop.clone()));
    tasks.spawn(forward_presence(
        presence_changes,
        Arc::downgrade(&delivery),
        resolver.clone(),
        stop.clone(),
    ));
    tasks.spawn(peer::server::serve(
        listener,
        peer_server(&config, &store, &identity, resolver, &delivery),
        stop.clone(),
        tasks.clone(),
    ));
    tasks.spawn(control::serve(
        control_listener,
        node.clone(),
        stop.clone(),
        tasks.clone(),
    ));

    let metrics_addr = match metrics_listener {
        Some(l) => Some(serve_metrics(l, exporter, &store, &stop, &tasks)?),
        None => None,
    };

    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let on_registered = {
        // Peers that refused us as not registered take us now: retry what waits.
        let delivery = Arc::downgrade(&delivery);
        move || {
            if let Some(d) = delivery.upgrade() {
                d.retry_all_waiting();
            }
        }
    };
    let lease = tokio::spawn(lease::keep_lease(
        lease,
        first_tx,
        on_registered,
        stop.clone(),
    ));
    let _ = first_rx.await;
    resume_pending(&store, &delivery).await;
    if !config.retention.keeps_everything() {
        tasks.spawn(prune_periodically(
            store.clone(),
            config.retention.clone(),
            stop.clone(),
        ));
    }
    info!(name = %config.name, fingerprint = %identity.public().fingerprint(), listen = %listen, socket = %config.socket.display(), db = %config.db.display(), legacy = config.legacy, metrics = %metrics_addr.map_or_else(|| "off".to_string(), |a| a.to_string()), "chatd ready");
    peerchat_daemon::notify::ready();

    shutdown.await;
    info!("chatd stopping");
    peerchat_daemon::notify::stopping();
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!("some work did not finish within the shutdown grace period; it will resume at the next start");
    }
    let _ = tokio::time::timeout(Duration::from_millis(1500), lease).await;
    platform::remove_socket(&config.socket);
    // The last handles on the store go, so its thread ends.
    drop((node, delivery, store));
    close_store(store_thread).await;
    info!("chatd stopped");
    Ok(())
}

/// Serves `--metrics` on `listener` until `stop`; returns the address it listens on.
fn serve_metrics(
    listener: TcpListener,
    exporter: Arc<peerchat_daemon::metrics::Exporter>,
    store: &store::Store,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<std::net::SocketAddr> {
    let addr = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    let render = scrape::render(exporter.clone(), store.clone());
    let (stop, connections) = (stop.clone(), tasks.clone());
    tasks.spawn(async move {
        peerchat_daemon::metrics::serve(listener, exporter, render, stop.cancelled(), &connections)
            .await
    });
    Ok(addr)
}

/// `--lan`: announces us and browses; a name heard anew (or at a new address) is worth a
/// delivery attempt now. If multicast cannot be set up, chatd runs on without it (logged).
fn start_lan(
    config: &Config,
    identity: &Arc<identity::Identity>,
    (table, selection): (&Arc<lan::LanTable>, &lan::interfaces::Selection),
    listen: std::net::SocketAddr,
    (resolver, delivery): (&Arc<resolver::Resolver>, &Arc<delivery::Delivery>),
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let ours = lan::service::Ours {
        name: config.name.clone(),
        key: identity.public(),
        port: config.advertise_port.unwrap_or(listen.port()),
    };
    let delivery = Arc::downgrade(delivery);
    let resolver = resolver.clone();
    let on_heard = move |name: &Name| {
        resolver.invalidate(name);
        if let Some(d) = delivery.upgrade() {
            d.retry_if_waiting(name);
        }
    };
    match lan::service::start(ours, selection, table.clone(), on_heard, stop.clone()) {
        Ok(run) => {
            tasks.spawn(run);
        }
        Err(e) => {
            warn!(error = %e, "cannot announce or browse on the LAN (multicast); running without --lan")
        }
    }
}

/// Waits (at most 1 s) for the database thread to end once every handle on the store is gone.
/// Everything acknowledged is already committed; waiting here only tidies up.
async fn close_store(store_thread: store::StoreThread) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::task::spawn_blocking(move || store_thread.join()),
    )
    .await;
}

/// The peer server, wired to the node's store, identity and resolver; a caller whose link is up
/// ends the retry wait of messages for it (it is evidently reachable).
fn peer_server(
    config: &Config,
    store: &store::Store,
    identity: &Arc<identity::Identity>,
    resolver: Arc<resolver::Resolver>,
    delivery: &Arc<delivery::Delivery>,
) -> Arc<peer::server::PeerServer> {
    let delivery = Arc::downgrade(delivery);
    Arc::new(peer::server::PeerServer {
        name: config.name.clone(),
        store: store.clone(),
        legacy: config.legacy,
        identity: identity.clone(),
        resolver,
        lookups: peerchat_daemon::limits::RateLimiter::new(peer::server::CALLER_LOOKUPS_PER_MINUTE),
        on_caller: Box::new(move |name| {
            if let Some(d) = delivery.upgrade() {
                d.retry_if_waiting(name);
            }
        }),
    })
}

/// Starts a delivery task for every recipient with messages left undelivered by an earlier run.
async fn resume_pending(store: &store::Store, delivery: &Arc<delivery::Delivery>) {
    match store.pending_recipients().await {
        Ok(names) => {
            for n in names.into_iter().filter_map(|n| Name::new(n).ok()) {
                delivery.resume(&n);
            }
        }
        Err(e) => warn!(error = %e, "could not list pending deliveries"),
    }
}

/// Passes the registry's presence changes to the delivery engine: a recipient that is back is
/// retried at once (with a fresh lookup: it may have moved); any other change recomputes its
/// wait.
async fn forward_presence(
    mut changes: tokio::sync::mpsc::UnboundedReceiver<presence::Change>,
    delivery: std::sync::Weak<delivery::Delivery>,
    resolver: Arc<resolver::Resolver>,
    stop: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = stop.cancelled() => return,
            c = changes.recv() => match c {
                Some(c) => c,
                None => return,
            },
        };
        let Some(d) = delivery.upgrade() else { return };
        match change {
            presence::Change::Back(name) => {
                resolver.invalidate(&name);
                d.presence_changed(&name);
                d.retry_if_waiting(&name);
            }
            presence::Change::Changed(name) => d.presence_changed(&name),
        }
    }
}

/// How often retention runs (also once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

async fn prune_periodically(store: store::Store, retention: Retention, stop: CancellationToken) {
    loop {
        match store.prune(retention.clone(), &stop).await {
            Ok(p) if p.inbox + p.outbox > 0 => {
                info!(
                    inbox = p.inbox,
                    outbox = p.outbox,
                    transactions = p.rounds,
                    "retention removed old messages"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(
                error = %e,
                inbox = e.done.inbox,
                outbox = e.done.outbox,
                transactions = e.done.rounds,
                "retention failed after removing these; will try again"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
