//! `send`: validate, expand groups and broadcast, resolve every recipient, queue the message in
//! the outbox (order-sensitive, done before the next request is read), and reply once it is
//! committed.
//!
//! Names the user typed are strict: an unknown or refused name refuses the whole send, so a typo
//! never half-sends. Names that came from a group or a broadcast are lenient: one that cannot be
//! used is recorded as `failed` with the reason, and the others still get the message.

use std::collections::HashSet;
use std::sync::Arc;

use peerchat_proto::control::{code, ConvKey, DeliveryState, Response, MAX_RECIPIENTS};
use peerchat_proto::peer::WireGroup;
use peerchat_proto::{ErrorBody, MsgId, Name, MAX_BODY_BYTES};

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;
use crate::resolver::ResolveError;

/// Whom a send is for, as the client said it.
pub struct Targets {
    pub to: Vec<Name>,
    pub groups: Vec<Name>,
    pub broadcast: bool,
    /// Into this conversation instead (protocol.md §2.5.2, §2.9.1).
    pub conversation: Option<ConvKey>,
}

/// The recipients of a send into a conversation (as typed, strict names), and the group tag
/// of a send into a group conversation: one named by `conversation`, or `groups: [g]` alone.
async fn conversation_targets(
    node: &Node,
    mut t: Targets,
) -> Result<(Targets, Option<WireGroup>, Option<ConvKey>), ErrorBody> {
    let Some(key) = t.conversation.take() else {
        let only_group = t.to.is_empty() && !t.broadcast && t.groups.len() == 1;
        let tag = only_group.then(|| WireGroup {
            owner: node.name.clone(),
            name: t.groups[0].clone(),
        });
        return Ok((t, tag, None));
    };
    if !t.to.is_empty() || !t.groups.is_empty() || t.broadcast {
        return Err(ErrorBody::new(
            code::BAD_REQUEST,
            "a send into a conversation takes no to, groups or broadcast",
        ));
    }
    let key = super::conversations::resolve(node, key).await?;
    let tag = match &key {
        ConvKey::Group {
            owner: Some(owner),
            name,
        } => Some(WireGroup {
            owner: owner.clone(),
            name: name.clone(),
        }),
        _ => None,
    };
    let to = node
        .store
        .conversation_recipients(key.clone(), node.name.clone())
        .await
        .map_err(store_error)?;
    if to.is_empty() {
        return Err(ErrorBody::new(
            code::NOT_FOUND,
            format!("conversation {key} has no members to send to"),
        ));
    }
    t.to = to;
    Ok((t, tag, Some(key)))
}

pub async fn handle(
    node: &Arc<Node>,
    targets: Targets,
    body: String,
    msg_id: Option<MsgId>,
) -> ReplyFuture {
    match prepare(node, targets, body, msg_id).await {
        Err(e) => super::reply::ready(Err(e)),
        Ok((rx, conversation)) => {
            let node = node.clone();
            Box::pin(async move {
                let outcome = rx
                    .await
                    .map_err(|_| ErrorBody::new(code::SHUTTING_DOWN, "chatd is shutting down"))?
                    .map_err(store_error)?;
                // Committed: the store's after-commit hook has handed it to the delivery engine.
                let mut recipients = outcome.recipients;
                if node.resolver.unresolved_any(&recipients) {
                    for r in recipients.iter_mut() {
                        if r.state == DeliveryState::Queued
                            && r.error.is_none()
                            && !node.resolver.is_cached(&r.to)
                        {
                            r.error = Some(format!(
                                "resolving: the registry ({}) is unreachable and {} is not cached; it is looked up when the registry answers",
                                node.registry.current_addr(),
                                r.to
                            ));
                        }
                    }
                }
                let pos = conversation.as_ref().and(outcome.pos);
                Ok(Response::Accepted {
                    id: outcome.msg_id,
                    recipients,
                    conversation,
                    pos,
                })
            })
        }
    }
}

type Committed =
    tokio::sync::oneshot::Receiver<Result<crate::store::SendOutcome, crate::store::StoreError>>;

