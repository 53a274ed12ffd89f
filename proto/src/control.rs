//! The control protocol between `chatctl` (or any local client) and `chatd`: JSON lines over a
//! Unix socket.
//!
//! The client's first request must be `hello` with [`VERSION`]; chatd refuses any other version.
//! Requests carry a client-chosen `id` echoed in the reply; replies come in request order, so a
//! client may pipeline. A `follow` request turns the connection into an event stream: every later
//! line is a reply with the follow's `id` (`message` or `heartbeat`).

use serde::{Deserialize, Serialize};

pub use crate::conversation::{
    ConvKey, ConversationInfo, Direction, Entry, EntryDelivery, Event, EventCursor, LastMessage,
    Pos, PresenceState, SearchHit, DEFAULT_PAGE, MAX_CONVERSATIONS, MAX_PAGE, MAX_SEARCH_TEXT,
    PREVIEW_CHARS,
};
use crate::envelope::{ErrorBody, Reply};
use crate::msg_id::MsgId;
use crate::name::Name;

/// Version of the control protocol. Bumped on incompatible changes.
pub const VERSION: u32 = 1;

/// Longest request line chatd reads (a 64 KiB body can take up to 6× that as escaped JSON).
pub const MAX_LINE: usize = 512 * 1024;

/// Most message-body bytes in one `messages` reply; larger results are cut (and say so).
pub const MAX_MESSAGES_BYTES: usize = 8 << 20;

/// Longest reply line a client should accept (a full `messages` reply, escaped).
pub const MAX_REPLY_LINE: usize = 64 << 20;

/// Most recipients of one message (after expanding groups and broadcast), and most members of
/// one group: a `send` over it is refused as a whole (`too_large`), a `group_add` over it too.
pub const MAX_RECIPIENTS: usize = 1024;

/// Stable error codes. `chatctl` maps them to exit codes (see its `--help`).
pub mod code {
    pub const BAD_REQUEST: &str = "bad_request";
    /// The request's `op` is not one this chatd knows (an older chatd than the client): a client
    /// can tell "too old" from "malformed" and stop retrying.
    pub const UNKNOWN_OP: &str = "unknown_op";
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    pub const HELLO_FIRST: &str = "hello_first";
    pub const UNKNOWN_NAME: &str = "unknown_name";
    pub const NOT_FOUND: &str = "not_found";
    pub const TOO_LARGE: &str = "too_large";
    pub const CONFLICT: &str = "conflict";
    pub const REFUSED: &str = "refused";
    /// The recipient's key is not the pinned one (and no valid rotation leads to it): nothing is
    /// sent to it until `trust`.
    pub const KEY_CHANGED: &str = "key_changed";
    pub const REGISTRY_UNAVAILABLE: &str = "registry_unavailable";
    pub const STORAGE: &str = "storage";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const INTERNAL: &str = "internal";
}

