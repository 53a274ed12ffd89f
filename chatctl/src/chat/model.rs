//! The TUI's view model: conversations and messages as the screen shows them, independent of
//! the wire protocol (the session translates chatd's replies into these).

use chrono::{DateTime, Utc};

/// A conversation: a peer's name, or a group as `@name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvId(pub String);

#[cfg_attr(not(test), allow(dead_code))]
impl ConvId {
    pub fn peer(name: &str) -> ConvId {
        ConvId(name.to_string())
    }

    pub fn group(name: &str) -> ConvId {
        ConvId(format!("@{name}"))
    }

    /// `NAME`, `@GROUP` or `@OWNER/GROUP` as typed; `None` for anything else (empty, spaces,
    /// a bare `@`).
    pub fn parse(s: &str) -> Option<ConvId> {
        let name_ok = |n: &str| !n.is_empty() && peerchat_proto::Name::new(n).is_ok();
        let ok = match s.strip_prefix('@') {
            None => name_ok(s),
            Some(rest) => match rest.split_once('/') {
                Some((owner, name)) => name_ok(owner) && name_ok(name),
                None => name_ok(rest),
            },
        };
        ok.then(|| ConvId(s.to_string()))
    }

    pub fn is_group(&self) -> bool {
        self.0.starts_with('@')
    }

    /// The peer's or the group's name, without `@` and owner.
    pub fn name(&self) -> &str {
        let s = self.0.strip_prefix('@').unwrap_or(&self.0);
        s.rsplit('/').next().unwrap_or(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConvId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an outgoing message stands (for all its recipients together: the least advanced one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    Queued,
    Sent,
    Delivered,
    /// Given up (or cancelled); why.
    Failed(String),
}

impl Tick {
    /// From a protocol state name (`queued`, `sent`, `delivered`, `failed`, `cancelled`).
    pub fn from_state(state: &str, error: Option<&str>) -> Tick {
        match state {
            "sent" => Tick::Sent,
            "delivered" => Tick::Delivered,
            "failed" => Tick::Failed(error.unwrap_or("failed").to_string()),
            "cancelled" => Tick::Failed("cancelled".to_string()),
            _ => Tick::Queued,
        }
    }
}

/// One message in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub id: String,
    /// Its place in the conversation's history (the paging cursor for older messages).
    pub seq: i64,
    pub from: String,
    pub outgoing: bool,
    pub body: String,
    pub at: DateTime<Utc>,
    /// Outgoing messages only.
    pub tick: Option<Tick>,
}

/// A conversation as the list and the message pane show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: ConvId,
    pub unread: u32,
    /// `None`: unknown (groups, or the registry could not be asked).
    pub online: Option<bool>,
    pub last_activity: Option<DateTime<Utc>>,
    /// Oldest first; what has been loaded so far.
    pub messages: Vec<Msg>,
    /// No older messages than those loaded.
    pub history_complete: bool,
    /// A request for older messages is out.
    pub loading: bool,
    /// Rows scrolled up from the newest line (0: the bottom).
    pub scroll: usize,
}

impl Conversation {
    pub fn new(id: ConvId) -> Conversation {
        Conversation {
            id,
            unread: 0,
            online: None,
            last_activity: None,
            messages: Vec::new(),
            history_complete: false,
            loading: false,
            scroll: 0,
        }
    }

    /// Adds or updates one message, keeping the list in `seq` order without duplicates.
    /// An update keeps the more advanced tick (a `message` event carries the state at store
    /// time, which a `delivery` event may already have passed).
    pub fn upsert(&mut self, mut m: Msg) {
        if let Some(at) = self.messages.iter().position(|o| o.id == m.id) {
            let old = self.messages.remove(at);
            if m.seq == UNPLACED {
                m.seq = old.seq;
            }
            if tick_rank(&old.tick) > tick_rank(&m.tick) {
                m.tick = old.tick;
            }
        }
        if self.last_activity.is_none_or(|t| t < m.at) {
            self.last_activity = Some(m.at);
        }
        let at = self.messages.partition_point(|o| o.seq <= m.seq);
        self.messages.insert(at, m);
    }

    /// The highest `seq` loaded (what a read position moves to).
    pub fn newest_seq(&self) -> Option<i64> {
        self.messages
            .iter()
            .rev()
            .map(|m| m.seq)
            .find(|s| *s != UNPLACED)
    }

    pub fn oldest_seq(&self) -> Option<i64> {
        self.messages.first().map(|m| m.seq)
    }
}

/// The `seq` of a message chatd accepted whose place in the timeline is not known yet: it
/// sorts after every placed one until the `message` event places it.
pub const UNPLACED: i64 = i64::MAX;

fn tick_rank(t: &Option<Tick>) -> u8 {
    match t {
        None => 0,
        Some(Tick::Queued) => 1,
        Some(Tick::Sent) => 2,
        Some(Tick::Delivered) | Some(Tick::Failed(_)) => 3,
    }
}

/// A summary line from chatd's conversation list.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: ConvId,
    pub unread: u32,
    pub online: Option<bool>,
    pub last_activity: Option<DateTime<Utc>>,
}

/// Parses a protocol timestamp (RFC 3339); a bad one shows as the Unix epoch rather than
/// failing the whole screen.
pub fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}
