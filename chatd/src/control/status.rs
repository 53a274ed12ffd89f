//! `status`: who and where this node is, whether the registry answers, and message counts.

use std::sync::Arc;

use peerchat_proto::control::{NodeStatus, RegistryStanding, Response};

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;

pub fn handle(node: &Arc<Node>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let counts = node.store.counts().await.map_err(store_error)?;
        Ok(Response::Status(NodeStatus {
            name: node.name.clone(),
            address: node.address(),
            listen: node.listen.to_string(),
            registry: node.registry.current_addr(),
            registry_reachable: node.registry.any_reachable(),
            registration_error: node.lease.last_error(),
            started_at: crate::time::rfc3339(node.started_at_ms),
            uptime_secs: node.started.elapsed().as_secs(),
            counts,
            registries: node
                .lease
                .endpoints()
                .into_iter()
                .map(|e| RegistryStanding {
                    address: e.registry,
                    reachable: e.reachable,
                    registered: (!e.address.is_empty()).then_some(e.address),
                    error: e.error,
                })
                .collect(),
            lan: node.lan.is_some(),
            behind_nat: node.lease.behind_nat().map(Box::new),
        }))
    })
}

/// `check_database`: SQLite's `PRAGMA integrity_check` (for `chatctl doctor`).
pub fn check_database(node: &Arc<Node>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let rows = node.store.integrity_check().await.map_err(store_error)?;
        let ok = rows.len() == 1 && rows[0] == "ok";
        Ok(Response::DatabaseCheck {
            ok,
            detail: rows.join("; "),
        })
    })
}
