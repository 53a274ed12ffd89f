//! `conversations`, `history`, `read`, `search` (protocol.md §2.9): thin over the store's
//! timeline, plus the registry's presence of each conversation's peers.

use std::sync::Arc;

use peerchat_proto::control::{
    code, ConvKey, ConversationInfo, LastMessage, PresenceState, Response, DEFAULT_PAGE,
    MAX_CONVERSATIONS, MAX_PAGE, MAX_SEARCH_TEXT, PREVIEW_CHARS,
};
use peerchat_proto::{ErrorBody, Name};

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;
use crate::presence::{Presence, MAX_CONVERSATION_PEERS};
use crate::store::{ConvSummary, Page, ResolveError, SearchQuery};

/// The full key of `key`, as the client's error when it names nothing or several.
pub async fn resolve(node: &Node, key: ConvKey) -> Result<ConvKey, ErrorBody> {
    node.store
        .resolve_conversation(key, node.name.clone())
        .await
        .map_err(|e| match e {
            ResolveError::NotFound(_) => ErrorBody::new(code::NOT_FOUND, e.to_string()),
            ResolveError::Ambiguous { .. } => ErrorBody::new(code::BAD_REQUEST, e.to_string()),
            ResolveError::Store(e) => store_error(e),
        })
}

fn page_limit(limit: Option<u32>) -> Result<u32, ErrorBody> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err(ErrorBody::new(
            code::BAD_REQUEST,
            "limit must be at least 1",
        )),
        n => Ok(n.min(MAX_PAGE)),
    }
}

pub fn list(node: &Arc<Node>, limit: Option<u32>) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let limit = limit.unwrap_or(MAX_CONVERSATIONS).min(MAX_CONVERSATIONS);
        let all = node
            .store
            .conversations(limit, node.name.clone())
            .await
            .map_err(store_error)?;
        watch_peers(&node, &all);
        Ok(Response::Conversations {
            conversations: all.into_iter().map(|s| info(&node, s)).collect(),
        })
    })
}

/// Watches the peers of the most recently active conversations (bounded).
pub fn watch_peers(node: &Node, all: &[ConvSummary]) {
    let peers = all
        .iter()
        .flat_map(|s| s.members.iter())
        .filter(|n| **n != node.name)
        .take(MAX_CONVERSATION_PEERS)
        .cloned()
        .collect::<Vec<_>>();
    node.presence.set_conversation_peers(peers);
}

pub fn presence_state(p: Presence) -> PresenceState {
    match p {
        Presence::Online => PresenceState::Online,
        Presence::Offline => PresenceState::Offline,
        Presence::Unknown => PresenceState::Unknown,
    }
}

fn info(node: &Node, s: ConvSummary) -> ConversationInfo {
    let (presence, members_online) = match &s.with {
        ConvKey::Peer(p) => (Some(presence_state(node.presence.state(p))), Vec::new()),
        ConvKey::Group { .. } => (
            None,
            s.members
                .iter()
                .filter(|m| **m != node.name && node.presence.state(m) == Presence::Online)
                .cloned()
                .collect(),
        ),
    };
    ConversationInfo {
        last: s.last.map(|e| LastMessage {
            pos: e.pos,
            direction: e.direction,
            from: e.from,
            at: e.received_at.unwrap_or(e.sent_at),
            preview: preview(&e.body),
        }),
        with: s.with,
        members: s.members,
        unread: s.unread,
        read_up_to: s.read_up_to,
        presence,
        members_online,
    }
}

fn preview(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(PREVIEW_CHARS)
        .collect()
}

pub fn history(
    node: &Arc<Node>,
    with: ConvKey,
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<u32>,
) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let limit = page_limit(limit)?;
        let page = match (before, after) {
            (Some(_), Some(_)) => {
                return Err(ErrorBody::new(
                    code::BAD_REQUEST,
                    "give before or after, not both",
                ))
            }
            (Some(b), None) => Page::Before(b),
            (None, Some(a)) => Page::After(a),
            (None, None) => Page::Newest,
        };
        let with = resolve(&node, with).await?;
        let p = node
            .store
            .history(with.clone(), page, limit, node.name.clone())
            .await
            .map_err(store_error)?;
        Ok(Response::History {
            with,
            entries: p.entries,
            older: p.older,
            newer: p.newer,
            read_up_to: p.read_up_to,
        })
    })
}

pub fn read(node: &Arc<Node>, with: ConvKey, up_to: i64) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        if up_to < 0 {
            return Err(ErrorBody::new(
                code::BAD_REQUEST,
                "up_to must not be negative",
            ));
        }
        let with = resolve(&node, with).await?;
        let (up_to, unread) = node
            .store
            .mark_read(with.clone(), up_to)
            .await
            .map_err(store_error)?;
        Ok(Response::ReadPosition {
            with,
            up_to,
            unread,
        })
    })
}

pub struct SearchRequest {
    pub text: String,
    pub with: Option<ConvKey>,
    pub from: Option<Name>,
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

pub fn search(node: &Arc<Node>, r: SearchRequest) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        if r.text.is_empty() || r.text.len() > MAX_SEARCH_TEXT {
            return Err(ErrorBody::new(
                code::BAD_REQUEST,
                format!("the search text must be 1 to {MAX_SEARCH_TEXT} bytes"),
            ));
        }
        let with = match r.with {
            Some(w) => Some(resolve(&node, w).await?),
            None => None,
        };
        let q = SearchQuery {
            text: r.text,
            with,
            from: r.from,
            before: r.before,
            after: r.after,
            limit: page_limit(r.limit)?,
        };
        let (hits, older) = node
            .store
            .search(q, node.name.clone())
            .await
            .map_err(store_error)?;
        Ok(Response::SearchResults { hits, older })
    })
}
