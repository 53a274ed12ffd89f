//! Name → address and key resolution, with a cache and pinned keys.
//!
//! Every record from the registry is verified here (the node's signature, and that the address
//! is the one it signed); the registry is not trusted blindly. The first verified key seen for a
//! name is pinned (trust on first use). Later records must carry the pinned key, or a chain of
//! rotations signed by it; anything else is a key change, refused until the user runs
//! `chatctl trust NAME`. A pinned name reported as legacy (no key) is a key change too, so a
//! pinned name is never sent plaintext.
//!
//! A fresh entry (younger than [`FRESH`]) is used as is. Otherwise the registry is asked; if it
//! cannot be reached, the last known good entry (in memory, or from the database across
//! restarts) is used; the link's handshake still proves the key. After a failed delivery the
//! link calls [`Resolver::invalidate`]: the peer may have moved.
//!
//! With `--lan`, a name the registries do not have (or cannot be asked about) is looked up in
//! the LAN table next, before the last known good entry: an unsigned announcement is used only
//! for the pinned key (or pins the one key announced), never over a registry's signed record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_proto::registry::{rotation_chain_reaches, Record, RecordError};
use peerchat_proto::{Name, PublicKey};
use tracing::{debug, info, warn};

use crate::lan::{self, LanTable, Unusable};
use crate::registries::Registries;
use crate::registry_client::RegistryError;
use crate::store::{CachedPeer, Store};

const FRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Resolved {
    pub address: String,
    pub legacy: bool,
    /// The verified (and pinned) key; `None` only for legacy peers.
    pub key: Option<PublicKey>,
    pub source: Source,
}

/// Where a resolved entry came from (`peers` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A registry's signed record.
    Registry,
    /// A DNS-SD announcement on the LAN (`--lan`).
    Lan,
    /// The last known good entry, from an earlier run's database.
    Cache,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Registry => "registry",
            Source::Lan => "lan",
            Source::Cache => "cache",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown name {0}: the registry has no such name")]
    Unknown(Name),
    #[error("cannot resolve {name}: {source}, and the name is not in the cache")]
    Unavailable { name: Name, source: RegistryError },
    #[error("the key of {name} changed: pinned {pinned}, the registry now says {offered}. If {name} really changed its key (a reinstall), check the new fingerprint with its owner and run `chatctl trust {name}`")]
    KeyChanged {
        name: Name,
        pinned: String,
        offered: String,
    },
    #[error("the registry's record is not trustworthy: {0}")]
    BadRecord(#[from] RecordError),
    #[error("several keys announce {name} on the LAN ({keys}) and none is pinned: check the fingerprint with its owner (`chatctl peers`) and pin it with `chatctl trust {name}` once only the right one announces, or register it with a registry")]
    AmbiguousOnLan { name: Name, keys: usize },
    #[error("a caller claiming to be {name} proved another key than the one {name} is registered with (fingerprint {registered}): an impostor, or {name} lost its key")]
    NotTheCaller { name: Name, registered: String },
}

struct Entry {
    resolved: Resolved,
    fetched: Option<Instant>,
}

pub struct Resolver {
    registry: Arc<Registries>,
    lan: Option<Arc<LanTable>>,
    store: Store,
    cache: Mutex<HashMap<Name, Entry>>,
    pins: Mutex<HashMap<Name, PublicKey>>,
}

