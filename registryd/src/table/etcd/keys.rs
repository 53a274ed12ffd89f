//! The registry's layout in etcd, under a prefix (default `/peerchat/`):
//!
//! - `names/NAME`: the record (JSON of [`Stored`]); written on every write except a renewal.
//! - `live/NAME`: empty, attached to the name's lease; exists while the name is online.
//! - `tombstones/NAME/KEYHEX`: the freed key's last sequence number (decimal).
//! - `meta/names`: how many `names/` keys there are (decimal), for `--max-names`.

use peerchat_proto::registry::{Rotation, SignedRegistration};
use peerchat_proto::{Name, PublicKey};
use serde::{Deserialize, Serialize};

use crate::table::types::{Entry, Lease};

/// The prefix when an `etcd://` URL names none.
pub const DEFAULT_PREFIX: &str = "/peerchat/";

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    pub(crate) fn names_dir(&self) -> String {
        format!("{}names/", self.prefix)
    }
    pub(crate) fn name(&self, n: &Name) -> String {
        format!("{}names/{}", self.prefix, n.as_str())
    }
    pub(crate) fn live_dir(&self) -> String {
        format!("{}live/", self.prefix)
    }
    pub(crate) fn live(&self, n: &Name) -> String {
        format!("{}live/{}", self.prefix, n.as_str())
    }
    pub(crate) fn tombstone(&self, n: &Name, key: &PublicKey) -> String {
        format!("{}tombstones/{}/{}", self.prefix, n.as_str(), key.to_hex())
    }
    pub(crate) fn count(&self) -> String {
        format!("{}meta/names", self.prefix)
    }
    pub(crate) fn all(&self) -> &str {
        &self.prefix
    }

    /// What a key under the prefix is.
    pub(crate) fn parse<'k>(&self, key: &'k [u8]) -> Option<KeyKind<'k>> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(self.prefix.as_str())?;
        if let Some(n) = rest.strip_prefix("names/") {
            Some(KeyKind::Name(n))
        } else if let Some(n) = rest.strip_prefix("live/") {
            Some(KeyKind::Live(n))
        } else {
            Some(KeyKind::Other)
        }
    }
}

pub(crate) enum KeyKind<'k> {
    Name(&'k str),
    Live(&'k str),
    Other,
}

/// A record as stored in `names/NAME`. Presence is not in it: it is the `live/NAME` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) address: String,
    /// The last write's time (a renewal, being a lease keep-alive, does not change it).
    pub(crate) last_seen_ms: u64,
    #[serde(default)]
    pub(crate) offline: bool,
    #[serde(default)]
    pub(crate) legacy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signed: Option<SignedRegistration>,
    #[serde(default)]
    pub(crate) last_seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rotations: Vec<Rotation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
}

impl Stored {
    pub(crate) fn of(e: &Entry) -> Stored {
        Stored {
            address: e.address.clone(),
            last_seen_ms: e.last_seen_ms,
            offline: e.offline,
            legacy: e.legacy,
            signed: e.signed.clone(),
            last_seq: e.last_seq,
            rotations: e.rotations.clone(),
            source: e.source.clone(),
        }
    }

    pub(crate) fn into_entry(self, lease: Lease) -> Entry {
        Entry {
            address: self.address,
            last_seen_ms: self.last_seen_ms,
            offline: self.offline,
            legacy: self.legacy,
            signed: self.signed,
            last_seq: self.last_seq,
            rotations: self.rotations,
            source: self.source,
            lease,
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Plain data (strings, numbers, hex keys): serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A decimal counter's value (absent or unreadable: 0).
pub(crate) fn decimal(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
