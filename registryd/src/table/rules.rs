//! The binding rules (protocol.md 3.4.2), one function per rule, each returning its typed
//! refusal. `register` and `legacy` call them in the order protocol.md 3.3.1 (step 6 and 7)
//! documents. Both stores run the same rules: SQLite in the batch's transaction, etcd on what
//! it read before a transaction that compares those reads (see `decide`).

use peerchat_proto::registry::{Rotation, SignedRegistration};
use peerchat_proto::{Name, PublicKey};
use tracing::info;

use super::types::{Entry, TableError, MAX_ROTATIONS};

/// What the rules read besides the name's own record: each store answers from its own data,
/// as of the state the write will be applied to.
pub(super) trait Facts {
    /// The last sequence number `key` had for `name` when the name was freed, if it was.
    fn tombstone_seq(&self, name: &Name, key: &PublicKey) -> Result<Option<u64>, TableError>;
    /// How many seed (legacy) names `source` holds.
    fn legacy_held_by(&self, source: &str) -> Result<usize, TableError>;
}

/// A signed `register` of `name` whose current record is `old`: the sequence number
/// (`replay`), then the key (`key_mismatch`), then room for a new name (`limited`). Returns
/// the record's rotations after it (with the accepted rotation appended).
pub(super) fn register(
    tx: &impl Facts,
    name: &Name,
    old: Option<&Entry>,
    signed: &SignedRegistration,
    rotation: Option<&Rotation>,
    names: &mut usize,
    max_names: usize,
) -> Result<Vec<Rotation>, TableError> {
    if old.is_none_or(|e| e.key().is_none()) {
        freed_key_not_replayed(tx, name, signed)?;
    }
    let mut rotations = Vec::new();
    if let Some(old) = old.filter(|e| e.key().is_some()) {
        seq_above_last(name, signed.seq, old)?;
        rotations = old.rotations.clone();
        let bound = old.key().unwrap_or(signed.key);
        bound_key_or_rotation(name, &bound, &signed.key, rotation, &mut rotations)?;
    }
    if old.is_none() {
        room_for_new_name(names, max_names)?;
    }
    Ok(rotations)
}

/// A seed `reg` of `name` from `source`: not a bound name (`Conflict`), within the source's
/// quota (`LegacyLimit`), then room for a new name (`limited`).
pub(super) fn legacy(
    tx: &impl Facts,
    name: &Name,
    old: Option<&Entry>,
    source: std::net::IpAddr,
    legacy_per_source: usize,
    names: &mut usize,
    max_names: usize,
) -> Result<(), TableError> {
    seed_takes_no_bound_name(name, old)?;
    within_source_quota(tx, old, source, legacy_per_source)?;
    if old.is_none() {
        room_for_new_name(names, max_names)?;
    }
    Ok(())
}

/// Freeing a name: a new binding is not made with a record this key signed before the name
/// was freed (its `last_seq` is kept as a tombstone).
fn freed_key_not_replayed(
    tx: &impl Facts,
    name: &Name,
    signed: &SignedRegistration,
) -> Result<(), TableError> {
    let last = tx.tombstone_seq(name, &signed.key)?;
    if let Some(last) = last.filter(|l| signed.seq <= *l) {
        return Err(TableError::Replay {
            name: name.clone(),
            seq: signed.seq,
            last,
        });
    }
    Ok(())
}

/// Renewals and owner operations: `seq` above the last one accepted.
fn seq_above_last(name: &Name, seq: u64, e: &Entry) -> Result<(), TableError> {
    if seq <= e.last_seq {
        return Err(TableError::Replay {
            name: name.clone(),
            seq,
            last: e.last_seq,
        });
    }
    Ok(())
}

/// Renewals and rotation: the bound key, or a rotation from the bound key to `key` (its
/// signature was checked before queueing), appended to `rotations` (the newest
/// `MAX_ROTATIONS` kept).
fn bound_key_or_rotation(
    name: &Name,
    bound: &PublicKey,
    key: &PublicKey,
    rotation: Option<&Rotation>,
    rotations: &mut Vec<Rotation>,
) -> Result<(), TableError> {
    if bound == key {
        return Ok(());
    }
    match rotation {
        Some(r) if r.from == *bound && r.to == *key => {
            rotations.push(r.clone());
            let excess = rotations.len().saturating_sub(MAX_ROTATIONS);
            rotations.drain(..excess);
            info!(name = %name, from = %bound.fingerprint(), to = %key.fingerprint(), "key rotated");
            Ok(())
        }
        _ => Err(mismatch(name, bound)),
    }
}

/// Seed registrations cannot take bound names (nor any name a signed registration holds).
fn seed_takes_no_bound_name(name: &Name, old: Option<&Entry>) -> Result<(), TableError> {
    if old.is_some_and(|e| !e.legacy) {
        return Err(TableError::Conflict(name.clone()));
    }
    Ok(())
}

/// `--max-legacy-per-source`: a renewal from the same address keeps its place; anything else
/// is one more name for this address. The count sees this batch's earlier writes (same
/// transaction).
fn within_source_quota(
    tx: &impl Facts,
    old: Option<&Entry>,
    source: std::net::IpAddr,
    legacy_per_source: usize,
) -> Result<(), TableError> {
    let source_text = source.to_string();
    if old.and_then(|e| e.source.as_deref()) != Some(source_text.as_str()) {
        let held = tx.legacy_held_by(&source_text)?;
        if held >= legacy_per_source {
            return Err(TableError::LegacyLimit {
                address: source,
                limit: legacy_per_source,
            });
        }
    }
    Ok(())
}

/// `--max-names`: one more name in the table, unless that passes the limit.
fn room_for_new_name(names: &mut usize, max_names: usize) -> Result<(), TableError> {
    if *names >= max_names {
        return Err(TableError::Full(max_names));
    }
    *names += 1;
    Ok(())
}

/// Owner operations (`offline`, `unregister`): only the bound key, with a fresh sequence
/// number. A name without a key (a seed registration) cannot be changed through the signed
/// protocol.
pub(super) fn owner(name: &Name, key: &PublicKey, seq: u64, e: &Entry) -> Result<(), TableError> {
    match e.key() {
        Some(bound) if bound == *key => seq_above_last(name, seq, e),
        Some(bound) => Err(mismatch(name, &bound)),
        None => Err(TableError::KeyMismatch {
            name: name.clone(),
            bound: "none (a seed registration)".into(),
        }),
    }
}

fn mismatch(name: &Name, bound: &PublicKey) -> TableError {
    TableError::KeyMismatch {
        name: name.clone(),
        bound: bound.fingerprint(),
    }
}
