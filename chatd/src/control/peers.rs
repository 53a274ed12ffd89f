//! `peers`: every name the registry lists; from our cache when the registry is unreachable.

use std::sync::Arc;

use peerchat_proto::control::{PeerInfo, Response};

use super::ReplyFuture;
use crate::node::Node;

pub fn handle(node: &Arc<Node>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        match node.registry.list().await {
            Ok(records) => Ok(Response::Peers {
                peers: records
                    .into_iter()
                    .map(|r| PeerInfo {
                        name: r.name,
                        address: r.address,
                        online: Some(r.online),
                        last_seen: Some(crate::time::rfc3339(r.last_seen_ms)),
                        legacy: r.legacy,
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
                    })
                    .collect(),
                from_cache: true,
            }),
        }
    })
}
