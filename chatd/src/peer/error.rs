//! Why a peer link (either direction) failed.

use peerchat_proto::peer;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] peer::FrameError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("encryption failed or the link was tampered with: {0}")]
    Noise(String),
    #[error("the peer's key is not the one bound to its name")]
    WrongKey,
}

/// A Noise failure (handshake or transport) as a link error.
pub fn noise_err(e: snow::Error) -> LinkError {
    LinkError::Noise(e.to_string())
}
