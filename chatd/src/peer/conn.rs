//! An established, encrypted peer link: Noise transport records carrying our length-prefixed
//! frames (see `docs/protocol.md`). Every read and write is bounded in size and time; both the
//! dialing and the accepting side use it.
//!
//! The plaintext is a byte stream of frames (u32 big-endian length, JSON), cut into records of
//! at most [`MAX_PLAINTEXT`] bytes; each record is sealed on its own and sent as a u16 length
//! and the ciphertext. Many small frames share one record, so a burst costs one AEAD operation
//! per 64 KiB, not one per message.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use peerchat_proto::peer::{self, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{noise_err, LinkError};

/// Noise's limit on one transport message (ciphertext).
const MAX_RECORD: usize = 65_535;
/// Plaintext per record: the record limit minus the 16-byte authentication tag.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - 16;

pub struct PeerConn {
    stream: TcpStream,
    noise: snow::TransportState,
    /// The peer's static key (X25519), proven by the handshake.
    remote: [u8; 32],
    /// Ciphertext read but not yet decrypted.
    wire_in: BytesMut,
    /// Decrypted bytes not yet taken as frames.
    plain_in: BytesMut,
    /// Frames waiting to be sealed.
    plain_out: Vec<u8>,
    /// Sealed records waiting to be written.
    wire_out: Vec<u8>,
    scratch: Vec<u8>,
}

impl PeerConn {
    pub fn new(stream: TcpStream, noise: snow::TransportState, remote: [u8; 32]) -> Self {
        PeerConn {
            stream,
            noise,
            remote,
            wire_in: BytesMut::with_capacity(2 * MAX_RECORD),
            plain_in: BytesMut::with_capacity(MAX_RECORD),
            plain_out: Vec::new(),
            wire_out: Vec::new(),
            scratch: vec![0u8; MAX_RECORD],
        }
    }

    pub fn remote_static(&self) -> &[u8; 32] {
        &self.remote
    }

    /// Queues a frame without writing (for pipelining); call [`PeerConn::flush`] after a batch.
    pub async fn feed(&mut self, frame: &impl serde::Serialize) -> Result<(), LinkError> {
        let start = self.plain_out.len();
        self.plain_out.extend_from_slice(&[0; 4]);
        // Plain data types; serialization into a Vec cannot fail. (sonic-rs: the body's
        // escaping was a quarter of the sender's CPU at 16 KiB with serde_json.)
        let _ = peerchat_proto::envelope::append_json(&mut self.plain_out, frame);
        let len = self.plain_out.len() - start - 4;
        self.plain_out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        if self.plain_out.len() >= MAX_PLAINTEXT {
            self.seal(false)?;
        }
        if self.wire_out.len() >= 4 * MAX_RECORD {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Seals every full record (and with `all`, the remainder too).
    fn seal(&mut self, all: bool) -> Result<(), LinkError> {
        let mut done = 0;
        while self.plain_out.len() - done >= MAX_PLAINTEXT || (all && done < self.plain_out.len()) {
            let end = (done + MAX_PLAINTEXT).min(self.plain_out.len());
            let n = self
                .noise
                .write_message(&self.plain_out[done..end], &mut self.scratch)
                .map_err(noise_err)?;
            self.wire_out.extend_from_slice(&(n as u16).to_be_bytes());
            self.wire_out.extend_from_slice(&self.scratch[..n]);
            done = end;
        }
        self.plain_out.drain(..done);
        Ok(())
    }

    async fn write_out(&mut self) -> Result<(), LinkError> {
        if self.wire_out.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(peer::WRITE_TIMEOUT, self.stream.write_all(&self.wire_out))
            .await
            .map_err(|_| LinkError::Timeout("writing to the peer"))??;
        self.wire_out.clear();
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.seal(true)?;
        self.write_out().await
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Next frame; `Closed` at EOF. Cancel-safe (usable in `select!`): bytes read are kept in
    /// the buffers, and decryption happens between reads.
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(frame);
            }
            if self.wire_in.capacity() - self.wire_in.len() < MAX_RECORD {
                self.wire_in.reserve(MAX_RECORD);
            }
            if self.stream.read_buf(&mut self.wire_in).await? == 0 {
                return Err(LinkError::Closed);
            }
        }
    }

    /// A frame from what is already buffered (decrypting whole records as needed).
    fn next_buffered(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if self.plain_in.len() >= 4 {
                let len = u32::from_be_bytes([
                    self.plain_in[0],
                    self.plain_in[1],
                    self.plain_in[2],
                    self.plain_in[3],
                ]) as usize;
                if len == 0 || len > peer::MAX_FRAME {
                    return Err(LinkError::Protocol(format!(
                        "frame of {len} bytes (limit {})",
                        peer::MAX_FRAME
                    )));
                }
                if self.plain_in.len() >= 4 + len {
                    let frame = peer::decode(&self.plain_in[4..4 + len]);
                    self.plain_in.advance(4 + len);
                    return Ok(Some(frame?));
                }
            }
            if self.wire_in.len() < 2 {
                return Ok(None);
            }
            let n = u16::from_be_bytes([self.wire_in[0], self.wire_in[1]]) as usize;
            if n == 0 {
                return Err(LinkError::Noise("empty record".into()));
            }
            if self.wire_in.len() < 2 + n {
                return Ok(None);
            }
            let m = self
                .noise
                .read_message(&self.wire_in[2..2 + n], &mut self.scratch)
                .map_err(noise_err)?;
            self.wire_in.advance(2 + n);
            self.plain_in.extend_from_slice(&self.scratch[..m]);
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
