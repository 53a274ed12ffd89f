//! Keeping the cache current: one etcd watch over the registry's prefix. After a disconnect it
//! resumes from the revision after the last one applied, so no change is lost; if that
//! revision was compacted away, the whole registry is read again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use peerchat_proto::Name;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::health::Health;
use super::keys::{KeyKind, Keys, Stored};
use super::load;
use crate::table::cache::Cache;
use crate::table::types::{Entry, Lease};

/// Waits between attempts to watch again after a failure: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub(super) struct Follower {
    pub(super) client: Client,
    pub(super) keys: Keys,
    pub(super) cache: Arc<Cache>,
    pub(super) health: Arc<Health>,
    /// The revision the cache has applied (writers wait for theirs).
    pub(super) applied: watch::Sender<i64>,
    /// Each online name's lease (`live/NAME`).
    pub(super) leases: HashMap<Name, i64>,
}

/// Why one watch ended.
enum Ended {
    /// The stream broke or could not start: resume from the last applied revision.
    Broken(String),
    /// The next revision is compacted: read everything again.
    Compacted,
}

impl Follower {
    pub(super) async fn run(mut self, mut revision: i64) {
        let mut wait = RETRY_FIRST;
        loop {
            match self.watch(&mut revision).await {
                Ended::Broken(why) => {
                    self.health.down(&format!("watch: {why}"));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Ended::Compacted => {
                    warn!(
                        revision,
                        "etcd compacted past the cache's revision; reading the registry again"
                    );
                    match load::load(&self.client, &self.keys).await {
                        Ok(loaded) => {
                            info!(
                                names = loaded.map.len(),
                                revision = loaded.revision,
                                "registry reloaded from etcd"
                            );
                            self.cache.replace_all(loaded.map);
                            self.leases = loaded.leases;
                            revision = loaded.revision;
                            self.applied.send_replace(revision);
                            wait = RETRY_FIRST;
                        }
                        Err(e) => {
                            self.health.down(&e.to_string());
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(RETRY_MAX);
                        }
                    }
                }
            }
        }
    }

    /// Watches from `revision + 1`, applying each response, until the stream ends.
    async fn watch(&mut self, revision: &mut i64) -> Ended {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1)
            .with_progress_notify();
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(64 << 20);
        let started = tokio::time::timeout(
            super::REQUEST_TIMEOUT,
            client.watch(self.keys.all(), Some(options)),
        )
        .await;
        let mut stream = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Ended::Broken(e.to_string()),
            Err(_) => return Ended::Broken("no answer".into()),
        };
        debug!(from = *revision + 1, "watching etcd");
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Ended::Broken("the watch stream ended".into()),
                Err(e) => return Ended::Broken(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return Ended::Compacted;
            }
            if resp.canceled() {
                return Ended::Broken(format!("watch canceled: {}", resp.cancel_reason()));
            }
            self.health.up();
            let mut last = *revision;
            let mut pending: HashMap<Name, Option<Entry>> = HashMap::new();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                last = last.max(kv.mod_revision());
                self.apply(event.event_type(), kv, &mut pending);
            }
            if resp.events().is_empty() {
                // A progress notice: every change up to its revision was sent.
                last = last.max(resp.header().map_or(0, |h| h.revision()));
            }
            self.cache.apply(pending);
            if last > *revision {
                *revision = last;
                self.applied.send_replace(last);
            }
        }
    }

    /// One event into `pending` (which holds this response's earlier changes).
    fn apply(
        &mut self,
        kind: EventType,
        kv: &etcd_client::KeyValue,
        pending: &mut HashMap<Name, Option<Entry>>,
    ) {
        let (name, is_record) = match self.keys.parse(kv.key()) {
            Some(KeyKind::Name(n)) => (n, true),
            Some(KeyKind::Live(n)) => (n, false),
            _ => return,
        };
        let Ok(name) = Name::new(name.to_string()) else {
            return;
        };
        let current = match pending.get(&name) {
            Some(e) => e.clone(),
            None => self.cache.get(&name),
        };
        let next = match (is_record, kind) {
            (true, EventType::Put) => {
                let Ok(stored) = serde_json::from_slice::<Stored>(kv.value()) else {
                    warn!(name = %name, "unreadable record in etcd; ignored");
                    return;
                };
                let lease = self
                    .leases
                    .get(&name)
                    .map_or(Lease::Lapsed, |id| Lease::Held(*id));
                let mut e = stored.into_entry(lease);
                keep_newer_seq(&mut e, current.as_ref());
                Some(e)
            }
            (true, EventType::Delete) => None,
            (false, EventType::Put) => {
                self.leases.insert(name.clone(), kv.lease());
                current.map(|mut e| {
                    e.lease = Lease::Held(kv.lease());
                    e
                })
            }
            (false, EventType::Delete) => {
                self.leases.remove(&name);
                current.map(|mut e| {
                    e.lease = Lease::Lapsed;
                    e
                })
            }
        };
        pending.insert(name, next);
    }
}

/// Renewals are keep-alives, so the sequence number an instance saw last may be above the
/// stored one: a record of the same key and address keeps the higher (and its signed
/// registration, which signs the same address).
pub(super) fn keep_newer_seq(e: &mut Entry, cached: Option<&Entry>) {
    if let Some(c) = cached {
        if c.key().is_some()
            && c.key() == e.key()
            && c.same_place(e)
            && c.last_seq > e.last_seq
            && !e.offline
        {
            e.last_seq = c.last_seq;
            e.signed = c.signed.clone();
        }
    }
}
