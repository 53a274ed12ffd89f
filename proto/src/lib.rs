//! Wire types and limits shared by `chatd`, `chatctl` and `registryd`.
//!
//! This crate is the only place that knows the wire formats (see `docs/protocol.md`). It has no async
//! runtime and no database: daemons and clients bring their own I/O and call the encode/decode
//! functions here, so fuzzers and tests can exercise the parsers without sockets.

pub mod control;
pub mod conversation;
pub mod envelope;
pub mod identity;
pub mod msg_id;
pub mod name;
pub mod peer;
pub mod registry;

pub use envelope::{ErrorBody, Outcome, Reply};
pub use identity::{PublicKey, Signature};
pub use msg_id::{MsgId, MsgIdError};
pub use name::{Name, NameError};

/// Version of this crate, reported by every daemon's hello so mismatches are easy to see.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The largest message body, in bytes of UTF-8, that any node accepts or sends.
///
/// Chosen so that a message frame, even with worst-case JSON escaping, stays far below
/// [`peer::MAX_FRAME`].
pub const MAX_BODY_BYTES: usize = 64 * 1024;