/// One request line: `{"id":N,"op":"...", ...}`.
pub type RequestLine = crate::envelope::RequestLine<Request>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Must come first on every connection.
    Hello { version: u32 },
    /// Accept one message for one or more recipients: the names in `to`, the members of each
    /// group in `groups`, and with `broadcast` every name the registry lists except our own.
    Send {
        #[serde(default)]
        to: Vec<Name>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<Name>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        broadcast: bool,
        body: String,
        /// Client-chosen message id, making the send idempotent; chatd picks one if absent.
        /// An invalid one makes the request invalid (`bad_request`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msg_id: Option<MsgId>,
        /// Send into this conversation instead (`to`, `groups` and `broadcast` must then be
        /// empty): a peer, or a group conversation, whose members (but this node) get it,
        /// tagged with the group (protocol.md §2.9.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<ConvKey>,
    },
    /// Received messages: the newest `limit` (oldest first), or those after `after`.
    Inbox {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Name>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<i64>,
    },
    /// Like `inbox` (with `backlog` as the limit), then every new message as it arrives.
    Follow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Name>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backlog: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<i64>,
    },
    /// Names the registry knows (or, when it is unreachable, those in our cache).
    Peers,
    /// This node: name, addresses, registry, uptime, counts.
    Status,
    /// Create a group (refused if it exists), optionally with members.
    GroupCreate {
        group: Name,
        #[serde(default)]
        members: Vec<Name>,
    },
    /// Add members to an existing group.
    GroupAdd { group: Name, members: Vec<Name> },
    /// Remove members from an existing group.
    GroupRemove { group: Name, members: Vec<Name> },
    /// Delete a group.
    GroupDelete { group: Name },
    /// Every group with its members.
    GroupList,
    /// One group with its members.
    GroupShow { group: Name },
    /// Undelivered outgoing messages (queued, sent), oldest first; a page of them after
    /// `after` (the `next` of the previous page) if given.
    Outbox {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// One outgoing message: each recipient's state and attempts.
    MessageStatus { msg_id: String },
    /// Waits until every recipient of `msg_id` reached a final state (delivered, failed,
    /// cancelled, or sent to a legacy peer), or `timeout_ms` passed; replies with the states.
    Wait {
        msg_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Stops retrying every recipient of `msg_id` not yet delivered (state `cancelled`).
    Cancel { msg_id: String },
    /// Runs SQLite's integrity check on chatd's database.
    CheckDatabase,
    /// This node's name and key.
    Whoami,
    /// Accept the key the registry now reports for `name` in place of the pinned one.
    Trust { name: Name },
    /// Make a new identity key, publish a rotation signed by the old one.
    RotateKey,
    /// Sent messages, oldest first, with every recipient's state: those after `after` (an
    /// outbox seq; 0 or absent: from the start), only those to `to` if given; at most `limit`
    /// (default 100, at most 10,000) and [`MAX_MESSAGES_BYTES`] of bodies per reply.
    Sent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Name>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Write a consistent copy of chatd's database to `path` (absolute, on chatd's host,
    /// written by chatd's user, mode 0600) while chatd keeps serving. An existing file is
    /// refused (`conflict`) unless `force`.
    Backup {
        path: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Every conversation, the most recently active first (at most `limit`, default and
    /// limit [`MAX_CONVERSATIONS`](crate::conversation::MAX_CONVERSATIONS)).
    Conversations {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// One conversation's messages, both directions, oldest first: the newest `limit`, or the
    /// `limit` just before `before`, or just after `after` (timeline positions).
    History {
        with: ConvKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Pos>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Pos>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Moves a conversation's read position up to `up_to` (never back).
    Read { with: ConvKey, up_to: Pos },
    /// Messages whose body contains `text` (case-insensitive substring), newest first.
    Search {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<ConvKey>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Name>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Pos>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Pos>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Turns the connection into the event stream: stored events after `after` (or none: from
    /// now), then every new one as it is committed.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<EventCursor>,
    },
}

/// Successful replies, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello {
        version: u32,
        node: Name,
        software: String,
    },
    Accepted {
        id: String,
        recipients: Vec<RecipientState>,
        /// For a send into a conversation: its resolved key (protocol.md §2.9.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<ConvKey>,
        /// For a send into a conversation: the message's position in it (absent for a repeat
        /// of an accepted message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos: Option<Pos>,
    },
    Messages {
        messages: Vec<InboxMessage>,
        /// True when more messages matched than fit in one reply ([`MAX_MESSAGES_BYTES`]);
        /// page with `after`.
        #[serde(default)]
        truncated: bool,
    },
    /// The follow stream has started; `message` and `heartbeat` lines follow. New messages are
    /// those with `seq > after` (the backlog, if any, comes first); a client that reconnects
    /// resumes with `after` = the last seq it printed, or this value if it printed none.
    Following {
        after: i64,
    },
    Message(InboxMessage),
    Heartbeat,
    Peers {
        peers: Vec<PeerInfo>,
        /// True when the registry was unreachable and the list comes from chatd's cache.
        from_cache: bool,
    },
    Status(NodeStatus),
    Groups {
        groups: Vec<GroupInfo>,
    },
    Outbox {
        entries: Vec<OutboxEntry>,
        /// Present when more entries follow this page: the `after` of the next request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        /// How many more entries follow this page (0 when `next` is absent).
        #[serde(default, skip_serializing_if = "is_zero")]
        more: u64,
    },
    MessageInfo(MessageInfo),
    DatabaseCheck {
        ok: bool,
        /// `ok`, or what the integrity check found.
        detail: String,
    },
    Group(GroupInfo),
    Identity {
        name: Name,
        /// The Ed25519 public key, 64 hex digits.
        key: String,
        fingerprint: String,
    },
    Trusted {
        name: Name,
        /// The fingerprint pinned before (`None`: nothing was pinned).
        previous: Option<String>,
        /// The fingerprint pinned now (`None`: a legacy peer, no key).
        fingerprint: Option<String>,
    },
    Rotated {
        previous: String,
        fingerprint: String,
        /// Whether the registry accepted the new key already (otherwise chatd keeps trying).
        published: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A page of sent messages (`sent`); page on with `after` = the last `seq`.
    SentMessages {
        messages: Vec<SentMessage>,
        /// True when more messages matched than fit in this reply (by `limit` or bytes).
        #[serde(default)]
        more: bool,
    },
    /// A `backup` finished: the copy is complete and synced to disk at `path`.
    BackedUp {
        path: String,
        bytes: u64,
        millis: u64,
    },
    Done,
    Conversations {
        conversations: Vec<ConversationInfo>,
    },
    History {
        with: ConvKey,
        entries: Vec<Entry>,
        /// Present when older entries exist: the `before` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        older: Option<Pos>,
        /// Present when newer entries exist: the `after` of the next page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newer: Option<Pos>,
        read_up_to: Pos,
    },
    ReadPosition {
        with: ConvKey,
        up_to: Pos,
        unread: u64,
    },
    SearchResults {
        hits: Vec<SearchHit>,
        /// Present when more hits may follow: the `before` of the next (older) page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        older: Option<Pos>,
    },
    /// The event stream has started: every later `event` has a cursor above `after`; resume
    /// with `after` = the last cursor seen (or this value). `gap`: events between the
    /// request's `after` and the oldest kept one were pruned (reload with `conversations`).
    EventsFrom {
        after: EventCursor,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        gap: bool,
    },
    /// One event; `cursor` is absent for presence events (not stored).
    Event {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<EventCursor>,
        event: Event,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The position of an `outbox` entry, as the `after`/`next` cursor of `outbox` pages:
/// `OUT_SEQ:RECIPIENT` (the message's place in the outbox, and the recipient's name, which
/// cannot contain `:`). Entries come in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxCursor {
    pub seq: i64,
    pub to: String,
}

impl OutboxCursor {
    pub fn parse(s: &str) -> Option<OutboxCursor> {
        let (seq, to) = s.split_once(':')?;
        Some(OutboxCursor {
            seq: seq.parse().ok()?,
            to: to.to_string(),
        })
    }
}

impl std::fmt::Display for OutboxCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.to)
    }
}

/// One undelivered (message, recipient) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub to: Name,
    pub state: DeliveryState,
    pub attempts: u32,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An outgoing message and where each of its recipients stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub id: String,
    pub created_at: String,
    pub recipients: Vec<RecipientDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientDetail {
    pub to: Name,
    pub state: DeliveryState,
    /// Transmissions so far (0 while nothing was sent yet).
    pub attempts: u32,
    /// The last delivery error while the recipient is pending or `failed`; `None` once it is
    /// delivered, cancelled or finally sent (an earlier error is stale then).
    pub error: Option<String>,
    pub updated_at: String,
    /// Nothing more will happen to this recipient: delivered, failed, cancelled, or `sent` to a
    /// legacy peer (which never acknowledges).
    #[serde(rename = "final")]
    pub done: bool,
}

/// A message this node sent, and where each recipient stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Local, strictly increasing position in this node's outbox.
    pub seq: i64,
    pub id: String,
    pub body: String,
    /// When chatd accepted it (RFC 3339 UTC, milliseconds).
    pub sent_at: String,
    pub recipients: Vec<RecipientDetail>,
}

/// A named set of recipients kept by the local chatd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: Name,
    pub members: Vec<Name>,
}

/// Delivery state of one recipient of an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Recorded, not yet handed to the recipient.
    Queued,
    /// Written to the recipient, no acknowledgement yet.
    Sent,
    /// The recipient has committed it.
    Delivered,
    /// Given up; `error` says why.
    Failed,
    /// Stopped by the user.
    Cancelled,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => DeliveryState::Queued,
            "sent" => DeliveryState::Sent,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            "cancelled" => DeliveryState::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientState {
    pub to: Name,
    pub state: DeliveryState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A received message. Timestamps are RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Local, strictly increasing position in this node's inbox.
    pub seq: i64,
    pub id: String,
    pub from: String,
    pub to: String,
    /// Every recipient of the message, when it went to more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub body: String,
    pub sent_at: String,
    pub received_at: String,
    pub authenticated: bool,
}

/// The borrowed twin of [`Response::Message`]: the same JSON, encoded without copying the row
/// (chatd writes one per message to every follower).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "message")]
pub struct MessageRef<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// Empty unless the message went to more than one recipient (as in [`InboxMessage`]).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub recipients: &'a [String],
    pub body: &'a str,
    pub sent_at: &'a str,
    pub received_at: &'a str,
    pub authenticated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: Name,
    pub address: String,
    /// `None` when only our cache knows the peer and the registry could not be asked.
    pub online: Option<bool>,
    pub last_seen: Option<String>,
    #[serde(default)]
    pub legacy: bool,
    /// Fingerprint of the peer's key as its record proves it (`None` for legacy peers and
    /// records that do not verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// How that key stands against our pin: `pinned` (the same), `new` (nothing pinned yet),
    /// `changed` (refused until `trust`), `invalid` (bad signature), `legacy` (no key), `self`
    /// (this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where chatd learned the entry: `registry` (a signed record), `lan` (a DNS-SD
    /// announcement, `--lan`) or `cache` (chatd's last known good entry, the registry being
    /// unreachable). Absent from chatd versions that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: Name,
    /// The address registered for peers to reach us.
    pub address: String,
    pub listen: String,
    pub registry: String,
    pub registry_reachable: bool,
    /// Why the last registration failed, while it does (absent once registered; absent from
    /// chatd versions that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_error: Option<String>,
    pub started_at: String,
    pub uptime_secs: u64,
    pub counts: Counts,
    /// Every registry endpoint chatd uses, in its order of preference (absent from chatd
    /// versions that predate several registries). `registry` is the one in use now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<RegistryStanding>,
    /// Whether chatd announces and browses names on the LAN (`--lan`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lan: bool,
    /// Set when the registry saw our last registration come from another IP address than the
    /// one chatd sent it from, and no `--advertise` was given: a NAT router is in between, and
    /// `address` is the router's. Other nodes then reach us only if the router forwards the port.
    /// Absent otherwise (and from earlier chatd versions). (Boxed: rarely there, and it would
    /// make every control reply larger.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_nat: Option<Box<BehindNat>>,
}

