//! Name → address resolution with a cache.
//!
//! A fresh entry (younger than [`FRESH`]) is used as is. Otherwise the registry is asked; if it
//! cannot be reached, the last known good address (in memory, or from the database across
//! restarts) is used. After a failed delivery the link calls [`Resolver::invalidate`]: the peer
//! may have moved, so the next attempt asks the registry again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_proto::Name;
use tracing::{debug, warn};

use crate::registry_client::{RegistryClient, RegistryError};
use crate::store::{CachedPeer, Store};

const FRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Resolved {
    pub address: String,
    pub legacy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown name {0}: the registry has no such name")]
    Unknown(Name),
    #[error("cannot resolve {name}: {source}, and the name is not in the cache")]
    Unavailable { name: Name, source: RegistryError },
}

struct Entry {
    resolved: Resolved,
    fetched: Option<Instant>,
}

pub struct Resolver {
    registry: Arc<RegistryClient>,
    store: Store,
    cache: Mutex<HashMap<Name, Entry>>,
}

impl Resolver {
    pub async fn new(registry: Arc<RegistryClient>, store: Store) -> Resolver {
        let mut cache = HashMap::new();
        match store.load_peers().await {
            Ok(peers) => {
                for p in peers {
                    if let Ok(name) = Name::new(p.name) {
                        let resolved = Resolved {
                            address: p.address,
                            legacy: p.legacy,
                        };
                        cache.insert(
                            name,
                            Entry {
                                resolved,
                                fetched: None,
                            },
                        );
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not load the peer cache"),
        }
        Resolver {
            registry,
            store,
            cache: Mutex::new(cache),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn resolve(&self, name: &Name) -> Result<Resolved, ResolveError> {
        if let Some(e) = self.cache().get(name) {
            if e.fetched.is_some_and(|t| t.elapsed() < FRESH) {
                return Ok(e.resolved.clone());
            }
        }
        match self.registry.lookup(name).await {
            Ok(record) => {
                let resolved = Resolved {
                    address: record.address.clone(),
                    legacy: record.legacy,
                };
                let changed = self.cache().insert(
                    name.clone(),
                    Entry {
                        resolved: resolved.clone(),
                        fetched: Some(Instant::now()),
                    },
                );
                let changed = changed.is_none_or(|old| {
                    old.resolved.address != resolved.address
                        || old.resolved.legacy != resolved.legacy
                });
                if changed {
                    debug!(name = %name, address = %resolved.address, "resolved");
                    let p = CachedPeer {
                        name: name.to_string(),
                        address: resolved.address.clone(),
                        legacy: resolved.legacy,
                        resolved_at_ms: peerchat_db::now_ms(),
                    };
                    if let Err(e) = self.store.save_peer(p).await {
                        warn!(error = %e, "could not save the peer cache");
                    }
                }
                Ok(resolved)
            }
            Err(e) if e.is_not_found() => {
                let was_cached = self.cache().remove(name).is_some();
                if was_cached {
                    if let Err(e) = self.store.forget_peer(name.to_string()).await {
                        warn!(error = %e, "could not update the peer cache");
                    }
                }
                Err(ResolveError::Unknown(name.clone()))
            }
            Err(source) => match self.cache().get(name) {
                Some(e) => {
                    debug!(name = %name, error = %source, "registry unavailable; using last known address");
                    Ok(e.resolved.clone())
                }
                None => Err(ResolveError::Unavailable {
                    name: name.clone(),
                    source,
                }),
            },
        }
    }

    /// Forget freshness (keep the address as last known good).
    pub fn invalidate(&self, name: &Name) {
        if let Some(e) = self.cache().get_mut(name) {
            e.fetched = None;
        }
    }

    pub fn cached(&self) -> Vec<(Name, Resolved)> {
        let mut v: Vec<_> = self
            .cache()
            .iter()
            .map(|(n, e)| (n.clone(), e.resolved.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
