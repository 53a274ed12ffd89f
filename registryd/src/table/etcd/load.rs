//! Reading the whole registry from etcd at one revision (at start and after the watch fell
//! behind a compaction), page by page.

use std::collections::HashMap;

use etcd_client::{Client, GetOptions};
use peerchat_proto::Name;
use tracing::warn;

use super::bounded;
use super::keys::{KeyKind, Keys, Stored};
use crate::table::types::{Entry, Lease, TableError};

/// Keys read per request.
const PAGE: i64 = 2000;

pub(super) struct Loaded {
    pub(super) map: HashMap<Name, Entry>,
    /// The lease of each online name (`live/NAME`), also of names without a record yet.
    pub(super) leases: HashMap<Name, i64>,
    /// The revision the map is as of; the watch continues after it.
    pub(super) revision: i64,
}

pub(super) async fn load(client: &Client, keys: &Keys) -> Result<Loaded, TableError> {
    let mut kv = client.kv_client().max_decoding_message_size(64 << 20);
    let end = prefix_end(keys.all());
    let mut records: HashMap<Name, Stored> = HashMap::new();
    let mut leases = HashMap::new();
    let mut from = keys.all().as_bytes().to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = bounded(kv.get(from.clone(), Some(options))).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            match keys.parse(kv.key()) {
                Some(KeyKind::Name(n)) => match (
                    Name::new(n.to_string()),
                    serde_json::from_slice::<Stored>(kv.value()),
                ) {
                    (Ok(name), Ok(stored)) => {
                        records.insert(name, stored);
                    }
                    _ => {
                        warn!(key = %String::from_utf8_lossy(kv.key()), "unreadable record in etcd; skipped")
                    }
                },
                Some(KeyKind::Live(n)) => {
                    if let Ok(name) = Name::new(n.to_string()) {
                        leases.insert(name, kv.lease());
                    }
                }
                _ => {}
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    let map = records
        .into_iter()
        .map(|(name, stored)| {
            let lease = leases
                .get(&name)
                .map_or(Lease::Lapsed, |id| Lease::Held(*id));
            (name, stored.into_entry(lease))
        })
        .collect();
    Ok(Loaded {
        map,
        leases,
        revision,
    })
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // The prefix ends in '/', never 0xff: incrementing the last byte is enough.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}
