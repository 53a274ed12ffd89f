//! How a delivery attempt ended, and why one failed.

use crate::peer::LinkError;
use crate::resolver::ResolveError;
use crate::store::StoreError;

/// Why an attempt (and its link, if it came up) ended.
#[derive(Debug)]
pub enum Ended {
    /// Nothing was pending: no link was opened.
    NothingPending,
    /// The link had nothing to send for `peer::CLIENT_IDLE_CLOSE` and was closed.
    Idle,
    /// chatd is stopping (the link closed with nothing in flight).
    Shutdown,
    /// A seed peer took the pending messages (one short connection each, never acknowledged).
    LegacySent,
    Failed {
        reason: AttemptError,
        /// The link had come up (the recipient proved its key and welcomed us) before it failed.
        link_was_up: bool,
    },
}

impl Ended {
    /// Whether a link came up: the recipient was reachable.
    pub fn link_was_up(&self) -> bool {
        match self {
            Ended::Idle | Ended::Shutdown => true,
            Ended::Failed { link_was_up, .. } => *link_was_up,
            Ended::NothingPending | Ended::LegacySent => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
}
