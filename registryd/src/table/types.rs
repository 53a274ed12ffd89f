//! What the table holds (`Entry`) and the requests, refusals and notices that go in and out of
//! it. Imports no other part of the table, which all use it.

use std::sync::Arc;
use std::time::Duration;

use peerchat_db::rusqlite;
use peerchat_proto::registry::{Rotation, SignedRegistration};
use peerchat_proto::{Name, PublicKey};
use tokio::sync::oneshot;

/// Most rotations kept per name (the newest); a peer that pinned a key older than that must
/// `chatctl trust` again.
pub const MAX_ROTATIONS: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(super) address: String,
    pub(super) last_seen_ms: u64,
    pub(super) offline: bool,
    pub(super) legacy: bool,
    pub(super) signed: Option<SignedRegistration>,
    pub(super) last_seq: u64,
    pub(super) rotations: Vec<Rotation>,
    /// The source address of a legacy registration.
    pub(super) source: Option<String>,
    /// How presence is kept: by the clock (SQLite) or by an etcd lease.
    pub(super) lease: Lease,
}

/// Where a name's presence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// Online while `last_seen_ms` is within the TTL (the SQLite store).
    Clock,
    /// Online while this etcd lease lives (its key `live/NAME` exists).
    Held(i64),
    /// The etcd lease ran out or was never granted (offline records, legacy names after a
    /// restart of every node).
    Lapsed,
}

impl Entry {
    /// The key the name is bound to, if any.
    pub(super) fn key(&self) -> Option<PublicKey> {
        self.signed.as_ref().map(|s| s.key)
    }

    /// The same address, signed for the same port and host (so either signed registration
    /// vouches for it).
    pub(super) fn same_place(&self, other: &Entry) -> bool {
        let signed_place = |e: &Entry| e.signed.as_ref().map(|s| (s.port, s.host.clone()));
        self.address == other.address && signed_place(self) == signed_place(other)
    }

    /// Renewed within the TTL (SQLite) or holding a live lease (etcd), and not marked
    /// offline, at `now`.
    pub(super) fn online(&self, now: u64, ttl: Duration) -> bool {
        !self.offline
            && match self.lease {
                Lease::Clock => now.saturating_sub(self.last_seen_ms) <= ttl.as_millis() as u64,
                Lease::Held(_) => true,
                Lease::Lapsed => false,
            }
    }
}

/// What `watch` reports of a name: whether it is online, and its address (`None`: not
/// registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub online: bool,
    pub address: Option<String>,
}

pub(super) fn presence_of(e: Option<&Entry>, now: u64, ttl: Duration) -> Presence {
    match e {
        Some(e) => Presence {
            online: e.online(now, ttl),
            address: Some(e.address.clone()),
        },
        None => Presence {
            online: false,
            address: None,
        },
    }
}

/// Names whose presence may have changed (a commit, a reload, leases running out). Receivers
/// compare with what they last announced; one that lags resends its whole set.
pub type Changes = Arc<[Name]>;

/// Queued change notices per receiver before it counts as lagging.
pub(super) const CHANGES_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Open(#[from] peerchat_db::DbError),
    #[error("name {0} is not registered")]
    NotFound(Name),
    #[error("name {0} is held by a peerchat node; a legacy registration cannot take it")]
    Conflict(Name),
    #[error("name {name} is bound to another key (fingerprint {bound}); only its holder can change it, or the registry's operator can release it")]
    KeyMismatch { name: Name, bound: String },
    #[error("sequence number {seq} is not above {last}, the last one accepted for {name} (a replayed request?)")]
    Replay { name: Name, seq: u64, last: u64 },
    #[error("too many registrations from this address (limit {0} per minute); try again later")]
    RateLimited(u32),
    #[error("the registry is full ({0} names); ask its operator to raise --max-names")]
    Full(usize),
    #[error("{address} already holds {limit} seed registrations (--max-legacy-per-source)")]
    LegacyLimit {
        address: std::net::IpAddr,
        limit: usize,
    },
    #[error("the registry's store is unreachable ({0}); lookups are answered from memory, registrations are refused until it is back")]
    Unavailable(String),
    #[error("the store kept changing under this write ({0} attempts); try again")]
    Contention(u32),
    #[error("no registry database at {0}")]
    NotFoundFile(String),
    #[error("database transaction failed: {0}")]
    Commit(String),
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("the registry is shutting down")]
    Closed,
}

impl TableError {
    /// The protocol's error code for this refusal.
    pub fn code(&self) -> &'static str {
        use peerchat_proto::registry::code;
        match self {
            TableError::NotFound(_) => code::NOT_FOUND,
            TableError::Conflict(_) => code::CONFLICT,
            TableError::KeyMismatch { .. } => code::KEY_MISMATCH,
            TableError::Replay { .. } => code::REPLAY,
            TableError::RateLimited(_) | TableError::Full(_) | TableError::LegacyLimit { .. } => {
                code::LIMITED
            }
            TableError::Closed | TableError::Contention(_) => code::BUSY,
            TableError::Unavailable(_) => code::UNAVAILABLE,
            TableError::Open(_)
            | TableError::Storage(_)
            | TableError::Commit(_)
            | TableError::NotFoundFile(_) => code::STORAGE,
        }
    }
}

/// A change to the table. Signatures are checked before a write is queued; the writer checks
/// what needs the current state (key binding, sequence numbers, limits) atomically.
// One value per request, moved once into the writer's channel: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Write {
    /// A signed registration (`signed`), optionally rotating the name to its key.
    Register {
        name: Name,
        address: String,
        signed: SignedRegistration,
        rotation: Option<Rotation>,
    },
    /// A seed (text protocol) registration from `source`: no key; cannot take a name bound to
    /// one.
    Legacy {
        name: Name,
        address: String,
        source: std::net::IpAddr,
    },
    Offline {
        name: Name,
        key: PublicKey,
        seq: u64,
    },
    Unregister {
        name: Name,
        key: PublicKey,
        seq: u64,
    },
}

pub(super) type Job = (Write, oneshot::Sender<Result<(), TableError>>);
