//! A peer link's framing: length-prefixed frames (see `peerchat_proto::peer`), every read and
//! write bounded in size and time. Both the dialing and the accepting side use it.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use peerchat_proto::peer::{self, Frame};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How long one write may block before the link is considered dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

pub struct PeerConn {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
}

impl PeerConn {
    /// Wraps a stream whose preamble has already been exchanged.
    pub fn new(stream: TcpStream) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(peer::MAX_FRAME)
            .new_codec();
        PeerConn {
            framed: Framed::new(stream, codec),
        }
    }

    /// Queues a frame without flushing (for pipelining); call [`PeerConn::flush`] after a batch.
    pub async fn feed(&mut self, frame: &Frame) -> Result<(), LinkError> {
        let bytes = Bytes::from(peer::encode(frame));
        tokio::time::timeout(WRITE_TIMEOUT, self.framed.feed(bytes))
            .await
            .map_err(|_| LinkError::Timeout("writing to the peer"))??;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), LinkError> {
        tokio::time::timeout(WRITE_TIMEOUT, SinkExt::<Bytes>::flush(&mut self.framed))
            .await
            .map_err(|_| LinkError::Timeout("writing to the peer"))??;
        Ok(())
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Next frame; `Closed` at EOF. Cancel-safe (usable in `select!`).
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        match self.framed.next().await {
            None => Err(LinkError::Closed),
            Some(Err(e)) => Err(LinkError::Io(e)),
            Some(Ok(bytes)) => Ok(peer::decode(&bytes)?),
        }
    }

    pub async fn recv_timeout(
        &mut self,
        t: Duration,
        what: &'static str,
    ) -> Result<Frame, LinkError> {
        tokio::time::timeout(t, self.recv())
            .await
            .map_err(|_| LinkError::Timeout(what))?
    }

    /// A frame that is already buffered or readable right now, without waiting.
    pub fn try_recv_ready(&mut self) -> Option<Result<Frame, LinkError>> {
        use futures_util::FutureExt;
        self.recv().now_or_never()
    }
}
