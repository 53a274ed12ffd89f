//! `send`: validate, resolve every recipient, queue the message in the outbox (order-sensitive,
//! done before the next request is read), and reply once it is committed.

use std::sync::Arc;

use peerchat_proto::control::{code, Response};
use peerchat_proto::{ErrorBody, Name, MAX_BODY_BYTES};

use super::{store_error, ReplyFuture};
use crate::node::Node;
use crate::resolver::ResolveError;

/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 1024;

pub async fn handle(
    node: &Arc<Node>,
    to: Vec<Name>,
    body: String,
    msg_id: Option<String>,
) -> ReplyFuture {
    match prepare(node, to, body, msg_id).await {
        Err(e) => super::ready(Err(e)),
        Ok(rx) => {
            let node = node.clone();
            Box::pin(async move {
                let outcome = rx
                    .await
                    .map_err(|_| ErrorBody::new(code::SHUTTING_DOWN, "chatd is shutting down"))?
                    .map_err(store_error)?;
                // Committed: now the delivery engine may look at it.
                if outcome.created {
                    for r in &outcome.recipients {
                        node.delivery.kick(&r.to);
                    }
                }
                Ok(Response::Accepted {
                    id: outcome.msg_id,
                    recipients: outcome.recipients,
                })
            })
        }
    }
}

type Committed =
    tokio::sync::oneshot::Receiver<Result<crate::store::SendOutcome, crate::store::StoreError>>;

async fn prepare(
    node: &Node,
    to: Vec<Name>,
    body: String,
    msg_id: Option<String>,
) -> Result<Committed, ErrorBody> {
    if body.is_empty() {
        return Err(ErrorBody::new(code::BAD_REQUEST, "the message is empty"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ErrorBody::new(
            code::TOO_LARGE,
            format!(
                "the message is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    let mut recipients: Vec<Name> = Vec::with_capacity(to.len());
    for n in to {
        if !recipients.contains(&n) {
            recipients.push(n);
        }
    }
    if recipients.is_empty() {
        return Err(ErrorBody::new(code::BAD_REQUEST, "no recipient"));
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(ErrorBody::new(
            code::TOO_LARGE,
            format!("more than {MAX_RECIPIENTS} recipients"),
        ));
    }
    let msg_id = match msg_id {
        Some(id) => {
            validate_msg_id(&id)?;
            // A retry of a recorded message must succeed even if names no longer resolve (or
            // the registry is down): it is already accepted. The store re-checks atomically.
            let known = node
                .store
                .outgoing_by_id(id.clone())
                .await
                .map_err(store_error)?;
            if known.is_some() {
                return node
                    .store
                    .submit_send(id, recipients, body)
                    .map_err(store_error);
            }
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let mut unknown = Vec::new();
    for r in &recipients {
        match node.resolver.resolve(r).await {
            Ok(t) if t.legacy && !node.legacy => {
                return Err(ErrorBody::new(
                    code::REFUSED,
                    format!("{r} is a legacy (seed) peer: messages to it are unframed, unauthenticated and never acknowledged; start chatd with --legacy to allow that"),
                ));
            }
            Ok(t) if t.legacy && body.len() > crate::legacy::MAX_LEGACY_BODY => {
                return Err(ErrorBody::new(
                    code::TOO_LARGE,
                    format!(
                        "{r} is a legacy (seed) peer, which takes at most {} bytes",
                        crate::legacy::MAX_LEGACY_BODY
                    ),
                ));
            }
            Ok(_) => {}
            Err(ResolveError::Unknown(n)) => unknown.push(n.to_string()),
            Err(e @ ResolveError::Unavailable { .. }) => {
                return Err(ErrorBody::new(code::REGISTRY_UNAVAILABLE, e.to_string()));
            }
        }
    }
    if !unknown.is_empty() {
        return Err(ErrorBody::new(
            code::UNKNOWN_NAME,
            format!(
                "unknown name{}: {} (not registered; `chatctl peers` lists known names)",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", ")
            ),
        ));
    }
    node.store
        .submit_send(msg_id, recipients, body)
        .map_err(store_error)
}

fn validate_msg_id(id: &str) -> Result<(), ErrorBody> {
    if id.is_empty() || id.len() > crate::MAX_MSG_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ErrorBody::new(
            code::BAD_REQUEST,
            format!(
                "message id must be 1-{} printable ASCII characters without spaces",
                crate::MAX_MSG_ID
            ),
        ));
    }
    Ok(())
}