/// One registry endpoint as chatd sees it (`status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryStanding {
    /// `IP:PORT` (or `HOST:PORT` when the name did not resolve at start-up).
    pub address: String,
    /// Whether its last exchange with chatd got an answer.
    pub reachable: bool,
    /// The address it confirmed for this node (absent until it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<String>,
    /// Why the last registration with it failed, while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`NodeStatus::behind_nat`]: the two addresses that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BehindNat {
    /// The IP address the registry saw (and registered), e.g. the NAT router's public address.
    pub seen_ip: String,
    /// The IP address chatd sent the registration from (its own, on the private side).
    pub local_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub inbox: u64,
    pub outbox: u64,
    pub queued: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub cancelled: u64,
}

pub type ControlReply = Reply<Response>;

/// Longest message id (`send`'s `msg_id`) in bytes: [`MsgId`]'s limit.
pub use crate::msg_id::MAX_MSG_ID;

/// [`MsgId`]'s rule on a borrowed string, for a client that checks its ids before it connects
/// (chatctl). chatd refuses others (`bad_request`).
pub fn check_msg_id(id: &str) -> Result<(), String> {
    crate::msg_id::check(id).map_err(|e| e.to_string())
}

/// Parses one request line; on error, the id to answer with (the client's, when the line is
/// JSON with an `id`) and the error, ready to send back.
pub fn parse_request(line: &[u8]) -> Result<RequestLine, (u64, ErrorBody)> {
    // Hot path: a `send` decodes straight into a plain struct (the flattened, tagged request
    // buffers every field twice). The general parser still decides everything else, errors
    // included, and the fast struct accepts exactly what it accepts.
    let text = std::str::from_utf8(line).ok();
    if let Some(text) = text.filter(|t| t.contains(r#""op":"send","#)) {
        if let Ok(s) = serde_json::from_str::<FastSend>(text) {
            return Ok(RequestLine {
                id: s.id,
                request: Request::Send {
                    to: s.to,
                    groups: s.groups,
                    broadcast: s.broadcast,
                    body: s.body,
                    msg_id: s.msg_id,
                    conversation: s.conversation,
                },
            });
        }
    }
    crate::envelope::parse_request_line(line, code::BAD_REQUEST).map_err(
        |(id, e)| match unknown_op(line) {
            Some(op) => (
                id,
                ErrorBody::new(
                    code::UNKNOWN_OP,
                    format!(
                        "unknown op {op:?}: this chatd ({}) does not know it; a newer chatd may",
                        crate::SOFTWARE_VERSION
                    ),
                ),
            ),
            None => (id, e),
        },
    )
}

/// The `op` of a line that failed to parse, if it is a string no request variant has. Asked of
/// serde itself (an `op` alone fails as a missing field if the variant exists), so the list of
/// ops is never written twice.
fn unknown_op(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let op = v.get("op")?.as_str()?;
    let probe = serde_json::json!({ "op": op });
    match serde_json::from_value::<Request>(probe) {
        Err(e) if e.to_string().starts_with("unknown variant") => {
            Some(op.chars().take(64).collect())
        }
        _ => None,
    }
}

#[derive(Deserialize)]
enum SendTag {
    #[serde(rename = "send")]
    Send,
}

/// `{"id":N,"op":"send",...}` as a plain struct (the fields and defaults of `Request::Send`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastSend {
    #[serde(default)]
    id: u64,
    #[serde(rename = "op")]
    _op: SendTag,
    #[serde(default)]
    to: Vec<Name>,
    #[serde(default)]
    groups: Vec<Name>,
    #[serde(default)]
    broadcast: bool,
    body: String,
    #[serde(default)]
    msg_id: Option<MsgId>,
    #[serde(default)]
    conversation: Option<ConvKey>,
}

