//! A renewal that changes nothing (same key, same address, no rotation, a higher sequence
//! number, the name's lease alive) is a keep-alive of the name's lease: no write to etcd's
//! disk. Anything else goes to the batch writer.

use std::sync::Arc;

use etcd_client::Client;
use peerchat_proto::registry::SignedRegistration;
use peerchat_proto::Name;

use super::health::Health;
use super::REQUEST_TIMEOUT;
use crate::table::cache::Cache;
use crate::table::types::{Lease, TableError, Write};

/// `Some(outcome)` when `w` was handled as a keep-alive; `None` when it needs a write.
pub(super) async fn try_renew(
    client: &Client,
    cache: &Arc<Cache>,
    health: &Health,
    w: &Write,
) -> Option<Result<(), TableError>> {
    let Write::Register {
        name,
        address,
        signed,
        rotation: None,
    } = w
    else {
        return None;
    };
    let lease = renewable(cache, name, address, signed)?;
    let mut leases = client.lease_client();
    match tokio::time::timeout(REQUEST_TIMEOUT, leases.keep_alive(lease)).await {
        Ok(Ok(_)) => {
            health.up();
            remember_seq(cache, name, signed);
            Some(Ok(()))
        }
        // The lease ran out (etcd says "lease not found"): coming back online is a write.
        Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => None,
        Ok(Err(e)) => {
            health.down(&e.to_string());
            Some(Err(super::unreachable(e)))
        }
        Err(_) => {
            let e = format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
            health.down(&e);
            Some(Err(super::unreachable(e)))
        }
    }
}

/// The name's live lease, when this registration only renews it.
fn renewable(
    cache: &Cache,
    name: &Name,
    address: &str,
    signed: &SignedRegistration,
) -> Option<i64> {
    let map = cache.read();
    let e = map.get(name)?;
    let old = e.signed.as_ref()?;
    let Lease::Held(lease) = e.lease else {
        return None;
    };
    let same = old.key == signed.key
        && old.port == signed.port
        && old.host == signed.host
        && e.address == address
        && !e.offline
        && !e.legacy
        && signed.seq > e.last_seq;
    same.then_some(lease)
}

/// The renewal's sequence number, signature and time, in this instance's memory only (the
/// stored record keeps the last write's).
fn remember_seq(cache: &Cache, name: &Name, signed: &SignedRegistration) {
    let mut map = cache.write();
    if let Some(e) = map.get_mut(name) {
        if e.key() == Some(signed.key) && signed.seq > e.last_seq {
            e.last_seq = signed.seq;
            e.signed = Some(signed.clone());
            e.last_seen_ms = peerchat_db::now_ms();
        }
    }
}
