//! One write decided: the binding rules run on the name's current record and the store's
//! facts, and the result is the name's next record or its removal. Both stores call this; they
//! differ only in how they apply the result (an SQLite transaction, or an etcd transaction
//! that compares what was read).

use peerchat_proto::{Name, PublicKey};

use super::rules::{self, Facts};
use super::types::{Entry, Lease, TableError, Write};

/// The limits the rules enforce.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleLimits {
    pub(super) max_names: usize,
    pub(super) legacy_per_source: usize,
}

/// What a write does to its name.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// The name's record from now on.
    Put(Entry),
    /// The name is removed; a bound key's last sequence number is kept as a tombstone so that
    /// an old signed registration cannot take the name back.
    Remove { tombstone: Option<(PublicKey, u64)> },
}

impl Write {
    pub(super) fn name(&self) -> &Name {
        match self {
            Write::Register { name, .. }
            | Write::Legacy { name, .. }
            | Write::Offline { name, .. }
            | Write::Unregister { name, .. } => name,
        }
    }
}

/// Runs the rules for `write` on `old` (the name's record, `None` when absent). `names` is the
/// number of names in the table, counted up for a new name. `now` is the registration time.
pub(super) fn decide(
    write: &Write,
    old: Option<&Entry>,
    facts: &impl Facts,
    names: &mut usize,
    limits: RuleLimits,
    now: u64,
) -> Result<Change, TableError> {
    match write {
        Write::Register {
            name,
            address,
            signed,
            rotation,
        } => {
            let rotations = rules::register(
                facts,
                name,
                old,
                signed,
                rotation.as_ref(),
                names,
                limits.max_names,
            )?;
            Ok(Change::Put(Entry {
                address: address.clone(),
                last_seen_ms: now,
                offline: false,
                legacy: false,
                signed: Some(signed.clone()),
                last_seq: signed.seq,
                rotations,
                source: None,
                lease: Lease::Clock,
            }))
        }
        Write::Legacy {
            name,
            address,
            source,
        } => {
            rules::legacy(
                facts,
                name,
                old,
                *source,
                limits.legacy_per_source,
                names,
                limits.max_names,
            )?;
            Ok(Change::Put(Entry {
                address: address.clone(),
                last_seen_ms: now,
                offline: false,
                legacy: true,
                signed: None,
                last_seq: 0,
                rotations: Vec::new(),
                source: Some(source.to_string()),
                lease: Lease::Clock,
            }))
        }
        Write::Offline { name, key, seq } => {
            let mut e = old
                .cloned()
                .ok_or_else(|| TableError::NotFound(name.clone()))?;
            rules::owner(name, key, *seq, &e)?;
            e.offline = true;
            e.last_seq = *seq;
            Ok(Change::Put(e))
        }
        Write::Unregister { name, key, seq } => {
            let e = old.ok_or_else(|| TableError::NotFound(name.clone()))?;
            rules::owner(name, key, *seq, e)?;
            *names = names.saturating_sub(1);
            Ok(Change::Remove {
                tombstone: Some((*key, *seq)),
            })
        }
    }
}
