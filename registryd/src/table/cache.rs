//! The in-memory copy of the table that answers lookups, lists and `watch`, and the notices of
//! names whose presence changed. Only the store's one updater writes it (the SQLite writer
//! thread, or the etcd watch task).

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_proto::Name;
use tracing::info;

use super::types::{presence_of, Changes, Entry, CHANGES_CAPACITY};

pub(crate) struct Cache {
    map: RwLock<HashMap<Name, Entry>>,
    pub(super) changes: tokio::sync::broadcast::Sender<Changes>,
    pub(super) ttl: Duration,
}

impl Cache {
    pub(super) fn new(map: HashMap<Name, Entry>, ttl: Duration) -> Cache {
        let (changes, _) = tokio::sync::broadcast::channel(CHANGES_CAPACITY);
        Cache {
            map: RwLock::new(map),
            changes,
            ttl,
        }
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, HashMap<Name, Entry>> {
        // A poisoned lock only means a panic elsewhere mid-read; the map itself is intact.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, HashMap<Name, Entry>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, name: &Name) -> Option<Entry> {
        self.read().get(name).cloned()
    }

    pub(super) fn announce(&self, changed: Vec<Name>) {
        if !changed.is_empty() {
            // No receiver (nobody watching) is not an error.
            let _ = self.changes.send(changed.into());
        }
    }

    /// Replaces the whole map (a reload) and announces the names whose presence differs.
    pub(super) fn replace_all(&self, fresh: HashMap<Name, Entry>) {
        let now = now_ms();
        let mut m = self.write();
        let changed: Vec<Name> = m
            .keys()
            .chain(fresh.keys().filter(|n| !m.contains_key(*n)))
            .filter(|n| {
                presence_of(m.get(*n), now, self.ttl) != presence_of(fresh.get(*n), now, self.ttl)
            })
            .cloned()
            .collect();
        *m = fresh;
        drop(m);
        self.announce(changed);
    }

    /// Applies changed entries (`None`: removed), logs new and removed names and announces
    /// those whose presence changed.
    pub(super) fn apply(&self, pending: impl IntoIterator<Item = (Name, Option<Entry>)>) {
        let now = now_ms();
        let mut m = self.write();
        let mut changed = Vec::new();
        for (name, entry) in pending {
            if presence_of(m.get(&name), now, self.ttl)
                != presence_of(entry.as_ref(), now, self.ttl)
            {
                changed.push(name.clone());
            }
            match entry {
                Some(e) => {
                    if !m.contains_key(&name) {
                        info!(name = %name, address = %e.address, legacy = e.legacy, "name registered");
                    }
                    m.insert(name, e);
                }
                None => {
                    if m.remove(&name).is_some() {
                        info!(name = %name, "name unregistered");
                    }
                }
            }
        }
        drop(m);
        self.announce(changed);
    }
}
