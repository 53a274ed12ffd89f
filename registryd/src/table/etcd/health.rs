//! Whether etcd answers: set by every request's outcome and by a probe each second; each change
//! is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use tracing::{info, warn};

use super::bounded;
use super::keys::Keys;

/// How often the probe asks etcd.
const PROBE_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Health {
    ok: AtomicBool,
    detail: Mutex<String>,
}

impl Health {
    pub(super) fn new() -> Health {
        Health {
            ok: AtomicBool::new(true),
            detail: Mutex::new("etcd answers".into()),
        }
    }

    pub(crate) fn ok(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }

    pub(crate) fn detail(&self) -> String {
        self.detail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn up(&self) {
        if !self.ok.swap(true, Ordering::Relaxed) {
            info!(
                store = "etcd",
                "etcd reachable again; registrations accepted"
            );
            *self.detail.lock().unwrap_or_else(|p| p.into_inner()) = "etcd answers".into();
        }
    }

    pub(super) fn down(&self, why: &str) {
        let was = self.ok.swap(false, Ordering::Relaxed);
        *self.detail.lock().unwrap_or_else(|p| p.into_inner()) = format!("etcd unreachable: {why}");
        if was {
            warn!(store = "etcd", error = why, "etcd unreachable: lookups are answered from memory (possibly stale), registrations are refused");
        }
    }
}

/// Asks etcd for one key each [`PROBE_EVERY`] (a linearizable read: it needs a quorum).
pub(super) async fn probe(client: Client, keys: Keys, health: Arc<Health>) {
    let mut kv = client.kv_client();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match bounded(kv.get(keys.count(), None)).await {
            Ok(_) => health.up(),
            Err(e) => health.down(&e.to_string()),
        }
    }
}
