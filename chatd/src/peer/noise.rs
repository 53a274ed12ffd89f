//! The Noise handshake that opens every peer link (after the cleartext preamble, which is the
//! Noise prologue): `Noise_XX_25519_ChaChaPoly_BLAKE2s`.
//!
//! ```text
//! → e                      (msg 1)
//! ← e, ee, s, es           (msg 2: the server's static key, encrypted)
//! → s, se + Hello          (msg 3: the client's static key and its Hello, encrypted)
//! ```
//! Each handshake message travels as a u16 big-endian length and the message. The client checks
//! the server's static key against the key bound to the name it dials *before* it sends msg 3,
//! so it never reveals its identity or its Hello to an impostor. The server learns the client's
//! static key from msg 3 and checks it against the name in the Hello.

use peerchat_proto::peer::{self, Frame};
use peerchat_proto::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::PeerConn;
use super::error::{noise_err, LinkError};

pub const PARAMS: &str = peer::NOISE_PARAMS;
/// Largest Noise message (the spec's limit).
pub const MAX_MESSAGE: usize = 65_535;

fn builder(secret: &[u8; 32]) -> Result<snow::Builder<'_>, LinkError> {
    let params: snow::params::NoiseParams = PARAMS
        .parse()
        .map_err(|e| LinkError::Noise(format!("{e}")))?;
    snow::Builder::new(params)
        .local_private_key(secret)
        .and_then(|b| b.prologue(peer::PREAMBLE))
        .map_err(noise_err)
}

/// Dials as the initiator on a stream that already carries the preamble. `expected` is the
/// X25519 form of the key bound to `hello.to`. Returns the link, ready for the server's
/// Welcome.
pub async fn initiate(
    mut stream: TcpStream,
    secret: &[u8; 32],
    expected: &[u8; 32],
    hello: &Frame,
) -> Result<PeerConn, LinkError> {
    let run = async {
        let mut hs = builder(secret)?.build_initiator().map_err(noise_err)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
        write_message(&mut stream, &buf[..n]).await?;
        let msg2 = read_message(&mut stream).await?;
        hs.read_message(&msg2, &mut buf).map_err(noise_err)?;
        let remote: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| LinkError::Noise("no remote static key".into()))?;
        if remote != *expected {
            return Err(LinkError::WrongKey);
        }
        let n = hs
            .write_message(&peer::encode(hello), &mut buf)
            .map_err(noise_err)?;
        write_message(&mut stream, &buf[..n]).await?;
        let transport = hs.into_transport_mode().map_err(noise_err)?;
        Ok(PeerConn::new(stream, transport, remote))
    };
    tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| LinkError::Timeout("during the handshake"))?
}

/// Answers as the responder on a stream whose preamble was read. Returns the link, the
/// caller's Hello (name claims still to be checked) and its static key (X25519).
pub async fn respond(
    mut stream: TcpStream,
    secret: &[u8; 32],
) -> Result<(PeerConn, Frame), LinkError> {
    let run = async {
        let mut hs = builder(secret)?.build_responder().map_err(noise_err)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let msg1 = read_message(&mut stream).await?;
        hs.read_message(&msg1, &mut buf).map_err(noise_err)?;
        let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
        write_message(&mut stream, &buf[..n]).await?;
        let msg3 = read_message(&mut stream).await?;
        let n = hs.read_message(&msg3, &mut buf).map_err(noise_err)?;
        let hello = peer::decode(&buf[..n])?;
        let remote: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| LinkError::Noise("no remote static key".into()))?;
        let transport = hs.into_transport_mode().map_err(noise_err)?;
        Ok((PeerConn::new(stream, transport, remote), hello))
    };
    tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| LinkError::Timeout("during the handshake"))?
}

async fn write_message(stream: &mut TcpStream, msg: &[u8]) -> Result<(), LinkError> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await?;
    Ok(())
}

async fn read_message(stream: &mut TcpStream) -> Result<Vec<u8>, LinkError> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u16::from_be_bytes(len) as usize;
    if n == 0 {
        return Err(LinkError::Noise("empty handshake message".into()));
    }
    let mut msg = vec![0u8; n];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

/// What a Hello says: its version, the name it claims, the name it wants to reach, and the
/// features it asks for.
pub fn hello_fields(hello: &Frame) -> Option<(u32, &Name, &Name, &[String])> {
    match hello {
        Frame::Hello {
            version,
            from,
            to,
            features,
        } => Some((*version, from, to, features)),
        _ => None,
    }
}