#[cfg(test)]
mod msg_id_tests {
    use super::{check_msg_id, MAX_MSG_ID};

    #[test]
    fn msg_id_rule() {
        assert!(check_msg_id("job-42").is_ok());
        assert!(check_msg_id(&"x".repeat(MAX_MSG_ID)).is_ok());
        for bad in ["", "a b", "tab\there", "é", &"x".repeat(MAX_MSG_ID + 1)] {
            assert!(check_msg_id(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{to_line, Outcome};

    /// An op no variant has is `unknown_op` (a client can tell "chatd too old"); anything else
    /// wrong, an unknown field of a known op included, stays `bad_request`.
    #[test]
    fn an_unknown_op_has_its_own_code() {
        let code_of = |line: &[u8]| parse_request(line).err().map(|(id, e)| (id, e.code));
        assert_eq!(
            code_of(br#"{"id":4,"op":"teleport","to":"pb"}"#),
            Some((4, code::UNKNOWN_OP.to_string()))
        );
        for bad in [
            &br#"{"id":4,"op":"history","with":"pb","colour":1}"#[..],
            br#"{"id":4,"op":"history"}"#,
            br#"{"id":4,"op":7}"#,
            br#"{"id":4}"#,
            br#"not json"#,
            br#"{"id":4,"op":"send","body":"x","extra":1}"#,
        ] {
            assert_eq!(
                code_of(bad).map(|c| c.1),
                Some(code::BAD_REQUEST.to_string()),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_request(br#"{"id":4,"op":"conversations"}"#).is_ok());
    }

    #[test]
    fn send_hot_path_accepts_what_the_general_parser_accepts() {
        let cases: &[&[u8]] = &[
            br#"{"id":3,"op":"send","to":["pb"],"body":"hi"}"#,
            br#"{"op":"send","to":["pb","pc"],"groups":["ops"],"broadcast":true,"body":"x","msg_id":"m"}"#,
            br#"{"id":3,"op":"send","to":["pb"],"body":"hi","extra":1}"#,
            br#"{"id":3,"op":"send","to":["bad name"],"body":"hi"}"#,
            br#"{"id":3,"op":"send","to":["pb"]}"#,
            br#"{"id":3,"op":"send","body":"a","body":"b"}"#,
            br#"{"id":-1,"op":"send","to":["pb"],"body":"hi"}"#,
            br#"{"id":3,"op":"send","to":["pb"],"body":"hi","msg_id":null}"#,
            br#"{"id":3,"op":"send","to":["pb"],"body":"hi","msg_id":"a b"}"#,
            br#"{"id":3,"op":"send","to":["pb"],"body":"hi","msg_id":""}"#,
            br#"{"id":3,"op":"send","conversation":"@pa/ops","body":"hi"}"#,
            br#"{"id":3,"op":"send","conversation":"@pa/","body":"hi"}"#,
        ];
        for c in cases {
            let slow = crate::envelope::parse_request_line::<Request>(c, code::BAD_REQUEST);
            let fast = parse_request(c);
            assert_eq!(
                slow.as_ref().ok(),
                fast.as_ref().ok(),
                "{}",
                String::from_utf8_lossy(c)
            );
            assert_eq!(slow.is_ok(), fast.is_ok(), "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn send_request_shape() {
        let r = parse_request(br#"{"id":3,"op":"send","to":["pb"],"body":"hi"}"#).unwrap();
        assert_eq!(r.id, 3);
        assert!(matches!(
            r.request,
            Request::Send {
                msg_id: None,
                broadcast: false,
                ..
            }
        ));
        assert!(parse_request(br#"{"id":3,"op":"send","to":["p b"],"body":"hi"}"#).is_err());
        // An invalid msg_id makes the request invalid, answered with its id and the rule.
        let (id, e) =
            parse_request(br#"{"id":4,"op":"send","to":["pb"],"body":"hi","msg_id":"a b"}"#)
                .unwrap_err();
        assert_eq!((id, e.code.as_str()), (4, code::BAD_REQUEST));
        assert!(e.message.contains("printable ASCII"), "{}", e.message);
        assert!(parse_request(br#"{"id":3,"op":"send","to":[],"body":"hi","x":1}"#).is_err());
        // A bad field is answered with the request's own id.
        assert_eq!(
            parse_request(br#"{"id":9,"op":"inbox","limit":-1}"#)
                .unwrap_err()
                .0,
            9
        );
        assert_eq!(parse_request(b"not json").unwrap_err().0, 0);
    }

    #[test]
    fn replies_are_ok_or_error() {
        let ok: ControlReply = Reply {
            id: 1,
            outcome: Outcome::Ok(Response::Following { after: 4 }),
        };
        assert_eq!(
            to_line(&ok),
            b"{\"id\":1,\"ok\":{\"type\":\"following\",\"after\":4}}\n"
        );
        let err: ControlReply = Reply {
            id: 2,
            outcome: Outcome::Err(ErrorBody::new(code::UNKNOWN_NAME, "no such name: x")),
        };
        let line = to_line(&err);
        let back: ControlReply = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.outcome.into_result().unwrap_err().code, "unknown_name");
    }

    #[test]
    fn borrowed_message_encodes_like_response_message() {
        for recipients in [vec![], vec!["pa".to_string(), "pb".to_string()]] {
            let owned = InboxMessage {
                seq: 42,
                id: "m\"1".into(),
                from: "pc".into(),
                to: "pa".into(),
                recipients: recipients.clone(),
                body: "hé\n\"x\"".into(),
                sent_at: "2025-11-25T04:11:06.990Z".into(),
                received_at: "2025-11-25T04:11:07.123Z".into(),
                authenticated: true,
            };
            let borrowed = MessageRef {
                seq: 42,
                id: &owned.id,
                from: &owned.from,
                to: &owned.to,
                recipients: &recipients,
                body: &owned.body,
                sent_at: &owned.sent_at,
                received_at: &owned.received_at,
                authenticated: true,
            };
            let mut line = b"x".to_vec();
            crate::envelope::append_line(
                &mut line,
                &Reply {
                    id: 8,
                    outcome: Outcome::<_>::Ok(borrowed),
                },
            );
            let expected: ControlReply = Reply {
                id: 8,
                outcome: Outcome::Ok(Response::Message(owned)),
            };
            assert_eq!(line[1..], to_line(&expected)[..]);
        }
    }
}
