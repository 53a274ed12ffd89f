//! Opening a link to a recipient: TCP, the preamble, the Noise handshake against the key the
//! registry binds to its name (`crate::peer::noise::initiate`), our Hello, its Welcome.

use peerchat_proto::peer::{self, Frame};
use peerchat_proto::{Name, PublicKey};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::ended::AttemptError;
use crate::identity::Identity;
use crate::peer::{noise, LinkError, PeerConn};

/// A link up to `to`, and whether it answers pings (both sides list `peer::feature::PING`).
pub async fn connect(
    me: &Name,
    identity: &Identity,
    to: &Name,
    address: &str,
    key: Option<PublicKey>,
) -> Result<(PeerConn, bool), AttemptError> {
    let key =
        key.ok_or_else(|| AttemptError::Refused(format!("the registry gives no key for {to}")))?;
    let expected = key
        .to_x25519()
        .ok_or_else(|| AttemptError::Refused(format!("the key of {to} is not valid")))?;
    let mut stream = tcp(address).await?;
    tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, stream.write_all(peer::PREAMBLE))
        .await
        .map_err(|_| LinkError::Timeout("writing the preamble"))?
        .map_err(LinkError::Io)?;
    let hello = Frame::Hello {
        version: peer::VERSION,
        from: me.clone(),
        to: to.clone(),
        features: vec![
            peer::feature::ACKS.to_string(),
            peer::feature::PING.to_string(),
        ],
    };
    let secret = identity.noise_secret();
    let mut conn = match noise::initiate(stream, &secret, &expected, &hello).await {
        Ok(c) => c,
        Err(LinkError::WrongKey) => {
            return Err(AttemptError::Refused(format!(
                "{address} did not prove the key of {to} (fingerprint {}); nothing sent",
                key.fingerprint()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    drop(secret);
    match conn
        .recv_timeout(peer::HANDSHAKE_TIMEOUT, "waiting for welcome")
        .await?
    {
        Frame::Welcome { name, features, .. } if name == *to => {
            let pings = features.iter().any(|f| f == peer::feature::PING);
            Ok((conn, pings))
        }
        Frame::Welcome { name, .. } => Err(AttemptError::Refused(format!(
            "{address} is {name}, not {to}; the peer may have moved"
        ))),
        Frame::Refused { code, message } => Err(AttemptError::Refused(format!(
            "{to} refused the link: {message} ({code})"
        ))),
        other => Err(LinkError::Protocol(format!("expected welcome, got {}", other.kind())).into()),
    }
}

/// A TCP connection to `address` (bounded by the connect timeout).
pub async fn tcp(address: &str) -> Result<TcpStream, AttemptError> {
    let connect_err = |reason: String| AttemptError::Connect {
        addr: address.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(peer::CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
