//! The seed's peer protocol (only with `--legacy`): one short connection carrying raw text,
//! no framing, no acknowledgement.

use std::net::SocketAddr;
use std::time::Duration;

use peerchat_proto::peer::WireMessage;
use peerchat_proto::MsgId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use super::error::LinkError;
use crate::store::{Received, Store};

/// The seed reads messages into a 1024-byte buffer; we accept and send no more than that.
pub const MAX_LEGACY_BODY: usize = 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives one seed message (`prefix` was already read while checking for our preamble).
pub async fn receive(
    mut stream: TcpStream,
    peer: SocketAddr,
    prefix: &[u8],
    store: &Store,
) -> Result<(), LinkError> {
    let mut buf = prefix.to_vec();
    let read = async {
        let mut chunk = [0u8; 512];
        while buf.len() < MAX_LEGACY_BODY {
            let room = (MAX_LEGACY_BODY - buf.len()).min(chunk.len());
            match stream.read(&mut chunk[..room]).await? {
                0 => break,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    // The seed writes and closes at once; a sender that stalls gets what it sent so far.
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(r) => r?,
        Err(_) if buf.is_empty() => return Err(LinkError::Timeout("waiting for a legacy message")),
        Err(_) => {}
    }
    buf.truncate(MAX_LEGACY_BODY);
    if buf.is_empty() {
        return Ok(());
    }
    let mut body = String::from_utf8_lossy(&buf).into_owned();
    // Replacement characters (for invalid or cut-off UTF-8) are 3 bytes each and can push the
    // text past the limit; cut back on a character boundary.
    while body.len() > MAX_LEGACY_BODY {
        body.pop();
    }
    let now = peerchat_db::now_ms();
    // A seed message has no id: it gets a UUIDv7 (hex digits and dashes, always a valid id).
    let id = MsgId::new(uuid::Uuid::now_v7().to_string())
        .map_err(|e| LinkError::Protocol(format!("internal error: {e}")))?;
    let msg = WireMessage {
        id,
        to: vec![],
        sent_at_ms: now,
        body,
        group: None,
    };
    let sender = format!(
        "legacy:{}",
        SocketAddr::new(peer.ip().to_canonical(), peer.port())
    );
    store
        .receive(vec![Received {
            sender: sender.clone(),
            msg,
            authenticated: false,
        }])
        .await
        .map_err(|e| LinkError::Protocol(format!("storing legacy message: {e}")))?;
    info!(from = %sender, bytes = buf.len(), "stored legacy message");
    Ok(())
}

/// Sends one message the seed's way: raw text, then close.
pub async fn send(mut stream: TcpStream, body: &str) -> Result<(), LinkError> {
    tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| LinkError::Timeout("sending to a legacy peer"))??;
    Ok(())
}
