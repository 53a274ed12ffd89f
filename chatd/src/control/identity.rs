//! `whoami`, `trust NAME` and `rotate-key`: this node's identity and the keys pinned for peers.

use std::sync::Arc;

use peerchat_proto::control::{code, Response};
use peerchat_proto::{ErrorBody, Name};

use super::reply::{ready, ReplyFuture};
use crate::node::Node;
use crate::resolver::ResolveError;

pub fn whoami(node: &Arc<Node>) -> ReplyFuture {
    let key = node.identity.public();
    ready(Ok(Response::Identity {
        name: node.name.clone(),
        key: key.to_hex(),
        fingerprint: key.fingerprint(),
    }))
}

pub fn trust(node: &Arc<Node>, name: Name) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let (previous, now) = node.resolver.trust(&name).await.map_err(|e| match e {
            ResolveError::Unknown(_) => ErrorBody::new(code::UNKNOWN_NAME, e.to_string()),
            ResolveError::Unavailable { .. } => {
                ErrorBody::new(code::REGISTRY_UNAVAILABLE, e.to_string())
            }
            ResolveError::KeyChanged { .. }
            | ResolveError::NotTheCaller { .. }
            | ResolveError::BadRecord(_)
            | ResolveError::AmbiguousOnLan { .. } => ErrorBody::new(code::REFUSED, e.to_string()),
        })?;
        // Messages waiting for this name go now instead of at the end of their backoff.
        node.delivery.retry_now(&name);
        Ok(Response::Trusted {
            name,
            previous: previous.map(|k| k.fingerprint()),
            fingerprint: now.map(|k| k.fingerprint()),
        })
    })
}

pub fn rotate(node: &Arc<Node>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        // A rotation must reach the registry before the next one: it only keeps the newest
        // rotation statement, and the registry still binds the name to the key it knows.
        match node.registry.lookup(&node.name).await {
            Ok(r) if r.signed.as_ref().map(|s| s.key) == Some(node.identity.public()) => {}
            Ok(_) => {
                return Err(ErrorBody::new(
                    code::REFUSED,
                    "the registry does not have this node's current key yet (an earlier rotation or registration is still unpublished); try again once `chatctl status` shows the registry reachable",
                ))
            }
            Err(e) => {
                return Err(ErrorBody::new(
                    code::REGISTRY_UNAVAILABLE,
                    format!("a key rotation must be published right away, and the registry cannot be reached: {e}"),
                ))
            }
        }
        let seq = node.lease.next_seq();
        let identity = node.identity.clone();
        let name = node.name.clone();
        let (old, new) = tokio::task::spawn_blocking(move || identity.rotate(&name, seq))
            .await
            .map_err(|e| ErrorBody::new(code::INTERNAL, e.to_string()))?
            .map_err(|e| ErrorBody::new(code::STORAGE, e.to_string()))?;
        tracing::info!(from = %old.fingerprint(), to = %new.fingerprint(), "identity key rotated");
        // Publish now; if the registry is down, the lease keeper publishes at its next renewal.
        let published = node.lease.register_once().await;
        Ok(Response::Rotated {
            previous: old.fingerprint(),
            fingerprint: new.fingerprint(),
            published: published.is_ok(),
            error: published.err().map(|e| e.to_string()),
        })
    })
}
