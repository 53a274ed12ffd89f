//! `peers`: every name the registries list (their freshest records), then the names only the
//! LAN announces (`--lan`); from our cache (and the LAN) when no registry answers. Each entry
//! says its source: `registry`, `lan` or `cache`.

use std::collections::HashSet;
use std::sync::Arc;

use peerchat_proto::control::{PeerInfo, Response};
use peerchat_proto::registry::{rotation_chain_reaches, Record};
use peerchat_proto::{Name, PublicKey};

use super::reply::ReplyFuture;
use crate::node::Node;
use crate::resolver::Source;

pub fn handle(node: &Arc<Node>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let (mut peers, from_cache) = match node.registry.list().await {
            Ok(records) => (
                records
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
                            source: Some(Source::Registry.as_str().into()),
                        }
                    })
                    .collect(),
                false,
            ),
            Err(_) => (Vec::new(), true),
        };
        // The LAN's names that no registry listed (a registry's signed record wins).
        let listed: HashSet<Name> = peers.iter().map(|p| p.name.clone()).collect();
        let lan = node.lan.as_ref().map(|l| l.all()).unwrap_or_default();
        for (name, e) in lan.iter().filter(|(n, _)| !listed.contains(n)) {
            peers.push(PeerInfo {
                name: name.clone(),
                address: e.address.clone(),
                online: Some(true),
                last_seen: None,
                legacy: false,
                fingerprint: Some(e.key.fingerprint()),
                key: Some(lan_standing(&node, name, e.key).into()),
                source: Some(Source::Lan.as_str().into()),
            });
        }
        if from_cache {
            let on_lan: HashSet<&Name> = lan.iter().map(|(n, _)| n).collect();
            for (name, r) in node.resolver.cached() {
                if on_lan.contains(&name) {
                    continue;
                }
                peers.push(PeerInfo {
                    name,
                    address: r.address,
                    online: None,
                    last_seen: None,
                    legacy: r.legacy,
                    fingerprint: r.key.map(|k| k.fingerprint()),
                    key: Some(if r.legacy { "legacy" } else { "pinned" }.into()),
                    source: Some(Source::Cache.as_str().into()),
                });
            }
        }
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::Peers { peers, from_cache })
    })
}

/// How an announced key stands against our pin.
fn lan_standing(node: &Node, name: &Name, key: PublicKey) -> &'static str {
    match node.resolver.pinned(name) {
        _ if *name == node.name => {
            if key == node.identity.public() {
                "self"
            } else {
                "changed"
            }
        }
        None => "new",
        Some(p) if p == key => "pinned",
        Some(_) => "changed",
    }
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