async fn prepare(
    node: &Node,
    targets: Targets,
    body: String,
    msg_id: Option<MsgId>,
) -> Result<(Committed, Option<ConvKey>), ErrorBody> {
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
    let (targets, group, conversation) = conversation_targets(node, targets).await?;
    let (recipients, typed, broadcast) = expand(node, targets).await?;
    if recipients.is_empty() {
        return Err(ErrorBody::new(
            code::BAD_REQUEST,
            "no recipient (empty group, or nobody else online)",
        ));
    }
    if recipients.len() > MAX_RECIPIENTS {
        // Refused as a whole, never cut short silently.
        let from_broadcast = match broadcast {
            Some(n) => format!(", {n} of them online names from the broadcast"),
            None => String::new(),
        };
        return Err(ErrorBody::new(
            code::TOO_LARGE,
            format!(
                "{} recipients{from_broadcast}; the limit is {MAX_RECIPIENTS} per message (nothing was sent)",
                recipients.len()
            ),
        ));
    }
    let (msg_id, caller_chose_id) = match msg_id {
        // Valid already: the request would not have parsed otherwise. The store keeps ids as
        // strings (its SQL boundary); this moves the string, no copy.
        Some(id) => (id.into_string(), true),
        None => (uuid::Uuid::now_v7().to_string(), false),
    };
    let committed = match check_recipients(node, &recipients, typed, &body).await {
        Ok(failed) => node
            .store
            .submit_send_in(msg_id, caller_chose_id, recipients, failed, body, group)
            .map_err(store_error),
        // A retry of an already accepted message must succeed even if its names no longer
        // resolve (or the registry is down). Looked up only here, so that ordinary pipelined
        // sends with ids never wait for a read; the store re-checks the id atomically anyway.
        Err(e) if caller_chose_id => {
            let known = node
                .store
                .outgoing_exists(msg_id.clone())
                .await
                .map_err(store_error)?;
            if known {
                node.store
                    .submit_send_in(msg_id, true, recipients, Vec::new(), body, group)
                    .map_err(store_error)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }?;
    Ok((committed, conversation))
}

/// Resolves every recipient. Typed names (the first `typed`) that cannot be used refuse the
/// send; expanded ones come back as (name, reason) to be recorded as failed.
async fn check_recipients(
    node: &Node,
    recipients: &[Name],
    typed: usize,
    body: &str,
) -> Result<Vec<(Name, String)>, ErrorBody> {
    let mut unknown = Vec::new();
    let mut failed: Vec<(Name, String)> = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        let is_strict = i < typed;
        let problem = match node.resolver.is_legacy(r).await {
            Ok(true) if !node.legacy => Some(ErrorBody::new(
                code::REFUSED,
                format!("{r} is a legacy (seed) peer: messages to it are unframed, unauthenticated and never acknowledged; start chatd with --legacy to allow that"),
            )),
            Ok(true) if body.len() > crate::peer::legacy::MAX_LEGACY_BODY => Some(ErrorBody::new(
                code::TOO_LARGE,
                format!("{r} is a legacy (seed) peer, which takes at most {} bytes", crate::peer::legacy::MAX_LEGACY_BODY),
            )),
            Ok(_) => None,
            Err(ResolveError::Unknown(n)) if is_strict => {
                unknown.push(n.to_string());
                None
            }
            Err(e @ ResolveError::Unknown(_)) => Some(ErrorBody::new(code::UNKNOWN_NAME, e.to_string())),
            // Not resolvable now (the registry is unreachable and the name is not cached): the
            // message is queued all the same, and the delivery engine resolves the name when
            // the registry answers (failing it then if the name does not exist).
            Err(ResolveError::Unavailable { .. }) => None,
            Err(e @ ResolveError::KeyChanged { .. }) => Some(ErrorBody::new(code::KEY_CHANGED, e.to_string())),
            Err(e @ (ResolveError::BadRecord(_) | ResolveError::NotTheCaller { .. } | ResolveError::AmbiguousOnLan { .. })) => Some(ErrorBody::new(code::REFUSED, e.to_string())),
        };
        if let Some(p) = problem {
            if is_strict {
                return Err(p);
            }
            failed.push((r.clone(), p.message));
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
    if failed.len() == recipients.len() {
        let reasons: Vec<String> = failed.iter().map(|(_, e)| e.clone()).collect();
        return Err(ErrorBody::new(
            code::REFUSED,
            format!("no recipient can take this message: {}", reasons.join("; ")),
        ));
    }
    Ok(failed)
}

/// The recipient list (deduplicated, in the order given), how many at its start were typed by
/// name (the rest come from groups and broadcast), and how many names the broadcast (if any)
/// contributed.
///
/// A broadcast goes to the names the registry shows online now, except this node, and legacy
/// (seed) names only when this chatd runs with `--legacy`: names registered once and gone, or
/// seed registrations nobody here can message, are not recipients.
async fn expand(node: &Node, t: Targets) -> Result<(Vec<Name>, usize, Option<usize>), ErrorBody> {
    let mut all: Vec<Name> = Vec::new();
    // The registry's list can be long: no quadratic dedup.
    let mut seen: HashSet<Name> = HashSet::new();
    let mut push = |n: Name, all: &mut Vec<Name>| {
        if seen.insert(n.clone()) {
            all.push(n);
        }
    };
    for n in t.to {
        push(n, &mut all);
    }
    let typed = all.len();
    for g in t.groups {
        let info = node
            .store
            .group_show(g)
            .await
            .map_err(super::groups::group_error)?;
        for m in info.members {
            push(m, &mut all);
        }
    }
    let mut broadcast = None;
    if t.broadcast {
        let records = node.registry.list().await.map_err(|e| {
            ErrorBody::new(
                code::REGISTRY_UNAVAILABLE,
                format!("broadcast needs the registry's list of names: {e}"),
            )
        })?;
        let before = all.len();
        for r in records
            .into_iter()
            .filter(|r| r.online && (node.legacy || !r.legacy) && r.name != node.name)
        {
            push(r.name, &mut all);
        }
        broadcast = Some(all.len() - before);
    }
    Ok((all, typed, broadcast))
}