impl Resolver {
    pub async fn new(
        registry: Arc<Registries>,
        lan: Option<Arc<LanTable>>,
        store: Store,
    ) -> Resolver {
        let mut cache = HashMap::new();
        match store.load_peers().await {
            Ok(peers) => {
                for p in peers {
                    let Ok(name) = Name::new(p.name) else {
                        continue;
                    };
                    let key = p.key.as_deref().and_then(PublicKey::from_hex);
                    if key.is_none() && !p.legacy {
                        // Cached before keys existed: not usable as last known good.
                        continue;
                    }
                    let resolved = Resolved {
                        address: p.address,
                        legacy: p.legacy,
                        key,
                        source: Source::Cache,
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
            Err(e) => warn!(error = %e, "could not load the peer cache"),
        }
        let mut pins = HashMap::new();
        match store.load_pins().await {
            Ok(rows) => {
                for (name, key) in rows {
                    if let (Ok(n), Some(k)) = (Name::new(name), PublicKey::from_hex(&key)) {
                        pins.insert(n, k);
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not load pinned keys"),
        }
        Resolver {
            registry,
            lan,
            store,
            cache: Mutex::new(cache),
            pins: Mutex::new(pins),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<Name, PublicKey>> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pinned(&self, name: &Name) -> Option<PublicKey> {
        self.pins().get(name).copied()
    }

    /// Whether `name` is a legacy (seed) peer: [`Resolver::resolve`] without copying the entry
    /// when the cache answers (every `send` asks).
    pub async fn is_legacy(&self, name: &Name) -> Result<bool, ResolveError> {
        if let Some(legacy) = self.fresh(name, |r| r.legacy) {
            return Ok(legacy);
        }
        self.resolve(name).await.map(|r| r.legacy)
    }

    /// `f` of the cached entry for `name`, if it is fresh.
    fn fresh<T>(&self, name: &Name, f: impl FnOnce(&Resolved) -> T) -> Option<T> {
        let cache = self.cache();
        let e = cache.get(name)?;
        e.fetched
            .is_some_and(|t| t.elapsed() < FRESH)
            .then(|| f(&e.resolved))
    }

    pub async fn resolve(&self, name: &Name) -> Result<Resolved, ResolveError> {
        if let Some(r) = self.fresh(name, Resolved::clone) {
            return Ok(r);
        }
        match self.registry.lookup(name).await {
            Ok(record) => {
                let resolved = self.check_pin(&record).await?;
                self.remember(name, &resolved).await;
                Ok(resolved)
            }
            Err(e) if e.is_not_found() && self.on_lan(name) => self.resolve_on_lan(name).await,
            Err(e) if e.is_not_found() => {
                let was_cached = self.cache().remove(name).is_some();
                if was_cached {
                    if let Err(e) = self.store.forget_peer(name.to_string()).await {
                        warn!(error = %e, "could not update the peer cache");
                    }
                }
                Err(ResolveError::Unknown(name.clone()))
            }
            Err(_) if self.on_lan(name) => self.resolve_on_lan(name).await,
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

    /// Whether the LAN table has any entry for `name`.
    fn on_lan(&self, name: &Name) -> bool {
        self.lan
            .as_ref()
            .is_some_and(|l| !l.lookup(name).is_empty())
    }

    /// The LAN's entry for `name` held against the pin (`lan::choose`); pins a first key.
    async fn resolve_on_lan(&self, name: &Name) -> Result<Resolved, ResolveError> {
        let entries = self
            .lan
            .as_ref()
            .map(|l| l.lookup(name))
            .unwrap_or_default();
        let pinned = self.pinned(name);
        match lan::choose(&entries, pinned) {
            Ok(e) => {
                if pinned.is_none() {
                    info!(name = %name, fingerprint = %e.key.fingerprint(), "pinned a new peer's key (announced on the LAN)");
                    self.pin(name, e.key).await;
                }
                let resolved = Resolved {
                    address: e.address,
                    legacy: false,
                    key: Some(e.key),
                    source: Source::Lan,
                };
                self.remember(name, &resolved).await;
                Ok(resolved)
            }
            Err(Unusable::NotThePinnedKey { offered }) => {
                let pinned = pinned.map(|p| p.fingerprint()).unwrap_or_default();
                warn!(name = %name, pinned = %pinned, offered = %offered.fingerprint(), "a LAN announcement names another key for a pinned name; refusing it");
                Err(ResolveError::KeyChanged {
                    name: name.clone(),
                    pinned,
                    offered: format!("{} (announced on the LAN)", offered.fingerprint()),
                })
            }
            Err(Unusable::Nothing) => Err(ResolveError::Unknown(name.clone())),
            Err(Unusable::Ambiguous { keys }) => Err(ResolveError::AmbiguousOnLan {
                name: name.clone(),
                keys,
            }),
        }
    }

    /// Verifies `record` and holds it against the pin: pins on first use, follows valid
    /// rotations, refuses anything else.
    async fn check_pin(&self, record: &Record) -> Result<Resolved, ResolveError> {
        let name = &record.name;
        let key = record.verify()?;
        let resolved = Resolved {
            address: record.address.clone(),
            legacy: record.legacy,
            key,
            source: Source::Registry,
        };
        let pinned = self.pinned(name);
        match (pinned, key) {
            (None, None) => Ok(resolved),
            (Some(p), Some(k)) if p == k => Ok(resolved),
            (None, Some(k)) => {
                info!(name = %name, fingerprint = %k.fingerprint(), "pinned a new peer's key");
                self.pin(name, k).await;
                Ok(resolved)
            }
            (Some(p), Some(k)) if rotation_chain_reaches(name, &p, &k, &record.rotations) => {
                info!(name = %name, from = %p.fingerprint(), to = %k.fingerprint(), "peer rotated its key; following the signed rotation");
                self.pin(name, k).await;
                Ok(resolved)
            }
            (Some(p), offered) => {
                warn!(name = %name, pinned = %p.fingerprint(), offered = ?offered.map(|k| k.fingerprint()), "the registry reports another key for a pinned name; refusing it");
                Err(ResolveError::KeyChanged {
                    name: name.clone(),
                    pinned: p.fingerprint(),
                    offered: offered.map_or_else(
                        || "no key (a legacy registration, which would be plaintext)".into(),
                        |k| k.fingerprint(),
                    ),
                })
            }
        }
    }

    async fn pin(&self, name: &Name, key: PublicKey) {
        self.pins().insert(name.clone(), key);
        if let Err(e) = self.store.save_pin(name.to_string(), key.to_hex()).await {
            warn!(error = %e, name = %name, "could not save the pinned key");
        }
    }

    async fn remember(&self, name: &Name, resolved: &Resolved) {
        let old = self.cache().insert(
            name.clone(),
            Entry {
                resolved: resolved.clone(),
                fetched: Some(Instant::now()),
            },
        );
        let changed = old.is_none_or(|old| {
            old.resolved.address != resolved.address
                || old.resolved.legacy != resolved.legacy
                || old.resolved.key != resolved.key
        });
        if changed {
            debug!(name = %name, address = %resolved.address, source = resolved.source.as_str(), "resolved");
            let p = CachedPeer {
                name: name.to_string(),
                address: resolved.address.clone(),
                legacy: resolved.legacy,
                resolved_at_ms: peerchat_db::now_ms(),
                key: resolved.key.map(|k| k.to_hex()),
            };
            if let Err(e) = self.store.save_peer(p).await {
                warn!(error = %e, "could not save the peer cache");
            }
        }
    }

    /// `chatctl trust NAME`: accepts the key the registry now reports for `name` (after
    /// verifying the record's signature) in place of the pinned one. Returns the previous and
    /// the new key (`None` for a legacy record, which removes the pin).
    pub async fn trust(
        &self,
        name: &Name,
    ) -> Result<(Option<PublicKey>, Option<PublicKey>), ResolveError> {
        let record = match self.registry.lookup(name).await {
            Ok(r) => r,
            Err(_) if self.on_lan(name) => return self.trust_on_lan(name).await,
            Err(e) if e.is_not_found() => return Err(ResolveError::Unknown(name.clone())),
            Err(source) => {
                return Err(ResolveError::Unavailable {
                    name: name.clone(),
                    source,
                })
            }
        };
        let key = record.verify()?;
        let previous = self.pinned(name);
        match key {
            Some(k) => self.pin(name, k).await,
            None => {
                self.pins().remove(name);
                if let Err(e) = self.store.forget_pin(name.to_string()).await {
                    warn!(error = %e, name = %name, "could not remove the pinned key");
                }
            }
        }
        info!(name = %name, previous = ?previous.map(|k| k.fingerprint()), now = ?key.map(|k| k.fingerprint()), "trusted the registry's key");
        let resolved = Resolved {
            address: record.address.clone(),
            legacy: record.legacy,
            key,
            source: Source::Registry,
        };
        self.remember(name, &resolved).await;
        Ok((previous, key))
    }

    /// `trust` for a name only the LAN knows: pins the one key announced for it (several:
    /// refused, there is no telling which).
    async fn trust_on_lan(
        &self,
        name: &Name,
    ) -> Result<(Option<PublicKey>, Option<PublicKey>), ResolveError> {
        let entries = self
            .lan
            .as_ref()
            .map(|l| l.lookup(name))
            .unwrap_or_default();
        let e = lan::choose(&entries, None).map_err(|_| ResolveError::AmbiguousOnLan {
            name: name.clone(),
            keys: entries.len(),
        })?;
        let previous = self.pinned(name);
        self.pin(name, e.key).await;
        info!(name = %name, previous = ?previous.map(|k| k.fingerprint()), now = %e.key.fingerprint(), "trusted the key announced on the LAN");
        let resolved = Resolved {
            address: e.address,
            legacy: false,
            key: Some(e.key),
            source: Source::Lan,
        };
        self.remember(name, &resolved).await;
        Ok((previous, Some(e.key)))
    }

    /// Whether `remote` (a caller's X25519 static key) is the key pinned for `name`: the common
    /// case, answered without the registry.
    pub fn caller_matches_pin(&self, name: &Name, remote: &[u8; 32]) -> bool {
        self.pinned(name).and_then(|k| k.to_x25519()).as_ref() == Some(remote)
    }

    /// Checks that `remote` (the X25519 static key a caller proved in the handshake) belongs to
    /// `name`: the pinned key, else what a fresh, verified lookup says (which may pin or follow
    /// a rotation).
    pub async fn check_caller(&self, name: &Name, remote: &[u8; 32]) -> Result<(), ResolveError> {
        if self.caller_matches_pin(name, remote) {
            return Ok(());
        }
        self.invalidate(name);
        let resolved = self.resolve(name).await?;
        let proven = resolved.key.and_then(|k| k.to_x25519()).as_ref() == Some(remote);
        if proven && self.caller_matches_pin(name, remote) {
            return Ok(());
        }
        if !proven {
            return Err(ResolveError::NotTheCaller {
                name: name.clone(),
                registered: resolved
                    .key
                    .map_or_else(|| "none".into(), |k| k.fingerprint()),
            });
        }
        Err(ResolveError::KeyChanged {
            name: name.clone(),
            pinned: self
                .pinned(name)
                .map_or_else(|| "none".into(), |k| k.fingerprint()),
            offered: "the key the caller proved".into(),
        })
    }

    /// Whether `name` has a cache entry (fresh or last known good).
    pub fn is_cached(&self, name: &Name) -> bool {
        self.cache().contains_key(name)
    }

    /// Whether any of `recipients` has no cache entry (cheap check before [`Resolver::is_cached`]
    /// per name: nearly always false).
    pub fn unresolved_any(&self, recipients: &[peerchat_proto::control::RecipientState]) -> bool {
        let cache = self.cache();
        recipients.iter().any(|r| !cache.contains_key(&r.to))
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
