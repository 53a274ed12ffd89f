//! Why a peer link (either direction) failed.

use peerchat_proto::peer;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("timed out {0}")]
    Timeout(&'static str),
    // The wrapped errors are in the message, not `source()`s (printed twice with the chain).
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("bad frame: {0}")]
    Frame(peer::FrameError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("encryption failed or the link was tampered with: {0}")]
    Noise(String),
    #[error("the peer's key is not the one bound to its name")]
    WrongKey,
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Io(e)
    }
}

impl From<peer::FrameError> for LinkError {
    fn from(e: peer::FrameError) -> Self {
        LinkError::Frame(e)
    }
}

/// A Noise failure (handshake or transport) as a link error.
pub fn noise_err(e: snow::Error) -> LinkError {
    LinkError::Noise(e.to_string())
}
