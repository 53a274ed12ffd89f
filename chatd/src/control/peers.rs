//! `peers`: every name the registry lists; from our cache when the registry is unreachable.

use std::sync::Arc;

use peerchat_proto::control::{PeerInfo, Response};
use peerchat_proto::registry::{rotation_chain_reaches, Record};

use super::reply::ReplyFuture;
use crate::node::Node;

pub fn handle(node: &Arc<Node>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        match node.registry.list().await {
            Ok(records) => Ok(Response::Peers {
                peers: records
                    .into_iter()
                    .map(|r| {
                        let (fingerprint, key) = key_standing(&node, &r);
                        PeerInfo {
                            fingerprint,
                            key: Some(key.into()),
                            name: r.name,
                            address: r.address,
                            online: Some(r.online),
                            last_seen: Some(crate::time::rfc3339(r.last_seen_ms)),
                            legacy: r.legacy,
                        }
                    })
                    .collect(),
                from_cache: false,
            }),
            Err(_) => Ok(Response::Peers {
                peers: node
                    .resolver
                    .cached()
                    .into_iter()
                    .map(|(name, r)| PeerInfo {
                        name,
                        address: r.address,
                        online: None,
                        last_seen: None,
                        legacy: r.legacy,
                        fingerprint: r.key.map(|k| k.fingerprint()),
                        key: Some(if r.legacy { "legacy" } else { "pinned" }.into()),
                    })
                    .collect(),
                from_cache: true,
            }),
        }
    })
}

/// The record's proven key and how it stands against our pin (see `PeerInfo::key`).
fn key_standing(node: &Node, r: &Record) -> (Option<String>, &'static str) {
    match r.verify() {
        Err(_) => (None, "invalid"),
        // A pinned name whose record turned legacy is a key change (sends refuse it).
        Ok(None) if node.resolver.pinned(&r.name).is_some() => (None, "changed"),
        Ok(None) => (None, "legacy"),
        Ok(Some(k)) => {
            let standing = match node.resolver.pinned(&r.name) {
                _ if r.name == node.name => {
                    if k == node.identity.public() {
                        "self"
                    } else {
                        "changed"
                    }
                }
                None => "new",
                Some(p) if p == k => "pinned",
                Some(p) if rotation_chain_reaches(&r.name, &p, &k, &r.rotations) => "pinned",
                Some(_) => "changed",
            };
            (Some(k.fingerprint()), standing)
        }
    }
}
