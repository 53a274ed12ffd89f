//! Conversations on the control socket (protocol.md §2.9): the conversation key, the timeline
//! entries of `history` and `search`, the `conversations` summary and the `events` stream.
//!
//! A conversation is a peer (`pb`) or a group (`@pa/ops`: the group `ops` as its owner `pa`
//! keeps it). Every message a node stores has one place in the node's *timeline*, a strictly
//! increasing position (`pos`) shared by all conversations; `history` pages by it, `read`
//! marks by it, `search` names it. The `events` stream's cursor comes from the same sequence
//! (a `message` event's cursor is its entry's `pos`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::control::DeliveryState;
use crate::name::Name;

/// A place in this node's timeline: strictly increasing, never reused, shared by every
/// conversation (so entries of different conversations compare too).
pub type Pos = i64;

/// A place in the `events` stream (the same sequence as [`Pos`]: a message event's cursor is
/// its entry's position; delivery and read events take positions of their own between them).
pub type EventCursor = i64;

/// Default and largest `limit` of `history` and `search`.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 1000;
/// Most conversations one `conversations` reply lists (the most recently active first).
pub const MAX_CONVERSATIONS: u32 = 10_000;
/// Longest `search` text, in bytes.
pub const MAX_SEARCH_TEXT: usize = 1024;
/// Longest `preview` in a conversation summary, in characters (the body's first line, cut).
pub const PREVIEW_CHARS: usize = 80;

/// Which conversation: a peer, or a group with its owner. As JSON a string: `pb`, `@pa/ops`,
/// or in requests also `@ops` (owner left out: resolved by chatd, see protocol.md §2.9.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvKey {
    Peer(Name),
    Group { owner: Option<Name>, name: Name },
}

impl ConvKey {
    /// Parses `pb`, `@ops` or `@pa/ops`.
    pub fn parse(s: &str) -> Result<ConvKey, String> {
        let bad = |e: crate::name::NameError| format!("conversation {s:?}: {e}");
        match s.strip_prefix('@') {
            None => Ok(ConvKey::Peer(Name::new(s).map_err(bad)?)),
            Some(rest) => match rest.split_once('/') {
                None => Ok(ConvKey::Group {
                    owner: None,
                    name: Name::new(rest).map_err(bad)?,
                }),
                Some((owner, name)) => Ok(ConvKey::Group {
                    owner: Some(Name::new(owner).map_err(bad)?),
                    name: Name::new(name).map_err(bad)?,
                }),
            },
        }
    }

    pub fn group(owner: Name, name: Name) -> ConvKey {
        ConvKey::Group {
            owner: Some(owner),
            name,
        }
    }

    pub fn is_group(&self) -> bool {
        matches!(self, ConvKey::Group { .. })
    }
}

impl fmt::Display for ConvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvKey::Peer(n) => write!(f, "{n}"),
            ConvKey::Group { owner: None, name } => write!(f, "@{name}"),
            ConvKey::Group {
                owner: Some(o),
                name,
            } => write!(f, "@{o}/{name}"),
        }
    }
}

impl Serialize for ConvKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConvKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConvKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which way a message went, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received from a peer.
    In,
    /// Sent by this node.
    Out,
}

/// One message in a conversation's timeline (`history`, `search`, the `message` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in the timeline: the cursor of `history`, `read` and `search`.
    pub pos: Pos,
    pub direction: Direction,
    /// The message id (the sender's; with `from`, unique).
    pub id: String,
    /// The sender (this node's own name for `out`).
    pub from: Name,
    /// Every recipient of the message.
    pub to: Vec<Name>,
    pub body: String,
    /// `in`: when the sender accepted it (sender's clock); `out`: when this node accepted it.
    pub sent_at: String,
    /// `in` only: when this node stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    /// `in` only: whether the sender proved its key (false for seed peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    /// `out` only: each recipient's delivery state, as of the reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivery: Vec<EntryDelivery>,
}

/// One recipient's delivery state of a sent message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryDelivery {
    pub to: Name,
    pub state: DeliveryState,
    /// Why it `failed` (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One conversation in the `conversations` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationInfo {
    /// A peer's name, or `@OWNER/NAME` for a group.
    pub with: ConvKey,
    /// The group's members as this node knows them, this node included (protocol.md §2.9.1);
    /// for a peer conversation, the peer.
    pub members: Vec<Name>,
    /// The newest message (absent for a group of this node's that has no message yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastMessage>,
    /// Received messages after `read_up_to`.
    pub unread: u64,
    /// The read position (0: nothing read).
    pub read_up_to: Pos,
    /// Peer conversations: what the registry says (`online`, `offline`, `unknown`). Groups:
    /// absent; see `members_online`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceState>,
    /// Groups: the members the registry reports online (this node not included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members_online: Vec<Name>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastMessage {
    pub pos: Pos,
    pub direction: Direction,
    pub from: Name,
    /// `sent_at` of `out` messages, `received_at` of `in` ones.
    pub at: String,
    /// The body's start, at most [`PREVIEW_CHARS`] characters, cut at the first line break
    /// (untrusted text: display it through a terminal-safe filter).
    pub preview: String,
}

/// What the registry says about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Online,
    Offline,
    /// Not watched yet, or the registry cannot be asked.
    Unknown,
}

/// One `search` hit: the conversation it is in and the entry (its `pos` is where to jump).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub with: ConvKey,
    pub entry: Entry,
}

/// One event of the `events` stream (`{"type":"event","cursor":N,"event":{...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A message stored, received or sent (`entry.direction`), in conversation `with`. A sent
    /// message to several peers without a group is one event per peer conversation.
    Message { with: ConvKey, entry: Entry },
    /// A recipient's delivery state of a sent message changed (`id` is the message id, as in
    /// the `message` event's entry).
    Delivery {
        with: ConvKey,
        id: String,
        to: Name,
        state: DeliveryState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A conversation's read position moved (by any client).
    Read {
        with: ConvKey,
        up_to: Pos,
        unread: u64,
    },
    /// What the registry says about a peer changed (sent without a cursor: presence is not
    /// stored; a new stream starts with the current state of every watched name).
    Presence { name: Name, presence: PresenceState },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_keys_round_trip() {
        for s in ["pb", "@ops", "@pa/ops"] {
            let k = ConvKey::parse(s).unwrap();
            assert_eq!(k.to_string(), s);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<ConvKey>(&json).unwrap(), k);
        }
        for bad in ["", "@", "@/ops", "@pa/", "p b", "@pa/o/ps", "pa/ops"] {
            assert!(ConvKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_shape() {
        let e = Event::Read {
            with: ConvKey::parse("@pa/ops").unwrap(),
            up_to: 7,
            unread: 0,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"kind":"read","with":"@pa/ops","up_to":7,"unread":0}"#
        );
    }
}
