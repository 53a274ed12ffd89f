//! What flows between the app (pure state) and the session (the control-socket I/O): events
//! from chatd in, requests out. Both sides depend on this module, never on each other.

use super::model::{ConvId, Msg, Summary, Tick};

/// From the session to the app.
#[derive(Debug, Clone, PartialEq)]
pub enum FromChatd {
    /// (Re)connected to chatd, which runs node `me`.
    Connected {
        me: String,
    },
    /// The connection is gone; the session is trying again.
    Disconnected {
        error: String,
    },
    Conversations(Vec<Summary>),
    /// A page of a conversation's history (oldest first); `complete`: nothing older exists.
    History {
        conv: ConvId,
        messages: Vec<Msg>,
        complete: bool,
    },
    /// A new message in a conversation, either direction (ours from another client too).
    Message {
        conv: ConvId,
        msg: Msg,
    },
    /// chatd accepted one of our sends.
    Accepted {
        conv: ConvId,
        msg: Msg,
    },
    /// chatd refused one of our sends (nothing was recorded).
    Refused {
        msg_id: String,
        error: String,
    },
    /// Delivery progress of one of our messages.
    Delivery {
        msg_id: String,
        tick: Tick,
    },
    /// A conversation's read position moved (here or in another client).
    Read {
        conv: ConvId,
        unread: u32,
    },
    Presence {
        name: String,
        online: bool,
    },
    /// Who can be written to (for Tab completion).
    Names {
        peers: Vec<String>,
        groups: Vec<String>,
    },
    SearchResults {
        query: String,
        hits: Vec<(ConvId, Msg)>,
    },
    /// The outcome of a command (`/trust`, `/group`), to show in the status line.
    Notice(String),
    Error(String),
}

/// From the app to the session.
#[derive(Debug, Clone, PartialEq)]
pub enum ToChatd {
    Send {
        msg_id: String,
        to: ConvId,
        body: String,
    },
    /// Messages older than `before` (or the newest ones).
    LoadHistory {
        conv: ConvId,
        before: Option<i64>,
        limit: u32,
    },
    MarkRead {
        conv: ConvId,
        up_to: i64,
    },
    Trust(String),
    Group(Vec<String>),
    Search(String),
}
